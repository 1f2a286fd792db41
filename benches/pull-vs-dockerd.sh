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

BENCH=pull-vs-dockerd
# shellcheck source-path=SCRIPTDIR/..
. benches/common.sh

command -v docker >/dev/null || die "the docker CLI is missing"
command -v docker-registry >/dev/null || die "docker-registry is missing; run tests/servers.sh install"
install_docker dockerd containerd

# --- build -----------------------------------------------------------------------------

say "building release binaries (vic-endpoint, push-big)"
cargo build --release -q -p vic-endpoint
cargo build --release -q -p vic-benches --example push-big
vic_bin=$repo_root/target/release/vic-endpoint
push_bin=$repo_root/target/release/examples/push-big

# --- servers, stopped on exit ------------------------------------------------------------

new_work vic-pull-bench

cleanup() {
    local rc=$?
    set +e
    stop_servers "$work"
    remove_work "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

addr=$("$repo_root/tests/servers.sh" registry-start "$work/registry")
say "registry at $addr; pushing the big image ($mib MiB)"
read -r ref image_id < <("$push_bin" "$addr" "$mib" big latest)
[[ -n ${image_id:-} ]] || die "push-big printed no image"

# vic-endpoint on a new simulator state; dockerd with everything of its own under $work.
start_vic "$work" "$addr" "$work/vic"
start_dockerd "$work" "$addr"
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

# One pull each, untimed, so that both have their code paged in; then the timed ones,
# interleaved (who goes first alternates).
compare "$runs" pull
forget "$vic_host"
forget "$docker_host"

echo "cold docker pull of $ref ($mib MiB layer), median of $runs:" \
    "vic ${vic_median} s, dockerd ${dockerd_median} s, vic/dockerd ${median_ratio} (goal <= 0.7)"
