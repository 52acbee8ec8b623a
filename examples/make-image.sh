#!/usr/bin/env bash
# Make the image file the examples refer to: /tmp/escnc-examples/cirros.qcow2, an empty
# 64 MiB qcow2 disk (enough for the libvirt test driver that `escnc serve` uses by default).
set -euo pipefail
out=/tmp/escnc-examples/cirros.qcow2
mkdir -p "$(dirname "$out")"
[ -s "$out" ] && exit 0
if command -v qemu-img >/dev/null; then
    qemu-img create -q -f qcow2 "$out" 64M
else  # a bare qcow2 header: enough for the test driver
    python3 -c "import sys; open(sys.argv[1], 'wb').write(b'QFI\xfb' + bytes(1020))" "$out"
fi
echo "$out"
