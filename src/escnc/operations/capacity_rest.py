"""The seed's capacity and reservation API (OPNFV Promise / ETSI NFV IFA 005, seed
003) on JSON values, free of any protocol: each function takes the seed's request
body (a dict as decoded from JSON) and returns the seed's response body.

The HTTP face mounts :data:`ROUTES` (method, path, function, success status); the
NETCONF face (``esc_capacity.py``) turns its XML into the same dicts. Errors are
:class:`CapacityRequestError` (HTTP status, NETCONF error-tag, message, field).

Units and interpretations (docs/capacity.md): ``virtualMemSize`` and
``storageSize`` are GiB, ``memory`` is MiB; a zone is a VIM host or a zone of the
operator's settings (``capacity_zones``); public addresses belong to no zone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from escnc.engine.capacity.manager import CapacityManager
from escnc.engine.capacity.model import (
    GIB,
    INF,
    KINDS,
    RESOURCE_TYPES,
    TYPE_LEAF,
    Amount,
    format_time,
    parse_time,
    types_of,
)
from escnc.engine.capacity.records import CONDITIONS, FIGURES, Reservation, Threshold
from escnc.engine.errors import Conflict, EngineError, Invalid, NotFound, Refused
from escnc.ns import ESC

MAX_NUMBER = 2**40
MAX_ITEMS = 64  # descriptors, thresholds, filters, containers of one request
MAX_TEXT = 256

Json = dict[str, Any]


@dataclass
class CapacityRequestError(Exception):
    status: int  # HTTP
    tag: str  # NETCONF error-tag
    message: str
    field: str = ""  # the offending member, '/'-separated ('' = the request)

    def __str__(self) -> str:
        return self.message


def _bad(message: str, field: str = "", status: int = 400, tag: str = "invalid-value") -> None:
    raise CapacityRequestError(status, tag, message, field)


def _engine_error(exc: EngineError, field: str = "") -> CapacityRequestError:
    if isinstance(exc, NotFound):
        return CapacityRequestError(404, "data-missing", exc.message, field)
    if isinstance(exc, Invalid):
        return CapacityRequestError(400, "invalid-value", exc.message, field)
    if isinstance(exc, Conflict):
        return CapacityRequestError(409, "operation-failed", exc.message, field)
    if isinstance(exc, Refused):
        return CapacityRequestError(409, "resource-denied", exc.message, field)
    return CapacityRequestError(500, "operation-failed", exc.message, field)


# -- reading the request ----------------------------------------------------------------


def _obj(body: Any, field: str) -> Json:
    if body is None:
        return {}
    if not isinstance(body, dict):
        _bad(f"{field or 'the request'} must be an object", field)
    return body


def _items(value: Any, field: str) -> list[Json]:
    """An object or a list of objects (the seed uses both for resourceDescriptor)."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_ITEMS:
        _bad(f"{field}: more than {MAX_ITEMS} items", field)
    return [_obj(i, field) for i in items]


def _str(body: Json, key: str, field: str = "") -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str | int) or isinstance(value, bool):
        _bad(f"{field or key} must be a string", field or key)
    text = str(value).strip()
    if len(text) > MAX_TEXT:
        _bad(f"{field or key} is longer than {MAX_TEXT} characters", field or key)
    return text


def _num(body: Json, key: str, field: str) -> int:
    value = body.get(key)
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str):
        _bad(f"{field} must be a non-negative integer", field)
    try:
        n = int(value)
    except ValueError:
        _bad(f"{field} {value!r} is not an integer", field)
    if not 0 <= n <= MAX_NUMBER:
        _bad(f"{field} {n} is out of range (0..{MAX_NUMBER})", field)
    return n


def _time(body: Json, key: str, field: str) -> float | None:
    text = _str(body, key, field)
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        _bad(f"{field} {text!r} is not a date-and-time", field)
    return None  # not reached


def _kind(kind: str) -> None:
    if kind not in KINDS:
        _bad(f"unknown resource kind {kind!r} (compute, network, storage)", status=404,
             tag="data-missing")


