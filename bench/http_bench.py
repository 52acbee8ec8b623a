"""HTTP northbound throughput next to NETCONF's (prints numbers; not a test).

    PYTHONPATH=src python bench/http_bench.py [--deployments 60] [--gets 500]

Starts a full escnc server in this process (own state dir, libvirt test driver,
reconcile tick on), deploys ``--deployments`` one-VM deployments over NETCONF, then
measures sequential requests per second over loopback with one keep-alive client each:

* GET of one deployment: ESC REST ``GET /ESCManager/v0/deployments/{d}``, RESTCONF
  ``GET /restconf/data/.../deployment=d`` (JSON, via yangson), NETCONF get-config
  with a subtree filter (ncclient);
* a service operation (STOP, accepted and queued; each request another deployment so
  none is refused): ESC REST ``POST .../deployments/service/{d}`` (with and without a
  ``Callback`` header: the durable transaction write) against NETCONF serviceAction;
* the dashboard: ``GET /`` and ``GET /dashboard/state`` (each a NETCONF get of opdata).

The client shares the process and the machine; /proc/loadavg is printed with the
figures.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import httpx
from lxml import etree
from ncclient import manager
from ncclient.transport import session as nc_session

from escnc.app import Server
from escnc.rpc.users import UserStore
from escnc.settings import Settings

nc_session.TICK = 0.0005
ESC = "http://www.cisco.com/esc/esc"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
USER, PASSWORD = "admin", "bench-pw"  # the recovery user: NACM off for it
STOP = (b"<?xml version='1.0' encoding='UTF-8'?>\n<service_operation "
        b"xmlns='urn:ietf:params:xml:ns:netconf:base:1.0'>\n   <operation>stop</operation>\n"
        b"</service_operation>\n")


def config(image: str, n: int) -> str:
    deps = "".join(
        f"<deployment><name>d{i}</name><vm_group><name>g</name><image>img</image>"
        "<flavor>small</flavor><bootup_time>30</bootup_time>"
        "<recovery_wait_time>0</recovery_wait_time><scaling><min_active>1</min_active>"
        "<max_active>1</max_active><elastic>true</elastic></scaling></vm_group></deployment>"
        for i in range(n)
    )
    return (f'<config xmlns="{NC}"><esc_datamodel xmlns="{ESC}">'
            f"<images><image><name>img</name><src>{image}</src></image></images>"
            "<flavors><flavor><name>small</name><vcpus>1</vcpus><memory_mb>64</memory_mb>"
            "</flavor></flavors><tenants><tenant><name>t1</name><deployments>"
            f"{deps}</deployments></tenant></tenants></esc_datamodel></config>")


def rate(label: str, n: int, fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    per_s = n / (time.perf_counter() - start)
    print(f"  {label:<58} {per_s:8.0f} req/s  ({n} requests)")
    return per_s


class Receiver:
    """A callback receiver that accepts everything (so deliveries do not retry)."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cb"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deployments", type=int, default=60)
    ap.add_argument("--gets", type=int, default=500)
    args = ap.parse_args()
    n = args.deployments - args.deployments % 3
    tmp = Path(tempfile.mkdtemp(prefix="escnc-http-bench-"))
    state = tmp / "state"
    state.mkdir()
    UserStore(state / "users.sqlite3").add_user(USER, password=PASSWORD)
    (tmp / "host.xml").write_text("<node></node>\n")
    image = tmp / "img.qcow2"
    image.write_bytes(b"\0" * 4096)
    settings = Settings(state_dir=state, listen_host="127.0.0.1", listen_port=0,
                        vims={"default": f"test://{tmp / 'host.xml'}"})
    settings.image_import_dirs = [tmp]
    settings.reconcile_interval = 30.0
    settings.http_listen = "127.0.0.1:0"
    settings.url_allow_loopback = True
    srv = Server(settings)
    srv.start()
    receiver = Receiver()
    try:
        m = manager.connect(host="127.0.0.1", port=srv.port, username=USER, password=PASSWORD,
                            hostkey_verify=False, allow_agent=False, look_for_keys=False,
                            timeout=60)
        m.create_subscription(stream_name="escEvent")
        m.edit_config(target="running", config=config(str(image), n))
        alive = 0
        deadline = time.monotonic() + 600
        while alive < n and time.monotonic() < deadline:
            note = m.take_notification(block=True, timeout=5)
            if note is not None and "SERVICE_ALIVE" in note.notification_xml:
                alive += 1
        print(f"escnc HTTP bench: {n} deployments alive; loadavg "
              f"{Path('/proc/loadavg').read_text().split()[:3]}")
        http = httpx.Client(base_url=f"http://127.0.0.1:{srv.http_ports['http']}",
                            auth=(USER, PASSWORD), timeout=60)
        dep_path = "/restconf/data/escnc:esc_datamodel/tenants/tenant=t1/deployments/deployment="
        flt = (f'<esc_datamodel xmlns="{ESC}"><tenants><tenant><name>t1</name><deployments>'
               "<deployment><name>d1</name></deployment></deployments></tenant></tenants>"
               "</esc_datamodel>")
        print("GET of one deployment:")
        rate("ESC REST GET /ESCManager/v0/deployments/d1 (XML)", args.gets,
             lambda i: http.get("/ESCManager/v0/deployments/d1").raise_for_status())
        rate("RESTCONF GET .../deployment=d1 (RFC 7951 JSON)", args.gets,
             lambda i: http.get(dep_path + "d1",
                                headers={"Accept": "application/yang-data+json"})
             .raise_for_status())
        rate("RESTCONF GET .../deployment=d1 (XML)", args.gets,
             lambda i: http.get(dep_path + "d1",
                                headers={"Accept": "application/yang-data+xml"})
             .raise_for_status())
        rate("NETCONF get-config, subtree filter (ncclient)", args.gets,
             lambda i: m.get_config(source="running", filter=("subtree", flt)))
        print(f"Dashboard (a NETCONF get of the opdata of all {n} deployments each):")
        pages = max(1, args.gets // 5)
        rate("GET / (whole page)", pages, lambda i: http.get("/").raise_for_status())
        rate("GET /dashboard/state (what the page re-reads after events)", pages,
             lambda i: http.get("/dashboard/state").raise_for_status())
        third = n // 3
        print("Service operation STOP (accepted and queued, a different deployment each):")

        def rest_stop(i: int, callback: bool) -> None:
            headers = {"Content-Type": "application/xml"}
            if callback:
                headers["Callback"] = receiver.url
            r = http.post(f"/ESCManager/v0/t1/deployments/service/d{i}", content=STOP,
                          headers=headers)
            assert r.status_code == 202, r.text

        rate("ESC REST POST .../deployments/service/{d}, no callback", third,
             lambda i: rest_stop(i, False))
        rate("ESC REST POST .../deployments/service/{d}, Callback header", third,
             lambda i: rest_stop(third + i, True))

        def nc_stop(i: int) -> None:
            m.dispatch(etree.fromstring(
                f'<serviceAction xmlns="{ESC}"><actionType>STOP</actionType>'
                f"<tenantName>t1</tenantName><depName>d{2 * third + i}</depName>"
                "</serviceAction>"))

        rate("NETCONF serviceAction STOP (ncclient)", third, nc_stop)
        print(f"loadavg after: {Path('/proc/loadavg').read_text().split()[:3]}")
        m.close_session()
        http.close()
    finally:
        receiver.server.shutdown()
        srv.stop()


if __name__ == "__main__":
    main()
