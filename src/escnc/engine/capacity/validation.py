"""The validator's capacity checks (engine/validate.py calls :func:`check_desired`):
vm_group reservation references, and admission of what a commit asks for -- VMs to
be created (deploy, scale-out) and flavor changes of existing VMs (resize) -- from
one ledger, so that the VMs of one commit are counted together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from escnc.engine.capacity.admission import Ledger, group_ids
from escnc.engine.capacity.model import Amount, format_time, vm_amount
from escnc.engine.capacity.records import ACTIVE, INITIALIZED

if TYPE_CHECKING:
    from escnc.engine.capacity.manager import CapacityManager
    from escnc.engine.model import Desired


def check_desired(
    mgr: CapacityManager,
    desired: Desired,
    err: Callable[[str, str], None],
    group_path: Callable[..., str],
) -> None:
    ledger = mgr.ledger(desired)
    zones = ledger.zones
    vims = mgr.engine.vims
    default = vims.default_name
    others = sorted(h.name for h in vims.hosts() if h.connected and h.name != default)
    committed = mgr.engine.desired
    # VMs the committed configuration asks for and the engine has not placed yet
    # (their records are being created): they take capacity before this commit's
    for (tenant, dname), spec in sorted(committed.deployments.items()):
        recorded = ledger.vms(tenant, dname)
        for g in spec.groups.values():
            pending = g.min_active - sum(1 for v in recorded if v.group == g.name)
            flavor = committed.flavors.get(g.flavor)
            if pending <= 0 or flavor is None:
                continue
            hosts = [g.placement_host or g.vim_id] if g.placement_host or g.vim_id else [
                default, *others
            ]
            for _ in range(pending):
                need = vm_amount(flavor)
                host = next((h for h in hosts if not ledger.refusal(h, need, group_ids(g))), "")
                if host:
                    ledger.take(host, need, group_ids(g))
    for (tenant, dname), spec in sorted(desired.deployments.items()):
        vms = ledger.vms(tenant, dname)
        before = committed.deployments.get((tenant, dname))
        for g in spec.groups.values():
            rids = group_ids(g)
            path = group_path(tenant, dname, g.name, "reservation_id")
            zone_hosts: frozenset[str] | None = None
            bad = False
            for rid in rids:
                r = mgr.reservation(rid)
                if r is None:
                    err(f"reservation {rid} of vm_group {g.name} does not exist", path)
                    bad = True
                    continue
                if r.kind == "network":
                    continue
                members = zones.members(r.zone) or frozenset()
                fixed = g.placement_host or g.vim_id
                if fixed and fixed not in members:
                    err(
                        f"vm_group {g.name}: reservation {rid} is in zone {r.zone}, "
                        f"but the group is placed on host {fixed}",
                        path,
                    )
                    bad = True
                if r.kind == "compute":
                    zone_hosts = members
            if bad or g.flavor not in desired.flavors:
                continue
            need = vm_amount(desired.flavors[g.flavor])
            mine = [v for v in vms if v.group == g.name]
            # resize: the growth of each existing VM must fit where it runs
            for vm in mine:
                old = desired.flavors.get(vm.flavor) if vm.flavor != g.flavor else None
                if old is None:
                    continue
                growth = (need - vm_amount(old)).clamp()
                why = ledger.refusal(vm.host, growth, rids) if not growth.is_zero() else ""
                if why:
                    err(
                        f"deployment {dname} vm_group {g.name}: VM {vm.generated_name} cannot "
                        f"be resized to flavor {g.flavor}: {why}",
                        group_path(tenant, dname, g.name, "flavor"),
                    )
                    break
                ledger.take(vm.host, growth, rids)
            placed = len(mine)
            was = before.groups.get(g.name) if before is not None else None
            if was is not None:
                placed = max(placed, was.min_active)  # counted above
            new = g.min_active - placed
            if new <= 0:
                continue
            for rid in rids:
                r = mgr.reservation(rid)
                status = r.status(ledger.now) if r is not None else ""
                if r is not None and status != ACTIVE:
                    when = f" (starts {format_time(r.start)})" if status == INITIALIZED else ""
                    err(f"reservation {rid} of vm_group {g.name} is {status}{when}", path)
                    bad = True
            if bad:
                continue
            fixed = g.placement_host or g.vim_id
            if fixed:
                candidates = [fixed]
            elif zone_hosts is not None:
                candidates = sorted(zone_hosts)
            else:
                candidates = [default, *others]
            _admit_new(ledger, candidates, need, rids, new, dname, g.name, g.flavor, err,
                       group_path(tenant, dname, g.name))


def _admit_new(
    ledger: Ledger,
    candidates: list[str],
    need: Amount,
    rids: tuple[str, ...],
    count: int,
    dname: str,
    gname: str,
    flavor: str,
    err: Callable[[str, str], None],
    path: str,
) -> None:
    for _ in range(count):
        reasons = []
        chosen = ""
        for host in candidates:
            why = ledger.refusal(host, need, rids)
            if not why:
                chosen = host
                break
            reasons.append(why)
        if not chosen:
            err(
                f"deployment {dname} vm_group {gname}: not enough capacity for {count} VM(s) "
                f"of flavor {flavor} ({need.describe()} each): "
                + "; ".join(reasons)
                + ("" if rids else "; name a reservation in reservation_id to use one"),
                path,
            )
            return
        ledger.take(chosen, need, rids)
