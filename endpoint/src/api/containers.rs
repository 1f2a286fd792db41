//! `/containers/...`: parses Docker's container requests into engine calls.

use std::collections::BTreeMap;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{Map, Value, json};
use vic_core::engine::CreateContainer;
use vic_core::model::{ContainerConfig, HostConfig, PortBinding, RestartPolicy};
use vic_core::{Engine, Error};

use crate::http::{MAX_JSON_BODY, Reply, parse_json, query_get, query_pairs, read_body};

type Obj = Map<String, Value>;

fn type_error(key: &str, want: &str) -> Error {
    Error::InvalidArgument(format!("invalid JSON: {key} must be {want}"))
}

/// A string field; missing or null is empty.
fn get_str(o: &Obj, key: &str) -> Result<String, Error> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(type_error(key, "a string")),
    }
}

fn get_bool(o: &Obj, key: &str) -> Result<bool, Error> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(type_error(key, "a boolean")),
    }
}

fn get_u64(o: &Obj, key: &str) -> Result<u64, Error> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| type_error(key, "a non-negative integer")),
    }
}

/// A list of strings; a single string is a one-element list (as `Cmd` may be sent).
fn get_strs(o: &Obj, key: &str) -> Result<Vec<String>, Error> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| type_error(key, "a list of strings"))
            })
            .collect(),
        Some(_) => Err(type_error(key, "a list of strings")),
    }
}

fn get_obj<'a>(o: &'a Obj, key: &str) -> Result<Option<&'a Obj>, Error> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(type_error(key, "an object")),
    }
}

fn get_labels(o: &Obj, key: &str) -> Result<BTreeMap<String, String>, Error> {
    let Some(m) = get_obj(o, key)? else {
        return Ok(BTreeMap::new());
    };
    m.iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|s| (k.clone(), s.to_string()))
                .ok_or_else(|| type_error(key, "a map of strings"))
        })
        .collect()
}

/// True when a JSON value is what the docker CLI sends for "not set".
fn is_unset(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_unset),
    }
}

/// HostConfig options that a container VM cannot honour, with the CLI flag to name.
const UNSUPPORTED_HOST: &[(&str, &str)] = &[
    ("Privileged", "--privileged"),
    ("CapAdd", "--cap-add"),
    ("CapDrop", "--cap-drop"),
    ("Devices", "--device"),
    ("DeviceRequests", "--gpus"),
    ("DeviceCgroupRules", "--device-cgroup-rule"),
    ("PidMode", "--pid"),
    ("UTSMode", "--uts"),
    ("UsernsMode", "--userns"),
    ("CgroupParent", "--cgroup-parent"),
    ("VolumesFrom", "--volumes-from"),
    ("VolumeDriver", "--volume-driver"),
    ("SecurityOpt", "--security-opt"),
    ("Sysctls", "--sysctl"),
    ("CpusetCpus", "--cpuset-cpus"),
    ("CpusetMems", "--cpuset-mems"),
    ("BlkioWeight", "--blkio-weight"),
    ("BlkioWeightDevice", "--blkio-weight-device"),
    ("BlkioDeviceReadBps", "--device-read-bps"),
    ("BlkioDeviceWriteBps", "--device-write-bps"),
    ("BlkioDeviceReadIOps", "--device-read-iops"),
    ("BlkioDeviceWriteIOps", "--device-write-iops"),
    ("Ulimits", "--ulimit"),
    ("OomKillDisable", "--oom-kill-disable"),
    ("PidsLimit", "--pids-limit"),
    ("ReadonlyRootfs", "--read-only"),
    ("Tmpfs", "--tmpfs"),
    ("Mounts", "--mount"),
    ("GroupAdd", "--group-add"),
    ("Links", "--link"),
    ("Isolation", "--isolation"),
    ("Init", "--init"),
];

const UNSUPPORTED_CONFIG: &[(&str, &str)] = &[
    ("Healthcheck", "--health-cmd"),
    ("MacAddress", "--mac-address"),
    ("OnBuild", "ONBUILD"),
];

fn check_unsupported(o: &Obj, table: &[(&str, &str)]) -> Result<(), Error> {
    for (key, flag) in table {
        if let Some(v) = o.get(*key)
            && !is_unset(v)
        {
            return Err(Error::InvalidArgument(format!(
                "vic does not support {flag} ({key}) on container VMs"
            )));
        }
    }
    Ok(())
}

