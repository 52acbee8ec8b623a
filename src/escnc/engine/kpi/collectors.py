"""Metric collectors: small plug-ins with one interface, ``sample(vm, kpi)`` -> a
number or :class:`Unknown`.

* script collectors, declared by the operator in the server's TOML config
  (``[metrics.NAME] script = [absolute argv], timeout = N``, settings.py) and named by
  a KPI's ``metric_collector/type``. They run with that fixed argv (never anything
  from a client) and an environment carrying only the VM: ``ESCNC_VM_NAME``,
  ``ESCNC_GENERATED_NAME``, ``ESCNC_DEPLOYMENT``, ``ESCNC_TENANT``, ``ESCNC_VM_GROUP``,
  ``ESCNC_NIC<n>_IP`` (plus ``PATH=os.defpath``, ``LANG=C``), and must print one
  number on stdout. A timeout, an exit status other than 0, more than
  ``metric_output_max_bytes`` of output or unparsable output is "unknown".
* libvirt collectors (ESC's names; vim/guest_metrics.py reads the counters):
  ``CPU_LOAD`` (percent of the VM's vCPUs busy over the poll interval, from
  ``cpu_time`` deltas), ``MEMORY`` (percent of guest memory in use, balloon stats:
  (available - usable or unused) / available), ``INPUT_TOTAL_BIT_RATE`` and
  ``OUTPUT_TOTAL_BIT_RATE`` (bit/s received/sent on the KPI's nicid),
  ``DISK_READ_BYTE_RATE`` and ``DISK_WRITE_BYTE_RATE`` (bytes/s over all disks; escnc
  names, ESC has none). A rate needs two samples: the first one is a quiet unknown.
  On libvirt test-driver hosts, whose guest numbers are synthetic, they are unknown.
* ``ICMPPing`` for a KPI other than VM_ALIVE: 1 when the VM's address on nicid
  answers, else 0 (unknown on test-driver hosts or without an address).

Per-VM state (previous counters) is dropped with :meth:`Collector.forget`.
"""

from __future__ import annotations

import abc
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from escnc.engine.kpi.spec import KpiDef
from escnc.engine.liveness import icmp_ping
from escnc.engine.store import VmRecord
from escnc.settings import MetricScript
from escnc.vim.guest_metrics import MetricsError


@dataclass(frozen=True)
class Unknown:
    reason: str
    quiet: bool = False  # expected (the first sample of a rate): not reported


Sample = float | Unknown


class Collector(Protocol):
    name: str
    blocking: bool  # runs in the worker pool (a process, a libvirt call) or inline

    def sample(self, vm: VmRecord, kpi: KpiDef) -> Sample: ...

    def forget(self, generated_name: str) -> None: ...


@dataclass(frozen=True)
class CollectorEnv:
    """What libvirt collectors need from the engine: the VM's domain (the VIM driver's
    ``vim.driver.Domain``, or None) and whether its host is a test driver."""

    domain_of: Callable[[VmRecord], Any]
    is_test: Callable[[VmRecord], bool]


def vm_environment(vm: VmRecord) -> dict[str, str]:
    env = {
        "PATH": os.defpath,
        "LANG": "C",
        "ESCNC_VM_NAME": vm.generated_name,  # ESC's vmname is the generated name
        "ESCNC_GENERATED_NAME": vm.generated_name,
        "ESCNC_DEPLOYMENT": vm.deployment,
        "ESCNC_TENANT": vm.tenant,
        "ESCNC_VM_GROUP": vm.group,
    }
    for nicid, _net, ip, _mac in vm.interfaces:
        if ip:
            env[f"ESCNC_NIC{nicid}_IP"] = ip
    return env


