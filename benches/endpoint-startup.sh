#!/usr/bin/env bash
# Measures how long vic-endpoint takes from exec to answering /_ping on the embedded
# simulator: on a new state folder (first start creates the inventory and the VCH's
# vApp) and on an existing one. Prints the median of N runs of each, in milliseconds.
# Usage: benches/endpoint-startup.sh [RUNS]   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-11}
cargo build --release -q -p vic-endpoint
bin=target/release/vic-endpoint
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

one() { # $1 = state dir; prints ms until /_ping answers
    local start end pid
    start=$(date +%s%N)
    "$bin" --target "sim://$1" -H "tcp://127.0.0.1:$port" --log-level error &
    pid=$!
    until curl -sf "http://127.0.0.1:$port/_ping" >/dev/null 2>&1; do sleep 0.005; done
    end=$(date +%s%N)
    kill -9 "$pid"; wait "$pid" 2>/dev/null || true
    echo $(( (end - start) / 1000000 ))
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

fresh=$(for i in $(seq "$runs"); do one "$work/fresh-$i"; done | median)
one "$work/warm" >/dev/null
warm=$(for i in $(seq "$runs"); do one "$work/warm"; done | median)
echo "vic-endpoint start to first /_ping (median of $runs): new state ${fresh} ms, existing state ${warm} ms"
