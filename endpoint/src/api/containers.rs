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

#[cfg(test)]
mod tests {
    use super::*;

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