def _rtype(kind: str, item: Json, field: str) -> str:
    leaf = TYPE_LEAF[kind]
    rtype = _str(item, leaf, f"{field}/{leaf}")
    if not rtype:
        _bad(f"{field}/{leaf} is missing", f"{field}/{leaf}", tag="missing-element")
    if rtype not in types_of(kind):
        _bad(
            f"{field}/{leaf} {rtype!r} is not a {kind} resource type ({', '.join(types_of(kind))})",
            f"{field}/{leaf}",
        )
    return rtype


def merge_query(body: Any, query: Mapping[str, str] | None) -> Json:
    """The body, with query parameters filling what it lacks (GET without body)."""
    data = dict(_obj(body, ""))
    for key, value in (query or {}).items():
        if key in ("startTime", "stopTime"):
            data.setdefault("timePeriod", {}).setdefault(key, value)
        elif key.endswith("ResourceTypeId"):
            data.setdefault("resourceDescriptor", {key: value})
        elif key == "reservationId":
            data.setdefault("queryReservationFilter", [{"reservationId": value}])
        elif key not in data:
            data[key] = value
    return data


# -- capacity ---------------------------------------------------------------------------


def query_capacity(
    mgr: CapacityManager, kind: str, body: Any, query: Mapping[str, str] | None = None
) -> Json:
    """GET /capacity/{kind}/query -> 200 {zoneId?, lastUpdate, capacityInformation}."""
    _kind(kind)
    data = merge_query(body, query)
    if "limit" in data:
        _num(data, "limit", "limit")  # accepted as the seed shows; one object is answered
    descriptors = _items(data.get("resourceDescriptor"), "resourceDescriptor")
    if not descriptors:
        _bad("resourceDescriptor is missing", "resourceDescriptor", tag="missing-element")
    rtype = _rtype(kind, descriptors[0], "resourceDescriptor")
    zone = _str(data, "zoneId")
    period = _obj(data.get("timePeriod"), "timePeriod")
    now = mgr.clock.now()
    start = _time(period, "startTime", "timePeriod/startTime")
    stop = _time(period, "stopTime", "timePeriod/stopTime")
    begin = now if start is None else start
    if stop is not None and stop <= begin:
        _bad(
            f"timePeriod/stopTime {format_time(stop)} is not after startTime {format_time(begin)}",
            "timePeriod/stopTime",
        )
    try:
        fig = mgr.figures(kind, zone, begin, INF if stop is None else stop)
    except NotFound as exc:
        raise _engine_error(exc, "zoneId") from None
    out: Json = {}
    if zone:
        out["zoneId"] = zone
    out["lastUpdate"] = format_time(_last_update(mgr, kind, zone, now))
    out["capacityInformation"] = fig.info(rtype)
    return out


def _last_update(mgr: CapacityManager, kind: str, zone: str, now: float) -> float:
    if kind == "network":
        return now  # from the configuration and the VM records, always current
    members = mgr.zones().members(zone) or frozenset()
    taken = [f.taken for h, f in mgr.facts().items() if h in members]
    return min(taken) if taken else now


def subscribe_capacity(mgr: CapacityManager, kind: str, body: Any) -> Json:
    """POST /capacity/{kind}/subscribe -> 201 {created, capacityChangeSubscriptionId}."""
    _kind(kind)
    data = _obj(body, "")
    descriptors = _items(data.get("resourceDescriptor"), "resourceDescriptor")
    if not descriptors:
        _bad("resourceDescriptor is missing", "resourceDescriptor", tag="missing-element")
    types = [_rtype(kind, d, "resourceDescriptor") for d in descriptors]
    thresholds = []
    for t in _items(data.get("threshold"), "threshold"):
        info = _str(t, "capacity_info", "threshold/capacity_info") or "available"
        if info == "used":
            info = "allocated"
        if info not in FIGURES:
            _bad(f"threshold/capacity_info {info!r} is not one of {', '.join(FIGURES)}",
                 "threshold/capacity_info")
        cond = _str(t, "condition", "threshold/condition")
        if cond not in CONDITIONS:
            _bad(f"threshold/condition {cond!r} is not one of {', '.join(CONDITIONS)}",
                 "threshold/condition")
        if t.get("value") is None:
            _bad("threshold/value is missing", "threshold/value", tag="missing-element")
        thresholds.append(Threshold(info, cond, _num(t, "value", "threshold/value")))
    url = _str(data, "notificationUrl") or _str(data, "notification_url")
    try:
        sub = mgr.subs.add(kind, _str(data, "zoneId"), types, thresholds, url)
    except NotFound as exc:
        raise _engine_error(exc, "zoneId") from None
    except Invalid as exc:
        raise _engine_error(exc, "notificationUrl") from None
    return {"created": format_time(sub.created), "capacityChangeSubscriptionId": sub.id}