fn parse_restart_policy(hc: &Obj) -> Result<RestartPolicy, Error> {
    let Some(rp) = get_obj(hc, "RestartPolicy")? else {
        return Ok(RestartPolicy::No);
    };
    let name = get_str(rp, "Name")?;
    let max = get_u64(rp, "MaximumRetryCount")?;
    let policy = match name.as_str() {
        "" | "no" => RestartPolicy::No,
        "always" => RestartPolicy::Always,
        "unless-stopped" => RestartPolicy::UnlessStopped,
        "on-failure" => RestartPolicy::OnFailure {
            max_retries: u32::try_from(max)
                .map_err(|_| Error::InvalidArgument("MaximumRetryCount is too large".into()))?,
        },
        other => {
            return Err(Error::InvalidArgument(format!(
                "invalid restart policy '{other}'"
            )));
        }
    };
    if max > 0 && !matches!(policy, RestartPolicy::OnFailure { .. }) {
        return Err(Error::InvalidArgument(
            "maximum retry count cannot be used with restart policy 'always'".into(),
        ));
    }
    Ok(policy)
}

/// Parses `"80/tcp"` into port and protocol.
fn parse_port_proto(s: &str) -> Result<(u16, String), Error> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Error::InvalidArgument(format!("invalid port specification: {s:?}")))?;
    if !matches!(proto, "tcp" | "udp" | "sctp") {
        return Err(Error::InvalidArgument(format!(
            "invalid proto: {proto:?} in {s:?}"
        )));
    }
    Ok((port, proto.to_string()))
}

fn parse_port_bindings(hc: &Obj) -> Result<Vec<PortBinding>, Error> {
    let Some(m) = get_obj(hc, "PortBindings")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (spec, binds) in m {
        let (container_port, protocol) = parse_port_proto(spec)?;
        let binds = match binds {
            Value::Null => continue,
            Value::Array(a) => a,
            _ => return Err(type_error("PortBindings", "a map of lists")),
        };
        for b in binds {
            let b = b
                .as_object()
                .ok_or_else(|| type_error("PortBindings", "a map of lists of objects"))?;
            let host_ip = get_str(b, "HostIp")?;
            let host_port = get_str(b, "HostPort")?;
            let host_port = if host_port.is_empty() {
                0
            } else {
                host_port.parse::<u16>().map_err(|_| {
                    Error::InvalidArgument(format!("invalid host port {host_port:?}"))
                })?
            };
            if !host_ip.is_empty() && host_ip.parse::<std::net::IpAddr>().is_err() {
                return Err(Error::InvalidArgument(format!(
                    "invalid host IP {host_ip:?}"
                )));
            }
            out.push(PortBinding {
                container_port,
                protocol: protocol.clone(),
                host_ip,
                host_port,
            });
        }
    }
    Ok(out)
}

