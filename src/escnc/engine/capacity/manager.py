"""The capacity manager: the host snapshot, figures per zone and kind, reservations
and their lifecycle, and the placement hooks. Subscriptions and their notifications
are in ``subscriptions.py``; the admission arithmetic in ``admission.py``.

Only the manager's own thread reads hosts (``vim/host_facts.py``), every
``settings.capacity_poll_secs``; a request works from the last snapshot and the
engine's VM records (which change at once when a VM is placed).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from escnc.engine.capacity import events
from escnc.engine.capacity.admission import (
    Ledger,
    group_ids,
    group_reservations,
    kind_part,
    reservation_refusal,
)
from escnc.engine.capacity.model import INF, Amount, Figures, vm_amount
from escnc.engine.capacity.records import (
    ACTIVE,
    EXPIRED,
    INITIALIZED,
    TERMINATED,
    RecordStore,
    Reservation,
)
from escnc.engine.capacity.subscriptions import SubscriptionSet
from escnc.engine.capacity.validation import check_desired
from escnc.engine.capacity.zones import (
    HostUsage,
    Zones,
    addresses_in_use,
    host_usage,
    public_addresses,
)
from escnc.engine.errors import Conflict, Invalid, NotFound, Refused
from escnc.vim.host_facts import HostFacts, gather

if TYPE_CHECKING:
    from escnc.engine.model import Desired, GroupSpec
    from escnc.engine.store import EngineStore, VmRecord
    from escnc.services import Services
    from escnc.settings import Settings
    from escnc.vim.hosts import HostRegistry

log = logging.getLogger(__name__)


@dataclass
class Derived:
    """Admission's view of the VM records and the snapshot (one version of them)."""

    facts: dict[str, HostFacts]
    by_host: dict[str, list[VmRecord]]
    consumed: dict[str, Amount]
    usage: dict[str, HostUsage]  # filled on demand (the same for every ledger)
    vms: list[VmRecord]


class CapacityContext(Protocol):
    """What the manager needs of the engine (the Engine provides it)."""

    settings: Settings
    services: Services
    vims: HostRegistry
    store: EngineStore
    instance_id: str  # names this instance's keys in the event log

    @property
    def desired(self) -> Desired: ...


class WallClock(Protocol):
    def now(self) -> float: ...


class SystemWallClock:
    def now(self) -> float:
        return time.time()


