"""The KPI poller: samples every KPI of every monitored VM and acts on outcomes.

A VM is sampled while it is monitored (VM_ALIVE_STATE with monitoring on: the same
rule as engine/monitor.py, followed through the store's VM listener). Each KPI of
its group other than VM_ALIVE (which engine/monitor.py owns) is due every
``poll_frequency`` (``polling_unit``) on the engine's clock; one scheduler thread
keeps a heap of due times, blocking collectors (scripts, libvirt) run in a bounded
pool, at most one sample per VM and KPI in flight. A sample goes through
evaluate.py; an outcome that fires runs the group's rules (engine/rules.py). An
unknown sample is reported once per run of unknowns (VM_METRIC_UNKNOWN, FAILURE).

VM_ALIVE's rules follow the engine's own events (a dedicated event-bus consumer):
VM_ALIVE is its TRUE, VM_RECOVERY_INIT and VM_MANUAL_RECOVERY_NEEDED its FALSE.

The last value, time and state of each KPI of each VM is kept in memory for opdata
(``kpis/kpi`` under each vm_instance); a VM's entries go with the VM.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from lxml import etree

from escnc.engine import states as st
from escnc.engine.clock import Clock
from escnc.engine.kpi import evaluate
from escnc.engine.kpi.collectors import Collectors, Unknown
from escnc.engine.kpi.spec import ALIVE_EVENT, KpiDef
from escnc.engine.model import GroupSpec
from escnc.engine.rules import Rules
from escnc.engine.store import EngineStore, VmRecord
from escnc.ns import ESC

log = logging.getLogger(__name__)

UNKNOWN_EVENT = "VM_METRIC_UNKNOWN"
RESYNC = 5.0  # clock seconds between full scans (KPIs added to a group of live VMs)
_E = f"{{{ESC}}}"

Key = tuple[str, str]  # generated name, event_name


def _monitored(vm: VmRecord | None) -> bool:
    return vm is not None and vm.state == st.VM_ALIVE and vm.monitoring


@dataclass(frozen=True)
class KpiContext:
    store: EngineStore
    clock: Clock
    group_of: Callable[[VmRecord], GroupSpec | None]
    publish: Callable[[str, VmRecord, str, bool], None]  # (type, vm, message, failure)
    collectors: Collectors
    rules: Rules
    pool: ThreadPoolExecutor


class KpiRuntime:
    def __init__(self, ctx: KpiContext) -> None:
        self._ctx = ctx
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Key]] = []
        self._tokens = itertools.count(1)
        self._scheduled: dict[Key, int] = {}  # key -> token of its live heap entry
        self._inflight: set[Key] = set()
        self._states: dict[str, dict[str, evaluate.KpiState]] = {}
        self._dirty: set[str] = set()
        self._events_of: dict[str, set[str]] = {}  # VM -> its scheduled KPIs
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None
        self.samples = 0  # taken (benchmarks, tests)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, events: Any = None) -> None:
        self._ctx.store.add_vm_listener(self._on_vm)
        with self._cond:
            self._dirty.update(v.generated_name for v in self._ctx.store.vms())
        if events is not None:
            self._consumer = events.add_listener(self._on_event, stream="escEvent")
        self._thread = threading.Thread(target=self._run, name="engine-kpi", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._consumer is not None:
            self._consumer.close()
        if self._thread is not None:
            self._thread.join(5)

    # -- opdata ------------------------------------------------------------------------

    def states(self, generated_name: str) -> dict[str, evaluate.KpiState]:
        with self._cond:
            return {k: replace(v) for k, v in self._states.get(generated_name, {}).items()}

    # -- following VMs -----------------------------------------------------------------

    def _on_vm(self, name: str, vm: VmRecord | None) -> None:
        # under the store's lock: only note it
        with self._cond:
            self._dirty.add(name)
            if vm is None:
                self._states.pop(name, None)
        self._wake.set()

    def _sync(self, names: set[str]) -> None:
        now = self._ctx.clock.now()
        for name in names:
            vm = self._ctx.store.vm(name)
            group = self._ctx.group_of(vm) if vm is not None else None
            kpis = [k for k in (group.kpis if group else ()) if k.event_name != ALIVE_EVENT]
            wanted = {k.event_name: k for k in kpis} if _monitored(vm) else {}
            with self._cond:
                for event in self._events_of.get(name, set()) - wanted.keys():
                    self._scheduled.pop((name, event), None)  # its heap entry goes stale
                if wanted:
                    self._events_of[name] = set(wanted)
                else:
                    self._events_of.pop(name, None)
                for event, kpi in wanted.items():
                    key = (name, event)
                    if key not in self._scheduled and key not in self._inflight:
                        token = next(self._tokens)
                        self._scheduled[key] = token
                        heapq.heappush(self._heap, (now + kpi.poll_seconds, token, key))
            if vm is None:
                self._ctx.collectors.forget(name)

    # -- scheduler ---------------------------------------------------------------------

    def _run(self) -> None:
        clock = self._ctx.clock
        next_resync = clock.now() + RESYNC
        while not self._stop.is_set():
            self._wake.clear()  # whatever sets it from here on ends the wait below
            with self._cond:
                dirty, self._dirty = self._dirty, set()
            if clock.now() >= next_resync:
                dirty |= {v.generated_name for v in self._ctx.store.vms()}
                next_resync = clock.now() + RESYNC
            if dirty:
                self._sync(dirty)
            due: list[Key] = []
            now = clock.now()
            with self._cond:
                while self._heap and self._heap[0][0] <= now:
                    _due, token, key = heapq.heappop(self._heap)
                    if self._scheduled.get(key) == token:
                        del self._scheduled[key]
                        self._inflight.add(key)
                        due.append(key)
                wake = self._heap[0][0] if self._heap else now + RESYNC
            for key in due:
                self._dispatch(key)
            if not due:
                clock.wait_until(min(wake, next_resync), self._wake)

    def _dispatch(self, key: Key) -> None:
        vm = self._ctx.store.vm(key[0])
        group = self._ctx.group_of(vm) if vm is not None else None
        kpi = next((k for k in (group.kpis if group else ()) if k.event_name == key[1]), None)
        if vm is None or group is None or kpi is None or not _monitored(vm):
            self._done(key, None)
            return
        collector = self._ctx.collectors.get(kpi.collector)
        if collector is None:
            self._result(vm, group, kpi, Unknown(f"no collector named {kpi.collector}"))
            return
        if not collector.blocking:
            self._sample(collector, vm, group, kpi)
            return
        try:
            self._ctx.pool.submit(self._sample, collector, vm, group, kpi)
        except RuntimeError:  # shutting down
            self._done(key, None)

    def _sample(self, collector: Any, vm: VmRecord, group: GroupSpec, kpi: KpiDef) -> None:
        try:
            value = collector.sample(vm, kpi)
        except Exception as exc:  # a collector's own bug is an unknown, not a crash
            log.exception("collector %s failed on %s", kpi.collector, vm.generated_name)
            value = Unknown(f"collector {kpi.collector} failed: {exc}")
        self._result(vm, group, kpi, value)

    def _result(self, vm: VmRecord, group: GroupSpec, kpi: KpiDef, value: float | Unknown) -> None:
        key = (vm.generated_name, kpi.event_name)
        at = time.time()
        report = ""
        fired = None
        with self._cond:
            self.samples += 1
            st_ = self._states.setdefault(vm.generated_name, {}).setdefault(
                kpi.event_name, evaluate.KpiState()
            )
            if isinstance(value, Unknown):
                if evaluate.unknown(st_, value.reason, at, value.quiet):
                    report = value.reason
            else:
                fired = evaluate.step(kpi, st_, value, at)
        if report:
            msg = f"KPI {kpi.event_name} of VM {vm.generated_name}: value unknown: {report}"
            log.warning("%s", msg)
            self._ctx.publish(UNKNOWN_EVENT, vm, msg, True)
        if fired is not None:
            self._fire(vm, group, kpi.event_name, fired)
        self._done(key, kpi)

    def _done(self, key: Key, kpi: KpiDef | None) -> None:
        with self._cond:
            self._inflight.discard(key)
            if kpi is not None and key not in self._scheduled:
                token = next(self._tokens)
                self._scheduled[key] = token
                due = self._ctx.clock.now() + kpi.poll_seconds
                heapq.heappush(self._heap, (due, token, key))
        self._wake.set()

    def _fire(self, vm: VmRecord, group: GroupSpec, event: str, outcome: str,
              by_monitor: bool = False) -> None:
        def record(action: str, result: str) -> None:
            with self._cond:
                s = self._states.get(vm.generated_name, {}).get(event)
                if s is not None:
                    s.last_action, s.last_outcome = action, result

        self._ctx.rules.fire(vm, group, event, outcome, record, by_monitor=by_monitor)

    # -- VM_ALIVE: the engine's events are its outcomes ----------------------------------

    def _on_event(self, stored: Any) -> None:
        try:
            el = etree.fromstring(stored.body)
        except etree.XMLSyntaxError:
            return
        kind = el.findtext(f"{_E}event/{_E}type") or ""
        if kind == "VM_ALIVE":
            outcome = evaluate.TRUE if el.findtext(f"{_E}status") == "SUCCESS" else evaluate.FALSE
        elif kind in ("VM_RECOVERY_INIT", "VM_MANUAL_RECOVERY_NEEDED"):
            outcome = evaluate.FALSE
        else:
            return
        vm = self._ctx.store.vm(el.findtext(f"{_E}vm_source/{_E}generated_vmname") or "")
        group = self._ctx.group_of(vm) if vm is not None else None
        if vm is None or group is None:
            return
        with self._cond:
            s = self._states.setdefault(vm.generated_name, {}).setdefault(
                ALIVE_EVENT, evaluate.KpiState()
            )
            s.samples += 1
            s.state = outcome
            s.value = 1.0 if outcome == evaluate.TRUE else 0.0
            s.sampled_at = time.time()
            s.fired += 1
        self._fire(vm, group, ALIVE_EVENT, outcome, by_monitor=True)
