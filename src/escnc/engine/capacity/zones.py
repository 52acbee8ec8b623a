"""Zones and per-host usage, from the host snapshot and the engine's VM records.

A zone is what the operator configures (``settings.capacity_zones``: zone name ->
VIM host names); every VIM host is also a zone of its own, named after it. Public
addresses belong to no host: their zone is the whole VIM (zone "").

Usage of a host:

* total: node CPUs and memory, active storage pools (times the operator's
  overcommit ratio, ``settings.overcommit``: vcpus, memory, storage; default 1 =
  none); vcInstances one per CPU; volumes and snapshots the operator's limits
  (``settings.capacity_limits``);
* allocated: the flavor of every escnc VM placed on the host, plus the size of
  running domains escnc does not know; storage: the pools' allocation plus the
  disks of escnc VMs whose domain the snapshot does not show yet.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from escnc.engine.capacity.model import Amount, vm_amount
from escnc.engine.model import Desired
from escnc.engine.store import VmRecord
from escnc.vim.host_facts import HostFacts

DEFAULT_LIMITS = {"volumes": 256, "snapshots": 256}
MAX_RANGE = 65536  # addresses of one configured public range


class Zones:
    def __init__(self, configured: Mapping[str, Iterable[str]], hosts: Iterable[str]) -> None:
        self.hosts = sorted(hosts)
        self.configured = {
            name: frozenset(h for h in members) for name, members in configured.items()
        }

    def members(self, zone: str) -> frozenset[str] | None:
        """Hosts of ``zone`` (None: unknown zone; "": every host)."""
        if not zone:
            return frozenset(self.hosts)
        if zone in self.configured:
            return self.configured[zone]
        if zone in self.hosts:
            return frozenset({zone})
        return None

    def names(self) -> list[str]:
        return sorted(set(self.configured) | set(self.hosts))

    def containing(self, host: str) -> list[str]:
        """Zones whose capacity ``host`` contributes to (itself first)."""
        return [host, *sorted(z for z, m in self.configured.items() if host in m and z != host)]


@dataclass(frozen=True)
class HostUsage:
    total: Amount
    allocated: Amount


def host_usage(
    facts: HostFacts | None,
    vms: Iterable[VmRecord],
    desired: Desired,
    ratios: Mapping[str, float],
    limits: Mapping[str, int],
) -> HostUsage:
    if facts is None or facts.error:
        facts = HostFacts(host="", taken=0.0)
    vcpus = int(facts.cpus * ratios.get("vcpus", 1.0))
    total = Amount(
        instances=vcpus,
        vcpus=vcpus,
        memory_mb=int(facts.memory_mb * ratios.get("memory", 1.0)),
        storage_mb=int(facts.storage_mb * ratios.get("storage", 1.0)),
        volumes=int(limits.get("volumes", DEFAULT_LIMITS["volumes"])),
        snapshots=int(limits.get("snapshots", DEFAULT_LIMITS["snapshots"])),
    )
    # sums of plain ints: this runs over every VM of the host after each VM change
    instances = vcpus_used = memory = 0
    storage = facts.storage_used_mb
    sizes: dict[str, Amount] = {}
    known: set[str] = set()
    for vm in vms:
        known.add(vm.generated_name)
        need = sizes.get(vm.flavor)
        if need is None:
            need = sizes[vm.flavor] = vm_amount(desired.flavors.get(vm.flavor))
        instances += need.instances
        vcpus_used += need.vcpus
        memory += need.memory_mb
        if vm.generated_name not in facts.defined:
            storage += need.storage_mb  # the pools do not show its disks yet
    for name, size in facts.running.items():
        if name not in known:
            instances += 1
            vcpus_used += size.vcpus
            memory += size.memory_mb
    allocated = Amount(
        instances=instances,
        vcpus=vcpus_used,
        memory_mb=memory,
        storage_mb=storage,
        volumes=facts.volumes,
        snapshots=facts.snapshots,
    )
    return HostUsage(total, allocated)


def public_addresses(ranges: Iterable[str], desired: Desired) -> list[str]:
    """The public address set: the configured ranges (CIDR or 'first-last'), else
    every address of the vm_groups' static pools."""
    out: dict[str, None] = {}
    for text in ranges:
        for ip in _expand(text):
            out[ip] = None
    if not out:
        for spec in desired.deployments.values():
            for g in spec.groups.values():
                for _net, pool in g.ip_pools:
                    out.update(dict.fromkeys(pool))
    return list(out)


def _expand(text: str) -> list[str]:
    text = text.strip()
    if "-" in text:
        first_s, last_s = text.split("-", 1)
        first, last = ipaddress.ip_address(first_s.strip()), ipaddress.ip_address(last_s.strip())
        count = int(last) - int(first) + 1
        if count <= 0 or count > MAX_RANGE:
            raise ValueError(f"public range {text}: {count} addresses")
        return [str(first + i) for i in range(count)]
    net = ipaddress.ip_network(text, strict=False)
    if net.num_addresses > MAX_RANGE:
        raise ValueError(f"public range {text}: more than {MAX_RANGE} addresses")
    hosts = list(net.hosts()) if net.num_addresses > 2 else list(net)
    return [str(ip) for ip in hosts]


def addresses_in_use(vms: Iterable[VmRecord]) -> set[str]:
    return {ip for vm in vms for _n, _net, ip, _m in vm.interfaces if ip}
