"""Compute capacity, reservations and capacity-change subscriptions (a subset of
ETSI NFV IFA 005/006, offered as NETCONF RPCs by ``operations/esc_capacity.py``).

Zones are VIM hosts. Per zone and resource type (vcInstances, vcpus, memory in MiB):

* total: libvirt ``getInfo`` (CPUs, memory MiB); vcInstances: one per host CPU.
* allocated: running domains (``virDomain.info``) plus escnc VMs still being
  deployed (their record exists, their domain is not running yet: flavor size).
* reserved: what reservations holding capacity during the period have not yet
  consumed (a VM of a vm_group naming the reservation, on its zone, consumes it).
* available = total - allocated - reserved (never below 0).

A reservation holds capacity from startTime to stopTime (open when absent); it is
admitted only when its zone has that much available over its period. Deployments
run from now on, so every reservation that is not expired or terminated counts
against them. Admission control for deployments (validator and placement) and
migrations applies to hosts holding reservations only: a host without any keeps
the previous behaviour (no admission control; libvirt may overcommit).

Reservations and subscriptions persist in ``reservations.sqlite3`` in the state
directory. Status is derived from the clock: reserved (before startTime), active,
expired (after stopTime), terminated.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libvirt
from lxml import etree

from escnc.engine import day2_placement, placement
from escnc.engine import states as st
from escnc.engine.errors import Unavailable
from escnc.errors import RpcError
from escnc.ns import ESC

if TYPE_CHECKING:
    from escnc.engine.engine import Engine
    from escnc.engine.model import Desired, FlavorSpec, GroupSpec
    from escnc.engine.store import VmRecord

log = logging.getLogger(__name__)

RESOURCE_TYPES = ("vcInstances", "vcpus", "memory")
RESERVED, ACTIVE, EXPIRED, TERMINATED = "reserved", "active", "expired", "terminated"
EVENT_TYPE = "COMPUTE_CAPACITY_CHANGE"
INF = float("inf")


# -- amounts and time -------------------------------------------------------------------


@dataclass(frozen=True)
class Amount:
    instances: int = 0
    vcpus: int = 0
    memory_mb: int = 0

    def __add__(self, o: Amount) -> Amount:
        return Amount(
            self.instances + o.instances, self.vcpus + o.vcpus, self.memory_mb + o.memory_mb
        )

    def __sub__(self, o: Amount) -> Amount:
        return Amount(
            self.instances - o.instances, self.vcpus - o.vcpus, self.memory_mb - o.memory_mb
        )

    def clamp(self) -> Amount:
        return Amount(max(0, self.instances), max(0, self.vcpus), max(0, self.memory_mb))

    def min(self, o: Amount) -> Amount:
        return Amount(
            min(self.instances, o.instances),
            min(self.vcpus, o.vcpus),
            min(self.memory_mb, o.memory_mb),
        )

    def fits_in(self, o: Amount) -> bool:
        return (
            self.instances <= o.instances
            and self.vcpus <= o.vcpus
            and self.memory_mb <= o.memory_mb
        )

    def is_zero(self) -> bool:
        return not (self.instances or self.vcpus or self.memory_mb)

    def get(self, rtype: str) -> int:
        return {"vcInstances": self.instances, "vcpus": self.vcpus, "memory": self.memory_mb}[rtype]

    def describe(self) -> str:
        return f"{self.instances} instance(s), {self.vcpus} vCPU(s), {self.memory_mb} MiB"


def flavor_amount(flavor: FlavorSpec | None) -> Amount:
    if flavor is None:
        return Amount(1, 1, 0)
    return Amount(1, flavor.vcpus, flavor.memory_mb)


def parse_time(text: str) -> float:
    """yang:date-and-time -> epoch seconds (raises ValueError)."""
    value = datetime.fromisoformat(text.strip().replace("z", "Z"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def format_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- records ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reservation:
    id: str
    zone: str
    start: float
    stop: float | None
    amount: Amount
    containers: tuple[dict[str, Any], ...] = ()  # as given (virtualizationContainerReservation)
    terminated: bool = False
    created: float = 0.0

    def status(self, now: float) -> str:
        if self.terminated:
            return TERMINATED
        if self.stop is not None and now >= self.stop:
            return EXPIRED
        return RESERVED if now < self.start else ACTIVE

    def holds(self, start: float, stop: float) -> bool:
        """Holds capacity at some time in [start, stop)."""
        if self.terminated:
            return False
        end = INF if self.stop is None else self.stop
        return self.start < stop and end > start

    def to_json(self) -> str:
        data = asdict(self)
        data["amount"] = asdict(self.amount)
        return json.dumps(data)

    @staticmethod
    def from_json(text: str) -> Reservation:
        data = json.loads(text)
        data["amount"] = Amount(**data["amount"])
        data["containers"] = tuple(data.get("containers") or ())
        return Reservation(**data)


@dataclass(frozen=True)
class Threshold:
    capacity_info: str  # available | allocated | used | reserved
    condition: str  # lt | gt
    value: int

    def holds(self, info: dict[str, int]) -> bool:
        figure = info["allocated" if self.capacity_info == "used" else self.capacity_info]
        return figure < self.value if self.condition == "lt" else figure > self.value


@dataclass(frozen=True)
class Subscription:
    id: str
    zone: str  # "" = every zone
    types: tuple[str, ...]
    thresholds: tuple[Threshold, ...] = ()
    created: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> Subscription:
        data = json.loads(text)
        data["types"] = tuple(data["types"])
        data["thresholds"] = tuple(Threshold(**t) for t in data["thresholds"])
        return Subscription(**data)


class ReservationStore:
    """reservations.sqlite3: reservations and capacity subscriptions as JSON rows."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            for table in ("reservations", "subscriptions"):
                self._db.execute(
                    f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, data TEXT)"
                )

    def load(self, table: str) -> list[str]:
        with self._lock:
            return [row[0] for row in self._db.execute(f"SELECT data FROM {table} ORDER BY rowid")]

    def put(self, table: str, key: str, data: str) -> None:
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO {table} (id, data) VALUES (?, ?)", (key, data)
            )

    def delete(self, table: str, key: str) -> None:
        with self._lock:
            self._db.execute(f"DELETE FROM {table} WHERE id = ?", (key,))

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass(frozen=True)
class ZoneFigures:
    zone: str
    total: Amount
    allocated: Amount
    reserved: Amount

    @property
    def available(self) -> Amount:
        return (self.total - self.allocated - self.reserved).clamp()

    def info(self, rtype: str) -> dict[str, int]:
        return {
            "total": self.total.get(rtype),
            "allocated": self.allocated.get(rtype),
            "reserved": self.reserved.get(rtype),
            "available": self.available.get(rtype),
        }


