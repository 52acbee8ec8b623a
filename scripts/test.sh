#!/usr/bin/env bash
# Second README command (and what CI runs): install everything the tests need on a fresh
# Debian/Ubuntu machine and run every check and the whole test suite, real-hypervisor
# tests included.
#
#   apt: libvirt dev files, libvirtd + QEMU, busybox-static, syslinux/mtools (tiny guest),
#     postgresql (the tests start a throw-away server of their own, tests/pg_support.py)
#   pip: .venv with the project and its test extras
#   libvirtd + virtlogd started by hand inside network namespace escnc-ci (no systemd;
#     guests' addresses exist only in that namespace), see scripts/hypervisor.sh
#   ruff, mypy, pyang --strict, then pytest (inside the namespace, ESCNC_QEMU_URI set)
#
# Fails when any step fails or pytest runs no test. Idempotent. Without root the
# system steps are done with sudo; without sudo rights the QEMU tests are skipped.
# Extra arguments go to pytest (e.g. scripts/test.sh -k cli).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
t0=$(date +%s)
stamp() { echo "test.sh: [$(($(date +%s) - t0))s] $*"; }

PACKAGES=(
    libvirt-dev pkg-config python3-venv python3-dev gcc
    libvirt-daemon-system libvirt-daemon-driver-qemu qemu-system-x86 qemu-utils dnsmasq-base
    busybox-static syslinux syslinux-common mtools cpio genisoimage iputils-ping iproute2
    procps postgresql
    openssh-client libyang2-tools curl
    chromium chromium-driver
)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
stamp "apt-get update"
$SUDO apt-get update -q >/dev/null
if [ "${#missing[@]}" -gt 0 ]; then
    stamp "apt-get install ${missing[*]}"
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/escnc-apt.log 2>&1 \
        || { tail -n 50 /tmp/escnc-apt.log; exit 1; }
fi

stamp "python venv and pip install -e .[test]"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
export PATH="$root/.venv/bin:$PATH"

# Every check runs even when an earlier one failed; the script fails at the end.
failed=()
check() {
    local name=$1
    shift
    stamp "$name"
    "$@" || { failed+=("$name"); echo "test.sh: $name FAILED" >&2; }
}
check ruff ruff check src tests examples
check mypy mypy
if compgen -G "yang/*.yang" >/dev/null; then
    check "pyang --strict" pyang --strict -p yang yang/*.yang
fi

# The real hypervisor (root only: libvirtd and network namespaces need it)
in_netns=()
if [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; then
    stamp "tiny test guest"
    $SUDO env "PATH=$PATH" python tests/guest/build.py
    stamp "libvirtd inside network namespace"
    $SUDO env "CI=${CI:-}" bash scripts/hypervisor.sh start
    netns=$($SUDO bash scripts/hypervisor.sh netns-name)
    export ESCNC_QEMU_URI="qemu:///system"
    in_netns=($SUDO ip netns exec "$netns" env "PATH=$PATH" "CI=${CI:-}" "ESCNC_QEMU_URI=$ESCNC_QEMU_URI")
    # a second daemon as live-migration target; in CI it must start (its tests may
    # not be skipped there), elsewhere they skip when it cannot
    stamp "peer libvirtd (migration target)"
    if $SUDO env "CI=${CI:-}" bash scripts/hypervisor.sh start-peer; then
        in_netns+=("ESCNC_QEMU_URI2=$($SUDO bash scripts/hypervisor.sh peer-uri)")
    elif [ "${CI:-}" = "true" ]; then
        failed+=("peer libvirtd")
    fi
else
    stamp "no root and no sudo: QEMU tests will be skipped"
fi

# the browser test's screenshot (tests/test_dashboard.py) is kept here
export ESCNC_TEST_ARTIFACTS="${ESCNC_TEST_ARTIFACTS:-$root/tests/artifacts}"
[ "${#in_netns[@]}" -eq 0 ] || in_netns+=("ESCNC_TEST_ARTIFACTS=$ESCNC_TEST_ARTIFACTS")
stamp "pytest"
set +e
"${in_netns[@]}" python -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
stamp "pytest exit status $rc"
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests" >&2
    failed+=("pytest (no tests)")
elif [ "$rc" -ne 0 ]; then
    failed+=("pytest")
fi
if [ "${#failed[@]}" -gt 0 ]; then
    echo "test.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
stamp "all checks passed"
