# shellcheck shell=bash
# What benches/pull-vs-dockerd.sh and benches/run-vs-dockerd.sh share: messages, the
# install of dockerd, vic-endpoint and a private dockerd started and stopped by PID, the
# temporary folder's cleanup, and the interleaved timed runs with their medians.
#
# Sourced (never run) by those scripts after `set -euo pipefail` and `cd` to the repo's
# root. Globals it expects: BENCH (the script's name, for messages), repo_root, and
# vic_bin (the vic-endpoint binary) before start_vic. Globals it sets: work and
# DOCKER_CONFIG (new_work), vic_pid and vic_host (start_vic), dockerd_pid and
# docker_host (start_dockerd), vic_median, dockerd_median and median_ratio (compare).

vic_pid=""
dockerd_pid=""
vic_host=""
docker_host=""

say() { echo "$BENCH: $*" >&2; }
die() { say "$*"; exit 1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# --- dockerd: install when missing --------------------------------------------------

# install_docker COMMAND...: installs Debian's docker.io (as root only) when any of the
# commands given (e.g. dockerd containerd) is missing.
install_docker() {
    local cmd missing=0
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null || missing=1
    done
    ((missing)) || return 0
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

# --- the temporary folder and the servers, stopped by PID ------------------------------

# new_work PREFIX: a new temporary folder /tmp/PREFIX.XXXXXX in $work, with a docker CLI
# config of its own (no credentials or contexts of the user's).
new_work() {
    work=$(mktemp -d "/tmp/$1.XXXXXX")
    export DOCKER_CONFIG=$work/cli
    mkdir -p "$DOCKER_CONFIG"
}

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

# start_vic WORK ADDR STATE: vic-endpoint on a new simulator state in folder STATE, on a
# free port of 127.0.0.1, trusting the plain-HTTP registry at ADDR, its log in
# WORK/vic.log; sets vic_pid and vic_host once it answers /_ping.
start_vic() {
    local work=$1 addr=$2 state=$3 port i
    port=$(free_port)
    vic_host=tcp://127.0.0.1:$port
    # shellcheck disable=SC2154 # vic_bin: set by the sourcing script
    "$vic_bin" --target "sim://$state" -H "$vic_host" --insecure-registry "$addr" \
        --log-level info </dev/null >"$work/vic.log" 2>&1 &
    vic_pid=$!
    for ((i = 0; i < 300; i++)); do
        curl -sf "http://127.0.0.1:$port/_ping" >/dev/null 2>&1 && break
        kill -0 "$vic_pid" 2>/dev/null || { tail -n 20 "$work/vic.log" >&2; vic_pid=""; die "vic-endpoint exited"; }
        sleep 0.1
    done
    curl -sf "http://127.0.0.1:$port/_ping" >/dev/null || die "vic-endpoint did not answer /_ping in 30 s"
}

# start_dockerd WORK ADDR: dockerd with everything of its own under WORK/docker, trusting
# the plain-HTTP registry at ADDR: no iptables, no bridge, no system config file; it
# starts a containerd of its own (state under its exec root) unless a system one listens
# at /run/containerd/containerd.sock. Its log in WORK/dockerd.log; sets dockerd_pid and
# docker_host once it answers.
start_dockerd() {
    local work=$1 addr=$2 i
    mkdir -p "$work/docker/data" "$work/docker/exec"
    echo '{}' >"$work/docker/daemon.json"
    docker_host=unix://$work/docker/docker.sock
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
}

# stop_servers WORK: vic-endpoint and dockerd (vic_pid, dockerd_pid), then the containerd
# dockerd started under WORK, each by PID. For the EXIT trap (after `set +e`).
stop_servers() {
    local work=$1 cpid
    stop "$vic_pid" vic-endpoint
    stop "$dockerd_pid" dockerd
    # dockerd stops the containerd it started; make sure, by the PID it wrote.
    cpid=$(cat "$work/docker/exec/containerd/containerd.pid" 2>/dev/null)
    if [[ $cpid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$cpid/cmdline" 2>/dev/null | grep -qF "$work/"; then
        stop "$cpid" containerd
    fi
}

# remove_work WORK: the registry of WORK/registry stopped, mounts left under WORK undone,
# and WORK removed (or kept and named, with KEEP=1). For the EXIT trap, last.
remove_work() {
    local work=$1
    if [[ -f $work/registry/pid ]]; then
        # shellcheck disable=SC2154 # repo_root: set by the sourcing script
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
}

# --- the runs ----------------------------------------------------------------------------

# compare RUNS TIMED: TIMED HOST prints the seconds one try on HOST takes. One untimed
# try on each side first (code paged in), then RUNS timed tries each, interleaved (who
# goes first alternates), each run printed; sets vic_median, dockerd_median and
# median_ratio (vic/dockerd).
compare() {
    local runs=$1 timed=$2 r v d vic_times=() dockerd_times=()
    "$timed" "$vic_host" >/dev/null
    "$timed" "$docker_host" >/dev/null
    for ((r = 1; r <= runs; r++)); do
        if ((r % 2)); then
            v=$("$timed" "$vic_host")
            d=$("$timed" "$docker_host")
        else
            d=$("$timed" "$docker_host")
            v=$("$timed" "$vic_host")
        fi
        vic_times+=("$v")
        dockerd_times+=("$d")
        echo "run $r: vic ${v} s, dockerd ${d} s"
    done
    vic_median=$(printf '%s\n' "${vic_times[@]}" | median)
    dockerd_median=$(printf '%s\n' "${dockerd_times[@]}" | median)
    # shellcheck disable=SC2034 # read by the sourcing script
    median_ratio=$(awk -v v="$vic_median" -v d="$dockerd_median" 'BEGIN { printf "%.2f", v / d }')
}
