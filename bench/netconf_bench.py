"""NETCONF/SSH throughput and latency of escnc (prints numbers; not a test).

    PYTHONPATH=src python bench/netconf_bench.py [--seconds 3] [--idle 50] [--nacm]

Starts a full escnc server in a child process (own state dir, libvirt test driver),
then measures from this process over loopback:

* SSH connect + hello (raw paramiko client and ncclient)
* get-config and edit-config + get-config round trips per second on a small
  datastore, with a raw paramiko client and with ncclient (TICK lowered)
* edit-config + get-config, edit-config alone and get-config alone with 4 and 32
  parallel sessions (raw clients, one thread each; the client process shares the
  machine, so the figures include its own CPU use)
* server memory (RSS) per idle session
* with ``--nacm`` instead: get-config and edit-config per second as a user subject
  to NACM with 100 rules (RFC 8341; ten tenants in running, half of them hidden
  from the user), with enable-nacm false and true

Reference (DESIGN.md): Netopeer2 2.4.5 connects in 59-68 ms and does 533-690
edit+get round trips/s with a raw client on this class of machine.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import paramiko

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
BASE_11 = "urn:ietf:params:netconf:base:1.1"
ESC = "http://www.cisco.com/esc/esc"
USER, PASSWORD = "bench", "bench-pw"
ADMIN, ADMIN_PASSWORD = "admin", "admin-pw"  # the recovery user with --nacm
NACM = "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"

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
    for i in range(2, len(sys.argv) - 1, 2):
        users.add_user(sys.argv[i], password=sys.argv[i + 1])
    users.close()
    # the first user is the NACM recovery user unless a second one is given
    recovery = sys.argv[4] if len(sys.argv) > 4 else sys.argv[2]
    node = state.parent / "host.xml"
    node.write_text("<node></node>\\n")
    settings = Settings(state_dir=state, listen_host="127.0.0.1", listen_port=0,
                        max_sessions=1000, max_sessions_per_user=0,
                        vims={"default": f"test://{node}"})
    settings.nacm_recovery_user = recovery
    srv = Server(settings)
    srv.start()
    print(srv.port, flush=True)
    sys.stdin.read()
    srv.stop()
    """
)


class RawClient:
    """Minimal NETCONF 1.1 client on paramiko (chunked framing)."""

    def __init__(self, port: int, user: str = USER, password: str = PASSWORD) -> None:
        self.client = paramiko.SSHClient()
        self.client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        self.client.connect("127.0.0.1", port=port, username=user, password=password,
                            allow_agent=False, look_for_keys=False)
        transport = self.client.get_transport()
        assert transport is not None
        self.chan = transport.open_session()
        self.chan.invoke_subsystem("netconf")
        self.buf = b""
        self.mid = 0
        hello = (f'<hello xmlns="{NC}"><capabilities><capability>{BASE_11}</capability>'
                 "</capabilities></hello>]]>]]>").encode()
        self.chan.sendall(hello)
        while b"]]>]]>" not in self.buf:
            self._fill()
        self.buf = self.buf.split(b"]]>]]>", 1)[1]

    def _fill(self) -> None:
        data = self.chan.recv(1 << 20)
        if not data:
            raise EOFError
        self.buf += data

    def rpc(self, body: str) -> bytes:
        self.mid += 1
        msg = f'<rpc xmlns="{NC}" message-id="{self.mid}">{body}</rpc>'.encode()
        self.chan.sendall(b"\n#%d\n%s\n##\n" % (len(msg), msg))
        parts = []
        while True:
            m = re.match(rb"\n#(\d+|#)\n", self.buf)
            while m is None:
                self._fill()
                m = re.match(rb"\n#(\d+|#)\n", self.buf)
            if m.group(1) == b"#":
                self.buf = self.buf[m.end():]
                reply = b"".join(parts)
                if b"<rpc-error" in reply:
                    raise RuntimeError(reply.decode()[:500])
                return reply
            size = int(m.group(1))
            while len(self.buf) < m.end() + size:
                self._fill()
            parts.append(self.buf[m.end():m.end() + size])
            self.buf = self.buf[m.end() + size:]

    def close(self) -> None:
        self.client.close()


GET_CONFIG = "<get-config><source><running/></source></get-config>"


