//! Content digests (`sha256:<hex>`) and the incremental check of content against one:
//! [`Digest`] names content, [`Verifier`] hashes bytes as they pass and says at the end
//! whether they were the content that was asked for.

use std::fmt;
use std::io;

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use vic_core::{Error, Result};

/// A `sha256:<64 lowercase hex>` content digest, the only algorithm vic accepts (as
/// dockerd does by default).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses `s`, which must be `sha256:` followed by 64 lowercase hex digits.
    pub fn parse(s: &str) -> Result<Digest> {
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(Error::InvalidArgument(format!(
                "invalid digest {s:?}: no algorithm"
            )));
        };
        if algorithm != "sha256" {
            return Err(Error::NotSupported(format!(
                "unsupported digest algorithm {algorithm:?} in {s:?}: only sha256 is supported"
            )));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::InvalidArgument(format!(
                "invalid digest {s:?}: sha256 needs 64 lowercase hex digits"
            )));
        }
        Ok(Digest(s.to_string()))
    }

    /// The sha256 digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest::from_ring(ring::digest::digest(&SHA256, data))
    }

    fn from_ring(d: ring::digest::Digest) -> Digest {
        let mut s = String::with_capacity(71);
        s.push_str("sha256:");
        for b in d.as_ref() {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        Digest(s)
    }

    /// The whole digest, `sha256:…`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part, without `sha256:`.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl std::str::FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An incremental SHA-256 of a byte stream.
pub struct Sha256 {
    ctx: Context,
    len: u64,
}

impl Sha256 {
    /// An empty hash.
    pub fn new() -> Sha256 {
        Sha256 {
            ctx: Context::new(&SHA256),
            len: 0,
        }
    }

    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.ctx.update(data);
        self.len += data.len() as u64;
    }

    /// How many bytes were added.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when no byte was added.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of everything added.
    pub fn finish(self) -> Digest {
        Digest::from_ring(self.ctx.finish())
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Sha256::new()
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sha256").field("len", &self.len).finish()
    }
}

/// Checks that a stream of bytes is the content named by a digest (and, when known, of
/// the size a descriptor announced): feed it with [`Verifier::update`], then call
/// [`Verifier::finish`] at the end of the stream. Errors are `io::ErrorKind::InvalidData`.
#[derive(Debug)]
pub struct Verifier {
    what: String,
    expected: Digest,
    expected_size: Option<u64>,
    hash: Option<Sha256>,
}

impl Verifier {
    /// A verifier for content called `what` in messages ("blob", "layer"…), expected to
    /// have `digest` and, when given, `size` bytes.
    pub fn new(what: impl Into<String>, digest: Digest, size: Option<u64>) -> Verifier {
        Verifier {
            what: what.into(),
            expected: digest,
            expected_size: size,
            hash: Some(Sha256::new()),
        }
    }

    /// The digest the content must have.
    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    /// Bytes seen so far.
    pub fn seen(&self) -> u64 {
        self.hash.as_ref().map_or(0, Sha256::len)
    }

    /// Adds `data`; fails as soon as the content is longer than the expected size.
    pub fn update(&mut self, data: &[u8]) -> io::Result<()> {
        let Some(hash) = self.hash.as_mut() else {
            return Err(invalid_data(format!(
                "{} {}: read past its end",
                self.what, self.expected
            )));
        };
        hash.update(data);
        if let Some(size) = self.expected_size
            && hash.len() > size
        {
            return Err(invalid_data(format!(
                "{} {}: size mismatch: expected {size} bytes, got more",
                self.what, self.expected
            )));
        }
        Ok(())
    }

    /// Ends the stream: fails when the size or the digest differ from the expected ones.
    pub fn finish(&mut self) -> io::Result<()> {
        let Some(hash) = self.hash.take() else {
            return Ok(());
        };
        let len = hash.len();
        if let Some(size) = self.expected_size
            && len != size
        {
            return Err(invalid_data(format!(
                "{} {}: size mismatch: expected {size} bytes, got {len}",
                self.what, self.expected
            )));
        }
        let got = hash.finish();
        if got != self.expected {
            return Err(invalid_data(format!(
                "{} {}: digest mismatch: content has digest {got}",
                self.what, self.expected
            )));
        }
        Ok(())
    }
}

pub(crate) fn invalid_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_computes() {
        assert_eq!(Digest::of(b"").as_str(), EMPTY);
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.hex().len(), 64);
        assert_eq!(d.to_string(), EMPTY);
        let mut h = Sha256::new();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.finish(), Digest::of(b"hello world"));
        for bad in ["", "sha256", "sha256:abc", &EMPTY.to_uppercase(), "md5:00"] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            Digest::parse(&format!("sha512:{}", "0".repeat(128))),
            Err(Error::NotSupported(_))
        ));
        let j: Digest = serde_json::from_str(&format!("\"{EMPTY}\"")).unwrap();
        assert_eq!(serde_json::to_string(&j).unwrap(), format!("\"{EMPTY}\""));
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }

    #[test]
    fn verifier_checks_size_and_digest() {
        let data = b"some content";
        let mut v = Verifier::new("blob", Digest::of(data), Some(data.len() as u64));
        v.update(&data[..4]).unwrap();
        v.update(&data[4..]).unwrap();
        v.finish().unwrap();

        let mut v = Verifier::new("blob", Digest::of(data), Some(3));
        let e = v.update(data).unwrap_err();
        assert!(e.to_string().contains("size mismatch"), "{e}");

        let mut v = Verifier::new("blob", Digest::of(data), Some(100));
        v.update(data).unwrap();
        let e = v.finish().unwrap_err();
        assert!(e.to_string().contains("expected 100 bytes, got 12"), "{e}");

        let mut v = Verifier::new("blob", Digest::of(b"other"), None);
        v.update(data).unwrap();
        let e = v.finish().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains(&Digest::of(data).to_string()), "{e}");
    }
}
