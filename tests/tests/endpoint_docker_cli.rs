//! The endpoint on the simulator, driven by the real docker CLI and plain HTTP.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use vic_core::model::keys;
use vic_core::provider::{Allocation, Compute, Device, DeviceSpec, FileOperation, VmSpec};
use vic_core::{DsPath, Network};
use vic_simulator::Simulator;
use vic_tests::{Endpoint, docker, stderr, stdout};

const VCH: &str = "vch-under-test";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn host_cores() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
}

fn host_mem_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal");
    kb / 1024 * 1024 * 1024
}

#[test]
fn docker_version_and_info_describe_the_vch() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ep = Endpoint::start(&state, &["--name", VCH]);

    let v = docker(
        &ep.host(),
        &[
            "version",
            "--format",
            "{{.Server.Version}} {{.Server.APIVersion}} {{.Server.MinAPIVersion}}",
        ],
    );
    assert!(v.status.success(), "docker version: {}", stderr(&v));
    assert_eq!(
        stdout(&v).trim(),
        format!("{} 1.41 1.24", env!("CARGO_PKG_VERSION"))
    );

    let i = docker(
        &ep.host(),
        &[
            "info",
            "--format",
            "{{.Name}}|{{.NCPU}}|{{.MemTotal}}|{{.Containers}}|{{.Images}}|{{.Driver}}",
        ],
    );
    assert!(i.status.success(), "docker info: {}", stderr(&i));
    let out = stdout(&i);
    let f: Vec<&str> = out.trim().split('|').collect();
    assert_eq!(f[0], VCH);
    assert_eq!(f[1].parse::<u64>().unwrap(), host_cores());
    assert_eq!(f[2].parse::<u64>().unwrap(), host_mem_bytes());
    assert_eq!((f[3], f[4]), ("0", "0"));
    assert_eq!(f[5], "vSphere Integrated Containers Backend Engine");

    // The human-readable form shows the pool's limits.
    let i = docker(&ep.host(), &["info"]);
    let text = stdout(&i);
    assert!(text.contains(&format!("Name: {VCH}")), "{text}");
    assert!(text.contains("VCH CPU limit: unlimited"), "{text}");
    assert!(
        text.contains(&format!("/DC0/host/DC0_C0/Resources/{VCH}")),
        "{text}"
    );
}

#[test]
fn info_follows_the_pool_limits_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ep = Endpoint::start(&state, &["--name", VCH]);
    ep.kill9();

    // Limit the VCH's vApp through the simulator's API, as an administrator would.
    {
        let sim = Simulator::open(&state).unwrap();
        let rt = rt();
        let pool = rt
            .block_on(sim.find_pool(&format!("{}/{VCH}", sim.root_pool_path())))
            .unwrap();
        let cpu = Allocation {
            limit: Some(pool.host_cpu_mhz),
            ..Allocation::default()
        };
        let mem = Allocation {
            limit: Some(512),
            ..Allocation::default()
        };
        rt.block_on(sim.update_pool(&pool.reference, cpu, mem))
            .unwrap();
    }

    let ep = Endpoint::start(&state, &["--name", VCH]);
    let i = docker(&ep.host(), &["info", "--format", "{{.NCPU}} {{.MemTotal}}"]);
    assert!(i.status.success(), "{}", stderr(&i));
    assert_eq!(stdout(&i).trim(), format!("1 {}", 512u64 << 20));
    let text = stdout(&docker(&ep.host(), &["info"]));
    assert!(text.contains("VCH memory limit: 512 MiB"), "{text}");
}

/// Puts container VMs into the VCH's pool through the simulator's API.
fn seed_container_vms(
    sim: &Simulator,
    n: usize,
    running: usize,
) -> Vec<vic_core::provider::VmInfo> {
    let rt = rt();
    let pool = rt
        .block_on(sim.find_pool(&format!("{}/{VCH}", sim.root_pool_path())))
        .unwrap();
    let net = rt.block_on(sim.find_network("VM Network")).unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let id = vic_core::ids::new_id();
        let folder = DsPath::new("LocalDS_0", &id);
        let spec = VmSpec {
            name: format!("seed-{i}-{}", vic_core::ids::short_id(&id)),
            pool: pool.reference.clone(),
            files: folder.clone(),
            num_cpus: 1,
            memory_mb: 256,
            guest_id: "otherGuest64".into(),
            devices: vec![
                DeviceSpec {
                    device: Device::Nic {
                        key: 4000,
                        network: net.reference.clone(),
                        mac: None,
                    },
                    file_operation: FileOperation::Attach,
                },
                DeviceSpec {
                    device: Device::Serial {
                        key: 9000,
                        file: folder.join("output.log"),
                    },
                    file_operation: FileOperation::Attach,
                },
            ],
            extra_config: BTreeMap::from([
                (keys::CONTAINER_ID.to_string(), id.clone()),
                (keys::CONTAINER_NAME.to_string(), format!("seed{i}")),
            ]),
            annotation: String::new(),
        };
        let vm = rt.block_on(sim.create_vm(&spec)).unwrap();
        if i < running {
            rt.block_on(sim.power_on(&vm.reference)).unwrap();
        }
        out.push(rt.block_on(sim.vm_info(&vm.reference)).unwrap());
    }
    out
}

