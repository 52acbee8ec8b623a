#!/usr/bin/env bash
# Start (or check) the real hypervisor the QEMU integration tests use, without systemd:
# virtlogd, and libvirtd running INSIDE a network namespace the project owns
# (default: escnc-ci). Bridges, dnsmasq and every guest address then live in that
# namespace, never on the machine's own network; run the tests inside it with
#   ip netns exec escnc-ci <command>
#
# Usage: scripts/hypervisor.sh start|status|netns-name
# Idempotent: a second `start` only checks that everything is up.
set -euo pipefail

NETNS="${ESCNC_NETNS:-escnc-ci}"
URI="qemu:///system"

log() { printf 'hypervisor: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (libvirtd and network namespaces need it)"

netns_inode() { stat -L -c %i "/run/netns/$NETNS" 2>/dev/null || true; }

libvirtd_pid() {
    local pid=""
    if [ -s /run/libvirtd.pid ]; then
        pid=$(cat /run/libvirtd.pid)
        kill -0 "$pid" 2>/dev/null || pid=""
    fi
    printf '%s' "$pid"
}

# the network namespace a pid lives in (inode number), empty when unknown
pid_netns_inode() { stat -L -c %i "/proc/$1/ns/net" 2>/dev/null || true; }

start() {
    if [ ! -e "/run/netns/$NETNS" ]; then
        ip netns add "$NETNS"
        log "created network namespace $NETNS"
    fi
    ip -n "$NETNS" link set lo up

    # KVM is not usable here; with /dev/kvm unreadable libvirtd re-probes QEMU on every
    # call (44 s defineXML). root:kvm 0660 makes the capability cache stick.
    if [ -e /dev/kvm ]; then
        chown root:kvm /dev/kvm 2>/dev/null || true
        chmod 0660 /dev/kvm 2>/dev/null || true
    fi

    if ! pgrep -x virtlogd >/dev/null; then
        virtlogd -d
        log "started virtlogd"
    fi

    local pid
    pid=$(libvirtd_pid)
    if [ -n "$pid" ] && [ "$(pid_netns_inode "$pid")" != "$(netns_inode)" ]; then
        if [ "${CI:-}" = "true" ]; then
            # CI owns this machine: a libvirtd left outside the namespace must go.
            log "libvirtd (pid $pid) runs outside $NETNS: restarting it inside"
            kill "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            pid=""
        else
            die "libvirtd (pid $pid) already runs outside network namespace $NETNS; stop it first"
        fi
    fi
    if [ -z "$pid" ]; then
        rm -f /run/libvirtd.pid
        ip netns exec "$NETNS" libvirtd -d
        log "started libvirtd inside network namespace $NETNS"
    fi

    for _ in $(seq 150); do
        if virsh -c "$URI" version >/dev/null 2>&1; then
            log "libvirtd answers on $URI (namespace $NETNS)"
            return 0
        fi
        sleep 0.2
    done
    die "libvirtd did not answer on $URI within 30 s"
}

status() {
    local pid
    pid=$(libvirtd_pid)
    [ -n "$pid" ] || die "libvirtd is not running"
    [ "$(pid_netns_inode "$pid")" = "$(netns_inode)" ] || die "libvirtd runs outside $NETNS"
    virsh -c "$URI" version
}

case "${1:-start}" in
    start) start ;;
    status) status ;;
    netns-name) printf '%s\n' "$NETNS" ;;
    *) die "usage: $0 start|status|netns-name" ;;
esac
