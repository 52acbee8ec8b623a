#!/usr/bin/env bash
# Make the image file examples/deployment.xml refers to (src "cirros.qcow2", relative to
# the server's first image import directory): an empty 64 MiB qcow2 disk, enough for the
# libvirt test driver that `escnc serve` uses by default.
#
#   examples/make-image.sh [IMPORT_DIR]
#
# IMPORT_DIR defaults to the default server's import directory, STATE_DIR/import with
# STATE_DIR from ESCNC_STATE_DIR or ./escnc-state. Prints the file's path.
set -euo pipefail
dir=${1:-${ESCNC_STATE_DIR:-escnc-state}/import}
out=$dir/cirros.qcow2
mkdir -p "$dir"
if [ ! -s "$out" ]; then
    if command -v qemu-img >/dev/null; then
        qemu-img create -q -f qcow2 "$out" 64M
    else  # a bare qcow2 header: enough for the test driver
        python3 -c "import sys; open(sys.argv[1], 'wb').write(b'QFI\xfb' + bytes(1020))" "$out"
    fi
fi
echo "$out"
