//! The registry client against Debian's real `docker-registry` (open, htpasswd, token
//! auth) filled with the busybox fixture, and against small fake registries for what a
//! real one does not do on demand (redirects, lies, per-repository challenges).

mod common;

use std::io::Read;
use std::sync::Arc;

use common::*;
use vic_core::Error;
use vic_core::reference::Reference;
use vic_registry::{Credentials, Digest, ManifestKind, Platform};

fn reference(addr: &str, rest: &str) -> Reference {
    Reference::parse(&format!("{addr}/{rest}")).expect("reference")
}

/// Reads a layer to its end on a blocking thread: (sha256 of the bytes, first bytes,
/// what `finish` said).
async fn read_layer(
    layer: vic_registry::LayerReader<vic_registry::BlobReader>,
) -> (Digest, Vec<u8>, std::io::Result<vic_registry::LayerDigest>) {
    tokio::task::spawn_blocking(move || {
        let mut layer = layer;
        let mut all = Vec::new();
        if let Err(e) = layer.read_to_end(&mut all) {
            return (Digest::of(&all), all, Err(e));
        }
        let result = layer.finish();
        (Digest::of(&all), all, result)
    })
    .await
    .expect("blocking task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_busybox_by_tag_and_by_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&tmp.path().join("reg"), None);
    let pushed = push_busybox(
        reg.addr(),
        "library/busybox:latest",
        None,
        &tmp.path().join("files"),
    );
    let files = &pushed.files;
    let c = client(&[reg.addr()]);

    let by_tag = reference(reg.addr(), "library/busybox:latest");
    let img = c
        .pull_manifest(&by_tag, None, None)
        .await
        .expect("pull by tag");
    assert_eq!(img.digest.as_str(), pushed.digest);
    assert_eq!(img.manifest_digest, img.digest);
    assert_eq!(img.manifest_kind, ManifestKind::DockerV2);
    assert_eq!(
        img.config_digest.to_string(),
        file_digest(&files.join("config.json"))
    );
    assert_eq!(
        img.config_raw,
        std::fs::read(files.join("config.json")).unwrap()
    );
    assert_eq!(img.config.platform().to_string(), "linux/amd64");
    assert_eq!(img.config.config.cmd, Some(vec!["sh".to_string()]));
    assert!(img.config.config.env[0].starts_with("PATH="));
    assert_eq!(img.config.created.as_deref(), Some("1970-01-01T00:00:00Z"));
    assert_eq!(img.config.history.len(), 1);
    let diff_id = img.config.rootfs.diff_ids[0].clone();
    assert_eq!(diff_id.to_string(), file_digest(&files.join("layer.tar")));
    assert_eq!(img.manifest.layers.len(), 1);
    let layer = img.manifest.layers[0].clone();
    assert_eq!(
        layer.digest.to_string(),
        file_digest(&files.join("layer.tar.gz"))
    );

    // The layer as an uncompressed tar stream with its diff ID checked.
    let reader = c
        .layer_reader(&by_tag, &layer, Some(&diff_id), None)
        .await
        .expect("layer");
    let (content, head, result) = read_layer(reader).await;
    let d = result.expect("layer verified");
    assert_eq!(d.diff_id, diff_id);
    assert_eq!(content, diff_id);
    assert_eq!(
        d.size,
        std::fs::metadata(files.join("layer.tar")).unwrap().len()
    );
    assert_eq!(&head[..4], b"bin/", "a tar whose first entry is bin/");

    // The raw blob through the async stream.
    let mut stream = c
        .blob(&by_tag, &layer.digest, Some(layer.size), None)
        .await
        .expect("blob");
    let mut raw = Vec::new();
    while let Some(chunk) = stream.next_chunk().await.expect("chunk") {
        raw.extend_from_slice(&chunk);
    }
    assert_eq!(raw, std::fs::read(files.join("layer.tar.gz")).unwrap());

    // By digest: the same image, the body checked against the digest asked for.
    let by_digest = reference(reg.addr(), &format!("library/busybox@{}", pushed.digest));
    let img2 = c
        .pull_manifest(&by_digest, None, None)
        .await
        .expect("pull by digest");
    assert_eq!(img2.digest, img.digest);
    assert_eq!(img2.config_digest, img.config_digest);
    let reader = c
        .layer_reader(&by_digest, &img2.manifest.layers[0], Some(&diff_id), None)
        .await
        .unwrap();
    assert_eq!(
        read_layer(reader).await.2.expect("layer by digest").diff_id,
        diff_id
    );

    // A wrong expected diff ID is caught at the end of the stream.
    let wrong = Digest::of(b"not the layer");
    let reader = c
        .layer_reader(&by_tag, &layer, Some(&wrong), None)
        .await
        .unwrap();
    let err = read_layer(reader).await.2.unwrap_err();
    assert!(err.to_string().contains("diff ID mismatch"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_things_are_not_found_and_plain_http_needs_consent() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&tmp.path().join("reg"), None);
    push_busybox(
        reg.addr(),
        "library/busybox:latest",
        None,
        &tmp.path().join("files"),
    );
    let c = client(&[reg.addr()]);

    let e = c
        .pull_manifest(&reference(reg.addr(), "library/busybox:nope"), None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotFound {
                kind: "manifest",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("busybox:nope"), "{e}");

    // docker-registry 2.8 says MANIFEST_UNKNOWN for unknown repositories too.
    let e = c
        .pull_manifest(&reference(reg.addr(), "nothing/here:latest"), None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotFound {
                kind: "manifest",
                ..
            }
        ),
        "{e:?}"
    );

    let absent = Digest::of(b"absent");
    let e = c
        .pull_manifest(
            &reference(reg.addr(), &format!("library/busybox@{absent}")),
            None,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotFound {
                kind: "manifest",
                ..
            }
        ),
        "{e:?}"
    );

    let e = c
        .blob(
            &reference(reg.addr(), "library/busybox:latest"),
            &absent,
            None,
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { kind: "blob", .. }), "{e:?}");

    // Loopback is not implicitly insecure: without consent, HTTPS only.
    let strict = client(&[]);
    let e = strict
        .pull_manifest(&reference(reg.addr(), "library/busybox:latest"), None, None)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    assert!(e.to_string().contains("insecure"), "{e}");
    assert!(e.to_string().contains(reg.addr()), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picks_platforms_from_lists_and_indexes() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&tmp.path().join("reg"), None);
    let pushed = push_busybox(
        reg.addr(),
        "library/busybox:latest",
        None,
        &tmp.path().join("files"),
    );
    let manifest_size = std::fs::metadata(pushed.files.join("manifest.json"))
        .unwrap()
        .len();
    let c = client(&[reg.addr()]);

    // A Docker manifest list and an OCI index over the busybox manifest, pushed by hand.
    let http = reqwest::Client::new();
    for (tag, list_type, entry_type) in [
        (
            "list",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        ),
        (
            "index",
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        ),
    ] {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": list_type,
            "manifests": [
                {"mediaType": entry_type, "size": manifest_size, "digest": pushed.digest,
                 "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}},
                {"mediaType": entry_type, "size": manifest_size, "digest": pushed.digest,
                 "platform": {"architecture": "amd64", "os": "linux"}},
            ]
        })
        .to_string();
        let resp = http
            .put(format!(
                "http://{}/v2/library/busybox/manifests/{tag}",
                reg.addr()
            ))
            .header("Content-Type", list_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            201,
            "{}",
            resp.text().await.unwrap_or_default()
        );
        let list_digest = Digest::of(body.as_bytes());

        let r = reference(reg.addr(), &format!("library/busybox:{tag}"));
        let top = c.fetch_manifest(&r, None).await.unwrap();
        assert!(top.kind.is_index());
        assert_eq!(top.kind.media_type(), list_type);
        assert_eq!(top.digest, list_digest);

        let img = c
            .pull_manifest(&r, None, None)
            .await
            .expect("default platform");
        assert_eq!(img.digest, list_digest, "the repo digest is the list's");
        assert_eq!(img.manifest_digest.as_str(), pushed.digest);
        let arm = c
            .pull_manifest(&r, Some(&Platform::parse("linux/arm/v7").unwrap()), None)
            .await;
        assert_eq!(
            arm.expect("arm/v7 entry").manifest_digest.as_str(),
            pushed.digest
        );

        let e = c
            .pull_manifest(&r, Some(&Platform::parse("linux/s390x").unwrap()), None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::NotFound {
                    kind: "manifest",
                    ..
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("linux/s390x") && msg.contains("linux/arm/v7, linux/amd64"),
            "{msg}"
        );
    }

    // A single-platform image asked for another platform explicitly.
    let e = c
        .pull_manifest(
            &reference(reg.addr(), "library/busybox:latest"),
            Some(&Platform::parse("linux/arm64").unwrap()),
            None,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("the image is linux/amd64"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_registry_checks_passwords() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&tmp.path().join("reg"), Some(("vic", "s3cret")));
    push_busybox(
        reg.addr(),
        "library/busybox:latest",
        Some(("vic", "s3cret")),
        &tmp.path().join("files"),
    );
    let c = client(&[reg.addr()]);
    let good = Credentials::new("vic", "s3cret");
    let bad = Credentials::new("vic", "wrong");

    let e = c.login(reg.addr(), &bad).await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized(_)), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(reg.addr()) && msg.contains("incorrect username or password"),
        "{msg}"
    );
    assert!(!msg.contains("wrong"), "no password in messages: {msg}");
    c.login(reg.addr(), &good)
        .await
        .expect("login with the right password");

    let r = reference(reg.addr(), "library/busybox:latest");
    for creds in [None, Some(&bad)] {
        let e = c.pull_manifest(&r, None, creds).await.unwrap_err();
        assert!(matches!(e, Error::Unauthorized(_)), "{e:?}");
        assert!(e.to_string().contains("pull access denied"), "{e}");
    }
    let img = c
        .pull_manifest(&r, None, Some(&good))
        .await
        .expect("pull with the password");
    let diff_id = img.config.rootfs.diff_ids[0].clone();
    let reader = c
        .layer_reader(&r, &img.manifest.layers[0], Some(&diff_id), Some(&good))
        .await
        .unwrap();
    assert_eq!(read_layer(reader).await.2.expect("layer").diff_id, diff_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_registry_with_a_real_token_server() {
    let tmp = tempfile::tempdir().unwrap();
    let files = tmp.path().join("files");
    // Filled while open, then restarted on the same data with token auth.
    let (reg, _) = TokenRegistry::start(&tmp.path().join("reg"), &[("vic", "s3cret")], |open| {
        push_busybox(open.addr(), "library/busybox:latest", None, &files)
    });

    let c = client(&[reg.addr()]);
    let good = Credentials::new("vic", "s3cret");
    let e = c
        .login(reg.addr(), &Credentials::new("vic", "nope"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthorized(_)), "{e:?}");
    assert!(e.to_string().contains(reg.addr()), "{e}");
    c.login(reg.addr(), &good).await.expect("login");

    let r = reference(reg.addr(), "library/busybox:latest");
    let e = c.pull_manifest(&r, None, None).await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized(_)), "anonymous pull: {e:?}");

    let img = c
        .pull_manifest(&r, None, Some(&good))
        .await
        .expect("pull with a token");
    let diff_id = img.config.rootfs.diff_ids[0].clone();
    let reader = c
        .layer_reader(&r, &img.manifest.layers[0], Some(&diff_id), Some(&good))
        .await
        .unwrap();
    assert_eq!(read_layer(reader).await.2.expect("layer").diff_id, diff_id);
    c.pull_manifest(&r, None, Some(&good))
        .await
        .expect("second pull");

    // One token for the repository's pull scope served every request of both pulls.
    let scoped_user_fetches = reg
        .tokens()
        .requests()
        .iter()
        .filter(|q| {
            q.scopes() == ["repository:library/busybox:pull"] && q.user.as_deref() == Some("vic")
        })
        .count();
    assert_eq!(scoped_user_fetches, 1);
}

