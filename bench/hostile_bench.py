"""How long expensive requests take and what they cost other sessions (prints numbers).

    PYTHONPATH=src python bench/hostile_bench.py [--tenants 1000] [--edit-tenants 4000]

Starts a full escnc server in a child process (own state dir, libvirt test driver) and,
over loopback with ncclient as the recovery user:

* loads ``--tenants`` tenants, then runs the XPath filter ``//*[count(//*) > 0]``
  (quadratic in the tree) and reports how it ended (reply, or the filter limit's
  rpc-error) and after how long;
* runs one edit-config adding ``--edit-tenants`` more tenants and reports its time;

and while each runs, a second session sends a one-tenant get-config in a loop: its
median and maximum latency show whether the expensive request stalls other sessions.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

from ncclient import manager
from ncclient.transport import session as nc_session

nc_session.TICK = 0.0005
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
ESC = "http://www.cisco.com/esc/esc"
USER, PASSWORD = "admin", "bench-pw"  # the recovery user: NACM does not apply

SERVER = textwrap.dedent(
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
    srv = Server(Settings(state_dir=state, listen_host="127.0.0.1", listen_port=0,
                          vims={"default": f"test://{node}"}))
    srv.start()
    print(srv.port, flush=True)
    sys.stdin.read()
    srv.stop()
    """
)


def tenants(start: int, n: int) -> str:
    body = "".join(f"<tenant><name>t{i}</name></tenant>" for i in range(start, start + n))
    return (f'<config xmlns="{NC}"><esc_datamodel xmlns="{ESC}"><tenants>{body}</tenants>'
            "</esc_datamodel></config>")


def connect(port: int, timeout: float = 600) -> manager.Manager:
    m = manager.connect(host="127.0.0.1", port=port, username=USER, password=PASSWORD,
                        hostkey_verify=False, allow_agent=False, look_for_keys=False,
                        timeout=60)
    m.timeout = timeout
    return m


class Prober:
    """Another session's small get-config, in a loop, while something else runs."""

    FILTER = (f'<esc_datamodel xmlns="{ESC}"><tenants><tenant><name>t7</name></tenant>'
              "</tenants></esc_datamodel>")

    def __init__(self, port: int) -> None:
        self.m = connect(port)
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.perf_counter()
            self.m.get_config("running", filter=("subtree", self.FILTER))
            self.latencies.append(time.perf_counter() - t)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.m.close_session()

    def summary(self) -> str:
        if not self.latencies:
            return "no reply at all while it ran"
        ms = sorted(x * 1000 for x in self.latencies)
        return (f"{len(ms)} replies, median {statistics.median(ms):.1f} ms, "
                f"max {ms[-1]:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--edit-tenants", type=int, default=4000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([sys.executable, "-c", SERVER, f"{tmp}/state", USER, PASSWORD],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdin is not None
        port = int(proc.stdout.readline())
        try:
            m = connect(port)
            m.edit_config(target="running", config=tenants(0, args.tenants))
            print(f"loaded {args.tenants} tenants")

            with Prober(port) as probe:
                t = time.perf_counter()
                try:
                    m.get_config("running", filter=("xpath", "//*[count(//*) > 0]"))
                    outcome = "answered"
                except Exception as exc:  # the filter limit: an rpc-error
                    outcome = f"ended by {type(exc).__name__}: {str(exc)[:120]}"
                took = time.perf_counter() - t
            print(f"hostile XPath at {args.tenants} tenants: {took:.2f} s, {outcome}")
            print(f"  other session's get-config meanwhile: {probe.summary()}")

            with Prober(port) as probe:
                t = time.perf_counter()
                m.edit_config(target="running", config=tenants(args.tenants, args.edit_tenants))
                took = time.perf_counter() - t
            print(f"edit-config adding {args.edit_tenants} tenants: {took:.2f} s")
            print(f"  other session's get-config meanwhile: {probe.summary()}")
            m.close_session()
        finally:
            proc.stdin.close()
            proc.wait(60)


if __name__ == "__main__":
    main()
