//! Request and response plumbing: body types, JSON in and out, Docker-style errors.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use vic_core::Error;

/// The response body type of every handler: whole or streamed bytes.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A response as handlers return it.
pub type Reply = Response<Body>;

/// The largest JSON request body accepted (container create bodies are small).
pub const MAX_JSON_BODY: usize = 8 << 20;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

/// A response with `status`, a content type and a whole body.
pub fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// `value` as a JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    match serde_json::to_vec(value) {
        Ok(mut v) => {
            v.push(b'\n');
            reply(status, "application/json", v)
        }
        Err(e) => error_reply(&Error::Internal(format!("cannot render answer: {e}"))),
    }
}

/// A Docker-style error response: `{"message": …}` with the error's status.
pub fn error_reply(e: &Error) -> Reply {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({ "message": e.to_string() });
    let mut v = body.to_string().into_bytes();
    v.push(b'\n');
    reply(status, "application/json", v)
}

/// Reads a whole request body, refusing more than `limit` bytes.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, Error> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(Error::InvalidArgument(format!(
                    "request body is larger than {limit} bytes"
                )))
            } else {
                Err(Error::InvalidArgument(format!(
                    "cannot read request body: {e}"
                )))
            }
        }
    }
}

/// Parses a JSON request body; an empty body is an error, as dockerd answers it.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::InvalidArgument(
            "invalid JSON: request body is empty".into(),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| Error::InvalidArgument(format!("invalid JSON: {e}")))
}

/// A streamed body fed by the sender half: each `Bytes` sent is one chunk; the body
/// ends when every sender is dropped.
pub fn channel_body(capacity: usize) -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity);
    (tx, ChannelBody { rx }.boxed())
}

struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// A request body as a blocking [`std::io::Read`], for a blocking thread: a task copies
/// the body's frames into a bounded channel.
pub fn body_reader(body: Incoming) -> Box<dyn std::io::Read + Send> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(16);
    tokio::spawn(async move {
        let mut body = body;
        loop {
            match body.frame().await {
                None => break,
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data()
                        && tx.send(Ok(data)).await.is_err()
                    {
                        break;
                    }
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(std::io::Error::other(e))).await;
                    break;
                }
            }
        }
    });
    Box::new(ChannelReader {
        rx,
        current: Bytes::new(),
    })
}

struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

/// The query parameters of a request, percent-decoded, in order.
pub fn query_pairs(uri: &hyper::Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The last value of query parameter `key`.
pub fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_render_as_docker_does() {
        let r = error_reply(&Error::not_found("container", "web"));
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn malformed_json_is_a_bad_parameter() {
        let e = parse_json::<serde_json::Value>(b"{nope").unwrap_err();
        assert_eq!(e.http_status(), 400);
        assert!(e.to_string().starts_with("invalid JSON"));
        assert_eq!(
            parse_json::<serde_json::Value>(b"  ")
                .unwrap_err()
                .http_status(),
            400
        );
    }
}
