#!/usr/bin/env bash
# Local servers for vic's tests: a Docker registry (Debian's docker-registry) and a vSphere
# API simulator (tests/vcsim), each started on 127.0.0.1 in a directory of its own.
#
#   tests/servers.sh install                          apt-get the Debian packages the tests need
#   tests/servers.sh registry-start DIR [--htpasswd FILE | --auth-config FILE]
#                                                     prints 127.0.0.1:PORT; DIR/{config.yml,data,registry.log,pid,addr}
#                                                     --auth-config appends FILE, a top-level `auth:` section
#                                                     (e.g. token auth), to config.yml
#   tests/servers.sh registry-stop DIR
#   tests/servers.sh vcsim-start DIR [vcsim flags...] prints the vcsim info JSON line; DIR/{info.json,pid,vcsim.log,datastores}
#   tests/servers.sh vcsim-stop DIR
#   tests/servers.sh htpasswd FILE USER PASS          appends a bcrypt entry (the registry reads bcrypt only)
#
# The servers run in the background, detached from the caller's stdin/stdout/stderr (so a
# caller reading this script's output to its end does not wait for them), in the caller's
# process group. Stop them with the *-stop subcommands (by the PID in DIR/pid).
# Env: VCSIM_BIN to use a prebuilt vcsim instead of tests/vcsim/build.sh's;
#      SERVERS_TIMEOUT seconds to wait for a server to answer (default 30).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
timeout_s="${SERVERS_TIMEOUT:-30}"

die() { echo "servers.sh: $*" >&2; exit 1; }

# The Debian packages the tests need.
PACKAGES=(
    docker-registry                    # the registry the end-to-end tests pull from and push to
    apache2-utils                      # htpasswd, for registries with basic auth
    golang-go                          # builds tests/vcsim
    golang-github-vmware-govmomi-dev   # govmomi's simulator library (vcsim), built from source
    busybox-static                     # the one binary in the test images (tests/fixtures)
    curl                               # readiness checks, registry pushes
    ca-certificates
    python3                            # free-port lookup
    util-linux                         # flock (tests/vcsim/build.sh)
    tar gzip coreutils                 # image layers
    openssl                            # seeded incompressible data (tests/fixtures)
)

