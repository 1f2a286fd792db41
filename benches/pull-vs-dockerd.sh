#!/usr/bin/env bash
# Cold `docker pull` of the same image through vic-endpoint (release build, embedded
# simulator) and through Debian's dockerd, both from one local docker-registry over
# plain HTTP, RUNS times each, interleaved. Prints each run, both medians in seconds and
# the ratio vic/dockerd (the image issue's goal: at most 0.7).
#
# The image is the `big` test image (vic_tests::fixtures::big_image): busybox plus one
# stored (gzip level 0) layer of MIB MiB of incompressible bytes.
#
# Usage: benches/pull-vs-dockerd.sh [RUNS] [MIB]      (defaults: 5 runs, 64 MiB)
#
# Needs: Rust, the docker CLI, Debian's docker-registry (tests/servers.sh install),
# busybox-static, curl, python3, and dockerd with containerd (Debian's docker.io:
# installed with apt-get when missing, as root only, with a policy-rc.d that keeps the
# package from starting any system service). Everything it starts (registry,
# vic-endpoint, dockerd and its containerd) listens on 127.0.0.1 or in a temporary
# folder, and is stopped by PID when the script ends, however it ends.
# Env: KEEP=1 keeps the temporary folder (logs) and prints its path.
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$(pwd)

runs=${1:-5}
mib=${2:-64}
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [RUNS] [MIB]" >&2; exit 2; }
[[ $mib =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [RUNS] [MIB]" >&2; exit 2; }

say() { echo "pull-vs-dockerd: $*" >&2; }
die() { say "$*"; exit 1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# --- dockerd: install when missing --------------------------------------------------

install_docker() {
    command -v dockerd >/dev/null && command -v containerd >/dev/null && return 0
    [[ $(id -u) == 0 ]] || die "dockerd (Debian package docker.io) is missing; install it as root: apt-get install docker.io"
    say "installing docker.io with apt-get (no service is started)"
    # invoke-rc.d and deb-systemd-invoke ask policy-rc.d before starting a service;
    # 101 = "not allowed". Only ours is removed afterwards.
    local policy=/usr/sbin/policy-rc.d ours=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        ours=1
    fi
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
    } || rc=$?
    ((ours)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install docker.io failed ($rc)"
    command -v dockerd >/dev/null || die "docker.io installed but no dockerd in PATH"
}

command -v docker >/dev/null || die "the docker CLI is missing"
command -v docker-registry >/dev/null || die "docker-registry is missing; run tests/servers.sh install"
install_docker

# --- build -----------------------------------------------------------------------------

say "building release binaries (vic-endpoint, push-big)"
cargo build --release -q -p vic-endpoint
cargo build --release -q -p vic-benches --example push-big
vic_bin=$repo_root/target/release/vic-endpoint
push_bin=$repo_root/target/release/examples/push-big

# --- servers, stopped on exit ------------------------------------------------------------

work=$(mktemp -d /tmp/vic-pull-bench.XXXXXX)
export DOCKER_CONFIG=$work/cli # no credentials or contexts of the user's
mkdir -p "$DOCKER_CONFIG"
vic_pid=""
dockerd_pid=""

# stop PID NAME: TERM, wait up to 20 s, then KILL.
stop() {
    local pid=$1 name=$2 i
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name ($pid) did not stop on TERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    set +e
    stop "$vic_pid" vic-endpoint
    stop "$dockerd_pid" dockerd
    # dockerd stops the containerd it started; make sure, by the PID it wrote.
    local cpid
    cpid=$(cat "$work/docker/exec/containerd/containerd.pid" 2>/dev/null)
    if [[ $cpid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$cpid/cmdline" 2>/dev/null | grep -qF "$work/"; then
        stop "$cpid" containerd
    fi
    if [[ -f $work/registry/pid ]]; then
        "$repo_root/tests/servers.sh" registry-stop "$work/registry" >/dev/null
    fi
    # Mounts dockerd may have left (overlay layers, its exec root), deepest first.
    awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/self/mounts | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null; done
    if [[ ${KEEP:-0} == 1 ]]; then
        say "kept $work"
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

addr=$("$repo_root/tests/servers.sh" registry-start "$work/registry")
say "registry at $addr; pushing the big image ($mib MiB)"
read -r ref image_id < <("$push_bin" "$addr" "$mib" big latest)
[[ -n ${image_id:-} ]] || die "push-big printed no image"

# vic-endpoint on a new simulator state.
vic_port=$(free_port)
vic_host=tcp://127.0.0.1:$vic_port
"$vic_bin" --target "sim://$work/vic" -H "$vic_host" --insecure-registry "$addr" \
    --log-level info </dev/null >"$work/vic.log" 2>&1 &
vic_pid=$!
for ((i = 0; i < 300; i++)); do
    curl -sf "http://127.0.0.1:$vic_port/_ping" >/dev/null 2>&1 && break
    kill -0 "$vic_pid" 2>/dev/null || { tail -n 20 "$work/vic.log" >&2; die "vic-endpoint exited"; }
    sleep 0.1
done
curl -sf "http://127.0.0.1:$vic_port/_ping" >/dev/null || die "vic-endpoint did not answer /_ping in 30 s"

# dockerd with everything of its own under $work: no iptables, no bridge, no system
# config file; it starts a containerd of its own (state under its exec root) unless a
# system one listens at /run/containerd/containerd.sock.
mkdir -p "$work/docker/data" "$work/docker/exec"
echo '{}' >"$work/docker/daemon.json"
docker_sock=$work/docker/docker.sock
docker_host=unix://$docker_sock
dockerd --config-file "$work/docker/daemon.json" \
    --data-root "$work/docker/data" --exec-root "$work/docker/exec" \
    --pidfile "$work/docker/docker.pid" -H "$docker_host" \
    --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false --bridge=none \
    --userland-proxy=false --insecure-registry "$addr" --log-level info \
    </dev/null >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
for ((i = 0; i < 600; i++)); do
    docker -H "$docker_host" version >/dev/null 2>&1 && break
    if ! kill -0 "$dockerd_pid" 2>/dev/null; then
        dockerd_pid=""
        say "dockerd exited at start; the end of its log:"
        tail -n 30 "$work/dockerd.log" >&2
        die "dockerd cannot run here (see above); no comparison made"
    fi
    sleep 0.1
done
if ! docker -H "$docker_host" version >/dev/null 2>&1; then
    say "dockerd did not answer in 60 s; the end of its log:"
    tail -n 30 "$work/dockerd.log" >&2
    die "dockerd cannot run here (see above); no comparison made"
fi
say "dockerd $(docker -H "$docker_host" version -f '{{.Server.Version}}'), storage driver $(docker -H "$docker_host" info -f '{{.Driver}}')"

# --- the runs ----------------------------------------------------------------------------

# forget HOST: no image and no layer left, so that the next pull is cold.
forget() {
    docker -H "$1" rmi -f "$ref" >/dev/null 2>&1 || true
    docker -H "$1" image prune -af >/dev/null
    [[ -z $(docker -H "$1" images -q) ]] || die "images left on $1 after rmi and prune"
}

# pull HOST: seconds one cold `docker pull` takes, after checking the image ID.
pull() {
    local host=$1 start end id
    forget "$host"
    sync
    start=$(date +%s%N)
    docker -H "$host" pull -q "$ref" >/dev/null
    end=$(date +%s%N)
    id=$(docker -H "$host" image inspect -f '{{.Id}}' "$ref")
    [[ $id == "$image_id" ]] || die "$host pulled image $id, expected $image_id"
    awk -v n=$((end - start)) 'BEGIN { printf "%.3f\n", n / 1e9 }'
}

# One pull each, untimed, so that both have their code paged in.
pull "$vic_host" >/dev/null
pull "$docker_host" >/dev/null

vic_times=()
dockerd_times=()
for ((r = 1; r <= runs; r++)); do
    # Alternate who goes first.
    if ((r % 2)); then
        v=$(pull "$vic_host")
        d=$(pull "$docker_host")
    else
        d=$(pull "$docker_host")
        v=$(pull "$vic_host")
    fi
    vic_times+=("$v")
    dockerd_times+=("$d")
    echo "run $r: vic ${v} s, dockerd ${d} s"
done
forget "$vic_host"
forget "$docker_host"

vic_median=$(printf '%s\n' "${vic_times[@]}" | median)
dockerd_median=$(printf '%s\n' "${dockerd_times[@]}" | median)
ratio=$(awk -v v="$vic_median" -v d="$dockerd_median" 'BEGIN { printf "%.2f", v / d }')
echo "cold docker pull of $ref ($mib MiB layer), median of $runs:" \
    "vic ${vic_median} s, dockerd ${dockerd_median} s, vic/dockerd ${ratio} (goal <= 0.7)"
