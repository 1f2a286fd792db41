//! Images through the real docker CLI: pull from Debian's docker-registry into the
//! simulator's layer store, list, inspect, tag, remove, log in, and survive restarts.
#![allow(clippy::unwrap_used)]

use vic_tests::fixtures::{push_busybox, push_multiarch, push_oci};
use vic_tests::registry::TestRegistry;
use vic_tests::token::TokenRegistry;
use vic_tests::{Endpoint, docker, image_store_entries, ok, stderr, stdout};

#[test]
fn pull_list_inspect_restart_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&dir.path().join("registry"), None);
    let pushed = push_busybox(&reg, "busybox", "latest");
    let state = dir.path().join("state");
    let args = ["--insecure-registry", reg.addr()];
    let ep = Endpoint::start(&state, &args);
    let image = format!("{}/busybox", reg.addr());

    let out = ok(&docker(&ep.host(), &["pull", &image]), "docker pull");
    assert!(out.contains("Pull complete"), "{out}");
    assert!(
        out.contains(&format!("Digest: {}", pushed.manifest_digest)),
        "{out}"
    );
    assert!(
        out.contains(&format!("Downloaded newer image for {image}:latest")),
        "{out}"
    );

    let list = |ep: &Endpoint| {
        ok(
            &docker(
                &ep.host(),
                &[
                    "images",
                    "--no-trunc",
                    "--format",
                    "{{.Repository}}:{{.Tag}} {{.ID}}",
                ],
            ),
            "docker images",
        )
    };
    assert_eq!(
        list(&ep).trim(),
        format!("{image}:latest {}", pushed.config_digest)
    );

    let inspect = ok(
        &docker(
            &ep.host(),
            &[
                "image",
                "inspect",
                &image,
                "--format",
                "{{json .RepoTags}}|{{json .RepoDigests}}|{{json .RootFS.Layers}}|{{.Os}}/{{.Architecture}}|{{json .Config.Cmd}}|{{.Id}}",
            ],
        ),
        "docker image inspect",
    );
    let f: Vec<&str> = inspect.trim().split('|').collect();
    assert_eq!(f[0], format!("[\"{image}:latest\"]"));
    assert_eq!(f[1], format!("[\"{image}@{}\"]", pushed.manifest_digest));
    let diff_ids: Vec<String> = pushed.layers.iter().map(|l| l.diff_id.clone()).collect();
    assert_eq!(f[2], serde_json::to_string(&diff_ids).unwrap());
    assert_eq!(f[3], "linux/amd64");
    assert_eq!(f[4], "[\"sh\"]");
    assert_eq!(f[5], pushed.config_digest);

    // The layer is a disk with its unpacked tree in the VIC layout.
    let layers = image_store_entries(&state);
    assert_eq!(layers.len(), 1, "{layers:?}");
    let id = layers[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(layers[0].join(format!("{id}.vmdk")).is_file());
    assert!(layers[0].join(format!("{id}-fs/bin/busybox")).is_file());
    assert!(layers[0].join("imageMetadata/layer.json").is_file());

    // Pulling again finds everything present.
    let again = ok(&docker(&ep.host(), &["pull", &image]), "second pull");
    assert!(again.contains("Image is up to date"), "{again}");

    // A new endpoint process after kill -9 lists the same image.
    ep.kill9();
    let ep = Endpoint::start(&state, &args);
    assert_eq!(
        list(&ep).trim(),
        format!("{image}:latest {}", pushed.config_digest)
    );
    let info = ok(
        &docker(&ep.host(), &["info", "--format", "{{.Images}}"]),
        "info",
    );
    assert_eq!(info.trim(), "1");

    // Tag, untag, remove.
    ok(
        &docker(&ep.host(), &["tag", &image, "mine:v1"]),
        "docker tag",
    );
    let rmi = ok(&docker(&ep.host(), &["rmi", "mine:v1"]), "rmi of one tag");
    assert_eq!(rmi.trim(), "Untagged: mine:v1");
    let rmi = ok(&docker(&ep.host(), &["rmi", &image]), "rmi");
    assert!(rmi.contains(&format!("Untagged: {image}:latest")), "{rmi}");
    assert!(
        rmi.contains(&format!("Deleted: {}", pushed.config_digest)),
        "{rmi}"
    );
    assert_eq!(list(&ep).trim(), "");
    assert!(
        image_store_entries(&state).is_empty(),
        "layers left: {:?}",
        image_store_entries(&state)
    );

    let missing = docker(&ep.host(), &["image", "inspect", &image]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("No such image"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn pull_by_digest_and_by_platform() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&dir.path().join("registry"), None);
    let bb = push_busybox(&reg, "busybox", "latest");
    let multi = push_multiarch(&reg, "multi", "latest");
    let oci = push_oci(&reg, "oci", "latest");
    let ep = Endpoint::start(
        &dir.path().join("state"),
        &["--insecure-registry", reg.addr()],
    );
    let id_of = |r: &str| {
        ok(
            &docker(&ep.host(), &["image", "inspect", r, "--format", "{{.Id}}"]),
            "inspect",
        )
        .trim()
        .to_string()
    };

    let by_digest = bb.by_digest();
    ok(&docker(&ep.host(), &["pull", &by_digest]), "pull by digest");
    assert_eq!(id_of(&by_digest), bb.config_digest);

    let m = format!("{}/multi:latest", reg.addr());
    let out = ok(&docker(&ep.host(), &["pull", &m]), "pull list");
    assert!(out.contains(&format!("Digest: {}", multi.digest)), "{out}");
    assert_eq!(id_of(&m), multi.amd64().config_digest);
    ok(
        &docker(&ep.host(), &["pull", "--platform", "linux/arm64", &m]),
        "pull arm64",
    );
    assert_eq!(id_of(&m), multi.arm64().config_digest);
    let bad = docker(&ep.host(), &["pull", "--platform", "linux/s390x", &m]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("linux/s390x"), "{}", stderr(&bad));

    let o = format!("{}/oci:latest", reg.addr());
    ok(&docker(&ep.host(), &["pull", &o]), "pull OCI index");
    assert_eq!(id_of(&o), oci.amd64().config_digest);

    let nope = docker(
        &ep.host(),
        &["pull", &format!("{}/nothing:here", reg.addr())],
    );
    assert!(!nope.status.success());
    assert!(
        stderr(&nope).contains("No such manifest"),
        "{}",
        stderr(&nope)
    );
}

#[test]
fn login_then_pull_private_images() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&dir.path().join("registry"), Some(("vic", "s3cret")));
    push_busybox(&reg, "private/busybox", "latest");
    let ep = Endpoint::start(
        &dir.path().join("state"),
        &["--insecure-registry", reg.addr()],
    );
    let image = format!("{}/private/busybox", reg.addr());
    // One docker client configuration for the whole test, as a user has.
    let config = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        vic_tests::docker_command(config.path())
            .arg("-H")
            .arg(ep.host())
            .args(args)
            .output()
            .unwrap()
    };

    let anon = cli(&["pull", &image]);
    assert!(!anon.status.success());
    assert!(
        stderr(&anon).to_lowercase().contains("unauthorized") || stderr(&anon).contains("denied"),
        "{}",
        stderr(&anon)
    );

    let bad = cli(&["login", "-u", "vic", "-p", "wrong", reg.addr()]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("unauthorized"), "{}", stderr(&bad));

    let good = cli(&["login", "-u", "vic", "-p", "s3cret", reg.addr()]);
    assert!(good.status.success(), "{}", stderr(&good));
    assert!(stdout(&good).contains("Login Succeeded"));
    let pulled = cli(&["pull", &image]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    // The password never reaches the endpoint's log.
    assert!(!ep.log_text().contains("s3cret"));
}

