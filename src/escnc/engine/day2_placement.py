"""Which hosts a VM may move to under its deployment's placement rules.

* vm_group ``placement`` zone_host (strict): only the named host.
* placement_group anti_affinity: not a host holding another VM of a listed group --
  its own group's included, as deploy places them (strict: never; loose: only if
  nothing else fits); vm_group ``placement`` anti_affinity: preferably not a host
  holding another VM of its group (engine/placement.py treats it so at deploy).
* placement_group affinity (strict): only the host of the other listed groups' VMs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from escnc.engine.model import DeploymentSpec
    from escnc.engine.store import VmRecord

# (vm, candidate hosts) -> the hosts it may take: the engine's capacity manager passes
# one in (through the day-2 link) to keep reserved capacity out of migrations' reach
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
