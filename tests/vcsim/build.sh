#!/usr/bin/env bash
# Build vic's vcsim (tests/vcsim/main.go) against Debian's govmomi simulator library,
# in GOPATH mode (no modules, no network).
#
#   tests/vcsim/build.sh            -> target/vcsim/vcsim (prints the path)
#
# Needs: golang-go, golang-github-vmware-govmomi-dev (tests/servers.sh install).
# Quick no-op when the binary is newer than main.go and this script.
# Env: VCSIM_OUT overrides the output path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${VCSIM_OUT:-$root/target/vcsim/vcsim}"
builddir="$(dirname "$out")/gopath"
gocode=/usr/share/gocode

if [[ -x "$out" && "$out" -nt "$here/main.go" && "$out" -nt "$here/build.sh" ]]; then
    echo "$out"
    exit 0
fi

command -v go >/dev/null || { echo "build.sh: 'go' not found; run tests/servers.sh install" >&2; exit 1; }
[[ -d $gocode/src/github.com/vmware/govmomi/simulator ]] || {
    echo "build.sh: $gocode has no govmomi simulator; run tests/servers.sh install" >&2; exit 1; }

mkdir -p "$builddir/src/vic-vcsim" "$builddir/cache"

# One build at a time (tests may start several vcsims at once); re-check after the wait.
exec 9>"$builddir/.lock"
flock 9
if [[ -x "$out" && "$out" -nt "$here/main.go" && "$out" -nt "$here/build.sh" ]]; then
    echo "$out"
    exit 0
fi
cp "$here/main.go" "$builddir/src/vic-vcsim/main.go"

# Build to a temporary name and rename, so that a concurrent reader never runs half a binary.
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
(
    cd "$builddir/src/vic-vcsim"
    GO111MODULE=off \
    GOPATH="$builddir:$gocode" \
    GOCACHE="${GOCACHE:-$builddir/cache}" \
    GOFLAGS= CGO_ENABLED=0 \
        go build -trimpath -o "$tmp" .
)
mv -f "$tmp" "$out"
echo "$out"
