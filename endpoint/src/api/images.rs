//! `/images/...`: list, inspect, history, tag, remove, prune (pull and load in
//! [`super::pull`]).

use std::collections::BTreeMap;

use hyper::StatusCode;
use serde_json::{Value, json};
use vic_core::image_ops::{ImageView, RemovedImage};
use vic_core::reference::Reference;
use vic_core::{Engine, Error};

use super::filters::{Filters, glob};
use crate::http::{Reply, json, query_get};

/// Seconds since the epoch of an RFC 3339 time (0 when absent or unreadable).
pub fn unix_time(t: Option<&str>) -> i64 {
    t.and_then(|s| humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn bool_param(q: &[(String, String)], key: &str) -> bool {
    matches!(query_get(q, key), Some("1" | "true" | "True"))
}

fn labels(v: &ImageView) -> BTreeMap<String, String> {
    v.config
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
}

fn summary(v: &ImageView) -> Value {
    let l = labels(v);
    json!({
        "Containers": -1,
        "Created": unix_time(v.config.created.as_deref()),
        "Id": v.record.id,
        "Labels": if l.is_empty() { Value::Null } else { json!(l) },
        "ParentId": "",
        "RepoDigests": v.repo_digests,
        "RepoTags": v.repo_tags,
        "SharedSize": -1,
        "Size": v.record.size,
        "VirtualSize": v.record.size,
    })
}

/// `GET /images/json`.
pub async fn list(engine: &Engine, q: &[(String, String)]) -> Result<Reply, Error> {
    let f = Filters::parse(
        query_get(q, "filters"),
        &["reference", "dangling", "label", "before", "since"],
    )?;
    let dangling = f.bool("dangling")?;
    let created_of = |name: &String| {
        let name = name.clone();
        async move {
            let v = engine.inspect_image(&name).await?;
            Ok::<_, Error>(unix_time(v.config.created.as_deref()))
        }
    };
    let before = match f.get("before").first() {
        Some(n) => Some(created_of(n).await?),
        None => None,
    };
    let since = match f.get("since").first() {
        Some(n) => Some(created_of(n).await?),
        None => None,
    };
    let mut images = engine.list_images().await?;
    images.retain(|v| {
        let created = unix_time(v.config.created.as_deref());
        dangling.is_none_or(|d| d == v.repo_tags.is_empty())
            && f.labels_match(&labels(v))
            && before.is_none_or(|b| created < b)
            && since.is_none_or(|s| created > s)
            && (!f.has("reference")
                || f.get("reference").iter().any(|pat| {
                    v.repo_tags.iter().any(|t| {
                        let repo = t.rsplit_once(':').map(|(r, _)| r).unwrap_or(t);
                        glob(pat, t) || glob(pat, repo)
                    })
                }))
    });
    images.sort_by_key(|v| std::cmp::Reverse(unix_time(v.config.created.as_deref())));
    let out: Vec<Value> = images.iter().map(summary).collect();
    Ok(json(StatusCode::OK, &out))
}

/// `GET /images/{name}/json`.
pub async fn inspect(engine: &Engine, name: &str) -> Result<Reply, Error> {
    let v = engine.inspect_image(name).await?;
    let raw: Value = serde_json::from_str(&v.record.config)?;
    let config = raw.get("config").cloned().unwrap_or(Value::Null);
    Ok(json(
        StatusCode::OK,
        &json!({
            "Id": v.record.id,
            "RepoTags": v.repo_tags,
            "RepoDigests": v.repo_digests,
            "Parent": "",
            "Comment": raw.get("comment").cloned().unwrap_or(json!("")),
            "Created": v.config.created.clone().unwrap_or_default(),
            "Container": raw.get("container").cloned().unwrap_or(json!("")),
            "ContainerConfig": raw.get("container_config").cloned().unwrap_or(Value::Null),
            "DockerVersion": raw.get("docker_version").cloned().unwrap_or(json!("")),
            "Author": v.config.author.clone().unwrap_or_default(),
            "Config": config,
            "Architecture": v.config.architecture,
            "Variant": v.config.variant,
            "Os": v.config.os,
            "Size": v.record.size,
            "VirtualSize": v.record.size,
            "GraphDriver": {
                "Name": "vsphere",
                "Data": {
                    "Disk": v.record.layers.last().map(|l| engine.layer_disk_path(l)).unwrap_or_default(),
                    "Layers": v.record.layers.len().to_string(),
                }
            },
            "RootFS": { "Type": "layers", "Layers": v.config.rootfs.diff_ids },
            "Metadata": { "LastTagTime": "0001-01-01T00:00:00Z" },
        }),
    ))
}

/// `GET /images/{name}/history`.
pub async fn history(engine: &Engine, name: &str) -> Result<Reply, Error> {
    let v = engine.inspect_image(name).await?;
    let sizes = engine.layer_sizes(&v.record).await?;
    let mut layer = 0;
    let mut out = Vec::new();
    for h in &v.config.history {
        let size = if h.empty_layer.unwrap_or(false) {
            0
        } else {
            let s = sizes.get(layer).copied().unwrap_or(0);
            layer += 1;
            s
        };
        out.push(json!({
            "Id": "<missing>",
            "Created": unix_time(h.created.as_deref()),
            "CreatedBy": h.created_by.clone().unwrap_or_default(),
            "Tags": Value::Null,
            "Size": size,
            "Comment": h.comment.clone().unwrap_or_default(),
        }));
    }
    out.reverse();
    if let Some(top) = out.first_mut() {
        top["Id"] = json!(v.record.id);
        top["Tags"] = json!(v.repo_tags);
    } else {
        out.push(json!({
            "Id": v.record.id, "Created": unix_time(v.config.created.as_deref()),
            "CreatedBy": "", "Tags": v.repo_tags, "Size": v.record.size, "Comment": "",
        }));
    }
    Ok(json(StatusCode::OK, &out))
}

/// `POST /images/{name}/tag`.
pub async fn tag(engine: &Engine, name: &str, q: &[(String, String)]) -> Result<Reply, Error> {
    let repo = query_get(q, "repo").unwrap_or_default();
    if repo.is_empty() {
        return Err(Error::InvalidArgument(
            "repository name must be given (repo)".into(),
        ));
    }
    // Validate before anything changes.
    Reference::parse(repo)?;
    engine
        .tag_image(name, repo, query_get(q, "tag").unwrap_or_default())
        .await?;
    Ok(crate::http::reply(StatusCode::CREATED, "text/plain", ""))
}

fn render_removed(list: &[RemovedImage]) -> Vec<Value> {
    list.iter()
        .map(|r| match r {
            RemovedImage::Untagged(n) => json!({ "Untagged": n }),
            RemovedImage::Deleted(d) => json!({ "Deleted": d }),
        })
        .collect()
}

/// `DELETE /images/{name}`.
pub async fn remove(engine: &Engine, name: &str, q: &[(String, String)]) -> Result<Reply, Error> {
    let removed = engine
        .remove_image(name, bool_param(q, "force"), !bool_param(q, "noprune"))
        .await?;
    Ok(json(StatusCode::OK, &render_removed(&removed)))
}

/// `POST /images/prune`.
pub async fn prune(engine: &Engine, q: &[(String, String)]) -> Result<Reply, Error> {
    let f = Filters::parse(query_get(q, "filters"), &["dangling", "label", "until"])?;
    if f.has("label") || f.has("until") {
        return Err(Error::NotSupported(
            "vic does not support the label and until filters of image prune yet".into(),
        ));
    }
    let all = f.bool("dangling")? == Some(false);
    let (removed, reclaimed) = engine.prune_images(all).await?;
    let list = render_removed(&removed);
    Ok(json(
        StatusCode::OK,
        &json!({
            "ImagesDeleted": if list.is_empty() { Value::Null } else { json!(list) },
            "SpaceReclaimed": reclaimed,
        }),
    ))
}

/// `GET /images/{name}/get` and `GET /images/get?names=…`: `docker save`.
pub async fn save(
    engine: &std::sync::Arc<Engine>,
    name: Option<&str>,
    q: &[(String, String)],
) -> Result<Reply, Error> {
    let names: Vec<String> = match name {
        Some(n) => vec![n.to_string()],
        None => q
            .iter()
            .filter(|(k, _)| k == "names")
            .map(|(_, v)| v.clone())
            .collect(),
    };
    if names.is_empty() {
        return Err(Error::InvalidArgument("no image names given".into()));
    }
    let (chunks_tx, mut chunks_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let job = engine.save_images(&names, chunks_tx).await?;
    let (tx, body) = crate::http::channel_body(8);
    tokio::spawn(async move {
        while let Some(c) = chunks_rx.recv().await {
            if tx.send(bytes::Bytes::from(c)).await.is_err() {
                break;
            }
        }
        match job.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "docker save failed part way"),
            Err(e) => tracing::warn!(error = %e, "docker save task failed"),
        }
    });
    let mut r = hyper::Response::new(body);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-tar"),
    );
    Ok(r)
}

/// `POST /images/load`: `docker load`.
pub async fn load(
    engine: &std::sync::Arc<Engine>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<Reply, Error> {
    // No progress is reported, so `quiet` changes nothing.
    let reader = crate::http::body_reader(req.into_body());
    let loaded = engine.load_images(reader).await?;
    let mut out = Vec::new();
    for line in loaded {
        let v = json!({ "stream": format!("{line}\n") });
        out.extend_from_slice(v.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    Ok(crate::http::reply(StatusCode::OK, "application/json", out))
}
