#!/bin/sh
# /init of the escnc tiny test guest (busybox-static initramfs).
# Brings up every NIC with the static address found in its day-0 data and then
# just answers ping. Day-0 sources, first match wins:
#   1. kernel command line: escnc.ip=ADDR/PREFIX [escnc.gw=GATEWAY]
#   2. a config drive / NoCloud seed on any CD-ROM or disk (ISO 9660 or FAT):
#      escnc/nics (escnc's own: "nicid mac ip prefix gateway" per line, matched by MAC),
#      escnc/network (IP= NETMASK= GATEWAY= lines), openstack/*/network_data.json
#      ("ip_address"/"netmask"/"gateway"), NoCloud network-config
#      (address:/addresses:/netmask:/gateway: lines), or any file with such keys
#   3. DHCP (udhcpc) as a last resort
# A day-0 program on the config drive (escnc/run) is run in the background once the
# network is up (the QEMU elastic test's CPU burner and interface reporter).
# The ACPI power button (virsh shutdown) powers the guest off.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /tmp /run /var/run /var/log /mnt/day0
echo "escnc-guest: init starting" >/dev/console

while read -r mod; do
    insmod "/lib/modules/$mod" 2>/dev/null
done </etc/modules.order

log() { echo "escnc-guest: $*" >/dev/console; }

# prefix length from a dotted netmask (or pass a prefix through)
prefix_of() {
    case "$1" in
        *.*.*.*) ;;
        "") echo 24; return ;;
        *) echo "$1"; return ;;
    esac
    bits=0
    for octet in $(echo "$1" | tr . ' '); do
        case "$octet" in
            255) bits=$((bits + 8)) ;; 254) bits=$((bits + 7)) ;; 252) bits=$((bits + 6)) ;;
            248) bits=$((bits + 5)) ;; 240) bits=$((bits + 4)) ;; 224) bits=$((bits + 3)) ;;
            192) bits=$((bits + 2)) ;; 128) bits=$((bits + 1)) ;;
        esac
    done
    echo "$bits"
}

IP=""
NETMASK=""
GATEWAY=""
for word in $(cat /proc/cmdline); do
    case "$word" in
        escnc.ip=*) IP="${word#escnc.ip=}" ;;
        escnc.gw=*) GATEWAY="${word#escnc.gw=}" ;;
    esac
done

# first value of KEY in FILE, for KEY=V, KEY: V and "KEY": "V" spellings
value_of() {
    sed -n -E "s/^[[:space:]-]*\"?$1\"?[[:space:]]*[:=][[:space:]]*\\[?[[:space:]]*\"?([0-9a-fA-F.:/]+)\"?.*/\\1/p" "$2" \
        2>/dev/null | head -n 1
}
# JSON on one line: "key": "value"
json_value_of() {
    grep -o -E "\"$1\"[[:space:]]*:[[:space:]]*\"[0-9.:/]+\"" "$2" 2>/dev/null | head -n 1 \
        | sed -E 's/.*"([0-9.:/]+)"$/\1/'
}

read_day0() {
    dir="$1"
    [ -s "$dir/escnc/run" ] && cp "$dir/escnc/run" /tmp/day0-run
    # escnc's own list: one "nicid mac ip prefix gateway" line per NIC
    if [ -s "$dir/escnc/nics" ]; then
        cp "$dir/escnc/nics" /tmp/nics
        log "day-0 from escnc/nics"
        return 0
    fi
    for f in "$dir/escnc/network" $(find "$dir" -type f 2>/dev/null); do
        [ -f "$f" ] || continue
        [ "$(wc -c <"$f")" -lt 262144 ] || continue
        for key in IP ip_address address addresses ipaddress; do
            [ -n "$IP" ] && break
            v=$(value_of "$key" "$f")
            [ -n "$v" ] || v=$(json_value_of "$key" "$f")
            case "$v" in *.*.*.*) IP="$v" ;; esac
        done
        if [ -n "$IP" ]; then
            for key in NETMASK netmask; do
                [ -n "$NETMASK" ] && break
                v=$(value_of "$key" "$f"); [ -n "$v" ] || v=$(json_value_of "$key" "$f")
                NETMASK="$v"
            done
            for key in GATEWAY gateway gateway4; do
                [ -n "$GATEWAY" ] && break
                v=$(value_of "$key" "$f"); [ -n "$v" ] || v=$(json_value_of "$key" "$f")
                GATEWAY="$v"
            done
            log "day-0 from ${f#"$dir"/}"
            return 0
        fi
    done
    return 1
}

if [ -z "$IP" ]; then
    # block devices appear asynchronously after the drivers load
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        ls /dev/sr* /dev/vd* /dev/sd* >/dev/null 2>&1 && break
        sleep 0.3
    done
    sleep 0.5
    for dev in /dev/sr* /dev/vd* /dev/sd* /dev/hd*; do
        [ -b "$dev" ] || continue
        for fs in iso9660 vfat; do
            if mount -r -t "$fs" "$dev" /mnt/day0 2>/dev/null; then
                read_day0 /mnt/day0
                found=$?
                umount /mnt/day0
                [ "$found" -eq 0 ] && break 2
            fi
        done
    done
fi

ip link set lo up
for _ in 1 2 3 4 5 6 7 8 9 10; do
    [ -n "$(ls /sys/class/net | grep -v '^lo$')" ] && break
    sleep 0.3
done
FIRST_NIC=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)

# configure NIC with MAC $1 (first NIC when empty): address $2 (ADDR/PREFIX), gateway $3
configure() {
    nic=""
    if [ -n "$1" ]; then
        for n in /sys/class/net/*; do
            [ "$(cat "$n/address" 2>/dev/null)" = "$1" ] && nic="${n##*/}"
        done
    fi
    [ -n "$nic" ] || nic="$FIRST_NIC"
    [ -n "$nic" ] || { log "no network interface found"; return; }
    ip link set "$nic" up
    if [ -n "$2" ]; then
        ip addr add "$2" dev "$nic"
        [ -n "$3" ] && ip route add default via "$3" 2>/dev/null
        log "$nic up with $2${3:+ gateway $3}"
    else
        log "no day-0 address for $nic: trying DHCP"
        udhcpc -i "$nic" -q -n -t 5 -s /etc/udhcpc.script >/dev/null 2>&1 || log "DHCP failed"
    fi
}

if [ -s /tmp/nics ]; then
    while read -r nicid mac addr prefix gw; do
        [ -n "$nicid" ] || continue
        configure "$mac" "${addr:+$addr/${prefix:-24}}" "$gw"
    done </tmp/nics
elif [ -n "$IP" ]; then
    case "$IP" in
        */*) configure "" "$IP" "$GATEWAY" ;;
        *) configure "" "$IP/$(prefix_of "$NETMASK")" "$GATEWAY" ;;
    esac
else
    configure "" "" ""
fi

acpid -c /etc/acpi -l /var/log/acpid.log -p /run/acpid.pid 2>/dev/console
hostname escnc-guest
log "ready"
if [ -s /tmp/day0-run ]; then
    log "running day-0 program escnc/run"
    sh /tmp/day0-run </dev/null >/dev/console 2>&1 &
fi
# keep a shell on the serial console for debugging; init itself never exits
while :; do
    setsid cttyhack sh </dev/console >/dev/console 2>&1
    sleep 5
done