class CapacityManager:
    def __init__(self, engine: CapacityContext) -> None:
        self.engine = engine
        settings = engine.settings
        self.clock: WallClock = SystemWallClock()  # reservation times are wall-clock
        self.store = RecordStore(settings.state_dir / "reservations.sqlite3",
                                 database=settings.database)
        self.ratios = dict(settings.overcommit)
        self.limits = dict(settings.capacity_limits)
        self.public_ranges = list(settings.public_ip_ranges)
        self.configured_zones = dict(settings.capacity_zones)
        self._lock = threading.RLock()
        self._reservations = {r.id: r for r in self.store.reservations()}
        self._facts: dict[str, HostFacts] = {}
        # what admission derives from the VM records, the snapshot and the reservations,
        # kept until one of them changes (a placement asks several times per VM)
        # a leaf lock: the store's VM listener takes it under the store's own lock
        self._vlock = threading.Lock()
        self._version = [0, 0, 0]  # VM records, snapshot, reservations
        self._derived: tuple[tuple[int, ...], Derived] | None = None
        self._records: dict[str, VmRecord] | None = None  # kept by the VM listener
        self._early: list[tuple[str, VmRecord | None]] = []  # changes before start()
        self.subs = SubscriptionSet(self)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.poll_seconds = float(settings.capacity_poll_secs)

    # -- lifecycle

    def start(self) -> None:
        self.engine.services.state_providers.append(self.state)
        # listen first, then read the store: changes in between are replayed on top
        self.engine.store.add_vm_listener(self._vms_changed)
        snapshot = {v.generated_name: v for v in self.engine.store.vms()}
        with self._vlock:
            for name, vm in self._early:
                _apply(snapshot, name, vm)
            self._records, self._early = snapshot, []
        self._republish()
        self.refresh()
        self.subs.evaluate(baseline_only=True)
        self._thread = threading.Thread(target=self._run, name="capacity", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self.state in self.engine.services.state_providers:
            self.engine.services.state_providers.remove(self.state)
        if self._thread is not None:
            self._thread.join(5)
        self.store.close()

    def reload(self) -> None:
        """Re-read reservations and subscriptions from the store (a node that becomes
        leader: the old leader wrote them). VM records follow EngineStore.reload()."""
        reservations = {r.id: r for r in self.store.reservations()}
        with self._lock:
            self._reservations = reservations
        with self._vlock:
            self._version[2] += 1
        self.subs.reload()
        self.changed()

    def _vms_changed(self, name: str = "", vm: VmRecord | None = None) -> None:
        """The store's VM listener (under the store's lock: ``vm`` is the store's copy)."""
        with self._vlock:
            self._version[0] += 1
            if not name:
                return
            if self._records is None:
                self._early.append((name, vm))
            else:
                _apply(self._records, name, vm)
        self._wake.set()

    def changed(self) -> None:
        """Something moved capacity: evaluate subscriptions soon."""
        self._wake.set()

    def _run(self) -> None:
        next_refresh = time.monotonic() + self.poll_seconds
        while not self._stop.is_set():
            self._wake.wait(self.poll_seconds)
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                if time.monotonic() >= next_refresh:
                    self.refresh()
                    next_refresh = time.monotonic() + self.poll_seconds
                self.tick()
            except Exception:
                log.exception("capacity")

    def _republish(self) -> None:
        """A status change saved as reported whose event a kill -9 kept from the log
        (``tick`` saves, then publishes under a key): published now, once."""
        bus = self.engine.services.events
        with self._lock:
            owed = [r for r in self._reservations.values() if r.reported]
        if bus is None:
            return
        keys = [events.reservation_key(r, r.reported) for r in owed]
        mark = f"outbox/{self.engine.instance_id}/reservations"  # as engine/outbox.py
        try:
            done = bus.logged_keys([mark, *keys])
            if mark not in done:  # a log from before keys: what was flagged was sent
                bus.adopt_keys([*keys, mark])
                return
        except Exception:
            log.exception("cannot read the event log's keys")
            return
        now = self.clock.now()
        for r, key in zip(owed, keys, strict=True):
            if key not in done:
                when = {ACTIVE: r.start, EXPIRED: r.stop}.get(r.reported) or now
                events.publish_reservation(bus, r, r.reported, when)

    def tick(self) -> None:
        """Announce reservations that became active or expired; check thresholds."""
        now = self.clock.now()
        with self._lock:
            moved = [
                r
                for r in self._reservations.values()
                if r.status(now) != (r.reported or INITIALIZED)
            ]
            for r in moved:  # saved first, then published under a key (_republish)
                self._save(replace(r, reported=r.status(now)))
        for r in moved:
            events.publish_reservation(self.engine.services.events, r, r.status(now), now)
        self.subs.evaluate()

    # -- the host snapshot

    def refresh(self) -> None:
        """Read every connected host once (the manager's thread, or start)."""
        facts = {}
        for host in self.engine.vims.hosts():
            if host.connected:
                facts[host.name] = gather(host)
        with self._lock:
            self._facts = facts
        with self._vlock:
            self._version[1] += 1

    def read_host(self, name: str, *, only_if_unknown: bool = False) -> None:
        """Read one connected host into the snapshot: when it (re)connects, so that the
        jobs its reconnect resumes see its figures, and from a placement that reaches a
        connected host the snapshot does not know yet (it connected after the last
        refresh; at start hosts connect in the background) instead of counting it as a
        host with nothing. Runs on the caller's thread (a connect or job thread)."""
        if only_if_unknown:
            with self._lock:
                if name in self._facts:
                    return
        if name not in self.engine.vims:
            return
        host = self.engine.vims.get(name)
        if not host.connected:
            return
        facts = gather(host)
        with self._lock:
            if only_if_unknown:
                self._facts.setdefault(name, facts)
            else:
                self._facts[name] = facts
        with self._vlock:
            self._version[1] += 1

    def facts(self) -> dict[str, HostFacts]:
        with self._lock:
            return dict(self._facts)

    def zones(self) -> Zones:
        return Zones(self.configured_zones, self.engine.vims.names())

    # -- figures

    def reservations(self) -> list[Reservation]:
        with self._lock:
            return sorted(self._reservations.values(), key=lambda r: r.created)

    def reservation(self, rid: str) -> Reservation | None:
        with self._lock:
            return self._reservations.get(rid)

    def consumed(
        self, desired: Desired | None = None, vms: list[VmRecord] | None = None
    ) -> dict[str, Amount]:
        """Reservation id -> what VMs of vm_groups naming it use (in its zone)."""
        desired = desired or self.engine.desired
        zones = self.zones()
        held = {r.id: r for r in self.reservations()}
        out: dict[str, Amount] = {}
        if not held:
            return out
        for vm in self.engine.store.vms() if vms is None else vms:
            need = vm_amount(desired.flavors.get(vm.flavor))
            ips = {ip for _n, _net, ip, _m in vm.interfaces if ip}
            for rid in group_reservations(desired, vm):
                r = held.get(rid)
                if r is None:
                    continue
                if r.kind == "network":
                    part = Amount(public_ips=len(ips & set(r.public_ips)))
                else:
                    m = zones.members(r.zone)
                    if m is None or vm.host not in m:
                        continue
                    part = kind_part(need, r.kind)
                out[rid] = out.get(rid, Amount()) + part
        return out

    def _derive(self, desired: Desired) -> Derived:
        with self._vlock:
            key = (*self._version, id(desired))
            if self._derived is not None and self._derived[0] == key:
                return self._derived[1]
            records = None if self._records is None else list(self._records.values())
        facts = self.facts()
        vms = self.engine.store.vms() if records is None else records
        by_host: dict[str, list[VmRecord]] = {}
        for vm in vms:
            by_host.setdefault(vm.host, []).append(vm)
        derived = Derived(facts, by_host, self.consumed(desired, vms), {}, list(vms))
        with self._vlock:
            if (*self._version, id(desired)) == key:  # nothing changed meanwhile
                self._derived = (key, derived)
        return derived

    def ledger(self, desired: Desired | None = None, now: float | None = None) -> Ledger:
        desired = desired or self.engine.desired
        now = self.clock.now() if now is None else now
        d = self._derive(desired)

        def usage(host: str) -> HostUsage:
            if host not in d.usage:
                d.usage[host] = host_usage(
                    d.facts.get(host), d.by_host.get(host, []), desired, self.ratios, self.limits
                )
            return d.usage[host]

        return Ledger(
            now=now,
            zones=self.zones(),
            usage=usage,
            holding=[r for r in self.reservations() if r.holds(now, INF)],
            consumed=d.consumed,
            records=d.vms,
        )

    def figures(
        self, kind: str, zone: str = "", start: float | None = None, stop: float = INF
    ) -> Figures:
        """total / allocated / reserved of ``zone`` ("" = the whole VIM) for ``kind``
        over [start, stop); raises NotFound for an unknown zone."""
        zones = self.zones()
        members = zones.members(zone)
        if members is None:
            raise NotFound(f"resource zone {zone} unknown (zones: {', '.join(zones.names())})")
        start = self.clock.now() if start is None else start
        if kind == "network":
            return self._network_figures(start, stop)
        ledger = self.ledger(now=start)
        ledger.holding = [r for r in self.reservations() if r.holds(start, stop)]
        fig = ledger.zone_figures(members)
        return Figures(
            kind_part(fig.total, kind),
            kind_part(fig.allocated, kind),
            kind_part(fig.reserved, kind),
        )

    def public_addresses(self) -> list[str]:
        return public_addresses(self.public_ranges, self.engine.desired)

    def _network_figures(self, start: float, stop: float) -> Figures:
        public = self.public_addresses()
        used = addresses_in_use(self.engine.store.vms()) & set(public)
        reserved = sum(
            len(set(r.public_ips) - used)
            for r in self.reservations()
            if r.kind == "network" and r.holds(start, stop)
        )
        return Figures(
            Amount(public_ips=len(public)),
            Amount(public_ips=len(used)),
            Amount(public_ips=reserved),
        )

    # -- reservations

    def create(
        self,
        kind: str,
        amount: Amount,
        start: float,
        stop: float | None,
        zone: str = "",
        containers: Iterable[dict[str, Any]] = (),
    ) -> Reservation:
        with self._lock:
            ips: tuple[str, ...] = ()
            if kind == "network":
                ips = self._pick_addresses(amount.public_ips, start, stop)
                zone = ""
            elif zone:
                why = reservation_refusal(self.ledger(), zone, amount, start, stop)
                if why:
                    raise Refused(why)
            else:
                zone = self._best_zone(amount, start, stop)
            r = Reservation(
                id=str(uuid.uuid4()),
                kind=kind,
                zone=zone,
                start=start,
                stop=stop,
                amount=amount,
                containers=tuple(containers),
                public_ips=ips,
                created=self.clock.now(),
            )
            self._save(r)
        log.info("reservation %s (%s): %s in zone %s", r.id, kind, amount.describe(), zone)
        self.changed()
        return r

    def _pick_addresses(self, count: int, start: float, stop: float | None) -> tuple[str, ...]:
        public = self.public_addresses()
        taken = addresses_in_use(self.engine.store.vms())
        for r in self.reservations():
            if r.kind == "network" and r.holds(start, INF if stop is None else stop):
                taken |= set(r.public_ips)
        free = [ip for ip in public if ip not in taken]
        if len(free) < count:
            raise Refused(
                f"{count} public address(es) requested, {len(free)} of {len(public)} free"
                + ("" if public else " (no public range configured and no static pool)")
            )
        return tuple(free[:count])

    def _best_zone(self, amount: Amount, start: float, stop: float | None) -> str:
        """The host with most available memory that holds ``amount``, else the
        smallest configured zone that does."""
        ledger = self.ledger()
        report = []
        best: tuple[int, int, str] | None = None
        connected = {h.name for h in self.engine.vims.hosts() if h.connected}
        for host in sorted(connected):
            why = reservation_refusal(ledger, host, amount, start, stop)
            if why:
                report.append(why)
                continue
            avail = ledger.zone_figures({host}).available
            key = (-avail.memory_mb, -avail.vcpus, host)
            best = key if best is None or key < best else best
        if best is not None:
            return best[2]
        zones = ledger.zones
        for name in sorted(zones.configured, key=lambda z: (len(zones.configured[z]), z)):
            why = reservation_refusal(ledger, name, amount, start, stop)
            if not why:
                return name
            report.append(why)
        raise Refused(
            f"no zone can hold the reservation ({amount.describe()}): "
            + ("; ".join(report) or "no connected host")
        )

    def update(self, rid: str, start: float | None, stop: float | None) -> Reservation:
        with self._lock:
            r = self._require(rid)
            status = r.status(self.clock.now())
            if status in (EXPIRED, TERMINATED):
                raise Conflict(f"reservation {rid} is {status}")
            new = replace(
                r, start=r.start if start is None else start, stop=r.stop if stop is None else stop
            )
            if new.stop is not None and new.stop <= new.start:
                raise Invalid(f"reservation {rid}: stopTime is not after startTime")
            if r.kind != "network":
                left = (r.amount - self.consumed().get(rid, Amount())).clamp()
                why = reservation_refusal(self.ledger(), r.zone, left, new.start, new.stop, rid)
                if why:
                    raise Refused(why)
            self._save(new)
        self.changed()
        return new

    def users(self, rid: str) -> list[str]:
        """Generated names of the VMs whose vm_group names reservation ``rid``."""
        desired = self.engine.desired
        return sorted(
            vm.generated_name
            for vm in self.engine.store.vms()
            if rid in group_reservations(desired, vm)
        )

    def terminate(self, rid: str, force: bool = False) -> Reservation:
        with self._lock:
            r = self._require(rid)
            users = self.users(rid)
            if users and not force and r.status(self.clock.now()) == ACTIVE:
                raise Refused(
                    f"reservation {rid} is in use by VM(s) {', '.join(users)}; "
                    "terminate with force to release it anyway"
                )
            r = replace(r, terminated=True)
            self._save(r)
        log.info("reservation %s terminated", rid)
        self.changed()
        return r

    def _require(self, rid: str) -> Reservation:
        r = self._reservations.get(rid)
        if r is None:
            raise NotFound(f"reservation {rid} does not exist")
        return r

    def _save(self, r: Reservation) -> None:
        self.store.put_reservation(r)
        with self._lock:
            self._reservations[r.id] = r
        with self._vlock:
            self._version[2] += 1

    # -- placement (engine/placement.py: the CapacityCheck its callers pass in;
    # migration_hosts: the maintenance link's fitting_hosts; validator)

    def reservation_zone(self, group: GroupSpec) -> str:
        """A host of the zone of the group's active compute reservation that holds
        one more VM ('' when the group names none)."""
        ledger = self.ledger()
        need = vm_amount(self.engine.desired.flavors.get(group.flavor))
        rids = group_ids(group)
        for rid in rids:
            r = self.reservation(rid)
            if r is None or r.kind != "compute" or r.status(ledger.now) != ACTIVE:
                continue
            members = sorted(ledger.zones.members(r.zone) or ())
            for host in members:
                if not ledger.refusal(host, need, rids):
                    return host
            return members[0] if members else ""
        return ""

    def refusal(self, group: GroupSpec, host: str) -> str:
        """Why ``group``'s next VM does not fit on ``host`` ("" when it does); on the
        placing job's thread, which may read a host the snapshot lacks."""
        self.read_host(host, only_if_unknown=True)
        need = vm_amount(self.engine.desired.flavors.get(group.flavor))
        return self.ledger().refusal(host, need, group_ids(group))

    def addresses(self, group: GroupSpec) -> tuple[tuple[str, ...], frozenset[str]]:
        """(addresses reserved for ``group``, addresses it must not take)."""
        now = self.clock.now()
        own: list[str] = []
        barred: set[str] = set()
        ids = set(group_ids(group))
        for r in self.reservations():
            if r.kind != "network" or not r.holds(now, INF):
                continue
            if r.id in ids and r.status(now) == ACTIVE:
                own += r.public_ips
            else:
                barred |= set(r.public_ips)
        return tuple(own), frozenset(barred - set(own))

    def migration_hosts(self, vm: VmRecord, hosts: list[str]) -> list[str]:
        """Hosts among ``hosts`` where ``vm`` fits (overcommit, reservations)."""
        try:
            if self.engine.store.vm(vm.generated_name) is None:
                return hosts  # another server's VM
        except Exception:  # a stopped server's store
            return hosts
        desired = self.engine.desired
        ledger = self.ledger()
        need = vm_amount(desired.flavors.get(vm.flavor))
        rids = group_reservations(desired, vm)
        return [h for h in hosts if not ledger.refusal(h, need, rids)]

    def check_desired(
        self,
        desired: Desired,
        err: Callable[[str, str], None],
        group_path: Callable[..., str],
    ) -> None:
        # the validated tree holds only the root entries the edit references (the
        # datastore prunes it): VMs elsewhere run with flavors that are only in the
        # committed configuration, and their use must still count
        committed = self.engine.desired
        desired = dataclasses.replace(desired, flavors={**committed.flavors, **desired.flavors})
        check_desired(self, desired, err, group_path)

    def state(self) -> list[Any]:
        return events.opdata(self.reservations(), self.consumed(), self.clock.now())


def _apply(records: dict[str, VmRecord], name: str, vm: VmRecord | None) -> None:
    if vm is None:
        records.pop(name, None)
    else:
        records[name] = vm