def run_bounded(
    argv: tuple[str, ...], env: dict[str, str], timeout: float, max_bytes: int
) -> tuple[bytes, str]:
    """Run ``argv``; (stdout, "") on exit status 0, else (partial stdout, why not).
    Output beyond ``max_bytes`` or a run beyond ``timeout`` kills its process group."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd="/",
            start_new_session=True,  # a timeout kills its children too
            close_fds=True,
        )
    except OSError as exc:
        return b"", f"cannot run {argv[0]}: {exc.strerror or exc}"
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    out = bytearray()
    why = ""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                why = f"no answer within {timeout:g} s"
                break
            if not sel.select(left):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
            if len(out) > max_bytes:
                why = f"more than {max_bytes} bytes of output"
                break
    if why:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    proc.stdout.close()
    try:
        code = proc.wait(max(0.1, deadline - time.monotonic()) if not why else 5)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()
        return bytes(out), why or f"no exit within {timeout:g} s"
    if not why and code != 0:
        why = f"exit status {code}"
    return bytes(out), why


class ScriptCollector:
    blocking = True

    def __init__(self, name: str, spec: MetricScript, max_bytes: int) -> None:
        self.name = name
        self._spec = spec
        self._max = max_bytes

    def sample(self, vm: VmRecord, kpi: KpiDef) -> Sample:
        out, why = run_bounded(self._spec.script, vm_environment(vm), self._spec.timeout, self._max)
        if why:
            return Unknown(f"script collector {self.name}: {why}")
        text = out.decode("utf-8", "replace").strip()
        try:
            value = float(text)
        except ValueError:
            shown = text[:40] + ("..." if len(text) > 40 else "")
            return Unknown(f"script collector {self.name}: output {shown!r} is not a number")
        if value != value or value in (float("inf"), float("-inf")):
            return Unknown(f"script collector {self.name}: output {text!r} is not a finite number")
        return value

    def forget(self, generated_name: str) -> None:
        pass


class _RateCollector(abc.ABC):
    """A libvirt counter turned into a rate or a percentage; previous counter per VM and
    KPI, so that two KPIs on one collector (VM_OVERLOADED and VM_UNDERLOADED on CPU_LOAD)
    each measure over their own poll interval, not over the moment between them."""

    blocking = True

    def __init__(self, name: str, env: CollectorEnv) -> None:
        self.name = name
        self._env = env
        self._prev: dict[tuple[str, str, str], tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _domain(self, vm: VmRecord) -> Any:
        if self._env.is_test(vm):
            raise MetricsError(
                f"host {vm.host} is a libvirt test driver: its guest statistics are synthetic"
            )
        dom = self._env.domain_of(vm)
        if dom is None:
            raise MetricsError(f"VM {vm.generated_name} has no domain on host {vm.host}")
        return dom

    def _rate(
        self, vm: VmRecord, kpi: KpiDef, part: str, counter: float, scale: float = 1.0
    ) -> Sample:
        now = time.monotonic()
        key = (vm.generated_name, kpi.event_name, part)
        with self._lock:
            prev = self._prev.get(key)
            self._prev[key] = (now, counter)
        if prev is None or now <= prev[0] or counter < prev[1]:
            return Unknown(f"{self.name}: first sample, no interval yet", quiet=True)
        return (counter - prev[1]) * scale / (now - prev[0])

    def forget(self, generated_name: str) -> None:
        with self._lock:
            for key in [k for k in self._prev if k[0] == generated_name]:
                del self._prev[key]

    def sample(self, vm: VmRecord, kpi: KpiDef) -> Sample:
        try:
            return self._read(self._domain(vm), vm, kpi)
        except MetricsError as exc:
            return Unknown(f"{self.name}: {exc}")

    @abc.abstractmethod
    def _read(self, dom: Any, vm: VmRecord, kpi: KpiDef) -> Sample:
        """One sample from the VIM driver's ``Domain`` (each collector reads its counter)."""


class CpuLoad(_RateCollector):
    def _read(self, dom: Any, vm: VmRecord, kpi: KpiDef) -> Sample:
        c = dom.cpu_counter()
        # ns of CPU per second of wall time, per vCPU, in percent
        rate = self._rate(vm, kpi, "cpu", c.cpu_time_ns, 100.0 / 1e9 / c.vcpus)
        return min(rate, 100.0) if isinstance(rate, float) else rate


class Memory(_RateCollector):
    def _read(self, dom: Any, vm: VmRecord, kpi: KpiDef) -> Sample:
        m = dom.memory_stats()
        total = m.get("available", 0)
        free = m.get("usable", m.get("unused", -1))
        if total <= 0 or free < 0:
            return Unknown(f"{self.name}: the guest reports no balloon statistics")
        return max(0.0, min(100.0, (total - free) * 100.0 / total))


