"""Per-VM and per-host statistics from libvirt (synthetic on the test driver)."""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

from escnc.vim.hosts import Host

# virDomainState -> short name
DOMAIN_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}


@dataclass(frozen=True)
class DomainStats:
    state: str
    vcpus: int
    cpu_time_ns: int
    memory_kb: int
    max_memory_kb: int


def domain_stats(dom: libvirt.virDomain) -> DomainStats:
    state, max_mem, mem, vcpus, cpu_time = dom.info()
    return DomainStats(DOMAIN_STATES.get(state, "nostate"), vcpus, cpu_time, mem, max_mem)


@dataclass(frozen=True)
class HostStats:
    hostname: str
    vcpus_total: int
    memory_total_mb: int
    vcpus_used: int
    memory_used_mb: int


def host_stats(host: Host) -> HostStats:
    conn = host.connection()
    info = conn.getInfo()  # [model, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
    vcpus_used = 0
    mem_used_kb = 0
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        try:
            _state, _max, mem, vcpus, _cpu = dom.info()
        except libvirt.libvirtError:
            continue
        vcpus_used += vcpus
        mem_used_kb += mem
    return HostStats(host.hostname(), int(info[2]), int(info[1]), vcpus_used, mem_used_kb // 1024)
