"""Failover time of an active/standby pair: kill -9 of the leader -> the first write
the new leader accepts, and -> the terminal event of the job the kill interrupted.

Each run starts two ``escnc serve`` processes on a fresh PostgreSQL database (a
throw-away server from tests/pg_support.py, or ``--dsn``), waits until one leads and
the other stands by, writes once through the leader, kills it with SIGKILL and then
sends edit-config to the standby over one open NETCONF session until it answers
``<ok/>`` (the not-leader refusals in between are counted). Prints each run and the
median. The expected figure is lease_duration (the standby's wait from the last
renewal it saw) plus up to one lease_retry poll plus the engine start.

With ``--vms N`` (default 20; 0: none) the leader is deploying N VMs when it is
killed (after ``--kill-after`` VM_DEPLOYED): the second figure is the time from the
kill to that deployment's SERVICE_ALIVE, by its eventTime (one machine, one clock),
as a subscriber on the standby sees it. With ESCNC_QEMU_URI set (run inside the
hypervisor's network namespace, as the qemu tests) both nodes use that real libvirtd
and the tiny test guest, so the new leader adopts the domains the old one created and
the figure includes the guests' boot to VM_ALIVE; without it each node has a
test-driver host of its own (``test:///`` host files are per process: the new leader
sees none of the old one's domains and creates every VM again), which measures the
takeover and the resumed job's own work only. Usage:
    python bench/failover_bench.py [--runs 5] [--lease 15 --deadline 10 --retry 2]
        [--vms 20 --kill-after 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from lxml import etree
from ncclient.operations.rpc import RPCError

from ha_support import TENANT, E, Node, cluster, role, wait_until

QEMU_URI = os.environ.get("ESCNC_QEMU_URI", "")
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"


class Workload:
    """The deployment the leader is running when it dies: on the real libvirtd (the
    qemu tests' image, network and config) or on each node's own test-driver host."""

    def __init__(self, root: Path, vms: int) -> None:
        self.vms = vms
        self.env: Any = None
        self.root = root
        if QEMU_URI and vms:
            import test_qemu_lifecycle as q

            sys.path.insert(0, str(Path(q.__file__).parent / "guest"))
            import build  # type: ignore[import-not-found]

            self.q = q
            self.disk = Path(build.build().disk)

    def prepare(self, run: int) -> tuple[Path, dict[str, str]]:
        """A fresh root for the run's nodes and the Node keywords."""
        if not (QEMU_URI and self.vms):
            root = self.root / f"run{run}"
            root.mkdir()
            # the image file is written in root; 20 two-vCPU VMs on a 16-CPU test host
            return root, {"extra": f'image_import_dirs = ["{root}"]\n'
                          "[overcommit]\nvcpus = 4\nmemory = 4\n"}
        q, tag = self.q, uuid.uuid4().hex[:6]
        q.STATE_ROOT.mkdir(parents=True, exist_ok=True)
        q.STATE_ROOT.chmod(0o755)
        state = q.STATE_ROOT / f"bench-{tag}"
        state.mkdir(mode=0o755)
        self.env = q.Env(tag, state, f"qemu-{tag}", f"qn{tag}", int(tag, 16) % 10000)
        imports = state / "import"
        imports.mkdir()
        extra = (f'image_import_dirs = ["{imports}"]\n'
                 f"[overcommit]\nvcpus = {max(1, self.vms)}\n")
        return state, {"vim": QEMU_URI, "extra": extra}

    def config(self, root: Path) -> str:
        if self.env is not None:
            return str(self.q.config_xml(self.env, self.disk, self.vms))
        from engine_support import config, deployment

        return (f'<config xmlns="{NC}">'
                f"{config(root, deployment(min_active=self.vms, max_active=self.vms))}"
                "</config>")

    def cleanup(self) -> None:
        if self.env is not None:
            self.q._cleanup_libvirt(self.env)
            shutil.rmtree(self.env.state, ignore_errors=True)
            self.env = None


def escevents(m: Any) -> Callable[[float], tuple[str, float] | None]:
    """A reader of one subscribed session: (event type, eventTime as a Unix time)."""

    def take(timeout: float) -> tuple[str, float] | None:
        n = m.take_notification(block=True, timeout=timeout)
        if n is None:
            return None
        root = etree.fromstring(n.notification_xml.encode())
        ev = root.find(f"{E}escEvent")
        when = root.findtext("{urn:ietf:params:xml:ns:netconf:notification:1.0}eventTime")
        if ev is None or not when:
            return ("", 0.0)
        return (ev.findtext(f"{E}event/{E}type") or "",
                datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp())

    return take


def one_run(root: Path, dsn: str, args: argparse.Namespace, run: int,
            work: Workload) -> tuple[float, float, int, float | None]:
    """(seconds to the first accepted write, seconds to the new leader's engine start
    as its opdata reports it, refusals meanwhile, seconds to the interrupted
    deployment's SERVICE_ALIVE or None without one)."""
    timings = {"lease": args.lease, "deadline": args.deadline, "retry": args.retry}
    root, kw = work.prepare(run)
    a = Node(root, f"a{run}", dsn, http=False, **timings, **kw)
    b: Node | None = None
    try:
        assert wait_until(lambda: role(a) == "leader/running", 60), role(a)
        b = Node(root, f"b{run}", dsn, http=False, **timings, **kw)
        assert wait_until(lambda: role(b) == "standby/stopped", 60), role(b)  # type: ignore[union-attr]
        watch = b.connect()  # the standby's subscriber: the shared log, both terms
        watch.create_subscription(stream_name="escEvent")
        take = escevents(watch)
        with a.connect() as m:
            m.edit_config(target="running", config=TENANT.format(f"before{run}"))
            if work.vms:
                m.timeout = 120
                m.edit_config(target="running", config=work.config(root))
        deployed = 0
        while work.vms and deployed < min(args.kill_after, work.vms):
            got = take(300)
            assert got is not None, "no VM_DEPLOYED from the leader"
            assert got[0] != "SERVICE_ALIVE", "the deployment ended before the kill"
            deployed += got[0] == "VM_DEPLOYED"
        with b.connect() as m:
            a.kill9()
            killed, killed_wall = time.monotonic(), time.time()
            refused = 0
            while True:
                try:
                    m.edit_config(target="running", config=TENANT.format(f"after{run}"))
                    break
                except RPCError:
                    refused += 1
                    if time.monotonic() - killed > args.lease * 4 + 30:
                        raise
                    time.sleep(0.01)
            accepted = time.monotonic() - killed
            changed = cluster(m)["engine_changed"].replace("Z", "+00:00")
        engine = datetime.fromisoformat(changed).timestamp() - killed_wall
        finished = None
        while work.vms and finished is None:
            got = take(600)
            assert got is not None, "the interrupted deployment did not finish"
            if got[0] == "SERVICE_ALIVE":
                finished = got[1] - killed_wall
        watch.close_session()
        return accepted, engine, refused, finished
    finally:
        a.stop()
        if b is not None:
            b.stop()
        work.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lease", type=float, default=15.0)
    parser.add_argument("--deadline", type=float, default=10.0)
    parser.add_argument("--retry", type=float, default=2.0)
    parser.add_argument("--vms", type=int, default=20,
                        help="VMs of the deployment under way at the kill (0: none)")
    parser.add_argument("--kill-after", type=int, default=4,
                        help="VM_DEPLOYED events before the kill")
    parser.add_argument("--dsn", default="", help="an empty database (default: a "
                        "throw-away server, a fresh database per run)")
    args = parser.parse_args()
    server = None
    if not args.dsn:
        from pg_support import PgServer

        server = PgServer().start()
    results: list[float] = []
    jobs: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Workload(Path(tmp), args.vms)
            for run in range(args.runs):
                dsn = args.dsn or server.create_database()  # type: ignore[union-attr]
                accepted, engine, refused, finished = one_run(Path(tmp), dsn, args, run,
                                                              work)
                results.append(accepted)
                job = ""
                if finished is not None:
                    jobs.append(finished)
                    job = f"; the interrupted deployment's SERVICE_ALIVE at +{finished:.2f} s"
                print(f"run {run + 1}: first write accepted {accepted:.2f} s after kill -9 "
                      f"(new engine started at +{engine:.2f} s; {refused} not-leader "
                      f"refusals before{job})", flush=True)
    finally:
        if server is not None:
            server.stop()
    print(f"lease_duration {args.lease} s, renew_deadline {args.deadline} s, "
          f"lease_retry {args.retry} s: median {statistics.median(results):.2f} s, "
          f"min {min(results):.2f} s, max {max(results):.2f} s over {len(results)} runs")
    if jobs:
        host = f"{QEMU_URI} (tiny guests)" if QEMU_URI else "test driver, a host per node"
        print(f"kill -9 -> SERVICE_ALIVE of the {args.vms}-VM deployment under way "
              f"({host}): median {statistics.median(jobs):.2f} s, min {min(jobs):.2f} s, "
              f"max {max(jobs):.2f} s over {len(jobs)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
