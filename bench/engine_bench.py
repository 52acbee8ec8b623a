"""Engine benchmark on the libvirt test driver.

Prints, for 1, 100 and 1,000 VMs in one deployment: time from commit (the commit
listener call) to SERVICE_ALIVE, and engine memory per deployed VM (RSS delta over
the deployment divided by its VM count). Also the time to undeploy.

usage: python bench/engine_bench.py [N ...]
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


def run(n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="escnc-bench-") as tmp:
        h = Harness(Path(tmp)).start()
        try:
            # warm up image registration and the network/pool on the host
            h.ds.commit(config(Path(tmp), deployment("warm", min_active=1)))
            h.events.wait_for("SERVICE_ALIVE", 1, timeout=60)
            h.engine.wait_idle(60)
            gc.collect()
            before = rss_kb()
            dep = deployment("bench", min_active=n, max_active=n)
            t0 = time.perf_counter()
            h.ds.commit(config(Path(tmp), deployment("warm", min_active=1) + dep))
            items = h.events.wait_for("SERVICE_ALIVE", 2, timeout=600)
            elapsed = time.perf_counter() - t0
            last = [i for i in items if i[0] == "SERVICE_ALIVE"][-1]
            if last[1] != "SUCCESS":
                raise SystemExit(f"deployment failed: {last[3][:300]}")
            h.engine.wait_idle(60)
            gc.collect()
            per_vm = (rss_kb() - before) / n
            t1 = time.perf_counter()
            h.ds.commit(config(Path(tmp), deployment("warm", min_active=1)))
            h.events.wait_for("SERVICE_UNDEPLOYED", 1, timeout=600)
            undeploy = time.perf_counter() - t1
            print(
                f"{n:>5} VMs: commit -> SERVICE_ALIVE {elapsed * 1000:9.1f} ms "
                f"({elapsed / n * 1000:.2f} ms/VM), RSS {per_vm:7.1f} KiB/VM, "
                f"undeploy {undeploy * 1000:8.1f} ms"
            )
        finally:
            h.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Engine: commit -> SERVICE_ALIVE time and RSS per VM on the test driver."
    )
    parser.add_argument("sizes", nargs="*", type=int, default=[1, 100, 1000],
                        help="VM counts to deploy (default: 1 100 1000)")
    for n in parser.parse_args().sizes:
        run(n)


if __name__ == "__main__":
    main()
