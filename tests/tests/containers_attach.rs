//! `docker run` in the foreground (attach, `-i`, `-t`, `--rm`), `logs -f`, `stop -t`,
//! `kill -s`, `restart`, restart policies, and a kill -9 of the endpoint with fifteen
//! containers, all with the real docker CLI against the endpoint on the simulator.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use vic_tests::fixtures::push_users;
use vic_tests::vch::SimVch;
use vic_tests::{DockerClient, docker, docker_command, ok, stderr, stdout, wait_until};

#[test]
fn foreground_runs_stdin_tty_and_image_config() {
    let Some(s) = SimVch::as_root() else { return };
    let img = s.bb.reference.as_str();

    // --rm: output, exit 0, and the container is gone.
    let o = s.d(&["run", "--rm", "--name", "hello", img, "echo", "hello"]);
    assert_eq!(ok(&o, "run --rm"), "hello\n", "{}", stderr(&o));
    let all = ok(&s.d(&["ps", "-a", "--format", "{{.Names}}"]), "ps -a");
    assert!(!all.contains("hello"), "--rm left {all}");

    // The exit code and stderr come through.
    let o = s.d(&[
        "run",
        "--name",
        "three",
        img,
        "sh",
        "-c",
        "echo err >&2; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(stderr(&o), "err\n");
    assert_eq!(s.state_of("three"), "exited 3 0");

    // stdin.
    let mut child = docker_command(tempfile::tempdir().unwrap().path())
        .args(["-H", &s.h(), "run", "-i", "--rm", img, "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(ok(&o, "run -i"), "hi\n");

    // A TTY, under script(1) so the CLI has a terminal.
    let cfg = tempfile::tempdir().unwrap();
    let cmd = format!(
        "DOCKER_CONFIG={} timeout 120 docker -H {} run -t --rm {img} sh -c 'tty; stty size'",
        cfg.path().display(),
        s.h()
    );
    let o = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("COLUMNS", "100")
        .env("LINES", "30")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = stdout(&o);
    assert!(o.status.success(), "run -t: {text}{}", stderr(&o));
    assert!(text.contains("/dev/pts/"), "not a TTY: {text:?}");
    assert!(!text.contains("not a tty"), "{text:?}");

    // Env, working dir, user, entrypoint and cmd from the flags.
    let o = s.d(&[
        "run",
        "--rm",
        "-e",
        "FOO=bar",
        "-w",
        "/tmp/work",
        "-u",
        "65534:65534",
        "--entrypoint",
        "sh",
        img,
        "-c",
        "echo $FOO; pwd; id -u; id -g",
    ]);
    assert_eq!(ok(&o, "run with flags"), "bar\n/tmp/work\n65534\n65534\n");

    // A user by name from the image's /etc/passwd, with its groups and home.
    let users = push_users(&s.reg, "users", "latest");
    ok(&s.d(&["pull", &users.reference]), "pull users");
    let o = s.d(&[
        "run",
        "--rm",
        "-u",
        "app",
        &users.reference,
        "sh",
        "-c",
        "id; echo $HOME",
    ]);
    assert_eq!(
        ok(&o, "run -u app"),
        "uid=1000(app) gid=1000(app) groups=50(staff)\n/home/app\n"
    );
    ok(&s.d(&["rm", "three"]), "rm");
}

#[test]
fn detached_web_logs_follow_stop_kill_restart() {
    let Some(s) = SimVch::as_root() else { return };
    let img = s.bb.reference.as_str();

    ok(
        &s.d(&[
            "run", "-d", "--name", "web", img, "httpd", "-f", "-p", "8080",
        ]),
        "run -d web",
    );
    let ps = ok(&s.d(&["ps", "--format", "{{.Names}} {{.State}}"]), "ps");
    assert_eq!(ps.trim(), "web running");

    // logs -f follows a container until it ends.
    ok(
        &s.d(&[
            "run",
            "-d",
            "--name",
            "counter",
            img,
            "sh",
            "-c",
            "for i in 1 2 3; do echo $i; sleep 0.5; done",
        ]),
        "run -d counter",
    );
    let o = s.d(&["logs", "-f", "counter"]);
    assert_eq!(ok(&o, "logs -f"), "1\n2\n3\n");

    // stop: SIGTERM ends httpd (143); start; restart.
    ok(&s.d(&["stop", "web"]), "stop web");
    assert_eq!(s.state_of("web"), "exited 143 0");
    let status = |s: &SimVch| {
        let f = [
            "ps",
            "-a",
            "--filter",
            "name=web",
            "--format",
            "{{.Status}}",
        ];
        ok(&s.d(&f), "ps status").trim().to_string()
    };
    let st = status(&s);
    assert!(
        st.starts_with("Exited (143) ") && st.ends_with(" ago"),
        "{st}"
    );
    ok(&s.d(&["start", "web"]), "start web");
    assert!(s.state_of("web").starts_with("running"));
    let st = status(&s);
    assert!(st.starts_with("Up ") && !st.ends_with(" ago"), "{st}");
    ok(&s.d(&["restart", "-t", "1", "web"]), "restart web");
    assert!(s.state_of("web").starts_with("running"));

    // kill -s USR1 reaches the process, which keeps running.
    ok(
        &s.d(&[
            "run",
            "-d",
            "--name",
            "trapper",
            img,
            "sh",
            "-c",
            "trap 'echo got usr1' USR1; trap '' TERM; echo ready; while true; do sleep 0.1; done",
        ]),
        "run -d trapper",
    );
    wait_until(Duration::from_secs(10), "trapper ready", || {
        stdout(&s.d(&["logs", "trapper"]))
            .contains("ready")
            .then_some(())
    });
    ok(&s.d(&["kill", "-s", "USR1", "trapper"]), "kill -s USR1");
    wait_until(Duration::from_secs(10), "USR1 handled", || {
        stdout(&s.d(&["logs", "trapper"]))
            .contains("got usr1")
            .then_some(())
    });
    assert!(s.state_of("trapper").starts_with("running"));

    // stop -t 1 of a process that ignores SIGTERM: killed after the timeout (137).
    let t = Instant::now();
    ok(&s.d(&["stop", "-t", "1", "trapper"]), "stop -t 1");
    let took = t.elapsed();
    assert_eq!(s.state_of("trapper"), "exited 137 0");
    assert!(took < Duration::from_secs(8), "stop -t 1 took {took:?}");

    // kill of a stopped container is refused; a bad signal too.
    let o = s.d(&["kill", "trapper"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not running"), "{}", stderr(&o));
    let o = s.d(&["kill", "-s", "SIGNOPE", "web"]);
    assert!(stderr(&o).contains("Invalid signal"), "{}", stderr(&o));
    assert!(s.state_of("web").starts_with("running"));

    // The lifecycle as Docker's event stream tells it.
    let until = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 1
    );
    std::thread::sleep(Duration::from_millis(1100));
    let ev = ok(
        &s.d(&[
            "events",
            "--since",
            "0",
            "--until",
            &until,
            "--filter",
            "container=trapper",
            "--format",
            "{{.Action}}",
        ]),
        "events",
    );
    let actions: Vec<&str> = ev.lines().collect();
    for want in ["create", "start", "kill", "die", "stop"] {
        assert!(actions.contains(&want), "no {want} event in {actions:?}");
    }

    // rm -f of a running container.
    ok(&s.d(&["rm", "-f", "web", "counter", "trapper"]), "rm -f");
    let all = ok(&s.d(&["ps", "-aq"]), "ps -aq");
    assert_eq!(all.trim(), "");
}

#[test]
fn restart_policies() {
    let Some(s) = SimVch::as_root() else { return };
    let img = s.bb.reference.as_str();
    ok(
        &s.d(&[
            "run",
            "-d",
            "--name",
            "flaky",
            "--restart",
            "on-failure:2",
            img,
            "sh",
            "-c",
            "exit 1",
        ]),
        "run on-failure",
    );
    ok(
        &s.d(&[
            "run",
            "-d",
            "--name",
            "fine",
            "--restart",
            "on-failure",
            img,
            "true",
        ]),
        "run on-failure ok",
    );
    ok(
        &s.d(&[
            "run",
            "-d",
            "--name",
            "always",
            "--restart",
            "always",
            img,
            "sh",
            "-c",
            "sleep 0.2",
        ]),
        "run always",
    );
    wait_until(Duration::from_secs(30), "flaky restarted twice", || {
        (s.state_of("flaky") == "exited 1 2").then_some(())
    });
    wait_until(Duration::from_secs(30), "always restarted", || {
        let st = s.state_of("always");
        let n: u32 = st.rsplit(' ').next().unwrap().parse().unwrap();
        (n >= 2).then_some(())
    });
    // on-failure leaves a clean exit alone.
    wait_until(Duration::from_secs(10), "fine exited", || {
        (s.state_of("fine") == "exited 0 0").then_some(())
    });
    // A stopped "always" container stays stopped.
    ok(&s.d(&["stop", "-t", "1", "always"]), "stop always");
    let st = s.state_of("always");
    assert!(st.starts_with("exited"), "{st}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.state_of("always"), st);
    ok(&s.d(&["rm", "-f", "flaky", "fine", "always"]), "rm");
}

#[test]
fn fifteen_containers_survive_a_kill_9_of_the_endpoint() {
    let Some(mut s) = SimVch::as_root() else {
        return;
    };
    let img = s.bb.reference.clone();
    let client = DockerClient::new(&s.h());
    for i in 0..10 {
        let name = format!("run{i}");
        ok(
            &client.run(&["run", "-d", "--name", &name, &img, "sleep", "600"]),
            "run -d",
        );
    }
    for i in 0..5 {
        let name = format!("done{i}");
        let code = (i + 1).to_string();
        // The last two end while the endpoint is down.
        let script = if i < 3 {
            format!("exit {code}")
        } else {
            format!("sleep 2; echo bye; exit {code}")
        };
        ok(
            &client.run(&["run", "-d", "--name", &name, &img, "sh", "-c", &script]),
            "run -d",
        );
    }
    for i in 0..3 {
        assert_eq!(
            ok(&s.d(&["wait", &format!("done{i}")]), "wait").trim(),
            (i + 1).to_string()
        );
    }
    s.restart_endpoint();
    std::thread::sleep(Duration::from_secs(3));
    let expect = |name: &str, want: &str| {
        wait_until(Duration::from_secs(20), name, || {
            let st = s.state_of(name);
            st.starts_with(want).then_some(())
        });
    };
    for i in 0..10 {
        expect(&format!("run{i}"), "running");
    }
    for i in 0..5 {
        expect(&format!("done{i}"), &format!("exited {}", i + 1));
    }
    let all = ok(&s.d(&["ps", "-a", "--format", "{{.Names}}"]), "ps -a");
    assert_eq!(all.lines().count(), 15, "{all}");
    assert_eq!(stdout(&s.d(&["logs", "done4"])), "bye\n");
    // attach reconnects to a running one and ends with its exit when it is stopped.
    let h = s.h();
    let attacher = std::thread::spawn(move || docker(&h, &["attach", "run1"]));
    std::thread::sleep(Duration::from_millis(500));
    ok(&s.d(&["stop", "run1"]), "stop run1");
    let o = attacher.join().unwrap();
    assert_eq!(o.status.code(), Some(143), "attach: {}", stderr(&o));
    // logs -f reconnects to a running one and ends when it is stopped.
    let h = s.h();
    let follower = std::thread::spawn(move || docker(&h, &["logs", "-f", "run0"]));
    std::thread::sleep(Duration::from_millis(500));
    ok(&s.d(&["stop", "-t", "1", "run0"]), "stop run0");
    let o = follower.join().unwrap();
    assert!(o.status.success(), "logs -f: {}", stderr(&o));
    let names: Vec<String> = (0..10)
        .map(|i| format!("run{i}"))
        .chain((0..5).map(|i| format!("done{i}")))
        .collect();
    let mut rm = vec!["rm", "-f"];
    rm.extend(names.iter().map(String::as_str));
    ok(&s.d(&rm), "rm -f all");
}

/// The cgroup (v1 or v2) file `name` of the controller `ctrl` that process `pid` is in.
fn cgroup_file(pid: &str, ctrl: &str, name: &str) -> Option<String> {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in cg.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (base, file) = if ctrls.split(',').any(|c| c == ctrl) {
            (format!("/sys/fs/cgroup/{ctrl}"), name.to_string())
        } else if ctrls.is_empty() {
            let v2 = match name {
                "memory.limit_in_bytes" => "memory.max",
                "cpu.cfs_quota_us" => "cpu.max",
                other => other,
            };
            ("/sys/fs/cgroup".to_string(), v2.to_string())
        } else {
            continue;
        };
        if let Ok(v) = std::fs::read_to_string(format!("{base}{path}/{file}")) {
            return Some(v.trim().to_string());
        }
    }
    None
}

#[test]
fn memory_and_cpus_limit_the_guest() {
    let Some(s) = SimVch::as_root() else { return };
    let img = s.bb.reference.as_str();
    let id = ok(
        &s.d(&[
            "run", "-d", "--memory", "64m", "--cpus", "0.5", "--name", "small", img, "sleep", "600",
        ]),
        "run -d --memory --cpus",
    );
    let folder = s.state.join("datastores/LocalDS_0").join(id.trim());
    let pid_line = std::fs::read_to_string(folder.join("guest.pid")).unwrap();
    let pid = pid_line.split_whitespace().next().unwrap().to_string();
    let mem = cgroup_file(&pid, "memory", "memory.limit_in_bytes").expect("memory cgroup");
    assert_eq!(mem, (64u64 << 20).to_string());
    let quota = cgroup_file(&pid, "cpu", "cpu.cfs_quota_us").expect("cpu cgroup");
    let period = cgroup_file(&pid, "cpu", "cpu.cfs_period_us").unwrap_or_else(|| "100000".into());
    if let Some((q, p)) = quota.split_once(' ') {
        // cgroup v2: "QUOTA PERIOD".
        assert_eq!(q.parse::<u64>().unwrap() * 2, p.parse::<u64>().unwrap());
    } else {
        assert_eq!(
            quota.parse::<u64>().unwrap() * 2,
            period.parse::<u64>().unwrap()
        );
    }
    let inspect = ok(
        &s.d(&[
            "inspect",
            "small",
            "--format",
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}",
        ]),
        "inspect",
    );
    assert_eq!(inspect.trim(), format!("{} 500000000", 64u64 << 20));
    ok(&s.d(&["rm", "-f", "small"]), "rm -f");
}

/// Sends `POST /containers/NAME/attach` with `Upgrade: tcp` on a raw connection and
/// returns it after the `101` head.
fn raw_attach(addr: std::net::SocketAddr, name: &str, query: &str) -> std::net::TcpStream {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1.41/containers/{name}/attach?{query} HTTP/1.1\r\nHost: vic\r\n\
         Upgrade: tcp\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "connection closed in the head");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("application/vnd.docker.raw-stream"), "{head}");
    s
}

#[test]
fn detach_keys_end_the_attach_and_leave_the_container_running() {
    use std::io::Read;
    let Some(s) = SimVch::as_root() else { return };
    let img = s.bb.reference.as_str();
    ok(
        &s.d(&["run", "-dit", "--name", "shell", img, "sh"]),
        "run -dit",
    );
    let addr = s.ep.as_ref().unwrap().addr;
    let q = "stream=1&stdin=1&stdout=1&stderr=1";
    for (keys, seq) in [(None, &b"\x10\x11"[..]), (Some("ctrl-a,x"), &b"\x01x"[..])] {
        let query = match keys {
            Some(k) => format!("{q}&detachKeys={k}"),
            None => q.to_string(),
        };
        let mut c = raw_attach(addr, "shell", &query);
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"echo $((6*7))\r").unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("42") {
            let n = c.read(&mut buf).unwrap();
            assert!(
                n > 0,
                "attach ended early: {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
        c.write_all(seq).unwrap();
        // The server closes the attach; what the shell printed before may still come.
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => panic!("no detach with {keys:?}: {e}"),
            }
        }
        assert!(s.state_of("shell").starts_with("running"), "{keys:?}");
    }
    ok(&s.d(&["rm", "-f", "shell"]), "rm -f");
}