#[test]
fn kill_9_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    Endpoint::start(&state, &["--name", VCH]).kill9();
    let before = {
        let sim = Simulator::open(&state).unwrap();
        seed_container_vms(&sim, 3, 1)
    };

    let counts = |ep: &Endpoint| {
        let i = docker(
            &ep.host(),
            &[
                "info",
                "--format",
                "{{.Containers}} {{.ContainersRunning}} {{.ContainersStopped}}",
            ],
        );
        assert!(i.status.success(), "{}", stderr(&i));
        stdout(&i).trim().to_string()
    };
    let ep = Endpoint::start(&state, &["--name", VCH]);
    assert_eq!(counts(&ep), "3 1 2");
    ep.kill9();
    let ep = Endpoint::start(&state, &["--name", VCH]);
    assert_eq!(counts(&ep), "3 1 2");
    ep.kill9();

    let sim = Simulator::open(&state).unwrap();
    let rt = rt();
    for vm in &before {
        assert_eq!(&rt.block_on(sim.vm_info(&vm.reference)).unwrap(), vm);
    }
}

async fn raw(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<&'static str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = client.request(method, url);
    if let Some(b) = body {
        req = req.header("Content-Type", "application/json").body(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.expect("body"))
}

#[test]
fn bad_requests_get_docker_errors_and_the_endpoint_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::start(&dir.path().join("state"), &["--name", VCH]);
    let c = reqwest::Client::new();
    let base = ep.url();
    let rt = rt();
    rt.block_on(async {
        use reqwest::Method;
        let message = |body: &str| -> String {
            let v: serde_json::Value = serde_json::from_str(body).expect("JSON error body");
            v["message"].as_str().expect("message").to_string()
        };

        let (s, h, b) = raw(&c, Method::HEAD, format!("{base}/_ping"), None).await;
        assert_eq!((s, b.as_str()), (200, ""));
        assert_eq!(h["api-version"], "1.41");
        let (s, _, b) = raw(&c, Method::GET, format!("{base}/v1.24/_ping"), None).await;
        assert_eq!((s, b.as_str()), (200, "OK"));

        let (s, _, b) = raw(
            &c,
            Method::POST,
            format!("{base}/v1.41/containers/create"),
            Some("{nope"),
        )
        .await;
        assert_eq!(s, 400);
        assert!(message(&b).starts_with("invalid JSON"), "{b}");

        let (s, _, b) = raw(
            &c,
            Method::POST,
            format!("{base}/v1.41/containers/create"),
            Some(r#"{"Image":"busybox","HostConfig":{"Privileged":true}}"#),
        )
        .await;
        assert_eq!(s, 400);
        assert!(message(&b).contains("--privileged"), "{b}");

        let (s, _, b) = raw(
            &c,
            Method::POST,
            format!("{base}/v1.41/containers/create?name=x"),
            Some(r#"{"Image":"busybox"}"#),
        )
        .await;
        assert_eq!(s, 400, "{b}");
        assert!(message(&b).contains("Invalid container name"), "{b}");

        let (s, _, b) = raw(
            &c,
            Method::POST,
            format!("{base}/v1.41/containers/create"),
            Some(r#"{"Image":"busybox"}"#),
        )
        .await;
        assert_eq!(s, 404, "{b}");
        assert_eq!(message(&b), "No such image: busybox:latest");

        let (s, _, b) = raw(&c, Method::GET, format!("{base}/v1.41/no/such/path"), None).await;
        assert_eq!((s, message(&b).as_str()), (404, "page not found"));

        let (s, _, b) = raw(&c, Method::DELETE, format!("{base}/info"), None).await;
        assert_eq!(s, 405, "{b}");

        let (s, _, b) = raw(&c, Method::GET, format!("{base}/v1.99/info"), None).await;
        assert_eq!(s, 400);
        assert!(message(&b).contains("too new"), "{b}");

        let (s, _, b) = raw(&c, Method::GET, format!("{base}/v1.41/volumes"), None).await;
        assert_eq!(s, 501);
        assert!(message(&b).contains("GET /volumes is not supported"), "{b}");
    });

    // The docker CLI shows the message of a call vic does not serve.
    let ps = docker(&ep.host(), &["volume", "ls"]);
    assert!(!ps.status.success());
    assert!(
        stderr(&ps).contains("not supported by vic"),
        "{}",
        stderr(&ps)
    );
    let v = docker(
        &ep.host(),
        &["version", "--format", "{{.Server.APIVersion}}"],
    );
    assert!(v.status.success(), "{}", stderr(&v));
    std::thread::sleep(Duration::from_millis(10));
    let mut ep = ep;
    assert!(ep.is_running());
}

#[test]
fn serves_a_unix_socket_too() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let sock_arg = format!("unix://{}", sock.display());
    let ep = Endpoint::start(&dir.path().join("state"), &["-H", &sock_arg]);
    let v = docker(
        &sock_arg,
        &["version", "--format", "{{.Server.APIVersion}}"],
    );
    assert!(v.status.success(), "{}", stderr(&v));
    assert_eq!(stdout(&v).trim(), "1.41");
    // The TCP listener from Endpoint::start keeps working beside it.
    assert!(docker(&ep.host(), &["info"]).status.success());
}