# -- admission --------------------------------------------------------------------------


class Admission:
    """One admission pass: figures taken once, then demand added as VMs are placed."""

    def __init__(self, mgr: CapacityManager, flavors: dict[str, FlavorSpec] | None = None) -> None:
        self.mgr = mgr
        self.now = time.time()
        self.flavors = flavors if flavors is not None else mgr.engine.desired.flavors
        self.holding = [r for r in mgr.reservations() if r.holds(self.now, INF)]
        self._remaining: dict[str, Amount] | None = None
        self._figures: dict[str, tuple[Amount, Amount]] = {}
        self.extra: dict[str, Amount] = {}

    @property
    def remaining(self) -> dict[str, Amount]:
        if self._remaining is None:
            used = self.mgr.consumed()
            self._remaining = {
                r.id: (r.amount - used.get(r.id, Amount())).clamp() for r in self.holding
            }
        return self._remaining

    def zone_of(self, rid: str) -> str:
        for r in self.holding:
            if r.id == rid and r.status(self.now) == ACTIVE:
                return r.zone
        return ""

    def refusal(self, host: str, need: Amount, rid: str = "") -> str:
        """'' when ``need`` fits on ``host`` (drawing from reservation ``rid`` first)."""
        on_host = [r for r in self.holding if r.zone == host]
        if not on_host:
            return ""  # no reservation on this host: no admission control
        draw = Amount()
        if rid and any(r.id == rid for r in on_host) and self.zone_of(rid):
            draw = need.min(self.remaining[rid])
        overflow = need - draw
        if overflow.is_zero():
            return ""
        free = self.free(host)
        if overflow.fits_in(free):
            return ""
        return (
            f"host {host}: {free.clamp().describe()} available outside reservations, "
            f"{overflow.describe()} needed"
        )

    def free(self, host: str) -> Amount:
        if host not in self._figures:
            self._figures[host] = self.mgr.host_usage(host)
        total, allocated = self._figures[host]
        reserved = Amount()
        for r in self.holding:
            if r.zone == host:
                reserved += self.remaining[r.id]
        return total - allocated - reserved - self.extra.get(host, Amount())

    def take(self, host: str, need: Amount, rid: str = "") -> None:
        if rid and rid in self.remaining and self.zone_of(rid) == host:
            self.remaining[rid] = (self.remaining[rid] - need).clamp()
        self.extra[host] = self.extra.get(host, Amount()) + need


