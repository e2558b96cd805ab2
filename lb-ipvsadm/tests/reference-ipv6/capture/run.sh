#!/bin/sh
# Recaptures this directory's listings from real ipvsadm on real IPVS:
# boots Debian's 6.1 kernel under QEMU with the project's `cargo xtask vm`
# (host root shared read-only over 9p, so the host's /usr/sbin/ipvsadm and
# python3 are used), runs guest.sh there with ../commands.sh and
# traffic.py, and unpacks the captures into DEST (default: a fresh
# directory under /tmp; copy the files you want over the committed ones).
# Needs root, ipvsadm installed on the host (apt-get install ipvsadm) and
# what `cargo xtask setup` installs for `cargo xtask vm`.
set -e
here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-$(mktemp -d /tmp/ipvs-capture.XXXXXX)}
logs=$(mktemp -d /tmp/ipvs-capture-logs.XXXXXX)
root=$(cd "$here/../../.." && pwd)          # the workspace
xtask=${XTASK:-}                             # a prebuilt xtask binary, or cargo xtask
cd "$root"
set -- sh -c "$(cat "$here/guest.sh")" guest "$(cat "$here/../commands.sh")" "$(cat "$here/traffic.py")"
if [ -n "$xtask" ]; then
  timeout 900 "$xtask" vm --kernel 6.1 --timeout 600 -- "$@" > "$logs/run.out" 2> "$logs/run.err"
else
  timeout 900 cargo xtask vm --kernel 6.1 --timeout 600 -- "$@" > "$logs/run.out" 2> "$logs/run.err"
fi
mkdir -p "$dest"
sed -n '/=====BEGIN TAR=====/,/=====END TAR=====/p' "$logs/run.out" | sed '1d;$d' | base64 -d | tar -C "$dest" -xf -
echo "captures in $dest (VM log: $logs/run.err)"
ls -la "$dest"
