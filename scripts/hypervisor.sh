#!/usr/bin/env bash
# Start (or check) the real hypervisor the QEMU integration tests use, without systemd:
# virtlogd, and libvirtd running INSIDE a network namespace the project owns
# (default: escnc-ci). Bridges, dnsmasq and every guest address then live in that
# namespace, never on the machine's own network; run the tests inside it with
#   ip netns exec escnc-ci <command>
#
# A second, independent libvirtd (its own sockets, state and host UUID, in a private
# mount namespace inside the same network namespace) is the target host for real live
# migration: `start-peer` starts it, `peer-uri` prints its URI.
#
# Usage: scripts/hypervisor.sh start|start-peer|status|dirs|netns-name|peer-uri
# Idempotent: a second `start` only checks that everything is up.
set -euo pipefail

NETNS="${ESCNC_NETNS:-escnc-ci}"
URI="qemu:///system"
PEER_DIR="${ESCNC_PEER_DIR:-/var/lib/escnc-ci/peer}"
PEER_URI="qemu:///system?socket=$PEER_DIR/sock/libvirt-sock"
PEER_UUID="7d1e5b8a-3c2f-4f61-8e0a-9b3c4d5e6f70"

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

# pgrep is in procps, which a minimal root lacks: read /proc directly
virtlogd_running() {
    local d
    for d in /proc/[0-9]*; do
        [ "$(cat "$d/comm" 2>/dev/null)" = "virtlogd" ] && return 0
    done
    return 1
}

# the network namespace a pid lives in (inode number), empty when unknown
pid_netns_inode() { stat -L -c %i "/proc/$1/ns/net" 2>/dev/null || true; }

# Directories libvirtd writes into but no Debian package is sure to create (dnsmasq/ is
# made only when libvirt itself starts a DHCP network; a fresh machine lacks it and the
# first network start fails with "Failed to create file .../virbr1.macs.new").
make_dirs() {
    mkdir -p /var/lib/libvirt/dnsmasq /var/lib/libvirt/qemu /var/lib/libvirt/images \
        /var/lib/libvirt/boot /var/cache/libvirt/qemu /var/log/libvirt/qemu /run/libvirt
}

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

    make_dirs

    # a systemd-managed libvirtd (libvirt-daemon-system's postinst starts it where
    # systemd is PID 1) runs outside the namespace: in CI stop its units first
    if [ "${CI:-}" = "true" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        systemctl stop libvirtd.service libvirtd.socket libvirtd-ro.socket \
            libvirtd-admin.socket >/dev/null 2>&1 || true
    fi

    if ! virtlogd_running; then
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

start_peer() {
    start
    if virsh -c "$PEER_URI" version >/dev/null 2>&1; then
        log "peer libvirtd answers on $PEER_URI"
        return 0
    fi
    mkdir -p "$PEER_DIR"/{run,lib/qemu,etc/qemu,cache/qemu,log,sock}
    printf '%s\n' \
        "unix_sock_dir = \"$PEER_DIR/sock\"" \
        'unix_sock_group = "root"' \
        'unix_sock_rw_perms = "0770"' \
        'auth_unix_rw = "none"' \
        'auth_unix_ro = "none"' \
        "host_uuid = \"$PEER_UUID\"" \
        'listen_tls = 0' \
        'listen_tcp = 0' \
        "log_outputs = \"3:file:$PEER_DIR/log/libvirtd.log\"" >"$PEER_DIR/libvirtd.conf"
    printf '%s\n' 'stdio_handler = "file"' 'migration_port_min = 49500' \
        'migration_port_max = 49600' >"$PEER_DIR/qemu.conf"
    # private mounts: the peer's runtime, domain and cache directories and qemu.conf
    printf '%s\n' \
        'set -e' \
        'mount --make-rprivate /' \
        "mount --bind '$PEER_DIR/run' /run/libvirt" \
        "mount --bind '$PEER_DIR/lib/qemu' /var/lib/libvirt/qemu" \
        "mount --bind '$PEER_DIR/etc/qemu' /etc/libvirt/qemu" \
        "mount --bind '$PEER_DIR/cache/qemu' /var/cache/libvirt/qemu" \
        "mount --bind '$PEER_DIR/qemu.conf' /etc/libvirt/qemu.conf" \
        "exec libvirtd -d -f '$PEER_DIR/libvirtd.conf' -p '$PEER_DIR/libvirtd.pid'" \
        >"$PEER_DIR/start.sh"
    rm -f "$PEER_DIR/libvirtd.pid"
    ip netns exec "$NETNS" unshare -m sh "$PEER_DIR/start.sh"
    for _ in $(seq 150); do
        if virsh -c "$PEER_URI" version >/dev/null 2>&1; then
            log "started peer libvirtd on $PEER_URI"
            return 0
        fi
        sleep 0.2
    done
    die "peer libvirtd did not answer on $PEER_URI within 30 s (see $PEER_DIR/log)"
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
    dirs) make_dirs ;;
    start-peer) start_peer ;;
    status) status ;;
    netns-name) printf '%s\n' "$NETNS" ;;
    peer-uri) printf '%s\n' "$PEER_URI" ;;
    *) die "usage: $0 start|start-peer|status|dirs|netns-name|peer-uri" ;;
esac
