//! `/_ping`, `/version` and `/info`.

use std::time::SystemTime;

use hyper::StatusCode;
use hyper::header::{CACHE_CONTROL, HeaderName, HeaderValue, PRAGMA};
use serde_json::json;
use vic_core::{Engine, Error};

use crate::http::{Reply, full, json, reply};

/// `GET|HEAD /_ping`: `OK`, with the headers the docker CLI negotiates from.
pub fn ping(head: bool) -> Reply {
    let mut r = if head {
        let mut r = reply(StatusCode::OK, "text/plain; charset=utf-8", "");
        *r.body_mut() = full("");
        r
    } else {
        reply(StatusCode::OK, "text/plain; charset=utf-8", "OK")
    };
    let h = r.headers_mut();
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    // vic builds no images; "1" keeps the CLI off BuildKit's session protocol.
    h.insert(
        HeaderName::from_static("builder-version"),
        HeaderValue::from_static("1"),
    );
    h.insert(
        HeaderName::from_static("swarm"),
        HeaderValue::from_static("inactive"),
    );
    r
}

/// The kernel release of the machine the endpoint runs on.
fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Go's name for this CPU architecture, as Docker reports it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// `GET /version`.
pub fn version(engine: &Engine) -> Reply {
    let v = engine.version();
    let kernel = kernel_version();
    json(
        StatusCode::OK,
        &json!({
            "Platform": { "Name": "vSphere Integrated Containers (vic)" },
            "Components": [{
                "Name": "Engine",
                "Version": v.version,
                "Details": {
                    "ApiVersion": v.api_version,
                    "MinAPIVersion": v.min_api_version,
                    "Os": "linux",
                    "Arch": go_arch(),
                    "KernelVersion": kernel,
                    "Backend": engine.backend().product,
                    "Experimental": "false",
                }
            }],
            "Version": v.version,
            "ApiVersion": v.api_version,
            "MinAPIVersion": v.min_api_version,
            "GitCommit": "",
            "GoVersion": "",
            "Os": "linux",
            "Arch": go_arch(),
            "KernelVersion": kernel,
        }),
    )
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes / (1024 * 1024))
}

/// `GET /info`: the VCH, its pool's CPU and memory, and what it holds.
pub async fn info(engine: &Engine) -> Result<Reply, Error> {
    let i = engine.info().await?;
    let pool = &i.vch.pool;
    let limit = |l: Option<u64>, unit: &str| match l {
        Some(v) => format!("{v} {unit}"),
        None => "unlimited".to_string(),
    };
    let mut driver_status = vec![
        json!(["VCH resource pool", pool.path]),
        json!(["VCH CPU limit", limit(pool.cpu.limit, "MHz")]),
        json!([
            "VCH CPU reservation",
            format!("{} MHz", pool.cpu.reservation)
        ]),
        json!(["VCH memory limit", limit(pool.memory.limit, "MiB")]),
        json!([
            "VCH memory reservation",
            format!("{} MiB", pool.memory.reservation)
        ]),
        json!(["Image store", i.vch.store.to_string()]),
        json!(["Backend", i.product]),
    ];
    if let Some((name, cap, free)) = &i.datastore {
        driver_status.push(json!([format!("Datastore {name} capacity"), mib(*cap)]));
        driver_status.push(json!([format!("Datastore {name} free"), mib(*free)]));
    }
    let kernel = kernel_version();
    Ok(json(
        StatusCode::OK,
        &json!({
            "ID": i.vch.id,
            "Name": i.vch.name,
            "Containers": i.containers,
            "ContainersRunning": i.running,
            "ContainersPaused": i.paused,
            "ContainersStopped": i.containers - i.running - i.paused,
            "Images": i.images,
            "Driver": "vSphere Integrated Containers Backend Engine",
            "DriverStatus": driver_status,
            "SystemStatus": null,
            "Plugins": {
                "Volume": ["vsphere"],
                "Network": ["bridge"],
                "Authorization": null,
                "Log": ["json-file"]
            },
            "MemoryLimit": true,
            "SwapLimit": false,
            "CpuCfsPeriod": false,
            "CpuCfsQuota": false,
            "CPUShares": false,
            "CPUSet": false,
            "PidsLimit": false,
            "OomKillDisable": false,
            "IPv4Forwarding": true,
            "BridgeNfIptables": false,
            "BridgeNfIp6tables": false,
            "Debug": false,
            "NFd": 0,
            "NGoroutines": 0,
            "SystemTime": rfc3339(SystemTime::now()),
            "LoggingDriver": "json-file",
            "CgroupDriver": "none",
            "NEventsListener": 0,
            "KernelVersion": kernel,
            "OperatingSystem": format!("vSphere Integrated Containers on {}", i.product),
            "OSVersion": "",
            "OSType": "linux",
            "Architecture": std::env::consts::ARCH,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": {
                "AllowNondistributableArtifactsCIDRs": [],
                "AllowNondistributableArtifactsHostnames": [],
                "InsecureRegistryCIDRs": [],
                "IndexConfigs": {},
                "Mirrors": []
            },
            "NCPU": i.cpus,
            "MemTotal": i.memory_bytes,
            "GenericResources": null,
            "DockerRootDir": i.vch.store.to_string(),
            "HttpProxy": "",
            "HttpsProxy": "",
            "NoProxy": "",
            "Labels": [],
            "ExperimentalBuild": false,
            "ServerVersion": engine.version().version,
            "Runtimes": {},
            "DefaultRuntime": "",
            "Swarm": {
                "NodeID": "",
                "NodeAddr": "",
                "LocalNodeState": "inactive",
                "ControlAvailable": false,
                "Error": "",
                "RemoteManagers": null
            },
            "LiveRestoreEnabled": true,
            "Isolation": "",
            "InitBinary": "",
            "ContainerdCommit": { "ID": "", "Expected": "" },
            "RuncCommit": { "ID": "", "Expected": "" },
            "InitCommit": { "ID": "", "Expected": "" },
            "SecurityOptions": [],
            "Warnings": [],
        }),
    ))
}
