"""Placement: the host of a new VM (``new_vm``, ``choose_host``), its generated name
and addresses, and the hosts a VM may move to (``allowed_hosts``, migration):

* vm_group ``placement`` zone_host (strict): only the named host.
* placement_group anti_affinity: not a host holding another VM of a listed group --
  its own group's included, as deploy places them (strict: never; loose: only if
  nothing else fits); vm_group ``placement`` anti_affinity: preferably not a host
  holding another VM of its group (``choose_host`` treats it so at deploy).
* placement_group affinity (strict): only the host of the other listed groups' VMs.

Capacity admission is the caller's collaborator (``CapacityCheck``, ``HostFilter``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from escnc.engine.model import DeploymentSpec, GroupSpec
from escnc.engine.states import VM_DEPLOYING
from escnc.engine.store import VmRecord
from escnc.vim.domain_xml import stable_mac
from escnc.vim.hosts import HostRegistry


class PlacementError(Exception):
    pass


class CapacityCheck(Protocol):
    """Capacity admission (the engine's engine/capacity/ manager, passed in by the
    caller): overcommit ratios and reservations."""

    def reservation_zone(self, group: GroupSpec) -> str: ...
    def refusal(self, group: GroupSpec, host: str) -> str: ...
    def addresses(self, group: GroupSpec) -> tuple[tuple[str, ...], frozenset[str]]: ...


def generated_name(deployment: str, group: str, index: int) -> str:
    return f"{deployment}_{group}_{index}_{uuid.uuid4()}"


def choose_host(
    vims: HostRegistry,
    spec: DeploymentSpec,
    group: GroupSpec,
    existing: list[VmRecord],
    cap: CapacityCheck | None = None,
) -> str:
    """zone_host placement, locator vim_id or a host of the zone of the group's
    reservation first; then affinity / anti-affinity placement groups across hosts;
    otherwise the default host. Every choice must pass capacity admission (overcommit
    ratios, capacity held by reservations): a host that refuses the VM is skipped
    where the rules allow another host, else placement fails saying why (``cap``:
    the admission to apply; None admits everything)."""

    def refusal(host: str) -> str:
        return cap.refusal(group, host) if cap is not None else ""

    def admitted(host: str) -> str:
        why = refusal(host)
        if why:
            raise PlacementError(f"vm_group {group.name}: {why}")
        return host

    zone = cap.reservation_zone(group) if cap is not None else ""
    for wanted in (group.placement_host, group.vim_id, zone):
        if wanted:
            if wanted not in vims:
                raise PlacementError(f"host {wanted} of vm_group {group.name} is not configured")
            return admitted(wanted)
    hosts = sorted(h.name for h in vims.hosts() if h.connected) or [vims.default_name]
    for pg in spec.placement_groups:
        if group.name not in pg.groups:
            continue
        members = [v for v in existing if v.group in pg.groups]
        if pg.type == "affinity":
            return admitted(members[0].host if members else vims.default_name)
        if pg.type == "anti_affinity":
            used = {v.host for v in members}
            free = [h for h in hosts if h not in used and not refusal(h)]
            if free:
                return free[0]
            if pg.enforcement == "strict":
                raise PlacementError(
                    f"anti-affinity placement group {pg.name}: no host left for another VM "
                    f"({len(hosts)} host(s), {len(members)} VM(s))"
                )
            counts = {h: sum(1 for v in members if v.host == h) for h in hosts}
            return admitted(min(hosts, key=lambda h: counts[h]))
    if group.placement_type == "anti_affinity":
        used = {v.host for v in existing if v.group == group.name}
        free = [h for h in hosts if h not in used and not refusal(h)]
        if free:
            return free[0]
    why = refusal(vims.default_name)
    if why:
        fitting = [h for h in hosts if h != vims.default_name and not refusal(h)]
        if not fitting:
            raise PlacementError(f"vm_group {group.name}: no host has capacity left ({why})")
        return fitting[0]
    return vims.default_name


def interfaces_for(
    group: GroupSpec,
    generated: str,
    siblings: list[VmRecord],
    reserved: tuple[tuple[str, ...], frozenset[str]] = ((), frozenset()),
) -> list[tuple[int, str, str, str]]:
    """(nicid, network, ip, mac) per interface: a fixed address if no sibling has it,
    else the next free address of the group's static pool on that network. ``reserved``
    (network reservations): addresses reserved for the group come first, addresses
    reserved for others are never taken from the pool."""
    own, barred = reserved
    used_ips = {ip for v in siblings for _n, _net, ip, _m in v.interfaces if ip}
    used_macs = {mac for v in siblings for _n, _net, _ip, mac in v.interfaces}
    result = []
    for itf in group.interfaces:
        ip = ""
        pool = group.pool(itf.network)
        ordered = tuple(a for a in pool if a in own) + tuple(
            a for a in pool if a not in own and a not in barred
        )
        candidates = ((itf.ip_address,) if itf.ip_address else ()) + ordered
        for candidate in candidates:
            if candidate and candidate not in used_ips:
                ip = candidate
                break
        mac = itf.mac_address if itf.mac_address and itf.mac_address not in used_macs else ""
        result.append((itf.nicid, itf.network, ip, mac or stable_mac(generated, itf.nicid)))
    return result


def new_vm(
    vims: HostRegistry,
    spec: DeploymentSpec,
    group: GroupSpec,
    index: int,
    existing: list[VmRecord],
    cap: CapacityCheck | None = None,
) -> VmRecord:
    name = generated_name(spec.name, group.name, index)
    siblings = [v for v in existing if v.group == group.name]
    return VmRecord(
        generated_name=name,
        vm_id=str(uuid.uuid4()),
        tenant=spec.tenant,
        deployment=spec.name,
        group=group.name,
        index=index,
        host=choose_host(vims, spec, group, existing, cap),
        state=VM_DEPLOYING,
        flavor=group.flavor,
        image=group.image,
        fingerprint=group.fingerprint,
        interfaces=interfaces_for(
            group, name, siblings, cap.addresses(group) if cap is not None else ((), frozenset())
        ),
    )


# (vm, candidate hosts) -> the hosts it may take: the engine's capacity manager passes
# one in (through the maintenance link) to keep reserved capacity out of migrations' reach
HostFilter = Callable[["VmRecord", list[str]], list[str]]


def allowed_hosts(
    vm: VmRecord,
    spec: DeploymentSpec | None,
    peers: Sequence[VmRecord],
    hosts: Iterable[str],
    host_filter: HostFilter | None = None,
) -> tuple[list[str], list[str]]:
    """(strictly allowed hosts, preferred subset) for moving ``vm``; its own host
    excluded, and the hosts ``host_filter`` (capacity admission) refuses."""
    allowed = [h for h in hosts if h != vm.host]
    if host_filter is not None:
        allowed = host_filter(vm, allowed)
    if spec is None:
        return allowed, allowed
    group = spec.groups.get(vm.group)
    if group is not None and group.placement_type == "zone_host" and group.placement_host:
        allowed = [h for h in allowed if h == group.placement_host]
    preferred = list(allowed)
    others = [p for p in peers if p.generated_name != vm.generated_name]
    if group is not None and group.placement_type == "anti_affinity":
        preferred = [
            h for h in preferred if h not in {p.host for p in others if p.group == vm.group}
        ]
    for pg in spec.placement_groups:
        if vm.group not in pg.groups:
            continue
        if pg.type == "anti_affinity":
            related = {p.host for p in others if p.group in pg.groups}
        else:
            related = {p.host for p in others if p.group in pg.groups and p.group != vm.group}
        if pg.type == "anti_affinity":
            preferred = [h for h in preferred if h not in related]
            if pg.enforcement == "strict":
                allowed = [h for h in allowed if h not in related]
        elif pg.type == "affinity" and related:
            preferred = [h for h in preferred if h in related]
            if pg.enforcement == "strict":
                allowed = [h for h in allowed if h in related]
    return allowed, [h for h in preferred if h in allowed]
