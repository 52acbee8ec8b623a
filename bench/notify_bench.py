"""Notification delivery benchmark: publish -> subscriber receive latency, and throughput.

Runs the real NETCONF/SSH server with the real event bus (no datastore or engine:
events are published on the bus exactly as the engine does) and subscribers in
separate processes (raw paramiko clients, base:1.0 framing), so client parsing does
not share the server's GIL. Latency is measured from just before
``services.events.publish`` to the moment a subscriber has the complete message
(CLOCK_MONOTONIC is shared by all processes).

    python bench/notify_bench.py [--events 300] [--subscribers 1,10,100] [--burst 20000]

Reference (DESIGN.md): Netopeer2 delivers config-change notifications to one
subscriber 2.0 ms median / 4 ms p99 after the edit.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import paramiko

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from escnc.events.bus import EventBus
from escnc.events.esc_event import EscEvent, VmRef
from escnc.netconf.server import NetconfServer
from escnc.netconf.sessions import SessionManager
from escnc.operations import notifications
from escnc.rpc.dispatch import RpcRegistry
from escnc.rpc.users import UserStore
from escnc.services import Services
from escnc.settings import Settings

USER, PASSWORD = "bench", "bench-pw"
EOM = b"]]>]]>"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
NOTIF = "urn:ietf:params:xml:ns:netconf:notification:1.0"
WARMUP = 10  # first events of a run (connection warm-up) are not measured
STAMP = re.compile(rb"<status_message>(\d+) (\d+)</status_message>")


# -- subscriber processes -------------------------------------------------------------


class Subscriber:
    def __init__(self, port: int) -> None:
        self.client = paramiko.SSHClient()
        self.client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        self.client.connect("127.0.0.1", port=port, username=USER, password=PASSWORD,
                            allow_agent=False, look_for_keys=False, timeout=30)
        transport = self.client.get_transport()
        assert transport is not None
        self.chan = transport.open_session()
        self.chan.invoke_subsystem("netconf")
        self.chan.settimeout(120)
        self.buf = b""
        self.read()  # server hello
        self.chan.sendall(
            f'<hello xmlns="{NC}"><capabilities><capability>urn:ietf:params:netconf:base:1.0'
            f"</capability></capabilities></hello>".encode() + EOM
        )
        self.chan.sendall(
            f'<rpc xmlns="{NC}" message-id="1"><create-subscription xmlns="{NOTIF}">'
            f"<stream>escEvent</stream></create-subscription></rpc>".encode() + EOM
        )
        assert b"<ok/>" in self.read()

    def read(self) -> bytes:
        while EOM not in self.buf:
            data = self.chan.recv(1 << 20)
            if not data:
                raise EOFError
            self.buf += data
        msg, _, self.buf = self.buf.partition(EOM)
        return msg


def subscriber_process(port: int, sessions: int, expected: int, ready: mp.Queue,
                       results: mp.Queue) -> None:
    import threading

    subs = [Subscriber(port) for _ in range(sessions)]
    ready.put(sessions)
    latencies: list[list[float]] = [[] for _ in subs]
    last = [0] * len(subs)

    def run(i: int) -> None:
        sub = subs[i]
        for _ in range(expected):
            msg = sub.read()
            now = time.monotonic_ns()
            m = STAMP.search(msg)
            if m and int(m.group(1)) >= WARMUP:
                latencies[i].append((now - int(m.group(2))) / 1e6)
        last[i] = time.monotonic_ns()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(subs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put(([x for lat in latencies for x in lat], max(last)))
    for sub in subs:
        sub.client.close()


# -- server -----------------------------------------------------------------------------


def start_server(state: Path) -> tuple[NetconfServer, Services]:
    settings = Settings(state_dir=state, listen_host="127.0.0.1", listen_port=0,
                        max_sessions=512)
    state.mkdir(parents=True, exist_ok=True)
    services = Services(settings=settings, registry=RpcRegistry())
    services.users = UserStore(state / "users.sqlite3")
    services.users.add_user(USER, password=PASSWORD)
    services.sessions = SessionManager(services)
    services.events = EventBus(settings)
    notifications.register(services.registry, services)
    server = NetconfServer(services)
    server.start()
    return server, services


def event(i: int) -> EscEvent:
    return EscEvent(
        type="VM_ALIVE", depname=f"dep{i % 10}", tenant="bench", tenant_id="t-1",
        depid="d-1", vm_group="g",
        status_message=f"{i} {time.monotonic_ns()}",
        vm_source=VmRef(vmid="1", vmname=f"dep_g_{i}", generated_vmname=f"dep_g_{i}",
                        vim_id="default", hostname="h1"),
    )


def run_case(port: int, services: Services, subscribers: int, events: int, interval: float,
             ) -> tuple[list[float], float, float]:
    """Returns latencies (ms), publish duration and first publish -> last receive (s)."""
    procs = min(subscribers, 4)
    per = [subscribers // procs + (1 if i < subscribers % procs else 0) for i in range(procs)]
    ready: mp.Queue = mp.Queue()
    results: mp.Queue = mp.Queue()
    workers = [mp.Process(target=subscriber_process,
                          args=(port, n, events + WARMUP, ready, results))
               for n in per]
    for w in workers:
        w.start()
    for _ in workers:
        ready.get(timeout=300)
    time.sleep(0.5)
    for i in range(WARMUP):
        services.events.publish("escEvent", event(i).to_xml())
        time.sleep(0.01)
    time.sleep(0.2)
    started = time.monotonic()
    for i in range(WARMUP, WARMUP + events):
        services.events.publish("escEvent", event(i).to_xml())
        if interval:
            time.sleep(interval)
    publish_secs = time.monotonic() - started
    latencies: list[float] = []
    last_ns = 0
    for _ in workers:
        lat, last = results.get(timeout=600)
        latencies.extend(lat)
        last_ns = max(last_ns, last)
    for w in workers:
        w.join()
    return latencies, publish_secs, last_ns / 1e9 - started


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=300, help="events per latency run")
    ap.add_argument("--interval", type=float, default=0.005, help="seconds between events")
    ap.add_argument("--subscribers", default="1,10,100")
    ap.add_argument("--burst", type=int, default=20000, help="events for the throughput run")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server, services = start_server(Path(tmp) / "state")
        try:
            print(f"latency, {args.events} events, one every {args.interval * 1000:.1f} ms")
            for n in (int(x) for x in args.subscribers.split(",")):
                lat, _, _ = run_case(server.port, services, n, args.events, args.interval)
                print(f"  {n:4d} subscriber(s): median {statistics.median(lat):6.2f} ms  "
                      f"p99 {pct(lat, 0.99):6.2f} ms  max {max(lat):7.2f} ms  "
                      f"({len(lat)} deliveries)")
            if args.burst:
                for n in (1, 10):
                    lat, publish_secs, total = run_case(server.port, services, n, args.burst, 0)
                    print(f"throughput, {args.burst} events back to back, {n} subscriber(s): "
                          f"publish (durable) {args.burst / publish_secs:7.0f} events/s, "
                          f"all delivered {args.burst / total:7.0f} events/s, "
                          f"latency under load median {statistics.median(lat):.0f} ms")
        finally:
            server.stop()
            services.events.close()
            services.users.close()


if __name__ == "__main__":
    main()