def edit_config(i: int, session: int = 0) -> str:
    return (
        "<edit-config><target><running/></target><config>"
        f'<esc_datamodel xmlns="{ESC}"><flavors><flavor><name>bench-{session}</name>'
        f"<vcpus>{i % 8 + 1}</vcpus><memory_mb>512</memory_mb><root_disk_mb>1024</root_disk_mb>"
        "</flavor></flavors></esc_datamodel></config></edit-config>"
    )


def rate(fn, seconds: float) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    n = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        fn(n)
        n += 1
    return n / (time.perf_counter() - start), n


def parallel(port: int, n: int, secs: float, fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """n sessions, one thread each, calling fn(i, client, session) for secs seconds."""
    clients = [RawClient(port) for _ in range(n)]
    counts = [0] * n
    stop = threading.Event()

    def worker(k: int) -> None:
        i = 0
        while not stop.is_set():
            fn(i, clients[k], k + 1)
            i += 1
        counts[k] = i

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(secs)
    stop.set()
    for t in threads:
        t.join()
    total = sum(counts) / (time.perf_counter() - t0)
    for cl in clients:
        cl.close()
    return total, min(counts) / secs


def rss_kb(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1))  # type: ignore[union-attr]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--idle", type=int, default=50, help="idle sessions for the memory figure")
    ap.add_argument("--connects", type=int, default=20)
    ap.add_argument("--nacm", action="store_true",
                    help="get-config/edit-config as a user under 100 NACM rules, off and on")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="escnc-bench-"))
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parent.parent / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_CODE, str(tmp / "state"), USER, PASSWORD,
         *((ADMIN, ADMIN_PASSWORD) if args.nacm else ())],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        if args.nacm:
            run_nacm(port, args)
        else:
            run(port, proc.pid, args)
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(30)


