#!/usr/bin/env bash
# The five-minute tour, end to end, against a fresh escnc server:
#   create a user, deploy the example, watch the notifications, stop/start/reboot a VM,
#   resize it (confirm), snapshot it and delete the snapshot, migrate it live to a
#   second host, stop and start the service, and undeploy.
#
# With ESCNC_PORT set it uses that running server (ESCNC_HOST, ESCNC_USER and
# ESCNC_PASSWORD too; the server needs a second VIM named Host-24 for the migration,
# and ESCNC_STATE_DIR names its state directory so the image lands in its import dir).
# Otherwise it starts its own server on 127.0.0.1 (a free port) with two libvirt
# test-driver hosts, default and Host-24, in a temporary state directory, and stops it
# at the end. Exits non-zero at the first step that fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
for venv in "$root/.venv" "${VIRTUAL_ENV:-}"; do
    [ -n "$venv" ] && [ -x "$venv/bin/escnc-cli" ] && PATH="$venv/bin:$PATH"
done
command -v escnc-cli >/dev/null || { echo "tour: escnc-cli not found (run scripts/install.sh)" >&2; exit 1; }
PY=$(dirname "$(command -v escnc-cli)")/python

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

server_pid=""
sub_pid=""
cleanup() {
    if [ -n "$sub_pid" ]; then
        kill "$sub_pid" 2>/dev/null || true
        wait "$sub_pid" 2>/dev/null || true
    fi
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    [ -n "${state:-}" ] && rm -rf "$state"
}
trap cleanup EXIT

if [ -z "${ESCNC_PORT:-}" ]; then
    state=$(mktemp -d /tmp/escnc-tour.XXXXXX)
    mkdir -p "$state/hosts"
    echo '<node></node>' >"$state/hosts/default.xml"
    echo '<node></node>' >"$state/hosts/host24.xml"
    step "1. create a user (password from ESCNC_PASSWORD, else a random one)"
    export ESCNC_USER=${ESCNC_USER:-admin}
    export ESCNC_PASSWORD=${ESCNC_PASSWORD:-$("$PY" -c 'import secrets; print(secrets.token_urlsafe(16))')}
    printf '%s\n' "$ESCNC_PASSWORD" | escnc user add "$ESCNC_USER" --password-stdin --state-dir "$state/state"
    step "   start escnc with two test-driver hosts"
    "$here/make-image.sh" "$state/state/import" >/dev/null
    escnc serve --state-dir "$state/state" --listen 127.0.0.1:0 --log-level WARNING \
        --vim "default=test://$state/hosts/default.xml" \
        --vim "Host-24=test://$state/hosts/host24.xml" >"$state/serve.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        port=$(sed -n 's/^escnc: serving NETCONF on .*:\([0-9]*\) .*/\1/p' "$state/serve.log")
        [ -n "$port" ] && break
        kill -0 "$server_pid" 2>/dev/null || { cat "$state/serve.log" >&2; exit 1; }
        sleep 0.1
    done
    [ -n "$port" ] || { echo "tour: server did not start" >&2; cat "$state/serve.log" >&2; exit 1; }
    export ESCNC_HOST=127.0.0.1 ESCNC_PORT=$port
    echo "escnc listens on 127.0.0.1:$port"
fi

[ -n "${state:-}" ] || "$here/make-image.sh" >/dev/null  # a running server's import dir

step "2. watch the notifications (examples/subscriber.py, in the background)"
"$PY" -u "$here/subscriber.py" --duration 600 > >(sed -u 's/^/   [subscriber] /') 2>&1 &
sub_pid=$!
sleep 1.5

step "3. deploy examples/deployment.xml and follow it to SERVICE_ALIVE"
escnc-cli edit-config "$here/deployment.xml" --wait

step "4. the deployment and its VM in the operational data"
escnc-cli get "/esc_datamodel/opdata/tenants/tenant[name='admin']/deployments"
VM=$(escnc-cli --json get "/esc_datamodel/opdata/tenants/tenant[name='admin']/deployments" | "$PY" -c '
import json, sys
def find(o):
    if isinstance(o, dict):
        for k, v in o.items():
            if k == "vm_instance":
                return (v[0] if isinstance(v, list) else v)["name"]
            r = find(v)
            if r: return r
    if isinstance(o, list):
        for v in o:
            r = find(v)
            if r: return r
print(find(json.load(sys.stdin)) or "")')
[ -n "$VM" ] || { echo "tour: no VM found in opdata" >&2; exit 1; }
echo "VM: $VM"

step "5. stop, start and reboot the VM"
escnc-cli vm-action STOP "$VM" --wait >/dev/null
escnc-cli vm-action START "$VM" --wait >/dev/null
escnc-cli vm-action REBOOT "$VM" --wait >/dev/null

step "6. resize: examples/flavor-update.xml, then confirm"
escnc-cli edit-config "$here/flavor-update.xml" --wait >/dev/null
for _ in $(seq 100); do
    escnc-cli get "/esc_datamodel/opdata/tenants/tenant[name='admin']/deployments" \
        | grep -q VM_VERIFY_RESIZE_STATE && break
    sleep 0.2
done
escnc-cli vm-action CONFIRM_RESIZE "$VM" --wait >/dev/null

step "7. snapshot the VM, then delete the snapshot"
escnc-cli vm-backup-action "$VM" my-snapshot-name SNAPSHOT --wait >/dev/null
escnc-cli get /esc_datamodel/opdata/snapshots
escnc-cli snapshot-action delete my-snapshot-name --wait >/dev/null

step "8. live-migrate the VM to host Host-24"
escnc-cli migrate-vm-action "$VM" live Host-24 --wait >/dev/null

step "9. stop and start the whole service"
escnc-cli service-action STOP admin Cirros-VNF --wait >/dev/null
escnc-cli service-action START admin Cirros-VNF --wait >/dev/null

step "10. undeploy"
escnc-cli delete-dep admin Cirros-VNF --wait
sleep 1
step "tour complete"
