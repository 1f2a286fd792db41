#!/usr/bin/env bash
# `docker run --rm IMAGE true` and idle containers' memory, through vic-endpoint (release
# build, embedded simulator: each container's guest is the real `tether` in Linux
# namespaces) and through Debian's dockerd (with its containerd and runc), both with the
# same busybox test image (vic_tests::fixtures, pushed to a local docker-registry over
# plain HTTP and pulled into both first). The goals of issue 4: run time at most 0.3 of
# dockerd's, memory per idle container at most a quarter of dockerd's.
#
# Usage: benches/run-vs-dockerd.sh [RUNS] [CONTAINERS]     (defaults: 10 runs, 5 containers)
#
# 1. Speed: one untimed `docker run --rm --network none IMAGE true` on each side (code
#    paged in, image first used), then RUNS timed ones each, interleaved (who goes first
#    alternates). The time is the docker CLI's wall clock from exec to exit, so it covers
#    create, attach, start, the guest's run, wait and removal. Prints each run, both
#    medians in seconds and the ratio vic/dockerd.
# 2. Memory: CONTAINERS `docker run -d --network none IMAGE sleep 3600` on each side,
#    then, after they settle, the host memory they added, as PSS (proportional set size,
#    /proc/PID/smaps_rollup: private pages plus each shared page divided by the number
#    of processes mapping it, so the tether or busybox text shared by N containers
#    counts once in total, not N times):
#    - vic: the processes of each guest — every process in the PID namespace of the
#      guest's PID 1 (the tether, whose host PID the runner records in
#      <state>/datastores/LocalDS_0/<container-id>/guest.pid), and its descendants —
#      plus the growth of vic-endpoint's own PSS from before the containers were started
#      (a daemon whose PSS went down counts 0, on both sides);
#    - dockerd: each containerd-shim(-runc-v2) of ours and its descendants (the
#      container's processes), plus the growth of dockerd's and containerd's PSS.
#    Each total is divided by CONTAINERS; prints KiB per container for both and the
#    ratio vic/dockerd. Also prints, for information, the mean usage of the containers'
#    memory cgroups (v1 memory.usage_in_bytes, v2 memory.current; it includes page cache
#    charged to the group, e.g. the image files its first reader touched, and never the
#    shim or the daemons) and their anonymous memory (memory.stat rss / anon).
#
# Network: the simulator's guests get a network namespace with loopback only, which is
# Docker's `--network none`; dockerd runs with --bridge=none --iptables=false
# --ip6tables=false (no bridge, veth or NAT rules on this host, no traffic off
# loopback), and both sides are asked for `--network none`, so neither sets up a
# network the other does not.
#
# Needs: root (dockerd, and PSS of other processes), Rust, the docker CLI, Debian's
# docker-registry (tests/servers.sh install), busybox-static, curl, python3, ps, and
# dockerd with containerd and runc (Debian's docker.io: installed with apt-get when
# missing, with a policy-rc.d that keeps the package from starting any system service).
# Everything it starts (registry, vic-endpoint, dockerd and its containerd) listens on
# 127.0.0.1 or in a temporary folder; the containers are removed and the servers
# stopped by PID when the script ends, however it ends (guests or shims still there
# after that are killed by the PIDs recorded in the temporary folder).
# Env: KEEP=1 keeps the temporary folder (logs, state, the per-process memory lists)
# and prints its path.
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$(pwd)

runs=${1:-10}
count=${2:-5}
usage() { echo "usage: $0 [RUNS] [CONTAINERS]" >&2; exit 2; }
[[ $runs =~ ^[1-9][0-9]*$ ]] || usage
[[ $count =~ ^[1-9][0-9]*$ ]] || usage

BENCH=run-vs-dockerd
# shellcheck source-path=SCRIPTDIR/..
. benches/common.sh

[[ $(id -u) == 0 ]] || die "run it as root (dockerd needs it, and the PSS of other processes)"

command -v docker >/dev/null || die "the docker CLI is missing"
command -v docker-registry >/dev/null || die "docker-registry is missing; run tests/servers.sh install"
command -v ps >/dev/null || die "ps (procps) is missing"
install_docker dockerd containerd runc

# --- build -----------------------------------------------------------------------------

say "building release binaries (static tether, vic-endpoint, push-fixture)"
sh tether/build-static.sh target/static/tether >/dev/null
cargo build --release -q -p vic-endpoint
cargo build --release -q -p vic-benches --example push-fixture
vic_bin=$repo_root/target/release/vic-endpoint
push_bin=$repo_root/target/release/examples/push-fixture
# The runner takes the tether beside the endpoint binary (TetherRunner::find_tether);
# name it explicitly so that no other one (VIC_TETHER_BIN of the caller, PATH) is used.
export VIC_TETHER_BIN=$repo_root/target/static/tether
[[ -x $VIC_TETHER_BIN ]] || die "no $VIC_TETHER_BIN after the build"

