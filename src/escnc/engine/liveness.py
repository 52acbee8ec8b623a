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
    """ICMPPing when the KPI asks for it and the guest can be reached: on its static
    address, or (DHCP) on the address libvirt's lease says it has."""
    if is_test_host or group is None or group.kpi is None:
        return COLLECTOR_DOMAIN
    if group.kpi.collector.upper() != "ICMPPING" or not has_nic(vm, group.kpi.nicid):
        return COLLECTOR_DOMAIN
    return COLLECTOR_ICMP


def has_nic(vm: VmRecord, nicid: int) -> bool:
    return any(n == nicid for n, _net, _ip, _mac in vm.interfaces)


def collector_note(vm: VmRecord, group: GroupSpec | None, is_test_host: bool) -> str:
    """Why a KPI asking for ICMPPing is judged another way ("" when it is not)."""
    if group is None or group.kpi is None or group.kpi.collector.upper() != "ICMPPING":
        return ""
    if is_test_host:
        return (
            "ICMPPing not possible: guests on a test-driver host cannot be pinged; "
            "judged by domain state"
        )
    if not has_nic(vm, group.kpi.nicid):
        return (
            f"ICMPPing not possible: the VM has no interface nicid {group.kpi.nicid}; "
            "judged by domain state"
        )
    return ""


class LeasedPing:
    """ICMPPing of a DHCP interface: the address comes from libvirt's lease (asked at
    each check until there is one); no lease, no ping, and the check fails."""

    def __init__(self, lookup: Callable[[], str], timeout: float = 1.0) -> None:
        self._lookup = lookup
        self._timeout = timeout
        self.address = ""

    def __call__(self) -> bool:
        self.address = self._lookup() or self.address
        return bool(self.address) and icmp_ping(self.address, self._timeout)


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
