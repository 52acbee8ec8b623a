"""Monitoring cost: CPU used by the poller for N monitored VMs on the libvirt test driver.

Deploys N VMs (one deployment, poll_frequency 1 s or as given), waits until all are
monitored, then measures the process's CPU time (user+sys) over a quiet window with
monitoring on, and over the same window with every VM's monitoring off (baseline:
libvirt event loop, reconcile-free harness). Also: polls done, threads in the
process, and the time from a guest stopping to answer (domain paused) to
VM_RECOVERY_INIT.

With ``--kpis K`` (issue 15): the group also has K KPIs (besides VM_ALIVE) sampled by an
in-process collector (so the figure is the evaluation's cost, not a process spawn per
sample), and the bench prints the CPU used by the KPI poller (window with it running
minus a window with it stopped), samples per second, and the time from a threshold
crossing (the collector's value jumps above metric_value on one VM) to
VM_SCALE_OUT_INIT, over a few trials. ``--script`` also times one sample of a script
collector (a process per sample).

usage: python bench/monitor_bench.py [N] [poll_seconds] [window_seconds] [--kpis K]
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
from escnc.engine.kpi.spec import KpiDef
from escnc.engine.store import VmRecord


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
    parser.add_argument("--kpis", type=int, default=0, help="KPIs per VM besides VM_ALIVE")
    parser.add_argument("--script", action="store_true", help="also time a script collector")
    args = parser.parse_args()
    n, poll, secs = args.vms, args.poll_seconds, args.window_seconds
    if args.kpis:
        kpi_bench(n, poll, secs, args.kpis, args.script)
        return
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


class DictCollector:
    """In-process collector: the value the bench set for the VM (default 50)."""

    name = "BENCH"
    blocking = False

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def sample(self, vm: VmRecord, kpi: KpiDef) -> float:
        return self.values.get(vm.generated_name, 50.0)

    def forget(self, generated_name: str) -> None:
        pass


def _kpi(event: str, cond: str, value: int, poll: int) -> str:
    return (
        f"<kpi><event_name>{event}</event_name><metric_value>{value}</metric_value>"
        f"<metric_cond>{cond}</metric_cond><metric_type>UINT32</metric_type>"
        "<metric_collector><type>BENCH</type><nicid>0</nicid>"
        f"<poll_frequency>{poll}</poll_frequency><polling_unit>seconds</polling_unit>"
        "</metric_collector></kpi>"
    )


def kpi_bench(n: int, poll: int, secs: float, kpis: int, script: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="escnc-kpibench-") as tmp:
        h = Harness(Path(tmp), reconcile_interval=30.0)
        h.settings.scale_cooldown = 0.0
        collector = DictCollector()
        h.engine.elastic.collectors.add(collector)
        h.start()
        try:
            extra = _kpi("VM_OVERLOADED", "GT", 70, poll) + "".join(
                _kpi(f"K{i}", "LT", 1, poll) for i in range(1, kpis)
            )
            rules = (
                "<rules><admin_rules><rule><event_name>VM_OVERLOADED</event_name>"
                '<action>"TRUE servicescaleup.sh"</action></rule></admin_rules></rules>'
            )
            dep = monitored_deployment(min_active=n, max_active=n + 10, bootup_time=600)
            dep = dep.replace(
                "<poll_frequency>1</poll_frequency>", f"<poll_frequency>{poll}</poll_frequency>"
            ).replace("</kpi></kpi_data>", f"</kpi>{extra}</kpi_data>{rules}", 1)
            t0 = time.perf_counter()
            h.ds.commit(config(Path(tmp), dep))
            h.events.wait_for("SERVICE_ALIVE", timeout=1800)
            print(f"deployed {n} VMs with {kpis} KPIs each in {time.perf_counter() - t0:.1f} s")
            h.engine.wait_idle(60)
            kpi_rt = h.engine.elastic.kpis
            time.sleep(2 * poll)  # every VM's KPIs are scheduled and spread out
            s0, c0 = kpi_rt.samples, cpu()
            time.sleep(secs)
            used, samples = cpu() - c0, kpi_rt.samples - s0
            print(f"{samples / secs:.0f} KPI samples/s, CPU {used / secs * 100:.1f}% of one core")
            # threshold crossing -> VM_SCALE_OUT_INIT, a few trials (no cool-down)
            names = [v.generated_name for v in h.engine.store.vms()]
            delays = []
            for trial in range(3):
                h.events.clear()
                vm = names[(trial + 1) * n // 4]
                t1 = time.perf_counter()
                collector.values[vm] = 90.0
                try:
                    h.events.wait_for("VM_SCALE_OUT_INIT", timeout=60)
                except AssertionError:
                    print("no VM_SCALE_OUT_INIT:", kpi_rt.states(vm).get("VM_OVERLOADED"))
                    raise
                delays.append((time.perf_counter() - t1) * 1000)
                h.events.wait_for("VM_SCALE_OUT_COMPLETE", timeout=120)
                collector.values[vm] = 50.0
            kpi_rt.stop()
            time.sleep(poll)
            c1 = cpu()
            time.sleep(secs)
            base = cpu() - c1
            print(
                f"{n} VMs x {kpis} KPIs every {poll} s: {samples / secs:.0f} samples/s; "
                f"CPU {used / secs * 100:.1f}% of one core with the KPI poller, "
                f"{base / secs * 100:.1f}% without (liveness monitor only); "
                f"{(used - base) / max(samples, 1) * 1e6:.1f} us CPU per KPI sample"
            )
            print(
                "threshold crossing -> VM_SCALE_OUT_INIT: "
                + ", ".join(f"{d:.0f}" for d in delays)
                + f" ms (poll {poll} s: at most one period plus scheduling expected)"
            )
            if script:
                from escnc.engine.kpi.collectors import ScriptCollector
                from escnc.settings import MetricScript

                probe = Path(tmp) / "probe.sh"
                probe.write_text("#!/bin/sh\necho 42\n")
                probe.chmod(0o755)
                sc = ScriptCollector("P", MetricScript((str(probe),), 5.0), 4096)
                vm_rec = h.engine.store.vms()[0]
                kdef = KpiDef("K", collector="P")
                c2, t2 = cpu(), time.perf_counter()
                for _ in range(50):
                    assert sc.sample(vm_rec, kdef) == 42.0
                wall = (time.perf_counter() - t2) / 50 * 1000
                print(
                    f"script collector: {wall:.1f} ms wall per sample, "
                    f"{(cpu() - c2) / 50 * 1000:.2f} ms CPU in escnc (plus the child's)"
                )
        finally:
            h.stop()


if __name__ == "__main__":
    main()
