"""Every row of issue 14's escnc-vs-Netopeer2 table, for escnc, in one run (prints numbers).

    PYTHONPATH=src python bench/perf_bench.py [--seconds 3] [--entries 10000] [--fast]

Starts a full escnc server in a child process (own state dir, libvirt test driver,
default admission limits) and measures from this process over loopback with the
raw paramiko NETCONF 1.1 client of ``netconf_bench.py``, on a ~50-entry flavor list
(as in the issue), then on a 10,000-entry flavor list. ``--fast`` runs the same
server with ``durable_commits=False`` (an explicit opt-out of fsync, off by default)
so both figures can be reported side by side. ``--database postgresql://...`` puts the
server's datastore and event log on that PostgreSQL database (issue 18; use an empty
database: the server creates its tables).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from netconf_bench import (
    ESC,
    GET_CONFIG,
    NC,
    PASSWORD,
    USER,
    RawClient,
    parallel,
    rate,
    rss_kb,
)

NOTIF = "urn:ietf:params:xml:ns:netconf:notification:1.0"

SERVER_CODE = textwrap.dedent(
    """
    import logging, sys
    from pathlib import Path
    from escnc.app import Server
    from escnc.rpc.users import UserStore
    from escnc.settings import Settings
    logging.basicConfig(level=logging.WARNING)
    state = Path(sys.argv[1])
    state.mkdir(parents=True, exist_ok=True)
    users = UserStore(state / "users.sqlite3")
    users.add_user(sys.argv[2], password=sys.argv[3])
    users.close()
    node = state.parent / "host.xml"
    node.write_text("<node></node>\\n")
    extra = {}
    if sys.argv[4] == "fast":
        extra["durable_commits"] = False
    if sys.argv[5]:
        extra["database"] = sys.argv[5]
    settings = Settings(state_dir=state, listen_host="127.0.0.1", listen_port=0,
                        max_sessions=1000, max_sessions_per_user=0,
                        vims={"default": f"test://{node}"}, **extra)
    settings.nacm_recovery_user = sys.argv[2]
    srv = Server(settings)
    srv.start()
    print(srv.port, flush=True)
    sys.stdin.read()
    srv.stop()
    """
)


def flavor(name: str, vcpus: int = 1, op: str = "") -> str:
    attr = f' xmlns:nc="{NC}" nc:operation="{op}"' if op else ""
    if op == "remove":
        return f"<flavor{attr}><name>{name}</name></flavor>"
    return (f"<flavor{attr}><name>{name}</name><vcpus>{vcpus}</vcpus><memory_mb>512</memory_mb>"
            "<root_disk_mb>1024</root_disk_mb></flavor>")


def edit(body: str) -> str:
    return ("<edit-config><target><running/></target><config>"
            f'<esc_datamodel xmlns="{ESC}"><flavors>{body}</flavors></esc_datamodel>'
            "</config></edit-config>")


def edit_flavor(i: int, session: int = 0) -> str:
    return edit(flavor(f"bench-{session}", i % 8 + 1))


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def row(metric: str, value: str) -> None:
    print(f"| {metric:<52} | {value:>24} |", flush=True)


def burst(port: int, n: int) -> tuple[int, list[RawClient], float]:
    """n clients connecting at once: how many got a session, and the median time."""
    ok: list[RawClient] = []
    times: list[float] = []
    lock = threading.Lock()
    go = threading.Event()

    def one() -> None:
        go.wait()
        t = time.perf_counter()
        try:
            c = RawClient(port)
        except Exception:
            return
        with lock:
            ok.append(c)
            times.append(time.perf_counter() - t)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join()
    return len(ok), ok, statistics.median(times) if times else 0.0


def notification_latency(port: int, subscribers: int, events: int) -> tuple[float, float]:
    """Time from sending an edit-config to each subscriber holding the
    netconf-config-change it causes (median, p99 over all deliveries)."""
    subs = [RawClient(port) for _ in range(subscribers)]
    for s in subs:
        s.rpc(f'<create-subscription xmlns="{NOTIF}"/>')
    editor = RawClient(port)
    editor.rpc(edit_flavor(0, 999))
    time.sleep(0.5)  # the warm-up edit's notifications: read and drop them
    for s in subs:
        while s.chan.recv_ready():
            s._fill()
        s.buf = b""
    lat: list[float] = []
    lock = threading.Lock()

    def read_one(s: RawClient, sent: list[float], done: threading.Barrier) -> None:
        for _ in range(events):
            while b"</notification>" not in s.buf:
                s._fill()
            got = time.perf_counter()
            s.buf = s.buf.split(b"</notification>", 1)[1]
            with lock:
                lat.append(got - sent[0])
            done.wait()

    sent = [0.0]
    barrier = threading.Barrier(subscribers + 1)
    threads = [threading.Thread(target=read_one, args=(s, sent, barrier)) for s in subs]
    for t in threads:
        t.start()
    for i in range(events):
        sent[0] = time.perf_counter()
        editor.rpc(edit_flavor(i + 1, 999))
        barrier.wait()
    for t in threads:
        t.join()
    for s in [*subs, editor]:
        s.close()
    lat.sort()
    return statistics.median(lat), lat[min(len(lat) - 1, int(len(lat) * 0.99))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--idle", type=int, default=100)
    ap.add_argument("--fast", action="store_true",
                    help="server with durable_commits=False (fsync opt-out)")
    ap.add_argument("--database", default="",
                    help="postgresql:// URL for the datastore and event log (empty database)")
    ap.add_argument("--rows", default="all", help="comma list: small,parallel,notify,memory,large")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="escnc-perf-"))
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parent.parent / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_CODE, str(tmp / "state"), USER, PASSWORD,
         "fast" if args.fast else "durable", args.database],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        run(port, proc.pid, args)
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(60)


def run(port: int, pid: int, args: argparse.Namespace) -> None:
    secs = args.seconds
    want = set(args.rows.split(",")) if args.rows != "all" else None

    def on(name: str) -> bool:
        return want is None or name in want

    load = Path("/proc/loadavg").read_text().split()[:3]
    where = ", PostgreSQL" if args.database else ""
    print(f"escnc perf bench ({'durable_commits=False' if args.fast else 'durable'}{where}): "
          f"pid {pid}, {secs:g} s per rate, loadavg {' '.join(load)}")
    time.sleep(1.0)
    row("RSS after start", f"{rss_kb(pid) / 1024:.1f} MiB")
    RawClient(port).close()  # warm up
    times = []
    for _ in range(20):
        t = time.perf_counter()
        RawClient(port).close()
        times.append(time.perf_counter() - t)
    row("connect + hello (median)", ms(statistics.median(times)))

    c = RawClient(port)
    c.rpc(edit("".join(flavor(f"small-{i}") for i in range(50))))
    if on("small"):
        r, _ = rate(lambda i: c.rpc(GET_CONFIG), secs)
        row("1 session get-config/s (50 flavors)", f"{r:.0f}")
        r, _ = rate(lambda i: c.rpc(edit_flavor(i)), secs)
        row("1 session edit-config/s", f"{r:.0f}")

    def edit_get(i: int, cl: RawClient = c, s: int = 0) -> None:
        cl.rpc(edit_flavor(i, s))
        cl.rpc(GET_CONFIG)

    if on("small"):
        r, _ = rate(edit_get, secs)
        row("1 session edit+get round trips/s", f"{r:.0f}")
    if on("parallel"):
        for n in (4, 32):
            total, _ = parallel(port, n, secs, edit_get)
            row(f"{n} sessions edit+get/s (total)", f"{total:.0f}")
        served, clients, med = burst(port, 32)
        row("32 clients connecting at once: served", f"{served}/32 ({ms(med)} median)")
        for cl in clients:
            cl.close()
    if on("notify"):
        for n, events in ((1, 200), (100, 30)):
            med, p99 = notification_latency(port, n, events)
            row(f"notification to {n} subscriber(s), median / p99",
                f"{med * 1000:.1f} / {p99 * 1000:.1f} ms")
    if on("memory"):
        time.sleep(0.5)
        before = rss_kb(pid)
        idle = [RawClient(port) for _ in range(args.idle)]
        time.sleep(0.5)
        after = rss_kb(pid)
        row(f"RSS +{args.idle} idle sessions",
            f"{after / 1024:.1f} MiB ({(after - before) / args.idle:.0f} KiB/session)")
        for cl in idle:
            cl.close()
    n = args.entries
    load_body = edit("".join(flavor(f"f-{i}", i % 8 + 1) for i in range(n)))
    remove_body = edit("".join(flavor(f"f-{i}", op="remove") for i in range(n)))
    if on("memory"):
        rss = []
        for _ in range(3):
            c.rpc(load_body)
            c.rpc(remove_body)
            time.sleep(0.3)
            rss.append(rss_kb(pid) / 1024)
        row(f"RSS after load+remove {n} entries, 3 rounds",
            " / ".join(f"{x:.0f}" for x in rss) + " MiB")
    if on("large"):
        t = time.perf_counter()
        c.rpc(load_body)
        row(f"{n} entries: load in one edit-config", f"{time.perf_counter() - t:.2f} s")
        times = []
        for i in range(40):
            t = time.perf_counter()
            c.rpc(edit(flavor(f"f-{(i * 7919) % n}", (i % 7) + 2)))
            times.append(time.perf_counter() - t)
        row(f"{n} entries: edit one entry, median", ms(statistics.median(times)))
        flt = (f'<get-config><source><running/></source><filter type="subtree">'
               f'<esc_datamodel xmlns="{ESC}"><flavors><flavor><name>f-{n // 2}</name>'
               "</flavor></flavors></esc_datamodel></filter></get-config>")
        times = []
        for _ in range(40):
            t = time.perf_counter()
            reply = c.rpc(flt)
            times.append(time.perf_counter() - t)
        assert reply.count(b"<flavor>") == 1, reply[:300]
        row(f"{n} entries: filtered get-config of one entry, median",
            ms(statistics.median(times)))
        t = time.perf_counter()
        c.rpc(remove_body)
        row(f"{n} entries: remove in one edit-config", f"{time.perf_counter() - t:.2f} s")
        tenants = ("<edit-config><target><running/></target><config>"
                   f'<esc_datamodel xmlns="{ESC}"><tenants>'
                   + "".join(f"<tenant><name>t-{i}</name></tenant>" for i in range(n))
                   + "</tenants></esc_datamodel></config></edit-config>")
        t = time.perf_counter()
        c.rpc(tenants)
        row(f"{n} tenants in one edit-config", f"{time.perf_counter() - t:.2f} s")
        row("RSS at the end", f"{rss_kb(pid) / 1024:.1f} MiB")
    c.close()
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"loadavg at the end {' '.join(load)}")


if __name__ == "__main__":
    main()
