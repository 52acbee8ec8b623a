"""Failover time of an active/standby pair: kill -9 of the leader -> the first write
the new leader accepts.

Each run starts two ``escnc serve`` processes on a fresh PostgreSQL database (a
throw-away server from tests/pg_support.py, or ``--dsn``), waits until one leads and
the other stands by, writes once through the leader, kills it with SIGKILL and then
sends edit-config to the standby over one open NETCONF session until it answers
``<ok/>`` (the not-leader refusals in between are counted). Prints each run and the
median. The expected figure is lease_duration (the standby's wait from the last
renewal it saw) plus up to one lease_retry poll plus the engine start. Usage:
    python bench/failover_bench.py [--runs 5] [--lease 15 --deadline 10 --retry 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from ncclient.operations.rpc import RPCError

from ha_support import TENANT, Node, cluster, role, wait_until


def one_run(root: Path, dsn: str, args: argparse.Namespace, run: int) -> tuple[float, float, int]:
    """(seconds to the first accepted write, seconds to the new leader's engine start
    as its opdata reports it, refusals meanwhile)."""
    timings = {"lease": args.lease, "deadline": args.deadline, "retry": args.retry}
    a = Node(root, f"a{run}", dsn, http=False, **timings)
    b: Node | None = None
    try:
        assert wait_until(lambda: role(a) == "leader/running", 60), role(a)
        b = Node(root, f"b{run}", dsn, http=False, **timings)
        assert wait_until(lambda: role(b) == "standby/stopped", 60), role(b)  # type: ignore[union-attr]
        with a.connect() as m:
            m.edit_config(target="running", config=TENANT.format(f"before{run}"))
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
        from datetime import datetime

        engine = datetime.fromisoformat(changed).timestamp() - killed_wall
        return accepted, engine, refused
    finally:
        a.stop()
        if b is not None:
            b.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lease", type=float, default=15.0)
    parser.add_argument("--deadline", type=float, default=10.0)
    parser.add_argument("--retry", type=float, default=2.0)
    parser.add_argument("--dsn", default="", help="an empty database (default: a "
                        "throw-away server, a fresh database per run)")
    args = parser.parse_args()
    server = None
    if not args.dsn:
        from pg_support import PgServer

        server = PgServer().start()
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for run in range(args.runs):
                dsn = args.dsn or server.create_database()  # type: ignore[union-attr]
                accepted, engine, refused = one_run(Path(tmp), dsn, args, run)
                results.append(accepted)
                print(f"run {run + 1}: first write accepted {accepted:.2f} s after kill -9 "
                      f"(new engine started at +{engine:.2f} s; {refused} not-leader "
                      "refusals before)", flush=True)
    finally:
        if server is not None:
            server.stop()
    print(f"lease_duration {args.lease} s, renew_deadline {args.deadline} s, "
          f"lease_retry {args.retry} s: median {statistics.median(results):.2f} s, "
          f"min {min(results):.2f} s, max {max(results):.2f} s over {len(results)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
