//! How the client checks the server's certificate: against CA roots (the system's or
//! given ones), pinned by thumbprint as vic-machine's `--thumbprint` does, or not at all
//! (`--insecure`, for simulators).

use std::sync::Arc;

use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{CryptoProvider, ring as ring_provider};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, DigitallySignedStruct, SignatureScheme};

use crate::fault::Error;

/// The server certificate check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Tls {
    /// Verify against the built-in web PKI roots.
    #[default]
    WebPki,
    /// Verify against these PEM CA certificates only.
    Ca(Vec<u8>),
    /// Accept exactly the certificate with this SHA-1 (40 hex digits) or SHA-256
    /// (64 hex digits) thumbprint; colons and case do not matter.
    Thumbprint(String),
    /// Accept any certificate (simulators only).
    Insecure,
}

/// A thumbprint as upper-case colon-separated hex pairs, as vSphere prints it.
pub fn format_thumbprint(digest: &[u8]) -> String {
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The SHA-1 and SHA-256 thumbprints of a DER certificate.
pub fn thumbprints(der: &[u8]) -> (String, String) {
    let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    let sha256 = ring::digest::digest(&ring::digest::SHA256, der);
    (
        format_thumbprint(sha1.as_ref()),
        format_thumbprint(sha256.as_ref()),
    )
}

/// Parses a thumbprint into its digest bytes.
fn parse_thumbprint(t: &str) -> Result<Vec<u8>, Error> {
    let hex: String = t.chars().filter(|c| *c != ':' && *c != ' ').collect();
    if !(hex.len() == 40 || hex.len() == 64) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::Tls(format!(
            "thumbprint {t:?} is neither a SHA-1 (20 bytes) nor a SHA-256 (32 bytes) in hex"
        )));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&hex[i..i + 2], 16)
                .map_err(|_| Error::Tls(format!("bad thumbprint {t:?}")))
        })
        .collect()
}

/// A verifier that pins one certificate by its digest, or accepts any (`pin: None`).
/// Handshake signatures are still checked against the presented certificate.
#[derive(Debug)]
struct Pinned {
    pin: Option<Vec<u8>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = &self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let alg = if pin.len() == 20 {
            &ring::digest::SHA1_FOR_LEGACY_USE_ONLY
        } else {
            &ring::digest::SHA256
        };
        let got = ring::digest::digest(alg, end_entity.as_ref());
        if got.as_ref() == pin.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate thumbprint {} does not match the pinned {}",
                format_thumbprint(got.as_ref()),
                format_thumbprint(pin)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Applies `tls` to a reqwest client builder.
pub fn configure(
    builder: reqwest::ClientBuilder,
    tls: &Tls,
) -> Result<reqwest::ClientBuilder, Error> {
    let pin = match tls {
        Tls::WebPki => return Ok(builder.use_rustls_tls()),
        Tls::Ca(pem) => {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::Tls(format!("CA certificates: {e}")))?;
            if certs.is_empty() {
                return Err(Error::Tls("no certificate in the CA file".into()));
            }
            let mut b = builder.use_rustls_tls().tls_built_in_root_certs(false);
            for c in certs {
                b = b.add_root_certificate(c);
            }
            return Ok(b);
        }
        Tls::Thumbprint(t) => Some(parse_thumbprint(t)?),
        Tls::Insecure => None,
    };
    let provider = Arc::new(ring_provider::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { pin, provider }))
        .with_no_client_auth();
    Ok(builder.use_preconfigured_tls(config))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_parse_in_both_lengths() {
        let (sha1, sha256) = thumbprints(b"certificate");
        assert_eq!(parse_thumbprint(&sha1).unwrap().len(), 20);
        assert_eq!(parse_thumbprint(&sha256.to_lowercase()).unwrap().len(), 32);
        assert!(parse_thumbprint("AB:CD").is_err());
        assert!(parse_thumbprint(&"ZZ".repeat(20)).is_err());
    }
}
