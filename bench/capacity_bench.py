"""Capacity timings on the libvirt test driver, with N escnc VM records on one host:

* ``admission``: one placement check (ledger from the snapshot and the records, then
  a refusal test) -- what choose_host pays per candidate host;
* ``figures``: one capacity query's figures (compute, one zone);
* ``refresh``: one read of a host into the snapshot (the capacity thread's poll).

    python bench/capacity_bench.py [-n 1000] [-r 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from engine_support import Harness  # noqa: E402
from escnc.engine.capacity.model import Amount  # noqa: E402
from escnc.engine.store import VmRecord  # noqa: E402


def timed(label: str, fn: Callable[[], object], rounds: int) -> None:
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))]
    print(f"{label:<36} n={rounds:<4} median {statistics.median(samples):8.2f} ms"
          f"   p95 {p95:8.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=1000, help="VM records on the host")
    ap.add_argument("-r", type=int, default=50, help="rounds")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        h = Harness(Path(tmp), reconcile_interval=0).start()
        try:
            store = h.engine.store
            for i in range(args.n):
                store.put_vm(VmRecord(
                    generated_name=f"d_g_{i}_{uuid.uuid4()}", vm_id=str(uuid.uuid4()),
                    tenant="t1", deployment="d", group="g", index=i, host="host",
                    state="VM_ALIVE_STATE", flavor="small"))
            mgr = h.engine.capacity
            need = Amount(instances=1, vcpus=1, memory_mb=256)
            load = Path("/proc/loadavg").read_text().split()[0]
            print(f"{args.n} VM records, load {load}")
            timed("admission (ledger + refusal)", lambda: mgr.ledger().refusal("host", need),
                  args.r)

            def after_change() -> None:
                mgr._vms_changed()  # what every VM record write does
                mgr.ledger().refusal("host", need)

            timed("admission after a VM record change", after_change, args.r)
            timed("figures (compute, zone host)", lambda: mgr.figures("compute", "host"), args.r)
            timed("refresh (read the host)", mgr.refresh, args.r)
        finally:
            h.stop()


if __name__ == "__main__":
    main()