// ---------------------------------------------------------------------------------------
// Fake registries.

struct FakeImage {
    manifest: Vec<u8>,
    manifest_digest: Digest,
    config: Vec<u8>,
    config_digest: Digest,
    layer: Vec<u8>,
    layer_digest: Digest,
    diff_id: Digest,
}

fn fake_image() -> FakeImage {
    use std::io::Write;
    let tar: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let layer = gz.finish().expect("gzip");
    let diff_id = Digest::of(&tar);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["true"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.as_str()]}
    })
    .to_string()
    .into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": Digest::of(&config).as_str()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": layer.len(), "digest": Digest::of(&layer).as_str()}]
    })
    .to_string()
    .into_bytes();
    FakeImage {
        manifest_digest: Digest::of(&manifest),
        config_digest: Digest::of(&config),
        layer_digest: Digest::of(&layer),
        manifest,
        config,
        layer,
        diff_id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_flow_redirects_and_lies_against_a_fake_registry() {
    let img = Arc::new(fake_image());
    // Blob storage on another host:port, as registries redirect to object stores.
    let i2 = img.clone();
    let storage = Server::start(move |req| match req.path.as_str() {
        "/store/layer" => Resp::new(200, i2.layer.clone()),
        _ => Resp::new(404, ""),
    })
    .await;
    let storage_url = storage.url();
    let i3 = img.clone();
    let registry = Server::start(move |req| {
        let authed = req.headers.get("authorization").map(String::as_str) == Some("Bearer T0KEN");
        let challenge = |path: &str| {
            Resp::new(401, r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#).header(
                "WWW-Authenticate",
                &format!(
                    r#"Bearer realm="http://{}/token",service="fake",scope="repository:{path}:pull""#,
                    req.headers.get("host").cloned().unwrap_or_default()
                ),
            )
        };
        match req.path.as_str() {
            "/token" => {
                let ok = req.query.get("service").map(String::as_str) == Some("fake")
                    && req.query.get("scope").map(String::as_str) == Some("repository:team/app:pull");
                if ok {
                    Resp::new(200, r#"{"token":"T0KEN","expires_in":3600}"#)
                } else {
                    Resp::new(400, "bad scope")
                }
            }
            _ if !authed => challenge("team/app"),
            "/v2/" => Resp::new(200, "{}"),
            "/v2/team/app/manifests/latest" => Resp::new(200, i3.manifest.clone())
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .header("Docker-Content-Digest", i3.manifest_digest.as_str()),
            // Served with a digest header that does not match the body.
            "/v2/team/app/manifests/tampered" => Resp::new(200, i3.manifest.clone())
                .header("Docker-Content-Digest", Digest::of(b"something else").as_str()),
            p if p == format!("/v2/team/app/blobs/{}", i3.config_digest) => Resp::new(200, i3.config.clone()),
            p if p == format!("/v2/team/app/blobs/{}", i3.layer_digest) => {
                Resp::new(307, "").header("Location", &format!("{storage_url}/store/layer"))
            }
            // A blob whose content is not what its digest says.
            p if p.starts_with("/v2/team/app/blobs/") => Resp::new(200, i3.layer.clone()),
            "/v2/team/app/manifests/busy" => Resp::new(
                429,
                r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#,
            ),
            _ => Resp::new(404, r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#),
        }
    })
    .await;
    let addr = registry.addr.to_string();
    let c = client(&[&addr]);
    let r = reference(&addr, "team/app:latest");

    let pulled = c
        .pull_manifest(&r, None, None)
        .await
        .expect("pull through bearer auth");
    assert_eq!(pulled.manifest_kind, ManifestKind::OciManifest);
    assert_eq!(pulled.digest, img.manifest_digest);
    assert_eq!(pulled.config.config.cmd, Some(vec!["true".to_string()]));
    let layer = pulled.manifest.layers[0].clone();
    let reader = c
        .layer_reader(&r, &layer, Some(&img.diff_id), None)
        .await
        .expect("layer");
    let (_, _, result) = read_layer(reader).await;
    assert_eq!(result.expect("layer via redirect").diff_id, img.diff_id);
    assert_eq!(registry.count("/token"), 1, "the token is cached");
    // The redirect went to the storage host without the registry's token.
    let at_storage = storage.seen.lock().unwrap().clone();
    assert_eq!(at_storage.len(), 1);
    assert!(
        !at_storage[0].headers.contains_key("authorization"),
        "{at_storage:?}"
    );

    // Lies are caught.
    let e = c
        .fetch_manifest(&reference(&addr, "team/app:tampered"), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Docker-Content-Digest"), "{e}");
    let other = Digest::of(b"pretend this is the layer");
    let mut lying = layer.clone();
    lying.digest = other;
    let reader = c
        .layer_reader(&r, &lying, None, None)
        .await
        .expect("blob starts");
    let err = read_layer(reader).await.2.unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    let e = c
        .fetch_manifest(
            &reference(&addr, &format!("team/app@{}", Digest::of(b"x"))),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotFound {
                kind: "manifest",
                ..
            }
        ),
        "{e:?}"
    );

    // Registry errors keep their message.
    let e = c
        .fetch_manifest(&reference(&addr, "team/app:busy"), None)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    assert!(e.to_string().contains("toomanyrequests: slow down"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_asked_only_by_a_repository() {
    let img = Arc::new(fake_image());
    let i2 = img.clone();
    let registry = Server::start(move |req| {
        let user = basic_user(req);
        match req.path.as_str() {
            // The API root is open; the repository is not.
            "/v2/" => Resp::new(200, "{}"),
            "/v2/public/gone/manifests/latest" => Resp::new(
                404,
                r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#,
            ),
            _ if user != Some(("vic".into(), "pw".into())) => {
                Resp::new(401, r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#)
                    .header("WWW-Authenticate", r#"Basic realm="fake""#)
            }
            "/v2/private/app/manifests/v1" => Resp::new(200, i2.manifest.clone()),
            _ => Resp::new(404, ""),
        }
    })
    .await;
    let addr = registry.addr.to_string();
    let c = client(&[&addr]);
    let r = reference(&addr, "private/app:v1");
    let e = c.fetch_manifest(&r, None).await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized(_)), "{e:?}");
    let m = c
        .fetch_manifest(&r, Some(&Credentials::new("vic", "pw")))
        .await
        .expect("basic auth on retry");
    assert_eq!(m.digest, img.manifest_digest);
    assert_eq!(m.kind, ManifestKind::OciManifest);
    let e = c
        .fetch_manifest(&reference(&addr, "public/gone:latest"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotFound {
                kind: "repository",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("No such repository: {addr}/public/gone")
    );
    // The user agent names vic.
    let ua = registry.seen.lock().unwrap()[0]
        .headers
        .get("user-agent")
        .cloned()
        .unwrap_or_default();
    assert!(ua.starts_with("vic/"), "{ua}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_registries_need_a_trusted_certificate_or_consent() {
    let tmp = tempfile::tempdir().unwrap();
    let tls = TestTls::new(tmp.path());
    let img = Arc::new(fake_image());
    let i2 = img.clone();
    let registry = Server::start_tls(
        move |req| match req.path.as_str() {
            "/v2/" => Resp::new(200, "{}"),
            "/v2/team/app/manifests/v1" => Resp::new(200, i2.manifest.clone()),
            _ => Resp::new(404, ""),
        },
        &tls,
    )
    .await;
    let addr = registry.addr.to_string();
    let r = reference(&addr, "team/app:v1");

    // Trusted through the extra CA.
    let trusting = vic_registry::RegistryClient::new(vic_registry::RegistryConfig {
        ca_certificates_pem: vec![tls.ca_pem.clone()],
        ..Default::default()
    })
    .unwrap();
    let m = trusting
        .fetch_manifest(&r, None)
        .await
        .expect("HTTPS with the test CA");
    assert_eq!(m.digest, img.manifest_digest);

    // Unknown issuer: refused, and no fallback to plain HTTP.
    let e = client(&[]).fetch_manifest(&r, None).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

    // An insecure registry's certificate is not checked (as dockerd does).
    let m = client(&[&addr])
        .fetch_manifest(&r, None)
        .await
        .expect("insecure HTTPS");
    assert_eq!(m.digest, img.manifest_digest);
    assert_eq!(registry.count("/v2/team/app/manifests/v1"), 2);
}
