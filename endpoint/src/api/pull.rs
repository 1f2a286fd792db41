//! `POST /images/create` (pull) with Docker's JSON progress stream, and `POST /auth`.

use base64::Engine as _;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use vic_core::pull::{PullEvent, RegistryAuth};
use vic_core::{Engine, Error};

use crate::http::{MAX_JSON_BODY, Reply, channel_body, parse_json, query_get, read_body};

#[derive(Deserialize, Default)]
struct AuthConfig {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
    #[serde(default)]
    serveraddress: String,
}

impl AuthConfig {
    /// Credentials, from user and password or the `auth` field (`base64(user:pass)`).
    fn credentials(&self) -> Option<RegistryAuth> {
        if !self.username.is_empty() {
            return Some(RegistryAuth {
                username: self.username.clone(),
                password: self.password.clone(),
            });
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(self.auth.trim())
            .ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        Some(RegistryAuth {
            username: u.to_string(),
            password: p.to_string(),
        })
    }
}

/// Decodes the `X-Registry-Auth` header (base64url JSON; `e30=` is `{}`).
fn header_auth(req: &Request<Incoming>) -> Result<Option<RegistryAuth>, Error> {
    let Some(v) = req.headers().get("x-registry-auth") else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or_default().trim();
    if s.is_empty() {
        return Ok(None);
    }
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    let raw = URL_SAFE
        .decode(s)
        .or_else(|_| URL_SAFE_NO_PAD.decode(s))
        .or_else(|_| STANDARD.decode(s))
        .map_err(|_| Error::InvalidArgument("X-Registry-Auth is not base64".into()))?;
    let cfg: AuthConfig = serde_json::from_slice(&raw)
        .map_err(|e| Error::InvalidArgument(format!("X-Registry-Auth is not valid JSON: {e}")))?;
    Ok(cfg.credentials())
}

/// The reference a pull asks for, from `fromImage` and `tag`.
fn pull_reference(q: &[(String, String)]) -> Result<String, Error> {
    if query_get(q, "fromSrc").is_some_and(|s| !s.is_empty()) {
        return Err(Error::NotSupported(
            "vic does not support docker import (fromSrc)".into(),
        ));
    }
    let image = query_get(q, "fromImage").unwrap_or_default();
    if image.is_empty() {
        return Err(Error::InvalidArgument("fromImage must be given".into()));
    }
    let tag = query_get(q, "tag").unwrap_or_default();
    Ok(if tag.is_empty() {
        image.to_string()
    } else if tag.starts_with("sha256:") {
        format!("{image}@{tag}")
    } else {
        format!("{image}:{tag}")
    })
}

fn human(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", units[u])
    }
}

/// One event as a line of Docker's JSON message stream.
fn render(e: &PullEvent) -> Bytes {
    let mut v = json!({ "status": e.status });
    if let Some(id) = &e.id {
        v["id"] = json!(id);
    }
    match e.progress {
        Some((current, total)) => {
            v["progressDetail"] = json!({ "current": current, "total": total });
            let width = 50u64;
            let done = (current.min(total) * width)
                .checked_div(total)
                .unwrap_or(width);
            let bar = if done >= width {
                "=".repeat(width as usize)
            } else {
                format!(
                    "{}>{}",
                    "=".repeat(done as usize),
                    " ".repeat((width - done - 1) as usize)
                )
            };
            v["progress"] = json!(format!("[{bar}] {}/{}", human(current), human(total)));
        }
        None if e.id.is_some() => v["progressDetail"] = json!({}),
        None => {}
    }
    let mut b = v.to_string().into_bytes();
    b.extend_from_slice(b"\r\n");
    Bytes::from(b)
}

fn render_error(e: &Error) -> Bytes {
    let msg = e.to_string();
    let mut b = json!({ "errorDetail": { "message": msg }, "error": msg })
        .to_string()
        .into_bytes();
    b.extend_from_slice(b"\r\n");
    Bytes::from(b)
}

/// `POST /images/create`: pulls, streaming progress. Errors before the first progress
/// message answer with a plain Docker error and status, as dockerd does.
pub async fn create(engine: &Arc<Engine>, req: Request<Incoming>) -> Result<Reply, Error> {
    let q = crate::http::query_pairs(req.uri());
    let reference = pull_reference(&q)?;
    vic_core::reference::Reference::parse(&reference)?;
    let platform = query_get(&q, "platform")
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    let auth = match header_auth(&req)? {
        Some(a) => Some(a),
        None => engine.stored_auth(&reference).await?,
    };
    let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel();
    let engine = engine.clone();
    let mut job = tokio::spawn(async move {
        engine
            .pull(&reference, platform.as_deref(), auth.as_ref(), &etx)
            .await
    });
    // Wait for the first message or the end.
    let first = tokio::select! {
        e = erx.recv() => e,
        r = &mut job => {
            let r = r.map_err(|e| Error::Internal(format!("pull task failed: {e}")))?;
            r?;
            erx.recv().await
        }
    };
    let (tx, body) = channel_body(64);
    tokio::spawn(async move {
        if let Some(e) = first {
            let _ = tx.send(render(&e)).await;
        }
        // Forward the rest until the pull ends and its events are drained.
        while let Some(e) = erx.recv().await {
            let _ = tx.send(render(&e)).await;
        }
        match job.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                let _ = tx.send(render_error(&e)).await;
            }
            Err(e) => {
                let _ = tx
                    .send(render_error(&Error::Internal(format!(
                        "pull task failed: {e}"
                    ))))
                    .await;
            }
        }
    });
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// `POST /auth`: checks credentials against the registry and keeps them for the VCH.
pub async fn auth(engine: &Engine, req: Request<Incoming>) -> Result<Reply, Error> {
    let body = read_body(req.into_body(), MAX_JSON_BODY).await?;
    let cfg: AuthConfig = parse_json(&body)?;
    let creds = cfg
        .credentials()
        .ok_or_else(|| Error::InvalidArgument("username and password must be given".into()))?;
    let server = if cfg.serveraddress.is_empty() {
        "docker.io".to_string()
    } else {
        cfg.serveraddress.clone()
    };
    engine.login_and_store(&server, &creds).await?;
    Ok(crate::http::json(
        StatusCode::OK,
        &json!({ "Status": "Login Succeeded", "IdentityToken": "" }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_from_query() {
        let q = |a: &[(&str, &str)]| {
            a.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pull_reference(&q(&[("fromImage", "busybox"), ("tag", "latest")])).unwrap(),
            "busybox:latest"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            pull_reference(&q(&[("fromImage", "busybox"), ("tag", &d)])).unwrap(),
            format!("busybox@{d}")
        );
        assert!(pull_reference(&q(&[("fromSrc", "-")])).is_err());
    }

    #[test]
    fn renders_progress_like_dockerd() {
        let line = render(&PullEvent {
            id: Some("abc".into()),
            status: "Downloading".into(),
            progress: Some((50, 100)),
        });
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["progressDetail"]["current"], 50);
        assert_eq!(v["id"], "abc");
        assert!(v["progress"].as_str().unwrap().contains("50B/100B"));
    }
}
