"""Continuous monitoring of live VMs (after VM_ALIVE), one scheduler thread for all.

A VM is monitored while its record says ``state == VM_ALIVE_STATE`` and
``monitoring`` -- whoever wrote it (deploy, actions, recovery, day-2 handlers): the
monitor follows every VM write through :meth:`EngineStore.add_vm_listener`, so a
stopped VM, a VM with monitoring disabled, one being resized or migrated, drops out
at once and comes back when it is alive and monitored again.

Schedule: a heap of (next due time, token, name) and one thread sleeping until the
earliest. Each VM is polled every ``poll_frequency`` (``polling_unit``) of its
group's KPI (3 s without a KPI), with its collector:

* ``ICMPPing``: one echo request to the VM's address on the KPI nicid, sent through
  the process's raw ICMP socket (``engine/icmp.py``): no thread waits for a reply and a
  dead host delays nobody. Without the privilege for a raw socket the ``ping``
  command runs in a small pool instead;
* ``domain-state`` (test-driver hosts, or no address on that nicid): the domain is
  running. On the in-process test driver this is a few microseconds and runs on the
  scheduler thread; on other hosts it is a libvirt call and runs in the pool.

At most one poll per VM is in flight. ``metric_occurrences_false`` consecutive failed
polls make the VM *down*: the monitor stops watching it and submits
``Engine._vm_down`` on the deployment's queue, which re-checks once and then
recovers per ``recovery_policy`` (AUTO) or waits for ``recoveryVmAction DO``
(MANUAL). A crashed or shut-off domain is also reported at once by libvirt's
lifecycle events (``Engine._on_domain_event``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from escnc.engine import states as st
from escnc.engine.icmp import shared_pinger
from escnc.engine.liveness import LeasedPing, collector_for, icmp_ping, ping_target
from escnc.engine.model import DEFAULT_POLL_SECONDS
from escnc.engine.store import VmRecord

if TYPE_CHECKING:
    from escnc.engine.context import MonitorView

log = logging.getLogger(__name__)

BATCH = 512  # polls taken from the heap per scheduler wake-up
PING_TIMEOUT = 1.0  # seconds without an echo reply: a failed poll


@dataclass
class _Watch:
    token: int
    failures: int = 0
    inflight: bool = False


def monitored(vm: VmRecord | None) -> bool:
    return vm is not None and vm.state == st.VM_ALIVE and vm.monitoring


class Monitor:
    def __init__(self, engine: MonitorView, workers: int = 8) -> None:
        self._engine = engine
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, str]] = []
        self._watches: dict[str, _Watch] = {}
        self._tokens = itertools.count(1)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="monitor-probe")
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.polls = 0  # total polls done (benchmarks, tests)
        self.downs = 0  # VMs declared down

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        for vm in self._engine.store.vms():
            self.on_vm(vm.generated_name, vm)
        self._thread = threading.Thread(target=self._run, name="engine-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def watching(self, name: str) -> bool:
        with self._cond:
            return name in self._watches

    def count(self) -> int:
        with self._cond:
            return len(self._watches)

    # -- following VM writes (store listener) ------------------------------------------

    def on_vm(self, name: str, vm: VmRecord | None) -> None:
        """Start or stop watching ``name`` after a write to its record. O(log n)."""
        if not monitored(vm):
            with self._cond:
                self._watches.pop(name, None)  # its heap entry goes stale
            return
        assert vm is not None
        with self._cond:
            if name in self._watches or self._stopped:
                return
            token = next(self._tokens)
            self._watches[name] = _Watch(token)
            due = time.monotonic() + self._interval(vm)
            heapq.heappush(self._heap, (due, token, name))
            if self._heap[0][1] == token:
                self._cond.notify()

    def _interval(self, vm: VmRecord) -> float:
        group = self._engine.group_of(vm)
        return group.kpi.poll_seconds if group and group.kpi else DEFAULT_POLL_SECONDS

    def _threshold(self, vm: VmRecord) -> int:
        group = self._engine.group_of(vm)
        return group.kpi.occurrences_false if group and group.kpi else 1

    # -- scheduler -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch: list[tuple[str, int]] = []
            with self._cond:
                while not self._stopped:
                    if not self._heap:
                        if batch:
                            break
                        self._cond.wait()
                        continue
                    due, token, name = self._heap[0]
                    watch = self._watches.get(name)
                    if watch is None or watch.token != token:
                        heapq.heappop(self._heap)  # stale entry
                        continue
                    wait = due - time.monotonic()
                    if wait > 0:
                        if batch:
                            break
                        self._cond.wait(wait)
                        continue
                    heapq.heappop(self._heap)
                    watch.inflight = True
                    batch.append((name, token))
                    if len(batch) >= BATCH:
                        break
                if self._stopped:
                    return
            for name, token in batch:
                self._dispatch(name, token)

    def _dispatch(self, name: str, token: int) -> None:
        engine = self._engine
        vm = engine.store.vm(name)
        if not monitored(vm):
            self.on_vm(name, vm)
            return
        assert vm is not None
        try:
            check, what = self.probe(vm)
            address = self._ping_address(vm)
            inline = not address and engine.ops.host(vm).is_test
        except Exception as exc:  # host removed from the configuration, ...
            log.warning("monitor: cannot poll %s: %s", name, exc)
            self._result(vm, token, True, "")
            return
        pinger = shared_pinger() if address else None
        if pinger is not None:
            pinger.ping(address, lambda ok: self._result(vm, token, ok, what), PING_TIMEOUT)
        elif inline:
            self._pooled(vm, token, check, what)
        else:
            try:
                self._pool.submit(self._pooled, vm, token, check, what)
            except RuntimeError:  # shutting down
                pass

    def _ping_address(self, vm: VmRecord) -> str:
        if vm.collector != st.COLLECTOR_ICMP:
            return ""
        group = self._engine.group_of(vm)
        if group is None:
            return ""
        nicid = group.kpi.nicid if group.kpi else 0
        # a DHCP interface: the lease its VM_ALIVE check found (no host call here)
        return ping_target(vm, group) or self._engine.ops.leases.get((vm.generated_name, nicid), "")

    def _pooled(self, vm: VmRecord, token: int, check: Callable[[], bool], what: str) -> None:
        try:
            ok = check()
        except Exception:
            log.exception("monitor: probe of %s failed", vm.generated_name)
            ok = True  # our own error is not the VM's failure
        self._result(vm, token, ok, what)

    def probe(self, vm: VmRecord) -> tuple[Callable[[], bool], str]:
        """The VM's collector as a check, and what a failure means (for messages)."""
        engine = self._engine
        group = engine.group_of(vm)
        collector = vm.collector or collector_for(vm, group, engine.ops.host(vm).is_test)
        if collector == st.COLLECTOR_ICMP and group is not None:
            address = ping_target(vm, group)
            if address:
                return (
                    lambda: icmp_ping(address),
                    f"VM {vm.generated_name} does not answer ICMPPing on {address}",
                )
            nicid = group.kpi.nicid if group.kpi else 0
            return (
                LeasedPing(lambda: engine.ops.guest_address(vm, nicid)),
                f"VM {vm.generated_name} does not answer ICMPPing on its DHCP lease "
                f"(nicid {nicid})",
            )
        return (
            lambda: engine.ops.is_running(vm),
            f"domain of VM {vm.generated_name} is not running on host {vm.host}",
        )

    def _result(self, vm: VmRecord, token: int, ok: bool, what: str) -> None:
        # never call the store while holding our lock: the store calls on_vm under its own
        name = vm.generated_name
        interval = self._interval(vm)
        threshold = self._threshold(vm)
        with self._cond:
            self.polls += 1
            watch = self._watches.get(name)
            if watch is None or watch.token != token:
                return  # unwatched meanwhile (stopped, rebooted, undeployed, ...)
            watch.inflight = False
            watch.failures = 0 if ok else watch.failures + 1
            if ok or watch.failures < threshold:
                heapq.heappush(self._heap, (time.monotonic() + interval, token, name))
                if self._heap[0][1] == token:
                    self._cond.notify()
                return
            del self._watches[name]
            self.downs += 1
        plural = "s" if threshold > 1 else ""
        self._engine.vm_down(vm, f"{what} ({threshold} consecutive failed poll{plural})")