#[test]
fn token_auth_login_then_pull() {
    let dir = tempfile::tempdir().unwrap();
    let password = "t0ken-s3cret";
    let (reg, pushed) = TokenRegistry::start(
        &dir.path().join("token-registry"),
        &[("vic", password)],
        |open| push_busybox(open, "private/busybox", "latest"),
    );
    let ep = Endpoint::start(
        &dir.path().join("state"),
        &["--insecure-registry", reg.addr()],
    );
    let image = format!("{}/private/busybox", reg.addr());
    // One docker client configuration for the whole test, as a user has.
    let docker_cli = vic_tests::DockerClient::new(&ep.host());
    let cli = |args: &[&str]| docker_cli.run(args);

    // Anonymous users get a token that grants nothing: a clear refusal, no prompt.
    let anon = cli(&["pull", &image]);
    assert!(!anon.status.success());
    let err = stderr(&anon);
    assert!(
        err.contains(&format!("pull access denied for {image}")) && err.contains("docker login"),
        "{err}"
    );

    let bad = cli(&["login", "-u", "vic", "-p", "wrong", reg.addr()]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("unauthorized"), "{}", stderr(&bad));

    let good = cli(&["login", "-u", "vic", "-p", password, reg.addr()]);
    assert!(good.status.success(), "{}", stderr(&good));
    assert!(
        stdout(&good).contains("Login Succeeded"),
        "{}",
        stdout(&good)
    );

    let pulled = ok(&cli(&["pull", &image]), "docker pull after login");
    assert!(
        pulled.contains(&format!("Digest: {}", pushed.manifest_digest)),
        "{pulled}"
    );
    let id = ok(
        &cli(&["image", "inspect", &image, "--format", "{{.Id}}"]),
        "docker image inspect",
    );
    assert_eq!(id.trim(), pushed.config_digest);

    // The pull went through the token server as vic, for the repository's pull scope.
    let scoped = reg
        .tokens()
        .requests()
        .into_iter()
        .filter(|r| {
            r.status == 200
                && r.user.as_deref() == Some("vic")
                && r.scopes().contains(&"repository:private/busybox:pull")
        })
        .count();
    assert!(scoped >= 1, "{:?}", reg.tokens().requests());
    // The password never reaches the endpoint's log.
    assert!(!ep.log_text().contains(password));
}