cmd_install() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if ((${#missing[@]} == 0)); then
        echo "servers.sh: all test packages are installed"
        return 0
    fi
    local sudo=()
    if [[ $(id -u) != 0 ]]; then sudo=(sudo); fi
    echo "servers.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    # The package may start a system registry on :5000 where systemd runs; the tests
    # start their own instances, so keep the system one off.
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        "${sudo[@]}" systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
    fi
}

# A free TCP port on 127.0.0.1: the kernel's pick (bind to port 0) when python3 is there,
# else a random one not in the listening sockets of /proc/net/tcp*. Either can race with
# another process binding it before our server does: the start functions retry.
free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
        return
    fi
    local used=" " hex p
    # Column 2 is local_address as HEXIP:HEXPORT; state 0A is LISTEN.
    for hex in $(awk 'NR > 1 && $4 == "0A" { n = split($2, a, ":"); print a[n] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
        used+="$((16#$hex)) "
    done
    while :; do
        p=$((20000 + RANDOM % 12000))
        [[ $used == *" $p "* ]] || { echo "$p"; return; }
    done
}

# alive PID NEEDLE: the process exists, is not a zombie, and its command line contains
# NEEDLE (the server's absolute DIR, so a recycled PID is not mistaken for our server).
alive() {
    local pid=$1 needle=$2 state
    [[ -r /proc/$pid/stat ]] || return 1
    state=$(sed 's/^.*) \(.\).*/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $state != Z ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$needle"
}

# stop_pid DIR NAME: TERM the process in DIR/pid, wait for it to go (KILL after 10 s).
stop_pid() {
    local dir=$1 name=$2 pid i
    [[ -f $dir/pid ]] || { echo "servers.sh: no $dir/pid, nothing to stop" >&2; return 0; }
    dir=$(cd "$dir" && pwd)
    pid=$(<"$dir/pid")
    [[ $pid =~ ^[0-9]+$ ]] || die "bad pid in $dir/pid: $pid"
    if alive "$pid" "$dir/"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            alive "$pid" "$dir/" || break
            sleep 0.1
        done
        if alive "$pid" "$dir/"; then
            echo "servers.sh: $name ($pid) did not stop on TERM; killing" >&2
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do
                alive "$pid" "$dir/" || break
                sleep 0.1
            done
            alive "$pid" "$dir/" && die "$name ($pid) is still running"
        fi
    fi
    rm -f "$dir/pid"
}

# refuse_running DIR NAME: fail if DIR (absolute) /pid names a live server.
refuse_running() {
    local dir=$1 name=$2 pid
    if [[ -f $dir/pid ]]; then
        pid=$(<"$dir/pid")
        if alive "$pid" "$dir/"; then
            die "$name already running in $dir (pid $pid); stop it first"
        fi
        rm -f "$dir/pid"
    fi
}

cmd_registry_start() {
    (($# >= 1)) || die "usage: registry-start DIR [--htpasswd FILE | --auth-config FILE]"
    local dir=$1 htpasswd="" authconfig=""
    shift
    while (($#)); do
        case $1 in
            --htpasswd) (($# >= 2)) || die "--htpasswd needs a FILE"; htpasswd=$2; shift 2 ;;
            --htpasswd=*) htpasswd=${1#*=}; shift ;;
            --auth-config) (($# >= 2)) || die "--auth-config needs a FILE"; authconfig=$2; shift 2 ;;
            --auth-config=*) authconfig=${1#*=}; shift ;;
            *) die "registry-start: unknown argument $1" ;;
        esac
    done
    [[ -z $htpasswd || -z $authconfig ]] || die "registry-start: --htpasswd and --auth-config exclude each other"
    [[ -z $authconfig || -f $authconfig ]] || die "no auth config file $authconfig"
    command -v docker-registry >/dev/null || die "docker-registry not found; run tests/servers.sh install"
    mkdir -p "$dir/data"
    dir=$(cd "$dir" && pwd)
    if [[ -n $htpasswd ]]; then
        [[ -f $htpasswd ]] || die "no htpasswd file $htpasswd"
        htpasswd=$(cd "$(dirname "$htpasswd")" && pwd)/$(basename "$htpasswd")
    fi
    refuse_running "$dir" docker-registry
    rm -f "$dir/addr"

    local attempt port pid code='' want i logstart
    want=200
    [[ -n $htpasswd || -n $authconfig ]] && want=401
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        {
            echo "# written by tests/servers.sh registry-start"
            echo "version: 0.1"
            echo "log:"
            echo "  level: info"
            echo "  accesslog:"
            echo "    disabled: false"
            echo "  fields:"
            echo "    service: registry"
            echo "storage:"
            echo "  filesystem:"
            echo "    rootdirectory: $dir/data"
            echo "  delete:"
            echo "    enabled: true"
            echo "  cache:"
            echo "    blobdescriptor: inmemory"
            echo "  maintenance:"
            echo "    uploadpurging:"
            echo "      enabled: false"
            echo "http:"
            echo "  addr: 127.0.0.1:$port"
            echo "  secret: vic-tests-$port"
            echo "  headers:"
            echo "    X-Content-Type-Options: [nosniff]"
            if [[ -n $htpasswd ]]; then
                echo "auth:"
                echo "  htpasswd:"
                echo "    realm: vic-test-registry"
                echo "    path: $htpasswd"
            fi
            if [[ -n $authconfig ]]; then
                cat "$authconfig"
            fi
        } >"$dir/config.yml"

        logstart=$(($(stat -c %s "$dir/registry.log" 2>/dev/null || echo 0) + 1))
        docker-registry serve "$dir/config.yml" </dev/null >>"$dir/registry.log" 2>&1 &
        pid=$!
        for ((i = 0; i < timeout_s * 10; i++)); do
            # Our own child, seconds old: kill -0 is enough here (its cmdline may still
            # be this script's until it has exec'd docker-registry).
            if ! kill -0 "$pid" 2>/dev/null; then
                break
            fi
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/v2/" || true)
            if [[ $code == "$want" ]]; then
                echo "$pid" >"$dir/pid"
                echo "127.0.0.1:$port" >"$dir/addr"
                echo "127.0.0.1:$port"
                return 0
            fi
            sleep 0.1
        done
        if alive "$pid" "$dir/"; then
            kill -KILL "$pid" 2>/dev/null || true
            die "registry in $dir did not answer GET /v2/ with $want (last: ${code:-none}) in ${timeout_s}s; see $dir/registry.log"
        fi
        if tail -c "+$logstart" "$dir/registry.log" | grep -q 'address already in use'; then
            echo "servers.sh: port $port taken, retrying" >&2
            continue
        fi
        tail -n 20 "$dir/registry.log" >&2
        die "registry in $dir exited; see $dir/registry.log"
    done
    die "registry in $dir: no free port after 5 tries"
}

vcsim_bin() {
    if [[ -n ${VCSIM_BIN:-} ]]; then
        [[ -x $VCSIM_BIN ]] || die "VCSIM_BIN=$VCSIM_BIN is not executable"
        echo "$VCSIM_BIN"
    else
        "$here/vcsim/build.sh"
    fi
}

cmd_vcsim_start() {
    (($# >= 1)) || die "usage: vcsim-start DIR [vcsim flags...]"
    local dir=$1
    shift
    local bin
    bin=$(vcsim_bin) || die "could not build vcsim"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    refuse_running "$dir" vcsim
    rm -f "$dir/info.json"
    local listen=(-listen 127.0.0.1:0) a
    for a in "$@"; do
        case $a in -listen | -listen=* | --listen | --listen=*) listen=() ;; esac
    done

    local pid i
    "$bin" "${listen[@]}" -datastore-dir "$dir/datastores" -info "$dir/info.json" "$@" \
        </dev/null >>"$dir/vcsim.log" 2>&1 &
    pid=$!
    for ((i = 0; i < timeout_s * 10; i++)); do
        if [[ -s $dir/info.json ]]; then
            echo "$pid" >"$dir/pid"
            cat "$dir/info.json"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if alive "$pid" "$dir/"; then
        kill -KILL "$pid" 2>/dev/null || true
        die "vcsim in $dir wrote no info.json in ${timeout_s}s; see $dir/vcsim.log"
    fi
    tail -n 20 "$dir/vcsim.log" >&2
    die "vcsim in $dir exited; see $dir/vcsim.log"
}

cmd_htpasswd() {
    (($# == 3)) || die "usage: htpasswd FILE USER PASS"
    command -v htpasswd >/dev/null || die "htpasswd not found; run tests/servers.sh install"
    htpasswd -Bbn "$2" "$3" | sed '/^$/d' >>"$1"
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

(($# >= 1)) || usage
sub=$1
shift
case $sub in
    install) cmd_install "$@" ;;
    registry-start) cmd_registry_start "$@" ;;
    registry-stop) (($# == 1)) || die "usage: registry-stop DIR"; stop_pid "$1" docker-registry ;;
    vcsim-start) cmd_vcsim_start "$@" ;;
    vcsim-stop) (($# == 1)) || die "usage: vcsim-stop DIR"; stop_pid "$1" vcsim ;;
    htpasswd) cmd_htpasswd "$@" ;;
    -h | --help | help) usage ;;
    *) echo "servers.sh: unknown subcommand $sub" >&2; usage ;;
esac
