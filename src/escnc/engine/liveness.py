"""Is a VM alive? The KPI collector decides.

* ``ICMPPing``: ping the VM's address on the KPI's nicid from the escnc host (raw
  ICMP socket, ``engine/icmp.py``; the ``ping`` command without the privilege).
* ``domain-state``: the domain is running. Used on test-driver hosts (guests there
  cannot be reached) and when the VM has no address on the KPI nicid; opdata's
  ``collector`` says which one decided.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from escnc.engine.icmp import shared_pinger
from escnc.engine.jobs import idle
from escnc.engine.model import GroupSpec
from escnc.engine.states import COLLECTOR_DOMAIN, COLLECTOR_ICMP
from escnc.engine.store import VmRecord

DOMAIN_POLL = 0.05  # seconds; the domain-state check is a cheap in-process call


def collector_for(vm: VmRecord, group: GroupSpec | None, is_test_host: bool) -> str:
    if is_test_host or group is None or group.kpi is None:
        return COLLECTOR_DOMAIN
    if group.kpi.collector.upper() != "ICMPPING" or not ping_target(vm, group):
        return COLLECTOR_DOMAIN
    return COLLECTOR_ICMP


def ping_target(vm: VmRecord, group: GroupSpec) -> str:
    nicid = group.kpi.nicid if group.kpi else 0
    return next((ip for n, _net, ip, _mac in vm.interfaces if n == nicid and ip), "")


def icmp_ping(address: str, timeout: float = 1.0) -> bool:
    pinger = shared_pinger()
    if pinger is not None:
        return pinger.ping_sync(address, timeout)
    return ping_command(address, timeout)


def ping_command(address: str, timeout: float = 1.0) -> bool:
    """One ping with the system ``ping`` (a process per ping: the fallback)."""
    ping = shutil.which("ping") or "ping"
    try:
        proc = subprocess.run(
            [ping, "-c", "1", "-W", str(max(1, int(timeout))), address],
            capture_output=True,
            timeout=timeout + 2,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


@dataclass
class Probe:
    vm: VmRecord
    check: Callable[[], bool]
    deadline: float  # monotonic
    interval: float


def wait_alive(
    probes: list[Probe],
    cancel: threading.Event,
    on_alive: Callable[[VmRecord], None],
) -> tuple[list[VmRecord], list[VmRecord], bool]:
    """Poll every probe until it is alive or past its deadline.

    Calls ``on_alive`` as each VM comes up. Returns (alive, timed out, cancelled).
    Probes run concurrently (a ping waits up to a second), at most 16 at a time.
    """
    alive: list[VmRecord] = []
    failed: list[VmRecord] = []
    pending = {p.vm.generated_name: p for p in probes}
    next_check = dict.fromkeys(pending, 0.0)
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="liveness") as pool:
        while pending:
            if cancel.is_set():
                return alive, failed, True
            now = time.monotonic()
            due = [p for name, p in pending.items() if next_check[name] <= now]
            results = (
                list(pool.map(lambda p: (p, p.check()), due))
                if len(due) > 1
                else [(p, p.check()) for p in due]
            )
            now = time.monotonic()
            for probe, ok in results:
                name = probe.vm.generated_name
                if ok:
                    del pending[name]
                    alive.append(probe.vm)
                    on_alive(probe.vm)
                elif now >= probe.deadline:
                    del pending[name]
                    failed.append(probe.vm)
                else:
                    next_check[name] = now + probe.interval
            if pending:
                wake = min(next_check[n] for n in pending)
                # between polls the job gives its worker slot back (engine/jobs.py)
                idle(min(wake - time.monotonic(), 0.5), cancel)
    return alive, failed, False
