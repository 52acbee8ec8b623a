"""Guest counters from libvirt for the KPI collectors (engine/kpi/collectors.py).

Raw, cumulative numbers only (CPU time, balloon memory, bytes per NIC and over all
disks); rates and percentages are the collectors' job. Every reader raises
:class:`MetricsError` (never a libvirt error) so the engine needs no libvirt import.
On the libvirt test driver these numbers are synthetic: callers check
``Host.is_test`` first.
"""

from __future__ import annotations

from dataclasses import dataclass

import libvirt
from lxml import etree


class MetricsError(Exception):
    """The hypervisor could not give the counter (domain gone, stats unsupported)."""


@dataclass(frozen=True)
class CpuCounter:
    cpu_time_ns: int  # all vCPUs together
    vcpus: int


def cpu(dom: libvirt.virDomain) -> CpuCounter:
    try:
        _state, _max, _mem, vcpus, cpu_time = dom.info()
    except libvirt.libvirtError as exc:
        raise MetricsError(f"CPU time: {exc.get_error_message()}") from exc
    return CpuCounter(int(cpu_time), max(1, int(vcpus)))


def memory(dom: libvirt.virDomain) -> dict[str, int]:
    """The balloon driver's statistics in KiB (``available``, ``unused``, ``usable``,
    ``actual``, ``rss``, ...: whatever the guest reports)."""
    try:
        stats = dom.memoryStats()
    except libvirt.libvirtError as exc:
        raise MetricsError(f"memory statistics: {exc.get_error_message()}") from exc
    return {str(k): int(v) for k, v in stats.items()}


def _nic_devices(dom: libvirt.virDomain) -> dict[str, str]:
    """mac -> target device name of every interface of a running domain."""
    try:
        root = etree.fromstring(dom.XMLDesc(0).encode())
    except libvirt.libvirtError as exc:
        raise MetricsError(f"domain XML: {exc.get_error_message()}") from exc
    out = {}
    for itf in root.iterfind("devices/interface"):
        mac, target = itf.find("mac"), itf.find("target")
        if mac is not None and target is not None and target.get("dev"):
            out[(mac.get("address") or "").lower()] = target.get("dev") or ""
    return out


def nic_bytes(dom: libvirt.virDomain, mac: str) -> tuple[int, int]:
    """(received, transmitted) bytes of the interface with ``mac``."""
    dev = _nic_devices(dom).get(mac.lower())
    if not dev:
        raise MetricsError(f"no running interface with MAC {mac}")
    try:
        stats = dom.interfaceStats(dev)
    except libvirt.libvirtError as exc:
        raise MetricsError(f"interface {dev}: {exc.get_error_message()}") from exc
    return int(stats[0]), int(stats[4])


def disk_bytes(dom: libvirt.virDomain) -> tuple[int, int]:
    """(read, written) bytes over every disk of the domain."""
    try:
        root = etree.fromstring(dom.XMLDesc(0).encode())
        read = written = 0
        for disk in root.iterfind("devices/disk"):
            target = disk.find("target")
            if target is None or not target.get("dev"):
                continue
            stats = dom.blockStats(target.get("dev") or "")
            read += int(stats[1])
            written += int(stats[3])
    except libvirt.libvirtError as exc:
        raise MetricsError(f"disk statistics: {exc.get_error_message()}") from exc
    return read, written
