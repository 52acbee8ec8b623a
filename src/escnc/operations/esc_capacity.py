"""Capacity and reservation RPCs (namespace http://www.cisco.com/esc/esc), after
ETSI NFV IFA 005/006 as described in seed 003 (there REST, here NETCONF, with the
seed's field names): queryComputeCapacity, subscribeComputeCapacity,
unsubscribeComputeCapacity, createComputeReservation, queryComputeReservation,
updateComputeReservation, terminateComputeReservation.

Zones are VIM hosts (opdata hosts/host/name); memory figures (virtualMemSize,
computeResourceTypeId memory) are MiB. The input is validated against the YANG model
first (types, enums, mandatory leaves); the handlers check what the model cannot
(time order, unknown ids and zones, capacity) and answer with precise rpc-errors.
The work lives in engine/capacity.py (``services.engine.capacity``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from lxml import etree

from escnc.engine.capacity import (
    INF,
    Amount,
    CapacityManager,
    Reservation,
    Threshold,
    format_time,
    parse_time,
    pool_leaves,
)
from escnc.engine.errors import Unavailable
from escnc.errors import RpcError, data_missing, invalid_value, operation_failed
from escnc.ns import ESC

if TYPE_CHECKING:
    from escnc.rpc.dispatch import RpcContext, RpcRegistry
    from escnc.services import Services

NSMAP = {"esc": ESC}


def _q(name: str) -> str:
    return f"{{{ESC}}}{name}"


def _text(el: etree._Element | None, path: str) -> str:
    if el is None:
        return ""
    value = el.findtext("/".join(_q(p) for p in path.split("/")))
    return value.strip() if value is not None else ""


def _int(el: etree._Element | None, path: str) -> int:
    text = _text(el, path)
    return int(text) if text else 0


def _path(rpc: str, leaf: str) -> str:
    return f"/esc:{rpc}/" + "/".join(f"esc:{p}" for p in leaf.split("/"))


def _time(request: etree._Element, rpc: str, leaf: str) -> float | None:
    text = _text(request, leaf)
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        raise invalid_value(
            f"{rpc}: {leaf} {text!r} is not a date-and-time",
            path=_path(rpc, leaf),
            path_nsmap=NSMAP,
        ) from None


def _check_period(rpc: str, start: float, stop: float | None, stop_leaf: str = "stopTime") -> None:
    if stop is None:
        return
    if stop <= start:
        raise invalid_value(
            f"{rpc}: stopTime {format_time(stop)} is not after startTime {format_time(start)}",
            path=_path(rpc, stop_leaf),
            path_nsmap=NSMAP,
        )
    if stop <= time.time():
        raise invalid_value(
            f"{rpc}: stopTime {format_time(stop)} is in the past",
            path=_path(rpc, stop_leaf),
            path_nsmap=NSMAP,
        )


def _capacity(ctx: RpcContext) -> CapacityManager:
    engine = ctx.services.engine
    manager = getattr(engine, "capacity", None)
    if manager is None:
        raise operation_failed("the engine is not running")
    return manager  # type: ignore[no-any-return]


def _zone(mgr: CapacityManager, rpc: str, zone: str) -> None:
    if zone and zone not in mgr.zones():
        raise data_missing(
            f"{rpc}: resource zone {zone} unknown (zones are VIM hosts: "
            f"{', '.join(mgr.zones()) or 'none'})",
            path=_path(rpc, "zoneId"),
            path_nsmap=NSMAP,
        )


def _reservation(mgr: CapacityManager, rpc: str, rid: str, leaf: str) -> Reservation:
    r = mgr.reservation(rid)
    if r is None:
        raise data_missing(
            f"{rpc}: reservation {rid} does not exist", path=_path(rpc, leaf), path_nsmap=NSMAP
        )
    return r


def reservation_data(r: Reservation) -> etree._Element:
    el = etree.Element(_q("reservationData"), nsmap={None: ESC})  # type: ignore[dict-item]
    etree.SubElement(el, _q("reservationId")).text = r.id
    etree.SubElement(el, _q("reservationStatus")).text = r.status(time.time())
    etree.SubElement(el, _q("startTime")).text = format_time(r.start)
    if r.stop is not None:
        etree.SubElement(el, _q("stopTime")).text = format_time(r.stop)
    if r.containers:
        for c in r.containers:
            vc = etree.SubElement(el, _q("virtualizationContainerReserved"))
            etree.SubElement(vc, _q("containerId")).text = c["containerId"]
            _flavor_xml(vc, c["containerFlavor"])
            etree.SubElement(vc, _q("zoneId")).text = r.zone
    else:
        pool = etree.SubElement(el, _q("computePoolReserved"))
        pool_leaves(pool, r.amount)
        etree.SubElement(pool, _q("zoneId")).text = r.zone
    return el


def _flavor_xml(parent: etree._Element, flavor: dict[str, Any]) -> None:
    f = etree.SubElement(parent, _q("containerFlavor"))
    if flavor.get("flavorId"):
        etree.SubElement(f, _q("flavorId")).text = flavor["flavorId"]
    for part, leaves in (
        ("virtualCpu", ("numVirtualCpu", "cpuArchitecture")),
        ("virtualMemory", ("virtualMemSize", "numaEnabled")),
        ("virtualStorage", ("typeOfStorage", "sizeOfStorage")),
    ):
        values = flavor.get(part) or {}
        if not values:
            continue
        p = etree.SubElement(f, _q(part))
        for leaf in leaves:
            if values.get(leaf) not in (None, ""):
                etree.SubElement(p, _q(leaf)).text = str(values[leaf])


def _container_flavor(el: etree._Element) -> dict[str, Any]:
    flavor: dict[str, Any] = {"flavorId": _text(el, "containerFlavor/flavorId")}
    for part, leaves in (
        ("virtualCpu", ("numVirtualCpu", "cpuArchitecture")),
        ("virtualMemory", ("virtualMemSize", "numaEnabled")),
        ("virtualStorage", ("typeOfStorage", "sizeOfStorage")),
    ):
        values = {leaf: _text(el, f"containerFlavor/{part}/{leaf}") for leaf in leaves}
        flavor[part] = {k: v for k, v in values.items() if v}
    return flavor


# -- handlers ---------------------------------------------------------------------------


def query_capacity(ctx: RpcContext, request: etree._Element) -> list[etree._Element]:
    rpc = "queryComputeCapacity"
    mgr = _capacity(ctx)
    zone = _text(request, "zoneId")
    rtype = _text(request, "resourceDescriptor/computeResourceTypeId")
    if not rtype:
        raise RpcError(
            "missing-element",
            f"{rpc}: resourceDescriptor/computeResourceTypeId is required",
            type="protocol",
            info={"bad-element": "resourceDescriptor"},
        )
    _zone(mgr, rpc, zone)
    start = _time(request, rpc, "timePeriod/startTime")
    stop = _time(request, rpc, "timePeriod/stopTime")
    begin = time.time() if start is None else start
    if stop is not None and stop <= begin:
        raise invalid_value(
            f"{rpc}: stopTime {format_time(stop)} is not after startTime {format_time(begin)}",
            path=_path(rpc, "timePeriod/stopTime"),
            path_nsmap=NSMAP,
        )
    out = []
    for name in [zone] if zone else mgr.zones():
        try:
            fig = mgr.zone_figures(name, begin, INF if stop is None else stop)
        except Unavailable as exc:
            if zone:
                raise operation_failed(f"{rpc}: {exc.message}") from None
            continue
        el = etree.Element(_q("zone"), nsmap={None: ESC})  # type: ignore[dict-item]
        etree.SubElement(el, _q("zoneId")).text = name
        etree.SubElement(el, _q("computeResourceTypeId")).text = rtype
        etree.SubElement(el, _q("lastUpdate")).text = format_time(time.time())
        info = etree.SubElement(el, _q("capacityInformation"))
        for key, value in fig.info(rtype).items():
            etree.SubElement(info, _q(key)).text = str(value)
        out.append(el)
    return out


def subscribe_capacity(ctx: RpcContext, request: etree._Element) -> list[etree._Element]:
    rpc = "subscribeComputeCapacity"
    mgr = _capacity(ctx)
    zone = _text(request, "zoneId")
    _zone(mgr, rpc, zone)
    types = [_text(d, "computeResourceTypeId") for d in request.iterfind(_q("resourceDescriptor"))]
    types = [t for t in types if t]
    if not types:
        raise RpcError(
            "missing-element",
            f"{rpc}: resourceDescriptor is missing",
            type="protocol",
            info={"bad-element": "resourceDescriptor"},
        )
    thresholds = [
        Threshold(_text(t, "capacity_info") or "available", _text(t, "condition"), _int(t, "value"))
        for t in request.iterfind(_q("threshold"))
    ]
    sub = mgr.subscribe(zone, dict.fromkeys(types), thresholds)
    sid = etree.Element(_q("capacityChangeSubscriptionId"), nsmap={None: ESC})  # type: ignore[dict-item]
    sid.text = sub.id
    created = etree.Element(_q("created"), nsmap={None: ESC})  # type: ignore[dict-item]
    created.text = format_time(sub.created)
    return [sid, created]


def unsubscribe_capacity(ctx: RpcContext, request: etree._Element) -> None:
    rpc = "unsubscribeComputeCapacity"
    mgr = _capacity(ctx)
    ids = [(e.text or "").strip() for e in request.iterfind(_q("capacityChangeSubscriptionId"))]
    for sid in ids:
        if not mgr.unsubscribe(sid):
            raise data_missing(
                f"{rpc}: subscription {sid} does not exist",
                path=_path(rpc, "capacityChangeSubscriptionId"),
                path_nsmap=NSMAP,
            )


def create_reservation(ctx: RpcContext, request: etree._Element) -> list[etree._Element]:
    rpc = "createComputeReservation"
    mgr = _capacity(ctx)
    now = time.time()
    start = _time(request, rpc, "startTime")
    stop = _time(request, rpc, "stopTime")
    start = now if start is None else start
    _check_period(rpc, start, stop)
    zone = _text(request, "zoneId")
    _zone(mgr, rpc, zone)
    pool = request.find(_q("computePoolReservation"))
    containers = list(request.iterfind(_q("virtualizationContainerReservation")))
    given: list[dict[str, Any]] = []
    if pool is not None:
        amount = Amount(
            _int(pool, "numVcInstances"), _int(pool, "numCpuCores"), _int(pool, "virtualMemSize")
        )
        what = "computePoolReservation"
    elif containers:
        amount = Amount()
        for c in containers:
            flavor = _container_flavor(c)
            given.append({"containerId": _text(c, "containerId"), "containerFlavor": flavor})
            amount += Amount(
                1,
                int(flavor["virtualCpu"].get("numVirtualCpu") or 0),
                int(flavor["virtualMemory"].get("virtualMemSize") or 0),
            )
        what = "virtualizationContainerReservation"
    else:
        raise RpcError(
            "missing-element",
            f"{rpc}: computePoolReservation or virtualizationContainerReservation is required",
            type="protocol",
            info={"bad-element": "computePoolReservation"},
        )
    if amount.is_zero():
        raise invalid_value(
            f"{rpc}: {what} reserves nothing", path=_path(rpc, what), path_nsmap=NSMAP
        )
    return [reservation_data(mgr.create(amount, start, stop, zone, given))]


def query_reservation(ctx: RpcContext, request: etree._Element) -> list[etree._Element]:
    rpc = "queryComputeReservation"
    mgr = _capacity(ctx)
    ids = [_text(f, "reservationId") for f in request.iterfind(_q("queryReservationFilter"))]
    if not ids:
        return [reservation_data(r) for r in sorted(mgr.reservations(), key=lambda r: r.created)]
    return [
        reservation_data(_reservation(mgr, rpc, rid, "queryReservationFilter/reservationId"))
        for rid in ids
    ]


def update_reservation(ctx: RpcContext, request: etree._Element) -> list[etree._Element]:
    rpc = "updateComputeReservation"
    mgr = _capacity(ctx)
    rid = _text(request, "reservationId")
    r = _reservation(mgr, rpc, rid, "reservationId")
    start = _time(request, rpc, "startTime")
    stop = _time(request, rpc, "stopTime")
    status = r.status(time.time())
    if status in ("expired", "terminated"):
        raise operation_failed(f"{rpc}: reservation {rid} is {status}", app_tag="409")
    new_start = r.start if start is None else start
    new_stop = r.stop if stop is None else stop
    _check_period(rpc, new_start, new_stop)
    return [reservation_data(mgr.update(rid, new_start, new_stop))]


def terminate_reservation(ctx: RpcContext, request: etree._Element) -> list[etree._Element]:
    rpc = "terminateComputeReservation"
    mgr = _capacity(ctx)
    ids = [(e.text or "").strip() for e in request.iterfind(_q("reservationId"))]
    for rid in ids:  # all or nothing
        _reservation(mgr, rpc, rid, "reservationId")
    out = []
    for rid in dict.fromkeys(ids):
        mgr.terminate(rid)
        el = etree.Element(_q("reservationId"), nsmap={None: ESC})  # type: ignore[dict-item]
        el.text = rid
        out.append(el)
    return out


def register(registry: RpcRegistry, services: Services) -> None:
    for name, handler in (
        ("queryComputeCapacity", query_capacity),
        ("subscribeComputeCapacity", subscribe_capacity),
        ("unsubscribeComputeCapacity", unsubscribe_capacity),
        ("createComputeReservation", create_reservation),
        ("queryComputeReservation", query_reservation),
        ("updateComputeReservation", update_reservation),
        ("terminateComputeReservation", terminate_reservation),
    ):
        registry.register(ESC, name, handler, validate_input=True)
