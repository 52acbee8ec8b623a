"""Monitoring cost: CPU used by the poller for N monitored VMs on the libvirt test driver.

Deploys N VMs (one deployment, poll_frequency 1 s or as given), waits until all are
monitored, then measures the process's CPU time (user+sys) over a quiet window with
monitoring on, and over the same window with every VM's monitoring off (baseline:
libvirt event loop, reconcile-free harness). Also: polls done, threads in the
process, and the time from a guest stopping to answer (domain paused) to
VM_RECOVERY_INIT.

usage: python bench/monitor_bench.py [N] [poll_seconds] [window_seconds]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from engine_support import Harness, config, monitored_deployment


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def window(h: Harness, seconds: float) -> tuple[float, int]:
    polls0, c0 = h.engine.monitor.polls, cpu()
    time.sleep(seconds)
    return cpu() - c0, h.engine.monitor.polls - polls0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("vms", nargs="?", type=int, default=1000, help="monitored VMs")
    parser.add_argument("poll_seconds", nargs="?", type=int, default=1)
    parser.add_argument("window_seconds", nargs="?", type=float, default=10.0)
    args = parser.parse_args()
    n, poll, secs = args.vms, args.poll_seconds, args.window_seconds
    with tempfile.TemporaryDirectory(prefix="escnc-monbench-") as tmp:
        h = Harness(Path(tmp)).start()
        try:
            dep = monitored_deployment(min_active=n, max_active=n, bootup_time=600).replace(
                "<poll_frequency>1</poll_frequency>", f"<poll_frequency>{poll}</poll_frequency>"
            )
            t0 = time.perf_counter()
            h.ds.commit(config(Path(tmp), dep))
            h.events.wait_for("SERVICE_ALIVE", timeout=900)
            print(f"deployed {n} VMs in {time.perf_counter() - t0:.1f} s")
            h.engine.wait_idle(60)
            assert h.engine.monitor.count() == n, h.engine.monitor.count()
            time.sleep(poll)  # let the schedule spread out
            used, polls = window(h, secs)
            threads = threading.active_count()
            names = [v.generated_name for v in h.engine.store.vms()]
            for name in names:
                h.engine.store.update_vm(name, monitoring=False)
            assert h.engine.monitor.count() == 0
            base, _ = window(h, secs)
            for name in names:
                h.engine.store.update_vm(name, monitoring=True)
            print(
                f"{n} VMs polled every {poll} s: {polls / secs:.0f} polls/s, "
                f"CPU {used / secs * 100:.1f}% of one core with monitoring, "
                f"{base / secs * 100:.1f}% without; "
                f"{(used - base) / max(polls, 1) * 1e6:.1f} us CPU per poll; "
                f"{threads} threads in the process"
            )
            time.sleep(poll)
            h.events.clear()
            vm = h.engine.store.vms()[n // 2]
            dom = h.engine.ops.domain(vm)
            assert dom is not None
            t1 = time.perf_counter()
            dom.suspend()
            h.events.wait_for("VM_RECOVERY_INIT", timeout=60)
            print(
                f"guest stops answering -> VM_RECOVERY_INIT: "
                f"{(time.perf_counter() - t1) * 1000:.0f} ms (poll {poll} s)"
            )
            h.events.wait_for("VM_RECOVERY_COMPLETE", timeout=60)
        finally:
            h.stop()


if __name__ == "__main__":
    main()
