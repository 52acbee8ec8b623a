"""Capacity admission: does a VM (or a resize, or a reservation) fit?

One :class:`Ledger` is one pass: usage per host taken once from the host snapshot
and the VM records, reservations holding capacity now, and what VMs placed during
the pass add. The same checks serve deploy, scale-out, recovery (a new record goes
through placement), resize (the validator) and migration (the host filter).

A VM of ``need`` fits on host ``h`` when

* ``h`` has room for all of it: total (times the overcommit ratio) minus allocated;
* and, for every zone containing ``h`` (``h`` itself and the operator's zones), the
  part not drawn from a reservation the VM's group names fits in the zone's
  available capacity (total - allocated - what holding reservations have not used).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from escnc.engine.capacity.model import INF, Amount, Figures
from escnc.engine.capacity.records import ACTIVE, Reservation
from escnc.engine.capacity.zones import HostUsage, Zones

if TYPE_CHECKING:
    from escnc.engine.model import Desired, GroupSpec
    from escnc.engine.store import VmRecord

PLACED_KINDS = ("compute", "storage")  # what a VM's flavor takes (network: addresses)


def kind_part(amount: Amount, kind: str) -> Amount:
    if kind == "compute":
        return Amount(instances=amount.instances, vcpus=amount.vcpus, memory_mb=amount.memory_mb)
    if kind == "storage":
        return Amount(
            storage_mb=amount.storage_mb, volumes=amount.volumes, snapshots=amount.snapshots
        )
    return Amount(public_ips=amount.public_ips)


@dataclass
class Ledger:
    now: float
    zones: Zones
    usage: Callable[[str], HostUsage]  # host -> usage (memoised below)
    holding: list[Reservation]  # reservations holding capacity from now on
    consumed: Mapping[str, Amount]  # reservation id -> what its VMs use
    # the VM records the usage was computed from: a check that also counts VMs not yet
    # placed must read these, not a newer view (a VM placed in between is else in neither)
    records: Sequence[VmRecord] = ()
    remaining: dict[str, Amount] = field(default_factory=dict)
    extra: dict[str, Amount] = field(default_factory=dict)  # placed during this pass
    _usage: dict[str, HostUsage] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for r in self.holding:
            self.remaining[r.id] = (r.amount - self.consumed.get(r.id, Amount())).clamp()

    def vms(self, tenant: str, deployment: str) -> list[VmRecord]:
        mine = [v for v in self.records if v.tenant == tenant and v.deployment == deployment]
        return sorted(mine, key=lambda v: (v.group, v.index))

    def host(self, name: str) -> HostUsage:
        if name not in self._usage:
            self._usage[name] = self.usage(name)
        return self._usage[name]

    def zone_figures(self, members: Iterable[str], exclude: str = "") -> Figures:
        hosts = frozenset(members)
        total = allocated = Amount()
        for h in hosts:
            u = self.host(h)
            total += u.total
            allocated += u.allocated + self.extra.get(h, Amount())
        reserved = Amount()
        for r in self.holding:
            m = self.zones.members(r.zone)
            if r.id != exclude and r.kind in PLACED_KINDS and m is not None and m <= hosts:
                left = self.remaining.get(r.id)
                if left is None:  # holds in a past period only (a query's timePeriod)
                    left = (r.amount - self.consumed.get(r.id, Amount())).clamp()
                reserved += kind_part(left, r.kind)
        return Figures(total, allocated, reserved)

    def draw(self, host: str, need: Amount, rids: Iterable[str]) -> dict[str, Amount]:
        """What ``need`` takes from the active reservations ``rids`` usable on ``host``."""
        out: dict[str, Amount] = {}
        left = need
        for r in self.holding:
            if r.id not in rids or r.status(self.now) != ACTIVE or r.kind not in PLACED_KINDS:
                continue
            m = self.zones.members(r.zone)
            if m is None or host not in m:
                continue
            part = kind_part(left, r.kind).min(self.remaining[r.id])
            out[r.id] = part
            left = left - part
        return out

    def refusal(self, host: str, need: Amount, rids: Iterable[str] = ()) -> str:
        """'' when ``need`` fits on ``host``; else why not."""
        if self.zones.members(host) is None:
            return f"host {host} is not configured"
        rids = list(rids)
        u = self.host(host)
        free = u.total - u.allocated - self.extra.get(host, Amount())
        if not u.total.storage_mb:  # no storage pool seen yet (escnc defines its own)
            need, free = replace(need, storage_mb=0), replace(free, storage_mb=0)
        if not need.fits_in(free):
            return f"host {host}: {need.short(free)} (total {u.total.describe()})"
        drawn = self.draw(host, need, rids)
        overflow = need
        for part in drawn.values():
            overflow = overflow - part
        if overflow.is_zero():
            return ""
        for zone in self.zones.containing(host):
            members = self.zones.members(zone) or frozenset()
            fig = self.zone_figures(members)
            if fig.reserved.is_zero():
                continue  # the host check above covered it
            if not overflow.fits_in(fig.available):
                return (
                    f"zone {zone}: {overflow.short(fig.available)} outside reservations "
                    f"(reserved {fig.reserved.describe()})"
                )
        return ""

    def take(self, host: str, need: Amount, rids: Iterable[str] = ()) -> None:
        for rid, part in self.draw(host, need, list(rids)).items():
            self.remaining[rid] = (self.remaining[rid] - part).clamp()
        self.extra[host] = self.extra.get(host, Amount()) + need


def reservation_refusal(
    ledger: Ledger, zone: str, amount: Amount, start: float, stop: float | None, exclude: str = ""
) -> str:
    """'' when ``zone`` can hold ``amount`` over [start, stop); checks the zone and
    every configured zone that contains all of its hosts."""
    members = ledger.zones.members(zone)
    if members is None:
        return f"zone {zone} unknown"
    period = [r for r in ledger.holding if r.holds(start, INF if stop is None else stop)]
    saved = ledger.holding
    ledger.holding = period
    try:
        checks = [zone] + [
            z
            for z, hosts in ledger.zones.configured.items()
            if z != zone and members <= hosts
        ]
        for z in checks:
            fig = ledger.zone_figures(ledger.zones.members(z) or frozenset(), exclude)
            if not amount.fits_in(fig.available):
                return (
                    f"zone {z} cannot hold the reservation: {amount.short(fig.available)} "
                    f"(total {fig.total.describe()}, allocated {fig.allocated.describe()}, "
                    f"reserved {fig.reserved.describe()})"
                )
        return ""
    finally:
        ledger.holding = saved


def group_ids(group: GroupSpec) -> tuple[str, ...]:
    ids = getattr(group, "reservation_ids", ()) or ()
    if group.reservation_id and group.reservation_id not in ids:
        ids = (group.reservation_id, *ids)
    return tuple(ids)


def group_reservations(desired: Desired, vm: VmRecord) -> tuple[str, ...]:
    spec = desired.deployments.get(vm.dep_key)
    group = spec.groups.get(vm.group) if spec else None
    return group_ids(group) if group else ()