/// Parses a `POST /containers/create` body into the engine's request.
pub fn parse_create(body: &[u8], name: Option<&str>) -> Result<CreateContainer, Error> {
    let v: Value = parse_json(body)?;
    let o = v
        .as_object()
        .ok_or_else(|| Error::InvalidArgument("invalid JSON: body must be an object".into()))?;
    check_unsupported(o, UNSUPPORTED_CONFIG)?;
    let image = get_str(o, "Image")?;
    if image.is_empty() {
        return Err(Error::InvalidArgument(
            "config error: no image given (Image is empty)".into(),
        ));
    }
    let exposed_ports = match get_obj(o, "ExposedPorts")? {
        Some(m) => m
            .keys()
            .map(|k| parse_port_proto(k).map(|(p, proto)| format!("{p}/{proto}")))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let stop_signal = Some(get_str(o, "StopSignal")?).filter(|s| !s.is_empty());
    let stop_timeout = match o.get("StopTimeout") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| type_error("StopTimeout", "a non-negative integer"))?,
        ),
    };
    let config = ContainerConfig {
        hostname: get_str(o, "Hostname")?,
        domainname: get_str(o, "Domainname")?,
        user: get_str(o, "User")?,
        env: get_strs(o, "Env")?,
        cmd: get_strs(o, "Cmd")?,
        entrypoint: get_strs(o, "Entrypoint")?,
        working_dir: get_str(o, "WorkingDir")?,
        tty: get_bool(o, "Tty")?,
        open_stdin: get_bool(o, "OpenStdin")?,
        stdin_once: get_bool(o, "StdinOnce")?,
        labels: get_labels(o, "Labels")?,
        exposed_ports,
        stop_signal,
        stop_timeout,
    };
    for e in &config.env {
        if e.is_empty() || e.starts_with('=') {
            return Err(Error::InvalidArgument(format!(
                "invalid environment variable: {e:?}"
            )));
        }
    }
    let empty = Obj::new();
    let hc = get_obj(o, "HostConfig")?.unwrap_or(&empty);
    check_unsupported(hc, UNSUPPORTED_HOST)?;
    let network_mode = get_str(hc, "NetworkMode")?;
    if network_mode == "host" || network_mode.starts_with("container:") {
        return Err(Error::InvalidArgument(format!(
            "vic does not support --network={network_mode}: each container is its own VM"
        )));
    }
    if let Some(lc) = get_obj(hc, "LogConfig")? {
        let t = get_str(lc, "Type")?;
        if !matches!(t.as_str(), "" | "json-file") {
            return Err(Error::InvalidArgument(format!(
                "vic does not support --log-driver={t}; container logs go to the VM's serial port"
            )));
        }
    }
    let runtime = get_str(hc, "Runtime")?;
    if !matches!(runtime.as_str(), "" | "runc") {
        return Err(Error::InvalidArgument(format!(
            "vic does not support --runtime={runtime}"
        )));
    }
    let memory = match hc.get("Memory") {
        Some(v) if v.as_i64().is_some_and(|n| n < 0) => {
            return Err(Error::InvalidArgument(
                "invalid memory limit: must be positive".into(),
            ));
        }
        _ => get_u64(hc, "Memory")?,
    };
    if memory != 0 && memory < 6 * 1024 * 1024 {
        return Err(Error::InvalidArgument(
            "Minimum memory limit allowed is 6MB".into(),
        ));
    }
    let host_config = HostConfig {
        memory,
        nano_cpus: get_u64(hc, "NanoCpus")?,
        port_bindings: parse_port_bindings(hc)?,
        restart_policy: parse_restart_policy(hc)?,
        auto_remove: get_bool(hc, "AutoRemove")?,
        binds: get_strs(hc, "Binds")?,
        network_mode,
    };
    if host_config.auto_remove && host_config.restart_policy != RestartPolicy::No {
        return Err(Error::Conflict(
            "Conflicting options: --restart and --rm".into(),
        ));
    }
    Ok(CreateContainer {
        name: name.filter(|n| !n.is_empty()).map(str::to_string),
        image,
        config,
        host_config,
    })
}

/// `POST /containers/create`.
pub async fn create(engine: &Engine, req: Request<Incoming>) -> Result<Reply, Error> {
    let query = query_pairs(req.uri());
    let name = query_get(&query, "name").map(str::to_string);
    if let Some(p) = query_get(&query, "platform")
        && !p.is_empty()
        && p != "linux"
        && !p.starts_with("linux/")
    {
        return Err(Error::InvalidArgument(format!(
            "vic runs linux containers only, not {p:?}"
        )));
    }
    let body = read_body(req.into_body(), MAX_JSON_BODY).await?;
    let request = parse_create(&body, name.as_deref())?;
    let id = engine.create_container(request).await?;
    Ok(crate::http::json(
        StatusCode::CREATED,
        &json!({ "Id": id, "Warnings": [] }),
    ))
}

fn unix_of(t: &str) -> i64 {
    super::images::unix_time(Some(t))
}