def unsubscribe_capacity(mgr: CapacityManager, kind: str, sid: str) -> Json:
    """DELETE /capacity/{kind}/subscribe/{id} -> 200 {capacityChangeSubscriptionId}."""
    _kind(kind)
    sub = next((s for s in mgr.subs.all() if s.id == sid and s.kind == kind), None)
    if sub is None:
        _bad(f"{kind} subscription {sid} does not exist", "capacityChangeSubscriptionId",
             status=404, tag="data-missing")
    mgr.subs.remove(sid)
    return {"capacityChangeSubscriptionId": sid}


def notification_body(el: Any) -> Json:
    """A capacityChangeNotification element -> the seed's notification JSON (the body
    POSTed to a subscriber's notificationUrl)."""
    def text(name: str) -> str:
        return el.findtext(f"{{*}}{name}") or ""

    desc = el.find("{*}resourceDescriptor")
    info = el.find("{*}capacityInformation")
    out: Json = {}
    if text("zoneId"):
        out["zoneId"] = text("zoneId")
    out["notificationId"] = text("notificationId")
    out["capacityChangeTime"] = text("capacityChangeTime")
    out["resourceDescriptor"] = {
        c.tag.split("}")[1]: c.text or "" for c in (desc if desc is not None else [])
    }
    out["capacityInformation"] = {
        c.tag.split("}")[1]: int(c.text or 0) for c in (info if info is not None else [])
    }
    return out


class CapacityNotifier:
    """events.callbacks.Notifier: a ``capacityChangeNotification`` whose subscription
    has a notificationUrl -> a POST of the seed's notification JSON there, ordered per
    subscription (app.py hands it to the ESC callback outbox)."""

    def __init__(self, mgr: CapacityManager) -> None:
        self.mgr = mgr

    def _urls(self) -> dict[str, str]:
        return {s.id: s.notification_url for s in self.mgr.subs.all() if s.notification_url}

    def active(self) -> bool:
        return bool(self._urls())

    def target(self, ev: Any) -> tuple[str, str, dict[str, str], bytes] | None:
        if ev.tag != f"{{{ESC}}}capacityChangeNotification":
            return None
        sid = ev.findtext(f"{{{ESC}}}capacityChangeSubscriptionId") or ""
        url = self._urls().get(sid, "")
        if not url:  # removed, or subscribed without a URL
            return None
        return (f"capacity:{sid}", url, {"Content-Type": "application/json"},
                json.dumps(notification_body(ev)).encode())


# -- reservations -----------------------------------------------------------------------


