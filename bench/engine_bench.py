"""Engine benchmark on the libvirt test driver.

Prints, for 1, 100 and 1,000 VMs in one deployment: time from commit (the commit
listener call) to SERVICE_ALIVE, and engine memory per deployed VM (RSS delta over
the deployment divided by its VM count). Also the time to undeploy.

With ``--hosts H --deployments D`` the VMs are spread over D deployments (N/D VMs
each) on H test-driver hosts (files), and the bench also times a full reconcile of
all of them (every deployment compared with what the hosts report):

usage: python bench/engine_bench.py [N ...] [--reconcile-interval S]
       python bench/engine_bench.py --hosts 100 --deployments 1000 10000
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from engine_support import Harness, config, deployment


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _on_host(host: str) -> str:
    """Deployments are spread round-robin (placement fills one host before the next)."""
    return (
        "<placement><type>zone_host</type><enforcement>strict</enforcement>"
        f"<host>{host}</host></placement>"
    )


def run(n: int, hosts: int = 1, deployments: int = 1, reconcile_interval: float = 30.0) -> None:
    per_dep = max(n // deployments, 1)
    names = tuple(["host"] + [f"h{i}" for i in range(1, hosts)])
    with tempfile.TemporaryDirectory(prefix="escnc-bench-") as tmp:
        h = Harness(Path(tmp), host_files=names, reconcile_interval=reconcile_interval).start()
        try:
            # warm up image registration and the network/pool on the host
            warm = deployment("warm", min_active=1)
            h.ds.commit(config(Path(tmp), warm))
            h.events.wait_for("SERVICE_ALIVE", 1, timeout=60)
            h.engine.wait_idle(60)
            gc.collect()
            before = rss_kb()
            deps = "".join(
                deployment(f"bench{d}", min_active=per_dep, max_active=per_dep,
                           extra_group=_on_host(names[d % hosts]) if hosts > 1 else "")
                for d in range(deployments)
            )
            t0 = time.perf_counter()
            h.ds.commit(config(Path(tmp), warm + deps))
            items = h.events.wait_for("SERVICE_ALIVE", 1 + deployments, timeout=1800)
            elapsed = time.perf_counter() - t0
            failed = [i for i in items if i[0] == "SERVICE_ALIVE" and i[1] != "SUCCESS"]
            if failed:
                raise SystemExit(f"deployment failed: {failed[0][3][:300]}")
            h.engine.wait_idle(120)
            gc.collect()
            total = per_dep * deployments
            per_vm = (rss_kb() - before) / total
            used = len({vm.host for vm in h.engine.store.vms()})
            t2 = time.perf_counter()
            h.engine.reconcile()
            h.engine.wait_idle(600)
            full = time.perf_counter() - t2
            t1 = time.perf_counter()
            h.ds.commit(config(Path(tmp), warm))
            h.events.wait_for("SERVICE_UNDEPLOYED", deployments, timeout=1800)
            undeploy = time.perf_counter() - t1
            print(
                f"{total:>6} VMs in {deployments} deployment(s) on {used} of {hosts} host(s): "
                f"commit -> SERVICE_ALIVE {elapsed * 1000:9.1f} ms "
                f"({elapsed / total * 1000:.2f} ms/VM), RSS {per_vm:7.1f} KiB/VM, "
                f"full reconcile {full * 1000:8.1f} ms, undeploy {undeploy * 1000:8.1f} ms",
                flush=True,
            )
        finally:
            h.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Engine: commit -> SERVICE_ALIVE time and RSS per VM on the test driver."
    )
    parser.add_argument("sizes", nargs="*", type=int, default=[1, 100, 1000],
                        help="VM counts to deploy (default: 1 100 1000)")
    parser.add_argument("--hosts", type=int, default=1, help="test-driver hosts (default 1)")
    parser.add_argument("--deployments", type=int, default=1,
                        help="deployments the VMs are spread over (default 1)")
    parser.add_argument("--reconcile-interval", type=float, default=30.0,
                        help="periodic reconcile, seconds (default 30, the server's default; "
                        "the test harness's 1 s re-reads 10,000 VMs every second)")
    args = parser.parse_args()
    for n in args.sizes:
        run(n, args.hosts, args.deployments, args.reconcile_interval)


if __name__ == "__main__":
    main()