fn command_line(c: &vic_core::model::Container) -> String {
    c.config
        .entrypoint
        .iter()
        .chain(&c.config.cmd)
        .cloned()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Docker's human status line ("Created", "Up", "Exited (3)").
/// How long ago, in the words `docker ps` uses ("Less than a second", "About a
/// minute", "3 hours", …).
fn human_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let mins = secs / 60;
    let hours = (d.as_secs_f64() / 3600.0 + 0.5) as u64;
    match () {
        _ if secs < 1 => "Less than a second".into(),
        _ if secs == 1 => "1 second".into(),
        _ if secs < 60 => format!("{secs} seconds"),
        _ if mins == 1 => "About a minute".into(),
        _ if mins < 60 => format!("{mins} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 14 => format!("{} days", hours / 24),
        _ if hours < 24 * 60 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 730 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    }
}

/// The time since an RFC 3339 instant, if it parses and is past.
fn since(t: Option<&String>) -> Option<std::time::Duration> {
    let t = humantime::parse_rfc3339_weak(t?).ok()?;
    std::time::SystemTime::now().duration_since(t).ok()
}

fn status_line(c: &vic_core::model::Container) -> String {
    use vic_core::model::ContainerStatus::*;
    let ago = |t: Option<&String>| {
        since(t)
            .map(|d| format!(" {} ago", human_duration(d)))
            .unwrap_or_default()
    };
    let up = since(c.state.started_at.as_ref())
        .map(|d| format!(" {}", human_duration(d)))
        .unwrap_or_default();
    match c.state.status {
        Created => "Created".into(),
        Running => format!("Up{up}"),
        Paused => format!("Up{up} (Paused)"),
        Restarting => format!(
            "Restarting ({}){}",
            c.state.exit_code,
            ago(c.state.finished_at.as_ref())
        ),
        Removing => "Removal In Progress".into(),
        Exited => format!(
            "Exited ({}){}",
            c.state.exit_code,
            ago(c.state.finished_at.as_ref())
        ),
        Dead => "Dead".into(),
    }
}

fn ports_json(c: &vic_core::model::Container) -> Vec<Value> {
    c.host_config
        .port_bindings
        .iter()
        .map(|p| {
            json!({
                "PrivatePort": p.container_port,
                "PublicPort": p.host_port,
                "IP": if p.host_ip.is_empty() { "0.0.0.0" } else { p.host_ip.as_str() },
                "Type": p.protocol,
            })
        })
        .collect()
}

/// `GET /containers/json`.
pub async fn list(engine: &Engine, q: &[(String, String)]) -> Result<Reply, Error> {
    use super::filters::Filters;
    let all = matches!(query_get(q, "all"), Some("1" | "true" | "True"));
    let f = Filters::parse(
        query_get(q, "filters"),
        &[
            "id", "name", "label", "status", "exited", "ancestor", "before", "since",
        ],
    )?;
    for s in f.get("status") {
        if !matches!(
            s.as_str(),
            "created" | "restarting" | "running" | "removing" | "paused" | "exited" | "dead"
        ) {
            return Err(Error::InvalidArgument(format!(
                "invalid filter 'status={s}'"
            )));
        }
    }
    let mut views = engine.containers().await?;
    views.sort_by(|a, b| b.container.created.cmp(&a.container.created));
    let created_of = |key: &String| {
        views
            .iter()
            .find(|v| v.container.id.starts_with(key.as_str()) || v.container.name == *key)
            .map(|v| v.container.created.clone())
    };
    let before = match f.get("before").first() {
        Some(k) => Some(created_of(k).ok_or_else(|| Error::not_found("container", k.clone()))?),
        None => None,
    };
    let since = match f.get("since").first() {
        Some(k) => Some(created_of(k).ok_or_else(|| Error::not_found("container", k.clone()))?),
        None => None,
    };
    let mut ancestors = Vec::new();
    for a in f.get("ancestor") {
        ancestors.push(engine.resolve_image(a).await.ok());
    }
    let out: Vec<Value> = views
        .iter()
        .map(|v| &v.container)
        .filter(|c| {
            let status = c.state.status.as_str();
            (all || f.has("status") || f.has("exited") || status == "running")
                && (!f.has("id") || f.get("id").iter().any(|p| c.id.starts_with(p.as_str())))
                && (!f.has("name") || f.get("name").iter().any(|p| c.name.contains(p.trim_start_matches('/'))))
                && f.labels_match(&c.config.labels)
                && (!f.has("status") || f.get("status").iter().any(|s| s == status))
                && (!f.has("exited")
                    || (status == "exited"
                        && f.get("exited").iter().any(|e| e.parse::<i32>().ok() == Some(c.state.exit_code))))
                && (ancestors.is_empty() || ancestors.iter().flatten().any(|id| *id == c.image_id))
                && before.as_ref().is_none_or(|b| c.created < *b)
                && since.as_ref().is_none_or(|s| c.created > *s)
        })
        .map(|c| {
            json!({
                "Id": c.id,
                "Names": [format!("/{}", c.name)],
                "Image": c.image,
                "ImageID": c.image_id,
                "Command": command_line(c),
                "Created": unix_of(&c.created),
                "Ports": ports_json(c),
                "Labels": c.config.labels,
                "State": c.state.status.as_str(),
                "Status": status_line(c),
                "HostConfig": { "NetworkMode": if c.host_config.network_mode.is_empty() { "default" } else { c.host_config.network_mode.as_str() } },
                "NetworkSettings": { "Networks": {} },
                "Mounts": [],
            })
        })
        .collect();
    Ok(crate::http::json(StatusCode::OK, &out))
}

/// `GET /containers/{id}/json`.
pub async fn inspect(engine: &Engine, key: &str) -> Result<Reply, Error> {
    let v = engine.container(key).await?;
    let c = &v.container;
    let (path, args) = {
        let mut all = c.config.entrypoint.iter().chain(&c.config.cmd).cloned();
        (all.next().unwrap_or_default(), all.collect::<Vec<_>>())
    };
    let status = c.state.status.as_str();
    let zero = "0001-01-01T00:00:00Z".to_string();
    let exposed: BTreeMap<&String, Value> = c
        .config
        .exposed_ports
        .iter()
        .map(|p| (p, json!({})))
        .collect();
    let mut bindings: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in &c.host_config.port_bindings {
        bindings
            .entry(format!("{}/{}", p.container_port, p.protocol))
            .or_default()
            .push(json!({ "HostIp": p.host_ip, "HostPort": if p.host_port == 0 { String::new() } else { p.host_port.to_string() } }));
    }
    let restart = match &c.host_config.restart_policy {
        RestartPolicy::No => json!({ "Name": "no", "MaximumRetryCount": 0 }),
        RestartPolicy::Always => json!({ "Name": "always", "MaximumRetryCount": 0 }),
        RestartPolicy::UnlessStopped => json!({ "Name": "unless-stopped", "MaximumRetryCount": 0 }),
        RestartPolicy::OnFailure { max_retries } => {
            json!({ "Name": "on-failure", "MaximumRetryCount": max_retries })
        }
    };
    Ok(crate::http::json(
        StatusCode::OK,
        &json!({
            "Id": c.id,
            "Created": c.created,
            "Path": path,
            "Args": args,
            "State": {
                "Status": status,
                "Running": status == "running",
                "Paused": status == "paused",
                "Restarting": status == "restarting",
                "OOMKilled": false,
                "Dead": status == "dead",
                "Pid": c.state.pid,
                "ExitCode": c.state.exit_code,
                "Error": c.state.error,
                "StartedAt": c.state.started_at.clone().unwrap_or_else(|| zero.clone()),
                "FinishedAt": c.state.finished_at.clone().unwrap_or_else(|| zero.clone()),
            },
            "Image": c.image_id,
            "ResolvConfPath": "",
            "HostnamePath": "",
            "HostsPath": "",
            "LogPath": v.vm.files.join("output.log").to_string(),
            "Name": format!("/{}", c.name),
            "RestartCount": c.state.restart_count,
            "Driver": "vsphere",
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": null,
            "HostConfig": {
                "Binds": c.host_config.binds,
                "NetworkMode": if c.host_config.network_mode.is_empty() { "default" } else { c.host_config.network_mode.as_str() },
                "PortBindings": bindings,
                "RestartPolicy": restart,
                "AutoRemove": c.host_config.auto_remove,
                "Memory": v.vm.memory_mb * 1024 * 1024,
                "NanoCpus": c.host_config.nano_cpus,
                "LogConfig": { "Type": "json-file", "Config": {} },
            },
            "GraphDriver": { "Name": "vsphere", "Data": { "Disk": v.vm.files.join(format!("{}.vmdk", c.id)).to_string() } },
            "Mounts": [],
            "Config": {
                "Hostname": c.config.hostname,
                "Domainname": c.config.domainname,
                "User": c.config.user,
                "AttachStdin": false,
                "AttachStdout": false,
                "AttachStderr": false,
                "ExposedPorts": exposed,
                "Tty": c.config.tty,
                "OpenStdin": c.config.open_stdin,
                "StdinOnce": c.config.stdin_once,
                "Env": c.config.env,
                "Cmd": c.config.cmd,
                "Image": c.image,
                "Volumes": null,
                "WorkingDir": c.config.working_dir,
                "Entrypoint": if c.config.entrypoint.is_empty() { Value::Null } else { json!(c.config.entrypoint) },
                "OnBuild": null,
                "Labels": c.config.labels,
                "StopSignal": c.config.stop_signal,
                "StopTimeout": c.config.stop_timeout,
            },
            "NetworkSettings": { "Networks": {}, "Ports": {} },
            "VM": { "Reference": v.vm.reference.to_string(), "Name": v.vm.name, "PowerState": v.vm.power_state },
        }),
    ))
}

/// `DELETE /containers/{id}`.
pub async fn remove(engine: &Engine, key: &str, q: &[(String, String)]) -> Result<Reply, Error> {
    if matches!(query_get(q, "link"), Some("1" | "true")) {
        return Err(Error::NotSupported(
            "vic does not support container links".into(),
        ));
    }
    let force = matches!(query_get(q, "force"), Some("1" | "true" | "True"));
    engine.remove_container(key, force).await?;
    Ok(crate::http::reply(StatusCode::NO_CONTENT, "text/plain", ""))
}

/// `POST /containers/prune`: removes every container that does not run.
pub async fn prune(engine: &Engine, q: &[(String, String)]) -> Result<Reply, Error> {
    let f = super::filters::Filters::parse(query_get(q, "filters"), &["label", "until"])?;
    if f.has("until") {
        return Err(Error::NotSupported(
            "vic does not support the until filter of container prune yet".into(),
        ));
    }
    let mut deleted = Vec::new();
    for v in engine.containers().await? {
        if v.vm.power_state != vic_core::provider::PowerState::PoweredOff
            || !f.labels_match(&v.container.config.labels)
        {
            continue;
        }
        engine.remove_container(&v.container.id, false).await?;
        deleted.push(v.container.id);
    }
    Ok(crate::http::json(
        StatusCode::OK,
        &json!({
            "ContainersDeleted": if deleted.is_empty() { Value::Null } else { json!(deleted) },
            "SpaceReclaimed": 0,
        }),
    ))
}

/// `POST /containers/{id}/start`: 204, or 304 when it already runs.
pub async fn start(engine: &Engine, key: &str) -> Result<Reply, Error> {
    let status = if engine.start_container(key).await? {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_MODIFIED
    };
    Ok(crate::http::reply(status, "text/plain", ""))
}

fn stop_timeout(q: &[(String, String)]) -> Result<Option<i64>, Error> {
    match query_get(q, "t").filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => t
            .parse()
            .map(Some)
            .map_err(|_| Error::InvalidArgument(format!("invalid stop timeout t={t:?}"))),
    }
}

