#!/bin/sh
# Build tether as one static executable (glibc, static-pie) that runs in any root file
# system or boot image: target/release/tether. No NSS (users are read from the image's
# /etc/passwd and /etc/group by tether itself), so glibc's static-linking caveats do
# not apply.
#
#   tether/build-static.sh [OUT]      # builds, checks, copies to OUT (target/static/tether)
#
# PROFILE=dev builds the debug profile instead (target/debug/tether; what the tests
# use, quick to build once the workspace is). A later `cargo build` of the vic-tether
# binary rewrites target/<profile>/tether dynamically linked; the copy in OUT stays
# static: run guests with VIC_TETHER_BIN=OUT (the endpoint otherwise takes the tether
# beside its own executable).
set -eu
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
case $profile in
    release) dir=release ;;
    dev) dir=debug ;;
    *) echo "build-static.sh: PROFILE is release or dev" >&2; exit 2 ;;
esac
cargo rustc -p vic-tether --bin tether --profile "$profile" -- \
    -C target-feature=+crt-static -C strip=symbols
bin=target/$dir/tether
if ldd "$bin" 2>&1 | grep -q '=>'; then
    echo "build-static.sh: $bin is dynamically linked" >&2
    exit 1
fi
out=${1:-target/static/tether}
mkdir -p "$(dirname "$out")"
cp "$bin" "$out"
file "$out" 2>/dev/null || true
echo "$out"