# --- servers and containers, stopped and removed on exit ---------------------------------

new_work vic-run-bench
state=$work/state
vic_containers=()
dockerd_containers=()

# start_time PID: field 22 of /proc/PID/stat (after the parenthesised command name).
start_time() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    s=${s##*) }
    awk '{ print $20 }' <<<"$s"
}

# descendants PID...: the PIDs given and all their descendants, one a line.
descendants() {
    ps -e -o pid=,ppid= | awk -v roots="$*" '
        { parent[$1] = $2; pids[NR] = $1 }
        END {
            n = split(roots, r, " ")
            for (i = 1; i <= n; i++) keep[r[i]] = 1
            do {
                changed = 0
                for (i = 1; i <= NR; i++) {
                    p = pids[i]
                    if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 }
                }
            } while (changed)
            for (p in keep) print p
        }'
}

# fnv32 STRING: FNV-1a (32 bits) of an ASCII string, as the simulator's runner hashes
# its state folder into the names of its guests' cgroups (vic/<vm>-<hash>).
fnv32() {
    local s=$1 h=2166136261 i c
    for ((i = 0; i < ${#s}; i++)); do
        printf -v c '%d' "'${s:i:1}"
        h=$((((h ^ c) * 16777619) & 0xffffffff))
    done
    printf '%08x\n' "$h"
}

# Guests and shims left after their servers stopped (a failure half-way): killed by the
# PIDs recorded in $work, with their cgroups.
kill_leftovers() {
    local f pid start g shim id i left
    while IFS= read -r -d '' f; do
        read -r pid start <"$f" || continue
        [[ $pid =~ ^[0-9]+$ ]] || continue
        if [[ $(start_time "$pid" || true) == "$start" ]]; then
            say "guest $pid ($(dirname "$f")) outlived the endpoint; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done < <(find "$state" -name guest.pid -print0 2>/dev/null)
    # The cgroups of this state folder's guests (also of one whose start was cut short,
    # before its guest.pid was written): their processes killed, the groups removed
    # once empty (the kernel takes a moment to tear a PID namespace down).
    local groups=()
    mapfile -t groups < <(find /sys/fs/cgroup -mindepth 2 -maxdepth 3 -type d \
        -path "*/vic/*-$(fnv32 "$state")" 2>/dev/null)
    if ((${#groups[@]})); then
        say "removing ${#groups[@]} cgroups of vic guests left behind"
        for ((i = 0; i < 50; i++)); do
            left=0
            for g in "${groups[@]}"; do
                [[ -d $g ]] || continue
                # shellcheck disable=SC2046 # one PID a word
                kill -KILL $(cat "$g/cgroup.procs" 2>/dev/null) 2>/dev/null
                rmdir "$g" 2>/dev/null || left=1
            done
            ((left)) || break
            sleep 0.1
        done
        ((left == 0)) || say "some cgroups of vic guests could not be removed: ${groups[*]}"
    fi
    for shim in $(pgrep -f "containerd-shim.*$work/" || true); do
        id=$(tr '\0' '\n' <"/proc/$shim/cmdline" 2>/dev/null | awk 'prev == "-id" { print; exit } { prev = $0 }')
        say "containerd-shim $shim (container ${id:-?}) outlived dockerd; killing it and its container"
        # shellcheck disable=SC2046 # one PID a word
        kill -KILL $(descendants "$shim") 2>/dev/null || true
        sleep 0.5
        if [[ $id =~ ^[0-9a-f]{64}$ ]]; then
            for g in /sys/fs/cgroup/*/docker/"$id" /sys/fs/cgroup/docker/"$id"; do
                [[ -d $g ]] && rmdir "$g" 2>/dev/null
            done
        fi
    done
}

cleanup() {
    local rc=$?
    set +e
    # No second interruption half-way through: the waits below are bounded.
    trap '' INT TERM
    if ((${#vic_containers[@]})) && [[ -n $vic_pid ]]; then
        docker -H "$vic_host" rm -f "${vic_containers[@]}" >/dev/null 2>&1 ||
            say "docker rm -f on vic failed"
    fi
    if ((${#dockerd_containers[@]})) && [[ -n $dockerd_pid ]]; then
        docker -H "$docker_host" rm -f "${dockerd_containers[@]}" >/dev/null 2>&1 ||
            say "docker rm -f on dockerd failed"
    fi
    stop_servers "$work"
    kill_leftovers
    remove_work "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

addr=$("$repo_root/tests/servers.sh" registry-start "$work/registry")
say "registry at $addr; pushing the busybox test image"
read -r ref image_id < <("$push_bin" "$addr" busybox)
[[ -n ${image_id:-} ]] || die "push-fixture printed no image"

# vic-endpoint on a new simulator state; dockerd with everything of its own under $work.
start_vic "$work" "$addr" "$state"
start_dockerd "$work" "$addr"
say "dockerd $(docker -H "$docker_host" version -f '{{.Server.Version}}'), storage driver" \
    "$(docker -H "$docker_host" info -f '{{.Driver}}'), cgroup driver $(docker -H "$docker_host" info -f '{{.CgroupDriver}}')"

# containerd: the one dockerd started (its PID file), else a system one it uses.
containerd_pid() {
    local p
    p=$(cat "$work/docker/exec/containerd/containerd.pid" 2>/dev/null || true)
    if [[ $p =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null; then
        echo "$p"
    else
        pgrep -x containerd | head -n 1
    fi
}

for h in "$vic_host" "$docker_host"; do
    docker -H "$h" pull -q "$ref" >/dev/null
    id=$(docker -H "$h" image inspect -f '{{.Id}}' "$ref")
    [[ $id == "$image_id" ]] || die "$h pulled image $id, expected $image_id"
done

# --- speed ---------------------------------------------------------------------------

# run_true HOST: seconds one `docker run --rm IMAGE true` takes.
run_true() {
    local host=$1 start end rc=0
    start=$(date +%s%N)
    docker -H "$host" run --rm --network none "$ref" true </dev/null >"$work/run.out" 2>&1 || rc=$?
    end=$(date +%s%N)
    if ((rc != 0)); then
        cat "$work/run.out" >&2
        die "docker run --rm on $host exited with $rc"
    fi
    awk -v n=$((end - start)) 'BEGIN { printf "%.3f\n", n / 1e9 }'
}

# One run each, untimed; then the timed ones, interleaved.
compare "$runs" run_true
[[ -z $(docker -H "$vic_host" ps -aq) ]] || die "containers left on vic after docker run --rm"
[[ -z $(docker -H "$docker_host" ps -aq) ]] || die "containers left on dockerd after docker run --rm"

# --- memory ----------------------------------------------------------------------------

# pss PID...: the summed PSS in KiB of the processes given (gone ones count 0); each
# process also goes to the list file $pss_list with its PSS and command line.
pss_list=/dev/null
pss() {
    local p kib total=0
    for p in "$@"; do
        kib=$(awk '/^Pss:/ { print $2; exit }' "/proc/$p/smaps_rollup" 2>/dev/null || true)
        [[ $kib =~ ^[0-9]+$ ]] || continue
        total=$((total + kib))
        printf '%8d KiB  %7d  %s\n' "$kib" "$p" "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-150)" >>"$pss_list"
    done
    echo "$total"
}

# guest_pids ID: the host PIDs of vic container ID's guest: its PID 1 (guest.pid),
# every process in that PID namespace, and their descendants.
guest_pids() {
    local f pid ns p
    f=$(find "$state" -path "*/$1/guest.pid" -print -quit)
    [[ -n $f ]] || die "no guest.pid of vic container $1 under $state"
    read -r pid _ <"$f"
    ns=$(readlink "/proc/$pid/ns/pid") || die "guest $pid of vic container $1 is gone"
    {
        for p in /proc/[0-9]*; do
            [[ $(readlink "$p/ns/pid" 2>/dev/null) == "$ns" ]] && echo "${p#/proc/}"
        done
        descendants "$pid"
    } | sort -un
}

# shim_pids: the PIDs of our containerd shims (their -address is under $work) and their
# descendants.
shim_pids() {
    local shims
    shims=$(pgrep -f "containerd-shim.*$work/" | tr '\n' ' ')
    [[ -n $shims ]] || die "no containerd-shim of ours running"
    # shellcheck disable=SC2086 # one PID a word
    descendants $shims | sort -un
}

# cgroup_mem PID: "USAGE_BYTES ANON_BYTES" of the memory cgroup PID is in.
cgroup_mem() {
    local line path dir
    line=$(grep -E '^[0-9]+:([^:]*,)?memory(,[^:]*)?:' "/proc/$1/cgroup" || true)
    if [[ -n $line ]]; then
        path=${line#*:*:}
        for dir in /sys/fs/cgroup/memory /sys/fs/cgroup/memory,*; do
            [[ -f $dir$path/memory.usage_in_bytes ]] || continue
            echo "$(cat "$dir$path/memory.usage_in_bytes") $(awk '$1 == "rss" { print $2 }' "$dir$path/memory.stat")"
            return
        done
    else
        path=$(sed -n 's/^0:://p' "/proc/$1/cgroup")
        if [[ -f /sys/fs/cgroup$path/memory.current ]]; then
            echo "$(cat "/sys/fs/cgroup$path/memory.current") $(awk '$1 == "anon" { print $2 }' "/sys/fs/cgroup$path/memory.stat")"
            return
        fi
    fi
    echo "0 0"
}

# The daemons' PSS before any container, after the runs above warmed them.
sleep 2
pss_list=$work/mem-before.txt
vic_base=$(pss "$vic_pid")
dockerd_base=$(pss "$dockerd_pid" "$(containerd_pid)")

say "starting $count idle containers on each"
for ((c = 0; c < count; c++)); do
    vic_containers+=("$(docker -H "$vic_host" run -d --network none "$ref" sleep 3600)")
    dockerd_containers+=("$(docker -H "$docker_host" run -d --network none "$ref" sleep 3600)")
done
sleep 3
for c in "${vic_containers[@]}"; do
    [[ $(docker -H "$vic_host" inspect -f '{{.State.Running}}' "$c") == true ]] || die "vic container $c is not running"
done
for c in "${dockerd_containers[@]}"; do
    [[ $(docker -H "$docker_host" inspect -f '{{.State.Running}}' "$c") == true ]] || die "dockerd container $c is not running"
done

pss_list=$work/mem-vic.txt
vic_guests=0
vic_cg_usage=0
vic_cg_anon=0
for c in "${vic_containers[@]}"; do
    mapfile -t pids < <(guest_pids "$c")
    ((${#pids[@]} >= 2)) || die "vic container $c: expected the tether and sleep, found PIDs ${pids[*]}"
    vic_guests=$((vic_guests + $(pss "${pids[@]}")))
    read -r u a < <(cgroup_mem "${pids[0]}")
    vic_cg_usage=$((vic_cg_usage + u))
    vic_cg_anon=$((vic_cg_anon + a))
done
vic_endpoint=$(pss "$vic_pid")

pss_list=$work/mem-dockerd.txt
mapfile -t pids < <(shim_pids)
dockerd_shims=$(pss "${pids[@]}")
dockerd_daemons=$(pss "$dockerd_pid" "$(containerd_pid)")
dockerd_cg_usage=0
dockerd_cg_anon=0
for c in "${dockerd_containers[@]}"; do
    read -r u a < <(cgroup_mem "$(docker -H "$docker_host" inspect -f '{{.State.Pid}}' "$c")")
    dockerd_cg_usage=$((dockerd_cg_usage + u))
    dockerd_cg_anon=$((dockerd_cg_anon + a))
done

# A daemon whose PSS went down (its allocator gave pages back) adds 0, not less.
vic_growth=$((vic_endpoint > vic_base ? vic_endpoint - vic_base : 0))
dockerd_growth=$((dockerd_daemons > dockerd_base ? dockerd_daemons - dockerd_base : 0))
vic_per=$(((vic_guests + vic_growth) / count))
dockerd_per=$(((dockerd_shims + dockerd_growth) / count))
mem_ratio=$(awk -v v="$vic_per" -v d="$dockerd_per" 'BEGIN { printf "%.2f", v / d }')

echo "vic:     guests (tether + sleep) $((vic_guests / count)) KiB PSS per container;" \
    "vic-endpoint ${vic_base} -> ${vic_endpoint} KiB ($((vic_growth / count)) per container)"
echo "dockerd: shims (shim + sleep) $((dockerd_shims / count)) KiB PSS per container;" \
    "dockerd+containerd ${dockerd_base} -> ${dockerd_daemons} KiB ($((dockerd_growth / count)) per container)"
echo "memory cgroups, mean per container (usage incl. page cache / anon):" \
    "vic $((vic_cg_usage / count / 1024)) / $((vic_cg_anon / count / 1024)) KiB," \
    "dockerd $((dockerd_cg_usage / count / 1024)) / $((dockerd_cg_anon / count / 1024)) KiB"
echo "docker run --rm $ref true, median of $runs:" \
    "vic ${vic_median} s, dockerd ${dockerd_median} s, vic/dockerd ${median_ratio} (goal <= 0.3)"
echo "host memory per idle container (PSS, $count containers):" \
    "vic ${vic_per} KiB, dockerd ${dockerd_per} KiB, vic/dockerd ${mem_ratio} (goal <= 0.25)"