/// `POST /containers/{id}/stop?t=N`: 204, or 304 when it was not running. The guest
/// gets its stop signal; its VM is powered off after `t` seconds (default: the
/// container's stop timeout, else 10; -1: wait for ever).
pub async fn stop(engine: &Engine, key: &str, q: &[(String, String)]) -> Result<Reply, Error> {
    let status = if engine.stop_container(key, stop_timeout(q)?).await? {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_MODIFIED
    };
    Ok(crate::http::reply(status, "text/plain", ""))
}

/// `POST /containers/{id}/restart?t=N`.
pub async fn restart(engine: &Engine, key: &str, q: &[(String, String)]) -> Result<Reply, Error> {
    engine.restart_container(key, stop_timeout(q)?).await?;
    Ok(crate::http::reply(StatusCode::NO_CONTENT, "text/plain", ""))
}

/// `POST /containers/{id}/kill?signal=S` (default SIGKILL).
pub async fn kill(engine: &Engine, key: &str, q: &[(String, String)]) -> Result<Reply, Error> {
    engine.kill_container(key, query_get(q, "signal")).await?;
    Ok(crate::http::reply(StatusCode::NO_CONTENT, "text/plain", ""))
}

/// `POST /containers/{id}/resize?h=ROWS&w=COLS`.
pub async fn resize(engine: &Engine, key: &str, q: &[(String, String)]) -> Result<Reply, Error> {
    let dim = |k: &str| -> Result<u16, Error> {
        let v = query_get(q, k).unwrap_or_default();
        v.parse()
            .map_err(|_| Error::InvalidArgument(format!("invalid {k}={v:?}: a number 0..65535")))
    };
    let (h, w) = (dim("h")?, dim("w")?);
    engine.resize_container(key, h, w).await?;
    Ok(crate::http::reply(StatusCode::OK, "text/plain", ""))
}