def reservation_json(mgr: CapacityManager, r: Reservation) -> Json:
    out: Json = {"startTime": format_time(r.start)}
    if r.stop is not None:
        out["stopTime"] = format_time(r.stop)
    out["reservationStatus"] = r.status(mgr.clock.now())
    out["reservationId"] = r.id
    a = r.amount
    if r.kind == "network":
        out["networkReserved"] = {"publicIps": list(r.public_ips)}
    elif r.kind == "storage":
        out["storagePoolReserved"] = {
            "storageSize": -(-a.storage_mb // GIB),
            "numSnapshots": a.snapshots,
            "numVolumes": a.volumes,
            "zoneId": r.zone,
        }
    elif r.containers:
        out["virtualizationContainerReserved"] = [
            {**c, "zoneId": r.zone} for c in r.containers
        ]
    else:
        out["computePoolReserved"] = {
            "numCpuCores": a.vcpus,
            "numVcInstances": a.instances,
            "virtualMemSize": -(-a.memory_mb // GIB),
            "zoneId": r.zone,
        }
    return out


def _container(item: Json, i: int) -> tuple[dict[str, Any], Amount]:
    field = "virtualizationContainerReservation"
    cid = _str(item, "containerId", f"{field}/containerId")
    if not cid:
        _bad(f"{field}/containerId is missing", f"{field}/containerId", tag="missing-element")
    flavor = _obj(item.get("containerFlavor"), f"{field}/containerFlavor")
    cpu = _obj(flavor.get("virtualCpu"), f"{field}/containerFlavor/virtualCpu")
    mem = _obj(flavor.get("virtualMemory"), f"{field}/containerFlavor/virtualMemory")
    disk = _obj(flavor.get("virtualStorage"), f"{field}/containerFlavor/virtualStorage")
    base = f"{field}/containerFlavor"
    vcpus = _num(cpu, "numVirtualCpu", f"{base}/virtualCpu/numVirtualCpu")
    mem_gib = _num(mem, "virtualMemSize", f"{base}/virtualMemory/virtualMemSize")
    disk_gib = _num(disk, "sizeOfStorage", f"{base}/virtualStorage/sizeOfStorage")
    given: dict[str, Any] = {"containerId": cid, "containerFlavor": {}}
    f = given["containerFlavor"]
    if _str(flavor, "flavorId", f"{base}/flavorId"):
        f["flavorId"] = _str(flavor, "flavorId")
    f["virtualCpu"] = {"numVirtualCpu": vcpus}
    if _str(cpu, "cpuArchitecture", f"{base}/virtualCpu/cpuArchitecture"):
        f["virtualCpu"]["cpuArchitecture"] = _str(cpu, "cpuArchitecture")
    f["virtualMemory"] = {"virtualMemSize": mem_gib}
    if _str(mem, "numaEnabled", f"{base}/virtualMemory/numaEnabled"):
        f["virtualMemory"] = {"numaEnabled": _str(mem, "numaEnabled"), "virtualMemSize": mem_gib}
    if disk:
        f["virtualStorage"] = {
            "typeOfStorage": _str(disk, "typeOfStorage", f"{base}/virtualStorage/typeOfStorage"),
            "sizeOfStorage": disk_gib,
        }
    # the container's storage is informative: compute capacity is what is held
    return given, Amount(instances=1, vcpus=vcpus, memory_mb=mem_gib * GIB)


def create_reservation(mgr: CapacityManager, kind: str, body: Any) -> Json:
    """POST /reservation/{kind}/create -> 201 {reservationData}."""
    _kind(kind)
    data = _obj(body, "")
    now = mgr.clock.now()
    start = _time(data, "startTime", "startTime")
    stop = _time(data, "stopTime", "stopTime")
    start = now if start is None else start
    if stop is not None and stop <= start:
        _bad(f"stopTime {format_time(stop)} is not after startTime {format_time(start)}",
             "stopTime")
    if stop is not None and stop <= now:
        _bad(f"stopTime {format_time(stop)} is in the past", "stopTime")
    zone = _str(data, "zoneId")
    containers: list[dict[str, Any]] = []
    if kind == "compute":
        pool = data.get("computePoolReservation")
        items = _items(data.get("virtualizationContainerReservation"),
                       "virtualizationContainerReservation")
        if pool is not None:
            p = _obj(pool, "computePoolReservation")
            what = "computePoolReservation"
            zone = zone or _str(p, "zoneId", f"{what}/zoneId")
            amount = Amount(
                instances=_num(p, "numVcInstances", f"{what}/numVcInstances"),
                vcpus=_num(p, "numCpuCores", f"{what}/numCpuCores"),
                memory_mb=_num(p, "virtualMemSize", f"{what}/virtualMemSize") * GIB,
            )
        elif items:
            what = "virtualizationContainerReservation"
            amount = Amount()
            for i, item in enumerate(items):
                given, part = _container(item, i)
                containers.append(given)
                amount += part
        else:
            _bad("computePoolReservation or virtualizationContainerReservation is required",
                 "computePoolReservation", tag="missing-element")
    elif kind == "network":
        what = "networkReservation"
        p = _obj(data.get(what), what)
        if not p:
            _bad(f"{what} is required", what, tag="missing-element")
        amount = Amount(public_ips=_num(p, "numPublicIps", f"{what}/numPublicIps"))
    else:
        what = "storagePoolReservation"
        p = _obj(data.get(what), what)
        if not p:
            _bad(f"{what} is required", what, tag="missing-element")
        zone = zone or _str(p, "zoneId", f"{what}/zoneId")
        amount = Amount(
            storage_mb=_num(p, "storageSize", f"{what}/storageSize") * GIB,
            snapshots=_num(p, "numSnapshots", f"{what}/numSnapshots"),
            volumes=_num(p, "numVolumes", f"{what}/numVolumes"),
        )
    if amount.is_zero():
        _bad(f"{what} reserves nothing", what)
    if zone and mgr.zones().members(zone) is None:
        _bad(f"resource zone {zone} unknown", "zoneId", status=404, tag="data-missing")
    try:
        r = mgr.create(kind, amount, start, stop, zone, containers)
    except EngineError as exc:
        raise _engine_error(exc, what) from None
    return {"reservationData": reservation_json(mgr, r)}


def _find(mgr: CapacityManager, kind: str, rid: str, field: str) -> Reservation:
    r = mgr.reservation(rid)
    if r is None or r.kind != kind:
        _bad(f"{kind} reservation {rid} does not exist", field, status=404, tag="data-missing")
    assert r is not None
    return r


def query_reservation(
    mgr: CapacityManager, kind: str, body: Any, query: Mapping[str, str] | None = None
) -> Json:
    """GET /reservation/{kind}/query -> 200 {reservationData} (a list when several)."""
    _kind(kind)
    data = merge_query(body, query)
    field = "queryReservationFilter/reservationId"
    ids = [_str(f, "reservationId", field) for f in
           _items(data.get("queryReservationFilter"), "queryReservationFilter")]
    ids = [i for i in ids if i]
    found = (
        [_find(mgr, kind, rid, field) for rid in dict.fromkeys(ids)]
        if ids
        else [r for r in mgr.reservations() if r.kind == kind]
    )
    items = [reservation_json(mgr, r) for r in found]
    return {"reservationData": items[0] if len(items) == 1 else items}


def update_reservation(mgr: CapacityManager, kind: str, body: Any) -> Json:
    """POST /reservation/{kind}/update -> 201 {reservationData}."""
    _kind(kind)
    data = _obj(body, "")
    rid = _str(data, "reservationId")
    if not rid:
        _bad("reservationId is missing", "reservationId", tag="missing-element")
    _find(mgr, kind, rid, "reservationId")
    start = _time(data, "startTime", "startTime")
    stop = _time(data, "stopTime", "stopTime")
    if stop is not None and stop <= mgr.clock.now():
        _bad(f"stopTime {format_time(stop)} is in the past", "stopTime")
    try:
        r = mgr.update(rid, start, stop)
    except EngineError as exc:
        raise _engine_error(exc, "stopTime" if isinstance(exc, Invalid) else "") from None
    return {"reservationData": reservation_json(mgr, r)}


def terminate_reservation(mgr: CapacityManager, kind: str, rid: str, force: bool = False) -> Json:
    """DELETE /reservation/{kind}/{id}[?force=true] -> 200 {reservationData}; a
    reservation VMs consume is refused (409, in-use) unless forced."""
    _kind(kind)
    _find(mgr, kind, rid, "reservationId")
    try:
        r = mgr.terminate(rid, force=force)
    except Refused as exc:
        raise CapacityRequestError(409, "in-use", exc.message, "reservationId") from None
    except EngineError as exc:
        raise _engine_error(exc, "reservationId") from None
    return {"reservationData": reservation_json(mgr, r)}


Handler = Callable[..., Json]
# (method, path, function, status); {kind} is compute|network|storage, {id} an id;
# GET handlers also take the query parameters, DELETE handlers the id (and ?force)
ROUTES: list[tuple[str, str, Handler, int]] = [
    ("GET", "/capacity/{kind}/query", query_capacity, 200),
    ("POST", "/capacity/{kind}/subscribe", subscribe_capacity, 201),
    ("DELETE", "/capacity/{kind}/subscribe/{id}", unsubscribe_capacity, 200),
    ("POST", "/reservation/{kind}/create", create_reservation, 201),
    ("GET", "/reservation/{kind}/query", query_reservation, 200),
    ("POST", "/reservation/{kind}/update", update_reservation, 201),
    ("DELETE", "/reservation/{kind}/{id}", terminate_reservation, 200),
]

__all__ = [
    "RESOURCE_TYPES",
    "ROUTES",
    "CapacityNotifier",
    "CapacityRequestError",
    "create_reservation",
    "notification_body",
    "query_capacity",
    "query_reservation",
    "subscribe_capacity",
    "terminate_reservation",
    "unsubscribe_capacity",
    "update_reservation",
]
