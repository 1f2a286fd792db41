#!/usr/bin/env bash
# Runs every test of vic on a fresh machine: installs what the tests need with apt-get,
# builds the workspace, checks formatting and lints, and runs all tests. Servers the
# tests need (registry, vcsim) are started by the tests themselves and stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/servers.sh install

if ! command -v docker >/dev/null 2>&1; then
    echo "tests/run.sh: the docker CLI (client only) is needed for the end-to-end tests" >&2
    exit 1
fi

export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The end-to-end tests start the built binaries (vic-endpoint, later tether).
cargo build --workspace --bins --locked
# Guests run the statically linked tether, as a container VM's boot image would.
PROFILE=dev bash tether/build-static.sh target/static/tether
export VIC_TETHER_BIN="$PWD/target/static/tether"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
    # nextest does not run doctests.
    cargo test --workspace --doc --locked
else
    cargo test --workspace --locked --no-fail-fast
fi
echo "tests/run.sh: all tests passed"