/// `POST /containers/{id}/wait` (conditions `not-running`, `next-exit`, `removed`).
pub async fn wait(
    engine: &std::sync::Arc<Engine>,
    key: &str,
    q: &[(String, String)],
) -> Result<Reply, Error> {
    use vic_core::containers::WaitCondition;
    let condition = match query_get(q, "condition").unwrap_or("not-running") {
        "" | "not-running" => WaitCondition::NotRunning,
        "next-exit" => WaitCondition::NextExit,
        "removed" => WaitCondition::Removed,
        other => {
            return Err(Error::InvalidArgument(format!(
                "invalid condition: {other:?}"
            )));
        }
    };
    // As dockerd: check the container now, answer the headers at once (clients wait
    // for them before starting the container), and send the body when it ends.
    let id = engine.container(key).await?.container.id;
    let (tx, body) = crate::http::channel_body(1);
    let engine = engine.clone();
    tokio::spawn(async move {
        let v = match engine.wait_container(&id, condition).await {
            Ok(code) => json!({ "StatusCode": code, "Error": null }),
            Err(e) => json!({ "StatusCode": -1, "Error": { "Message": e.to_string() } }),
        };
        let mut b = v.to_string().into_bytes();
        b.push(b'\n');
        let _ = tx.send(bytes::Bytes::from(b)).await;
    });
    let mut r = hyper::Response::new(body);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// What `docker logs` asked for.
#[derive(Clone, Copy, Debug)]
struct LogFilter {
    stdout: bool,
    stderr: bool,
    timestamps: bool,
    since: Option<u64>,
    until: Option<u64>,
    tty: bool,
}

impl LogFilter {
    fn keeps(&self, r: &vic_tether::logs::Record) -> bool {
        use vic_tether::logs::Stream;
        (match r.stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        }) && self.since.is_none_or(|s| r.nanos >= s)
            && self.until.is_none_or(|u| r.nanos <= u)
    }

    /// A record as the client gets it (see [`super::attach::client_bytes`]).
    fn render(&self, r: &vic_tether::logs::Record, body: &mut Vec<u8>) {
        let mut data = Vec::new();
        if self.timestamps {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(r.nanos);
            data.extend_from_slice(humantime::format_rfc3339_nanos(t).to_string().as_bytes());
            data.push(b' ');
        }
        data.extend_from_slice(&r.data);
        super::attach::client_bytes(self.tty, r.stream, &data, body);
    }
}