def run(port: int, pid: int, args: argparse.Namespace) -> None:
    secs = args.seconds
    print(f"escnc NETCONF bench: server pid {pid}, port {port}, {secs:g} s per figure")

    # connect + hello
    RawClient(port).close()  # warm up (imports, password cache)
    times = []
    for _ in range(args.connects):
        t = time.perf_counter()
        c = RawClient(port)
        times.append(time.perf_counter() - t)
        c.close()
    print(f"raw     connect+hello   median {statistics.median(times) * 1000:6.1f} ms"
          f"   min {min(times) * 1000:6.1f} ms")

    from ncclient import manager
    from ncclient.transport import session as nc_session

    nc_session.TICK = 0.0005

    def nc_connect() -> manager.Manager:
        return manager.connect(host="127.0.0.1", port=port, username=USER, password=PASSWORD,
                               hostkey_verify=False, allow_agent=False, look_for_keys=False)

    times = []
    for _ in range(max(5, args.connects // 2)):
        t = time.perf_counter()
        m = nc_connect()
        times.append(time.perf_counter() - t)
        m.close_session()
    print(f"ncclient connect+hello  median {statistics.median(times) * 1000:6.1f} ms")

    c = RawClient(port)
    c.rpc(edit_config(0))
    r, _ = rate(lambda i: c.rpc(GET_CONFIG), secs)
    print(f"raw     get-config              {r:8.0f} /s  ({1000 / r:.2f} ms)")
    r, _ = rate(lambda i: c.rpc(edit_config(i)), secs)
    print(f"raw     edit-config             {r:8.0f} /s  ({1000 / r:.2f} ms)")

    def edit_get(i: int, cl: RawClient = c, s: int = 0) -> None:
        cl.rpc(edit_config(i, s))
        cl.rpc(GET_CONFIG)

    r, _ = rate(edit_get, secs)
    print(f"raw     edit+get round trips    {r:8.0f} /s  (Netopeer2: 533-690)")
    c.close()

    from lxml import etree

    with nc_connect() as m:
        r, _ = rate(lambda i: m.get_config("running"), secs)
        print(f"ncclient get-config             {r:8.0f} /s")
        edit = etree.fromstring(f'<rpc xmlns="{NC}">{edit_config(0)}</rpc>')[0][1]

        def nc_edit_get(i: int) -> None:
            edit[0][0][0][1].text = str(i % 8 + 1)
            m.edit_config(target="running", config=edit)
            m.get_config("running")

        r, _ = rate(nc_edit_get, secs)
        print(f"ncclient edit+get round trips   {r:8.0f} /s")

    def edit_only(i: int, cl: RawClient, s: int) -> None:
        cl.rpc(edit_config(i, s))

    def get_only(i: int, cl: RawClient, s: int) -> None:
        cl.rpc(GET_CONFIG)

    for label, fn in (("edit+get", edit_get), ("edit    ", edit_only), ("get     ", get_only)):
        for n in (4, 32):
            total, slowest = parallel(port, n, secs, fn)
            print(f"raw     {label}, {n:2d} sessions  {total:8.0f} /s total"
                  f"  (slowest session {slowest:.0f} /s)")

    time.sleep(0.5)
    before = rss_kb(pid)
    idle = [RawClient(port) for _ in range(args.idle)]
    time.sleep(0.5)
    after = rss_kb(pid)
    print(f"memory per idle session  {(after - before) / args.idle:8.0f} KiB"
          f"  ({args.idle} sessions, server RSS {before // 1024} -> {after // 1024} MiB)")
    for cl in idle:
        cl.close()


def nacm_rules(n: int = 100) -> str:
    """``n`` rules for the bench user: its own tenants (n - 3 of them), the others
    hidden, flavors writable, kill-session denied."""

    def rule(name: str, match: str, ops: str, action: str) -> str:
        return (f"<rule><name>{name}</name>{match}<access-operations>{ops}"
                f"</access-operations><action>{action}</action></rule>")

    rules = [
        rule(f"tenant-{i}", f"<path>/esc:esc_datamodel/esc:tenants/esc:tenant"
                            f"[esc:name='tenant-{i}']</path>", "*", "permit")
        for i in range(n - 3)
    ]
    rules.append(rule("other-tenants", "<path>/esc:esc_datamodel/esc:tenants</path>", "*",
                      "deny"))
    rules.append(rule("flavors", "<path>/esc:esc_datamodel/esc:flavors</path>",
                      "create update", "permit"))
    rules.append(rule("no-kill", "<rpc-name>kill-session</rpc-name>", "exec", "deny"))
    return (f'<nacm xmlns="{NACM}" xmlns:esc="{ESC}"><enable-nacm>false</enable-nacm>'
            f"<groups><group><name>bench</name><user-name>{USER}</user-name></group></groups>"
            f"<rule-list><name>bench</name><group>bench</group>{''.join(rules)}</rule-list>"
            "</nacm>")


def set_nacm(admin: RawClient, enabled: bool) -> None:
    admin.rpc(f"<edit-config><target><running/></target><config><nacm xmlns=\"{NACM}\">"
              f"<enable-nacm>{'true' if enabled else 'false'}</enable-nacm></nacm>"
              "</config></edit-config>")


def run_nacm(port: int, args: argparse.Namespace) -> None:
    secs = args.seconds
    admin = RawClient(port, ADMIN, ADMIN_PASSWORD)
    tenants = "".join(
        f"<tenant><name>{name}</name><description>{name}</description></tenant>"
        for name in [f"tenant-{i}" for i in range(5)] + [f"other-{i}" for i in range(5)]
    )
    admin.rpc("<edit-config><target><running/></target><config>"
              f'<esc_datamodel xmlns="{ESC}"><tenants>{tenants}</tenants></esc_datamodel>'
              f"{nacm_rules()}</config></edit-config>")
    c = RawClient(port)
    c.rpc(edit_config(0))
    print(f"escnc NETCONF bench, NACM: user {USER!r} under 100 rules, best of 3 x "
          f"{secs / 3:g} s per figure")
    # off and on alternate, best of 3 rounds each: a shared machine's noise hits both
    results: dict[tuple[str, bool], float] = {}
    for rnd in range(3):
        for enabled in (False, True):
            set_nacm(admin, enabled)
            got = c.rpc(GET_CONFIG)
            if rnd == 0:
                print(f"  enable-nacm {str(enabled).lower():5}: user sees "
                      f"{got.count(b'<tenant>')} of 10 tenants")
            for op, fn in (("get-config", lambda i: c.rpc(GET_CONFIG)),
                           ("edit-config", lambda i: c.rpc(edit_config(i)))):
                r, _ = rate(fn, secs / 3)
                results[(op, enabled)] = max(results.get((op, enabled), 0.0), r)
    for op in ("get-config", "edit-config"):
        off, on = results[(op, False)], results[(op, True)]
        print(f"raw     {op:12} NACM off {off:8.0f} /s   on {on:8.0f} /s   "
              f"({on / off * 100:.0f} %)")
    c.close()
    admin.close()


if __name__ == "__main__":
    main()
