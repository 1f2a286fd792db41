//! `GET /events`: the engine's events as Docker's JSON stream, with `since`, `until`
//! and the filters type, event, container, image and label.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::json;
use vic_core::model::Event;
use vic_core::{Engine, Error};

use super::filters::Filters;
use crate::http::{Reply, channel_body, query_get};

/// Parses Docker's event time: unix seconds with an optional fraction, or RFC 3339.
fn parse_time(s: &str) -> Result<u128, Error> {
    let bad = || Error::InvalidArgument(format!("invalid time {s:?}"));
    if let Some((secs, frac)) = s.split_once('.') {
        let secs: u128 = secs.parse().map_err(|_| bad())?;
        let digits: String = frac.chars().take(9).collect();
        let nanos: u128 = format!("{digits:0<9}").parse().map_err(|_| bad())?;
        return Ok(secs * 1_000_000_000 + nanos);
    }
    if let Ok(secs) = s.parse::<u128>() {
        return Ok(secs * 1_000_000_000);
    }
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .ok_or_else(bad)
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn matches(f: &Filters, e: &Event) -> bool {
    let attr = |k: &str| e.attributes.get(k).map(String::as_str).unwrap_or("");
    (!f.has("type") || f.get("type").contains(&e.kind))
        && (!f.has("event") || f.get("event").contains(&e.action))
        && (!f.has("container")
            || (e.kind == "container"
                && f.get("container")
                    .iter()
                    .any(|c| e.actor_id.starts_with(c.as_str()) || attr("name") == c)))
        && (!f.has("image")
            || f.get("image").iter().any(|i| {
                attr("image") == i || (e.kind == "image" && (e.actor_id == *i || attr("name") == i))
            }))
        && f.labels_match(&e.attributes)
}

fn render(e: &Event) -> Bytes {
    let mut v = json!({
        "Type": e.kind,
        "Action": e.action,
        "Actor": { "ID": e.actor_id, "Attributes": e.attributes },
        "scope": "local",
        "time": (e.time_nano / 1_000_000_000) as u64,
        "timeNano": e.time_nano as u64,
    });
    if e.kind == "container" || e.kind == "image" {
        v["status"] = json!(e.action);
        v["id"] = json!(e.actor_id);
        if let Some(image) = e.attributes.get("image") {
            v["from"] = json!(image);
        }
    }
    let mut b = v.to_string().into_bytes();
    b.push(b'\n');
    Bytes::from(b)
}

/// `GET /events`.
pub async fn events(engine: &Arc<Engine>, q: &[(String, String)]) -> Result<Reply, Error> {
    let f = Filters::parse(
        query_get(q, "filters"),
        &["type", "event", "container", "image", "label"],
    )?;
    let since = query_get(q, "since")
        .filter(|s| !s.is_empty())
        .map(parse_time)
        .transpose()?;
    let until = query_get(q, "until")
        .filter(|s| !s.is_empty())
        .map(parse_time)
        .transpose()?;
    let (past, mut live) = engine.events().subscribe();
    let (tx, body) = channel_body(64);
    tokio::spawn(async move {
        let in_range = |e: &Event| {
            since.is_none_or(|s| e.time_nano >= s) && until.is_none_or(|u| e.time_nano <= u)
        };
        if since.is_some() || until.is_some() {
            for e in past.iter().filter(|e| in_range(e) && matches(&f, e)) {
                if tx.send(render(e)).await.is_err() {
                    return;
                }
            }
        }
        loop {
            let wait = match until {
                Some(u) => {
                    let now = now_nanos();
                    if now >= u {
                        return;
                    }
                    Duration::from_nanos((u - now).min(u64::MAX as u128) as u64)
                }
                None => Duration::from_secs(3600),
            };
            match tokio::time::timeout(wait, live.recv()).await {
                Ok(Ok(e)) => {
                    if in_range(&e) && matches(&f, &e) && tx.send(render(&e)).await.is_err() {
                        return;
                    }
                }
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(_)) => return,
                // A quiet hour: check that the client is still there.
                Err(_) if until.is_none() => {
                    if tx.is_closed() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    let mut r = hyper::Response::new(body);
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("12").unwrap(), 12_000_000_000);
        assert_eq!(parse_time("12.5").unwrap(), 12_500_000_000);
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), 1_000_000_000);
        assert!(parse_time("soon").is_err());
    }
}