/// Decodes the whole records at the start of `buf`; returns them and the bytes used.
fn decode_records(buf: &[u8], id: &str) -> Result<(Vec<vic_tether::logs::Record>, usize), Error> {
    let mut used = 0;
    let mut out = Vec::new();
    while let Some((r, n)) = vic_tether::logs::Record::decode(&buf[used..])
        .map_err(|e| Error::Internal(format!("unreadable log of {id}: {e}")))?
    {
        used += n;
        out.push(r);
    }
    Ok((out, used))
}

/// How often `docker logs -f` looks for new output.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// `GET /containers/{id}/logs` (follow, stdout, stderr, timestamps, tail, since,
/// until); the multiplexed stream framing without a TTY, raw with one. Following ends
/// when the container has stopped and its log is read to the end.
pub async fn logs(
    engine: &std::sync::Arc<Engine>,
    key: &str,
    q: &[(String, String)],
) -> Result<Reply, Error> {
    let flag = |k: &str| matches!(query_get(q, k), Some("1" | "true" | "True"));
    let (out, err, stamps, follow) = (
        flag("stdout"),
        flag("stderr"),
        flag("timestamps"),
        flag("follow"),
    );
    if !out && !err {
        return Err(Error::InvalidArgument(
            "Bad parameters: you must choose at least one stream".into(),
        ));
    }
    let time = |k: &str| -> Result<Option<u64>, Error> {
        match query_get(q, k).filter(|v| !v.is_empty() && *v != "0") {
            None => Ok(None),
            Some(v) => {
                let secs: f64 = v
                    .parse()
                    .map_err(|_| Error::InvalidArgument(format!("invalid {k} {v:?}")))?;
                Ok(Some((secs * 1e9) as u64))
            }
        }
    };
    let (since, until) = (time("since")?, time("until")?);
    let tail = match query_get(q, "tail").filter(|t| *t != "all" && !t.is_empty()) {
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| Error::InvalidArgument(format!("invalid tail {n:?}")))?,
        ),
        None => None,
    };
    let (view, bytes) = engine.container_log_bytes(key, 0).await?;
    let id = view.container.id.clone();
    let filter = LogFilter {
        stdout: out,
        stderr: err,
        timestamps: stamps,
        since,
        until,
        tty: view.container.config.tty,
    };
    let (records, used) = decode_records(&bytes, &id)?;
    let mut kept: Vec<_> = records.into_iter().filter(|r| filter.keeps(r)).collect();
    if let Some(n) = tail {
        let skip = kept.len().saturating_sub(n);
        kept.drain(..skip);
    }
    let mut body = Vec::new();
    for r in &kept {
        filter.render(r, &mut body);
    }
    let ct = if filter.tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    if !follow {
        return Ok(crate::http::reply(StatusCode::OK, ct, body));
    }
    let (tx, stream) = crate::http::channel_body(16);
    let engine = engine.clone();
    let mut offset = used as u64;
    let mut rest = bytes[used..].to_vec();
    tokio::spawn(async move {
        if !body.is_empty() && tx.send(bytes::Bytes::from(body)).await.is_err() {
            return;
        }
        loop {
            let Ok((view, more)) = engine
                .container_log_bytes(&id, offset + rest.len() as u64)
                .await
            else {
                return;
            };
            let running = view.vm.power_state != vic_core::provider::PowerState::PoweredOff;
            rest.extend_from_slice(&more);
            let Ok((records, n)) = decode_records(&rest, &id) else {
                return;
            };
            rest.drain(..n);
            offset += n as u64;
            let mut chunk = Vec::new();
            for r in records.iter().filter(|r| filter.keeps(r)) {
                filter.render(r, &mut chunk);
            }
            if !chunk.is_empty() && tx.send(bytes::Bytes::from(chunk)).await.is_err() {
                return;
            }
            if !running && more.is_empty() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_POLL) => {}
                () = tx.closed() => return,
            }
        }
    });
    let mut r = hyper::Response::new(stream);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ct),
    );
    Ok(r)
}

