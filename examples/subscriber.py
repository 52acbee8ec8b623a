#!/usr/bin/env python3
"""React to escEvent notifications the way an orchestrator does.

Subscribes to the escEvent stream and prints one line per event. Reactions:
  * SERVICE_ALIVE     reads the deployment's VMs and their addresses from opdata and
                      prints them (where an orchestrator would start day-1 configuration)
  * VM_VERIFY_RESIZE  confirms the resize (vmAction CONFIRM_RESIZE) with --auto-confirm
  * any FAILURE       prints the status message on stderr
Stops after --count events, after --duration seconds, or on Ctrl-C.

    python examples/subscriber.py --port 830 --user admin     # password: $ESCNC_PASSWORD
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from lxml import etree
from ncclient import manager
from ncclient.transport import session as nc_session

ESC = "http://www.cisco.com/esc/esc"
E = f"{{{ESC}}}"
nc_session.TICK = 0.0005  # ncclient polls every 0.1 s by default


def text(el: etree._Element, path: str) -> str:
    """Text of the escnc-namespace child at ``path`` ("a/b"), or ""."""
    return (el.findtext("/".join(E + step for step in path.split("/"))) or "").strip()


def deployment_vms(m: manager.Manager, tenant: str, deployment: str) -> list[tuple[str, str, str]]:
    """(generated VM name, state, first IP address) of a deployment, from opdata."""
    flt = f"""<esc_datamodel xmlns="{ESC}"><opdata><tenants><tenant><name>{tenant}</name>
      <deployments><deployment><name>{deployment}</name></deployment></deployments>
      </tenant></tenants></opdata></esc_datamodel>"""
    reply = m.get(filter=("subtree", flt))
    data = etree.fromstring(reply.xml.encode())
    out = []
    for vm in data.iter(f"{E}vm_instance"):
        ips = [ip.text or "" for ip in vm.iter(f"{E}ip_address")]
        out.append((text(vm, "name"), text(vm, "state"), ips[0] if ips else ""))
    return out


def confirm_resize(m: manager.Manager, vm_name: str) -> None:
    rpc = etree.fromstring(
        f'<vmAction xmlns="{ESC}"><actionType>CONFIRM_RESIZE</actionType>'
        f"<vmName>{vm_name}</vmName></vmAction>"
    )
    reply = m.dispatch(rpc)
    print(f"  -> confirmed resize of {vm_name}: {'ok' if reply.ok else reply.errors}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=os.environ.get("ESCNC_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("ESCNC_PORT", "830")))
    parser.add_argument("--user", default=os.environ.get("ESCNC_USER", "admin"))
    parser.add_argument("--auto-confirm", action="store_true", help="confirm every resize")
    parser.add_argument("--count", type=int, help="stop after N events")
    parser.add_argument("--duration", type=float, help="stop after SECONDS")
    args = parser.parse_args()

    with manager.connect(
        host=args.host, port=args.port, username=args.user,
        password=os.environ.get("ESCNC_PASSWORD"), hostkey_verify=False,
        allow_agent=False, look_for_keys=False, timeout=30,
    ) as m:
        m.create_subscription(stream_name="escEvent")
        print(f"subscribed to escEvent on {args.host}:{args.port}", flush=True)
        seen = 0
        deadline = time.monotonic() + args.duration if args.duration else None
        while args.count is None or seen < args.count:
            if deadline is not None and time.monotonic() >= deadline:
                break
            notif = m.take_notification(block=True, timeout=1)
            if notif is None:
                if not m.connected:
                    print("session closed by the server", file=sys.stderr)
                    return 1
                continue
            root = etree.fromstring(notif.notification_xml.encode())
            ev = root.find(f"{E}escEvent")
            if ev is None:
                continue
            seen += 1
            kind, status = text(ev, "event/type"), text(ev, "status")
            tenant, dep = text(ev, "tenant"), text(ev, "depname")
            vm = text(ev, "vm_source/generated_vmname")
            print(f"{kind:<26} {status:<8} {tenant}/{dep} {vm}".rstrip(), flush=True)
            if status == "FAILURE":
                print(f"  !! {kind} failed: {text(ev, 'status_message')}", file=sys.stderr)
            elif kind == "SERVICE_ALIVE":
                for name, state, ip in deployment_vms(m, tenant, dep):
                    print(f"  -> ready for day-1 configuration: {name} {state} {ip}", flush=True)
            elif kind == "VM_VERIFY_RESIZE" and args.auto_confirm and vm:
                confirm_resize(m, vm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