class NicBitRate(_RateCollector):
    def __init__(self, name: str, env: CollectorEnv, sent: bool) -> None:
        super().__init__(name, env)
        self._sent = sent

    def _read(self, dom: Any, vm: VmRecord, kpi: KpiDef) -> Sample:
        mac = next((m for n, _net, _ip, m in vm.interfaces if n == kpi.nicid and m), "")
        if not mac:
            return Unknown(f"{self.name}: VM has no interface with nicid {kpi.nicid}")
        rx, tx = dom.nic_bytes(mac)
        return self._rate(vm, kpi, f"nic{kpi.nicid}", tx if self._sent else rx, 8.0)


class DiskByteRate(_RateCollector):
    def __init__(self, name: str, env: CollectorEnv, written: bool) -> None:
        super().__init__(name, env)
        self._written = written

    def _read(self, dom: Any, vm: VmRecord, kpi: KpiDef) -> Sample:
        rd, wr = dom.disk_bytes()
        return self._rate(vm, kpi, "disk", wr if self._written else rd)


class IcmpPing:
    """ICMPPing as a metric (1 answers, 0 does not), for KPIs other than VM_ALIVE."""

    name = "ICMPPing"
    blocking = True

    def __init__(self, env: CollectorEnv) -> None:
        self._env = env

    def sample(self, vm: VmRecord, kpi: KpiDef) -> Sample:
        if self._env.is_test(vm):
            return Unknown(f"ICMPPing: host {vm.host} is a libvirt test driver (no guest network)")
        nic = next(((ip, mac) for n, _net, ip, mac in vm.interfaces if n == kpi.nicid), None)
        if nic is None:
            return Unknown(f"ICMPPing: VM has no interface with nicid {kpi.nicid}")
        address, mac = nic
        if not address and mac:
            # a DHCP interface: the address the guest really has (libvirt's lease, ARP)
            dom = self._env.domain_of(vm)
            address = dom.address(mac) if dom is not None else ""
        if not address:
            return Unknown(f"ICMPPing: no address known on nicid {kpi.nicid} "
                           "(no static address and no DHCP lease)")
        return 1.0 if icmp_ping(address) else 0.0

    def forget(self, generated_name: str) -> None:
        pass


BUILTIN = (
    "CPU_LOAD",
    "MEMORY",
    "INPUT_TOTAL_BIT_RATE",
    "OUTPUT_TOTAL_BIT_RATE",
    "DISK_READ_BYTE_RATE",
    "DISK_WRITE_BYTE_RATE",
    "ICMPPing",
)


class Collectors:
    """Every collector by name: the built-in ones and the operator's scripts."""

    def __init__(
        self, env: CollectorEnv, scripts: dict[str, MetricScript], max_output: int
    ) -> None:
        self._by_name: dict[str, Collector] = {
            "CPU_LOAD": CpuLoad("CPU_LOAD", env),
            "MEMORY": Memory("MEMORY", env),
            "INPUT_TOTAL_BIT_RATE": NicBitRate("INPUT_TOTAL_BIT_RATE", env, sent=False),
            "OUTPUT_TOTAL_BIT_RATE": NicBitRate("OUTPUT_TOTAL_BIT_RATE", env, sent=True),
            "DISK_READ_BYTE_RATE": DiskByteRate("DISK_READ_BYTE_RATE", env, written=False),
            "DISK_WRITE_BYTE_RATE": DiskByteRate("DISK_WRITE_BYTE_RATE", env, written=True),
            "ICMPPing": IcmpPing(env),
        }
        for name, spec in scripts.items():
            self._by_name[name] = ScriptCollector(name, spec, max_output)
        self._folded = {k.upper(): v for k, v in self._by_name.items()}

    def get(self, name: str) -> Collector | None:
        return self._by_name.get(name) or self._folded.get(name.upper())

    def add(self, collector: Collector) -> None:
        """Register another collector (benchmarks, embedding applications)."""
        self._by_name[collector.name] = collector
        self._folded[collector.name.upper()] = collector

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def forget(self, generated_name: str) -> None:
        for c in self._by_name.values():
            c.forget(generated_name)