/// `POST /containers/{id}/rename`.
pub async fn rename(engine: &Engine, key: &str, q: &[(String, String)]) -> Result<Reply, Error> {
    let name = query_get(q, "name").unwrap_or_default();
    engine.rename_container(key, name).await?;
    Ok(crate::http::reply(StatusCode::NO_CONTENT, "text/plain", ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_docker_ps_writes_them() {
        let d = std::time::Duration::from_secs;
        assert_eq!(
            human_duration(std::time::Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(d(1)), "1 second");
        assert_eq!(human_duration(d(42)), "42 seconds");
        assert_eq!(human_duration(d(61)), "About a minute");
        assert_eq!(human_duration(d(300)), "5 minutes");
        assert_eq!(human_duration(d(3600)), "About an hour");
        assert_eq!(human_duration(d(5 * 3600)), "5 hours");
        assert_eq!(human_duration(d(3 * 86400)), "3 days");
        assert_eq!(human_duration(d(21 * 86400)), "3 weeks");
        assert_eq!(human_duration(d(90 * 86400)), "3 months");
        assert_eq!(human_duration(d(800 * 86400)), "2 years");
    }

    #[test]
    fn parses_what_the_cli_sends() {
        let body = br#"{"Hostname":"","Env":null,"Cmd":["echo","hi"],"Image":"busybox",
            "Entrypoint":null,"Labels":{"a":"b"},"ExposedPorts":{"80/tcp":{}},
            "HostConfig":{"Privileged":false,"CapAdd":null,"NetworkMode":"default",
            "PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"8080"}]},
            "RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3},
            "LogConfig":{"Type":"","Config":{}},"Memory":67108864,"NanoCpus":1500000000,
            "ConsoleSize":[0,0],"Ulimits":null}}"#;
        let c = parse_create(body, Some("web")).unwrap();
        assert_eq!(c.name.as_deref(), Some("web"));
        assert_eq!(c.config.cmd, vec!["echo", "hi"]);
        assert_eq!(c.config.exposed_ports, vec!["80/tcp"]);
        assert_eq!(c.host_config.port_bindings[0].host_port, 8080);
        assert_eq!(
            c.host_config.restart_policy,
            RestartPolicy::OnFailure { max_retries: 3 }
        );
        assert_eq!(c.host_config.memory, 64 << 20);
    }

    #[test]
    fn refuses_what_vic_cannot_do() {
        let e = parse_create(
            br#"{"Image":"busybox","HostConfig":{"Privileged":true}}"#,
            None,
        )
        .unwrap_err();
        assert_eq!(e.http_status(), 400);
        assert!(e.to_string().contains("--privileged"), "{e}");
        let e = parse_create(
            br#"{"Image":"busybox","HostConfig":{"NetworkMode":"host"}}"#,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("--network=host"), "{e}");
        for bad in [
            &br#"{"Image":1}"#[..],
            br#"{"Cmd":"x"}"#,
            br#"[1]"#,
            br#"{"Image":"b","HostConfig":{"PortBindings":{"x/tcp":[]}}}"#,
            br#"{"Image":"b","HostConfig":{"RestartPolicy":{"Name":"sometimes"}}}"#,
        ] {
            assert_eq!(parse_create(bad, None).unwrap_err().http_status(), 400);
        }
    }
}
