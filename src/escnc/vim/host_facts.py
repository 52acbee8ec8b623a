"""Host facts for capacity figures: one read of a libvirt host, kept by the engine
as a snapshot (engine/capacity/) so that capacity requests never scan a host.

What is read: node info (CPUs, memory), the size of every active domain, how many
snapshots the domains hold, and the active storage pools (capacity, allocation,
number of volumes).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import libvirt

from escnc.vim.hosts import Host

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DomainSize:
    vcpus: int
    memory_mb: int


@dataclass(frozen=True)
class HostFacts:
    host: str
    taken: float  # wall-clock time of the read
    cpus: int = 0
    memory_mb: int = 0
    storage_mb: int = 0  # capacity of the active storage pools
    storage_used_mb: int = 0  # their allocation
    volumes: int = 0  # volumes in those pools
    snapshots: int = 0  # domain snapshots
    # active domains by name; ``defined`` names every domain, running or not
    running: dict[str, DomainSize] = field(default_factory=dict)
    defined: frozenset[str] = frozenset()
    error: str = ""  # the host could not be read (the figures are empty)


def gather(host: Host) -> HostFacts:
    """One read of ``host``; a host that cannot be read gives facts with ``error``."""
    now = time.time()
    try:
        conn = host.connection()
        info = conn.getInfo()  # [model, memory MiB, cpus, ...]
        running: dict[str, DomainSize] = {}
        defined: set[str] = set()
        snapshots = 0
        for dom in conn.listAllDomains(0):
            try:
                name = dom.name()
                defined.add(name)
                snapshots += int(dom.snapshotNum(0))
                if dom.isActive():
                    _state, _max, mem_kib, vcpus, _cpu = dom.info()
                    running[name] = DomainSize(int(vcpus), int(mem_kib) // 1024)
            except libvirt.libvirtError:
                continue  # vanished meanwhile
        storage = used = volumes = 0
        for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
            try:
                _st, capacity, allocation, _avail = pool.info()
                storage += int(capacity) // 2**20
                used += int(allocation) // 2**20
                volumes += int(pool.numOfVolumes())
            except libvirt.libvirtError:
                continue
    except libvirt.libvirtError as exc:
        log.debug("host %s: no facts: %s", host.name, exc)
        return HostFacts(host.name, now, error=str(exc))
    return HostFacts(
        host.name,
        now,
        cpus=int(info[2]),
        memory_mb=int(info[1]),
        storage_mb=storage,
        storage_used_mb=used,
        volumes=volumes,
        snapshots=snapshots,
        running=running,
        defined=frozenset(defined),
    )