# -- the manager ------------------------------------------------------------------------


class CapacityManager:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = ReservationStore(engine.settings.state_dir / "reservations.sqlite3")
        self._lock = threading.RLock()
        self._reservations = {
            r.id: r for r in (Reservation.from_json(t) for t in self.store.load("reservations"))
        }
        self._subs = {
            s.id: s for s in (Subscription.from_json(t) for t in self.store.load("subscriptions"))
        }
        self._last: dict[tuple[Any, ...], Any] = {}
        self._eval_lock = threading.Lock()  # one evaluation of subscriptions at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.poll_seconds = float(engine.settings.capacity_poll_secs)

    # -- lifecycle

    def start(self) -> None:
        placement.register_capacity(self.engine.vims, self)
        day2_placement.register_host_filter(self.migration_hosts)
        self.engine.services.state_providers.append(self.state)
        self.engine.store.add_vm_listener(lambda _name, _vm: self._wake.set())
        with self._lock:
            subs = list(self._subs.values())
        if subs:
            self._evaluate(baseline_only=True)
        self._thread = threading.Thread(target=self._run, name="capacity", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        day2_placement.unregister_host_filter(self.migration_hosts)
        if self._thread is not None:
            self._thread.join(5)
        self.store.close()

    def changed(self) -> None:
        """Something moved capacity (reservation created/updated/terminated)."""
        self._wake.set()

    # -- figures

    def reservations(self) -> list[Reservation]:
        with self._lock:
            return list(self._reservations.values())

    def reservation(self, rid: str) -> Reservation | None:
        with self._lock:
            return self._reservations.get(rid)

    def zones(self) -> list[str]:
        return [h.name for h in self.engine.vims.hosts()]

    def host_usage(self, zone: str) -> tuple[Amount, Amount]:
        """(total, allocated) of a host, from libvirt and the engine's records."""
        host = self.engine.vims.get(zone)
        conn = host.connection()
        info = conn.getInfo()  # [model, memory MiB, cpus, ...]
        total = Amount(int(info[2]), int(info[2]), int(info[1]))
        allocated = Amount()
        running: set[str] = set()
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                _state, _max, mem_kib, vcpus, _cpu = dom.info()
                running.add(dom.name())
            except libvirt.libvirtError:
                continue
            allocated += Amount(1, int(vcpus), int(mem_kib) // 1024)
        flavors = self.engine.desired.flavors
        for vm in self.engine.store.vms():
            if vm.host == zone and vm.state == st.VM_DEPLOYING and vm.generated_name not in running:
                allocated += flavor_amount(flavors.get(vm.flavor))
        return total, allocated

    def consumed(self) -> dict[str, Amount]:
        """Reservation id -> what VMs of vm_groups naming it use on its zone."""
        desired = self.engine.desired
        zones = {r.id: r.zone for r in self.reservations()}
        out: dict[str, Amount] = {}
        for vm in self.engine.store.vms():
            rid = self._group_reservation(desired, vm)
            if rid and zones.get(rid) == vm.host:
                out[rid] = out.get(rid, Amount()) + flavor_amount(desired.flavors.get(vm.flavor))
        return out

    @staticmethod
    def _group_reservation(desired: Desired, vm: VmRecord) -> str:
        spec = desired.deployments.get(vm.dep_key)
        group = spec.groups.get(vm.group) if spec else None
        return group.reservation_id if group else ""

    def zone_figures(self, zone: str, start: float, stop: float) -> ZoneFigures:
        """:meth:`figures` for a request: a host that cannot be read raises
        :class:`~escnc.engine.errors.Unavailable`."""
        try:
            return self.figures(zone, start, stop)
        except libvirt.libvirtError as exc:
            raise Unavailable(f"zone {zone} cannot be read: {exc}") from None

    def figures(
        self, zone: str, start: float | None = None, stop: float = INF, exclude: str = ""
    ) -> ZoneFigures:
        start = time.time() if start is None else start
        total, allocated = self.host_usage(zone)
        used = self.consumed()
        reserved = Amount()
        for r in self.reservations():
            if r.zone == zone and r.id != exclude and r.holds(start, stop):
                reserved += (r.amount - used.get(r.id, Amount())).clamp()
        return ZoneFigures(zone, total, allocated, reserved)

    # -- reservations

    def create(
        self,
        amount: Amount,
        start: float,
        stop: float | None,
        zone: str = "",
        containers: Iterable[dict[str, Any]] = (),
    ) -> Reservation:
        with self._lock:
            if zone:
                self._admit(zone, amount, start, stop)
            else:
                zone = self._best_zone(amount, start, stop)
            r = Reservation(
                str(uuid.uuid4()), zone, start, stop, amount, tuple(containers), False, time.time()
            )
            self._save(r)
        log.info("reservation %s: %s on %s", r.id, amount.describe(), zone)
        self.changed()
        return r

    def update(self, rid: str, start: float | None, stop: float | None) -> Reservation:
        with self._lock:
            r = self._reservations[rid]
            new = replace(
                r, start=r.start if start is None else start, stop=r.stop if stop is None else stop
            )
            self._admit(
                r.zone,
                r.amount - self.consumed().get(rid, Amount()),
                new.start,
                new.stop,
                exclude=rid,
            )
            self._save(new)
        self.changed()
        return new

    def terminate(self, rid: str) -> Reservation:
        with self._lock:
            r = replace(self._reservations[rid], terminated=True)
            self._save(r)
        log.info("reservation %s terminated", rid)
        self.changed()
        return r

    def _save(self, r: Reservation) -> None:
        self.store.put("reservations", r.id, r.to_json())
        self._reservations[r.id] = r

    def _admit(
        self, zone: str, amount: Amount, start: float, stop: float | None, exclude: str = ""
    ) -> None:
        fig = self.figures(zone, start, INF if stop is None else stop, exclude)
        if not amount.clamp().fits_in(fig.available):
            raise RpcError(
                "resource-denied",
                f"zone {zone} cannot hold the reservation: {amount.describe()} requested, "
                f"{fig.available.describe()} available (total {fig.total.describe()}, "
                f"allocated {fig.allocated.describe()}, reserved {fig.reserved.describe()})",
            )

    def _best_zone(self, amount: Amount, start: float, stop: float | None) -> str:
        best: tuple[int, int, str] | None = None
        report = []
        for host in self.engine.vims.hosts():
            if not host.connected:
                continue
            try:
                fig = self.figures(host.name, start, INF if stop is None else stop)
            except libvirt.libvirtError:
                continue
            avail = fig.available
            report.append(f"{host.name}: {avail.describe()}")
            if amount.fits_in(avail):
                key = (-avail.memory_mb, -avail.vcpus, host.name)
                if best is None or key < best:
                    best = key
        if best is None:
            raise RpcError(
                "resource-denied",
                f"no zone can hold the reservation: {amount.describe()} requested; available: "
                + ("; ".join(report) or "no connected host"),
            )
        return best[2]

    # -- placement hooks (engine/placement.py, engine/day2_placement.py, validator)

    def reservation_zone(self, group: GroupSpec) -> str:
        return Admission(self).zone_of(group.reservation_id) if group.reservation_id else ""

    def refusal(self, group: GroupSpec, host: str) -> str:
        adm = Admission(self)
        if not adm.holding:
            return ""
        try:
            return adm.refusal(
                host, flavor_amount(adm.flavors.get(group.flavor)), group.reservation_id
            )
        except (libvirt.libvirtError, KeyError) as exc:
            log.debug("capacity of %s: %s", host, exc)
            return ""

    def migration_hosts(self, vm: VmRecord, hosts: list[str]) -> list[str]:
        """Hosts among ``hosts`` where ``vm`` fits without taking reserved capacity."""
        try:
            if self.engine.store.vm(vm.generated_name) is None:
                return hosts  # another server's VM
        except Exception:  # a stopped server's store
            return hosts
        adm = Admission(self)
        if not adm.holding:
            return hosts
        need = flavor_amount(adm.flavors.get(vm.flavor))
        rid = self._group_reservation(self.engine.desired, vm)
        out = []
        for h in hosts:
            try:
                if not adm.refusal(h, need, rid):
                    out.append(h)
            except (libvirt.libvirtError, KeyError):
                out.append(h)
        return out

    def check_desired(
        self,
        desired: Desired,
        err: Callable[[str, str], None],
        group_path: Callable[..., str],
    ) -> None:
        """Validator: vm_group reservation_id references, and VMs about to be created
        must fit in unreserved capacity (or in the reservation they name)."""
        named = any(
            g.reservation_id for s in desired.deployments.values() for g in s.groups.values()
        )
        adm = Admission(self, desired.flavors)
        if not named and not adm.holding:
            return
        default = self.engine.vims.default_name
        others = sorted(
            h.name for h in self.engine.vims.hosts() if h.connected and h.name != default
        )
        for (tenant, dname), spec in sorted(desired.deployments.items()):
            vms = self.engine.store.vms(tenant, dname)
            for g in spec.groups.values():
                rid = g.reservation_id
                path = group_path(tenant, dname, g.name, "reservation_id")
                zone = ""
                r = self.reservation(rid) if rid else None
                if rid:
                    if r is None:
                        err(f"reservation {rid} of vm_group {g.name} does not exist", path)
                        continue
                    zone = r.zone
                    fixed = g.placement_host or g.vim_id
                    if fixed and fixed != zone:
                        err(
                            f"vm_group {g.name}: reservation {rid} is in zone {zone}, "
                            f"but the group is placed on host {fixed}",
                            path,
                        )
                        continue
                new = g.min_active - sum(1 for v in vms if v.group == g.name)
                if new <= 0 or g.flavor not in desired.flavors:
                    continue
                if r is not None:
                    status = r.status(adm.now)
                    if status != ACTIVE:
                        when = f" (starts {format_time(r.start)})" if status == RESERVED else ""
                        err(f"reservation {rid} of vm_group {g.name} is {status}{when}", path)
                        continue
                need = flavor_amount(desired.flavors[g.flavor])
                fixed = zone or g.placement_host or g.vim_id
                candidates = [fixed] if fixed else [default, *others]
                for _ in range(new):
                    reasons = []
                    chosen = ""
                    for host in candidates:
                        try:
                            why = adm.refusal(host, need, rid)
                        except (libvirt.libvirtError, KeyError):
                            why = ""
                        if not why:
                            chosen = host
                            break
                        reasons.append(why)
                    if not chosen:
                        err(
                            f"deployment {dname} vm_group {g.name}: not enough capacity outside "
                            f"reservations for {new} VM(s) of flavor {g.flavor} "
                            f"({need.describe()} each); "
                            + "; ".join(reasons)
                            + ("" if rid else "; name a reservation in reservation_id to use it"),
                            group_path(tenant, dname, g.name),
                        )
                        break
                    adm.take(chosen, need, rid)

    # -- subscriptions and notifications

    def subscribe(
        self, zone: str, types: Iterable[str], thresholds: Iterable[Threshold]
    ) -> Subscription:
        sub = Subscription(str(uuid.uuid4()), zone, tuple(types), tuple(thresholds), time.time())
        with self._lock:
            self.store.put("subscriptions", sub.id, sub.to_json())
            self._subs[sub.id] = sub
        self._evaluate(only=sub.id, baseline_only=True)
        return sub

    def unsubscribe(self, sid: str) -> bool:
        with self._lock:
            if self._subs.pop(sid, None) is None:
                return False
            self.store.delete("subscriptions", sid)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_seconds)
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                self._evaluate()
            except Exception:
                log.exception("capacity subscriptions")

    def _evaluate(self, only: str = "", baseline_only: bool = False) -> None:
        with self._eval_lock:
            self._evaluate_locked(only, baseline_only)

    def _evaluate_locked(self, only: str, baseline_only: bool) -> None:
        with self._lock:
            subs = [s for s in self._subs.values() if not only or s.id == only]
        if not subs:
            return
        figures: dict[str, ZoneFigures] = {}
        for host in self.engine.vims.hosts():
            if host.connected:
                try:
                    figures[host.name] = self.figures(host.name)
                except libvirt.libvirtError:
                    continue
        for sub in subs:
            for zone, fig in figures.items():
                if sub.zone and sub.zone != zone:
                    continue
                for rtype in sub.types:
                    info = fig.info(rtype)
                    checks: list[tuple[Any, Any]] = [
                        ((sub.id, zone, rtype, i), t.holds(info))
                        for i, t in enumerate(sub.thresholds)
                    ] or [((sub.id, zone, rtype), tuple(sorted(info.items())))]
                    for i, (key, now) in enumerate(checks):
                        prev = self._last.get(key)
                        self._last[key] = now
                        if baseline_only or prev is None:
                            continue
                        if sub.thresholds:
                            fire = now is True and prev is False
                            why = self._threshold_text(sub.thresholds[i])
                        else:
                            fire = now != prev
                            why = "capacity changed"
                        if fire:
                            self._notify(sub, zone, rtype, info, why)

    @staticmethod
    def _threshold_text(t: Threshold) -> str:
        return f"threshold {t.capacity_info} {t.condition} {t.value} crossed"

    def _notify(
        self, sub: Subscription, zone: str, rtype: str, info: dict[str, int], why: str
    ) -> None:
        message = (
            f"zone {zone} {rtype}: {why}; available {info['available']}, "
            f"reserved {info['reserved']}, total {info['total']}, allocated {info['allocated']} "
            f"(capacityChangeSubscriptionId {sub.id}, "
            f"capacityChangeTime {format_time(time.time())})"
        )
        self.engine.notifier.publish_resource(EVENT_TYPE, message=message)

    # -- opdata

    def state(self) -> list[etree._Element]:
        reservations = self.reservations()
        if not reservations:
            return []
        used = self.consumed()
        now = time.time()
        root = etree.Element(_q("esc_datamodel"), nsmap={None: ESC})  # type: ignore[dict-item]
        container = etree.SubElement(etree.SubElement(root, _q("opdata")), _q("reservations"))
        for r in sorted(reservations, key=lambda x: x.created):
            el = etree.SubElement(container, _q("reservation"))
            _leaf(el, "reservationId", r.id)
            _leaf(el, "status", r.status(now))
            _leaf(el, "zoneId", r.zone)
            _leaf(el, "startTime", format_time(r.start))
            if r.stop is not None:
                _leaf(el, "stopTime", format_time(r.stop))
            pool_leaves(etree.SubElement(el, _q("resources")), r.amount)
            pool_leaves(etree.SubElement(el, _q("consumed")), used.get(r.id, Amount()))
        return [root]


def _q(name: str) -> str:
    return f"{{{ESC}}}{name}"


def _leaf(parent: etree._Element, name: str, value: object) -> etree._Element:
    el = etree.SubElement(parent, _q(name))
    el.text = str(value)
    return el


def pool_leaves(parent: etree._Element, amount: Amount) -> None:
    _leaf(parent, "numCpuCores", amount.vcpus)
    _leaf(parent, "numVcInstances", amount.instances)
    _leaf(parent, "virtualMemSize", amount.memory_mb)


__all__ = [
    "Amount",
    "CapacityManager",
    "Reservation",
    "Subscription",
    "Threshold",
    "ZoneFigures",
]
