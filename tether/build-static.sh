#!/bin/sh
# Build tether as one static executable (glibc, static-pie) that runs in any root file
# system or boot image: target/release/tether. No NSS (users are read from the image's
# /etc/passwd and /etc/group by tether itself), so glibc's static-linking caveats do
# not apply.
#
#   tether/build-static.sh [OUT]      # builds, checks, copies to OUT (target/static/tether)
#
# A later `cargo build --release` rewrites target/release/tether dynamically linked;
# the copy in OUT stays static. The guest tests run it with VIC_TETHER_BIN=OUT.
set -eu
cd "$(dirname "$0")/.."
cargo rustc -p vic-tether --bin tether --release -- \
    -C target-feature=+crt-static -C strip=symbols
bin=target/release/tether
if ldd "$bin" 2>&1 | grep -q '=>'; then
    echo "build-static.sh: $bin is dynamically linked" >&2
    exit 1
fi
out=${1:-target/static/tether}
mkdir -p "$(dirname "$out")"
cp "$bin" "$out"
file "$out" 2>/dev/null || true
echo "$out"
