"""Capacity and reservation RPCs (namespace http://www.cisco.com/esc/esc): the seed's
API (``capacity_rest.py``) over NETCONF, with the seed's JSON names as YANG nodes.

For each kind (Compute, Network, Storage): query<Kind>Capacity,
subscribe<Kind>Capacity, unsubscribe<Kind>Capacity, create<Kind>Reservation,
query<Kind>Reservation, update<Kind>Reservation, terminate<Kind>Reservation.
The input is validated against the YANG model first; this module turns the XML into
the seed's JSON shape and back, and the API's errors into rpc-errors whose
error-path names the offending leaf.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lxml import etree

from escnc.engine.capacity.manager import CapacityManager
from escnc.errors import RpcError, operation_failed
from escnc.ns import ESC
from escnc.operations import capacity_rest as api

if TYPE_CHECKING:
    from escnc.rpc.dispatch import RpcContext, RpcRegistry
    from escnc.services import Services

NSMAP = {"esc": ESC}
# input nodes that are lists (a single entry is still a list in the seed's JSON)
LISTS = {"threshold", "queryReservationFilter", "virtualizationContainerReservation"}
# list keys come first in a reply (RFC 7950 7.8.5)
KEYS = {"reservationData": "reservationId", "virtualizationContainerReserved": "containerId"}


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname


def to_json(el: etree._Element, lists: set[str]) -> dict[str, Any]:
    """An RPC's input as the seed's JSON (leaf text as strings)."""
    out: dict[str, Any] = {}
    for child in el:
        if not isinstance(child.tag, str):
            continue
        name = _local(child)
        value: Any = to_json(child, lists) if len(child) else (child.text or "").strip()
        if name in lists or name in out:
            prev = out.get(name)
            out[name] = (prev if isinstance(prev, list) else [] if prev is None else [prev]) + [
                value
            ]
        else:
            out[name] = value
    return out


def to_xml(parent: etree._Element, data: dict[str, Any]) -> None:
    def add(name: str, value: Any) -> None:
        if isinstance(value, list):
            for item in value:
                add(name, item)
        elif isinstance(value, dict):
            el = etree.SubElement(parent, f"{{{ESC}}}{name}")
            key = KEYS.get(name)
            ordered = ({key: value[key]} if key and key in value else {}) | value
            to_xml(el, ordered)
        else:
            etree.SubElement(parent, f"{{{ESC}}}{name}").text = str(value)

    for name, value in data.items():
        add(name, value)


def _reply(data: dict[str, Any]) -> list[etree._Element]:
    holder = etree.Element("reply", nsmap={None: ESC})  # type: ignore[dict-item]
    to_xml(holder, data)
    return list(holder)


def _capacity(ctx: RpcContext) -> CapacityManager:
    manager = getattr(ctx.services.engine, "capacity", None)
    if manager is None:
        raise operation_failed("the engine is not running")
    return manager  # type: ignore[no-any-return]


def _rpc_error(rpc: str, exc: api.CapacityRequestError) -> RpcError:
    path = f"/esc:{rpc}" + "".join(f"/esc:{p}" for p in exc.field.split("/") if p)
    message = f"{rpc}: {exc.message}"
    if exc.tag == "missing-element":
        leaf = exc.field.split("/")[-1] or rpc
        return RpcError("missing-element", message, type="protocol",
                        info={"bad-element": leaf})
    return RpcError(exc.tag, message, path=path if exc.field else None, path_nsmap=NSMAP,
                    app_tag=str(exc.status))


Call = Callable[[CapacityManager, str, dict[str, Any]], dict[str, Any]]


def _handler(rpc: str, kind: str, call: Call, lists: set[str]) -> Callable[..., Any]:
    def handle(ctx: RpcContext, request: etree._Element) -> list[etree._Element]:
        mgr = _capacity(ctx)
        try:
            return _reply(call(mgr, kind, to_json(request, lists)))
        except api.CapacityRequestError as exc:
            raise _rpc_error(rpc, exc) from None

    return handle


def _as_list(data: dict[str, Any]) -> dict[str, Any]:
    """reservationData is a YANG list: a single reservation too."""
    items = data.get("reservationData")
    return {"reservationData": items if isinstance(items, list) else [items]}


def _unsubscribe(mgr: CapacityManager, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    ids = data.get("capacityChangeSubscriptionId") or []
    ids = ids if isinstance(ids, list) else [ids]
    for sid in ids:  # all or nothing
        if not any(s.id == sid and s.kind == kind for s in mgr.subs.all()):
            raise api.CapacityRequestError(
                404, "data-missing", f"{kind} subscription {sid} does not exist",
                "capacityChangeSubscriptionId",
            )
    for sid in dict.fromkeys(ids):
        api.unsubscribe_capacity(mgr, kind, sid)
    return {}


def _terminate(mgr: CapacityManager, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    ids = data.get("reservationId") or []
    ids = list(dict.fromkeys(ids if isinstance(ids, list) else [ids]))
    force = str(data.get("force", "false")).lower() == "true"
    for rid in ids:  # all or nothing: unknown ids and ones in use are refused first
        api._find(mgr, kind, rid, "reservationId")
        users = mgr.users(rid)
        r = mgr.reservation(rid)
        if users and not force and r is not None and r.status(mgr.clock.now()) == "active":
            raise api.CapacityRequestError(
                409, "in-use",
                f"reservation {rid} is in use by VM(s) {', '.join(users)}; "
                "terminate with force to release it anyway",
                "reservationId",
            )
    out = [api.terminate_reservation(mgr, kind, rid, force)["reservationData"] for rid in ids]
    return {"reservationData": out}


def register(registry: RpcRegistry, services: Services) -> None:
    for kind in ("compute", "network", "storage"):
        k = kind.capitalize()
        ops: list[tuple[str, Call, set[str]]] = [
            (f"query{k}Capacity", lambda m, kd, d: api.query_capacity(m, kd, d), set()),
            (f"subscribe{k}Capacity", api.subscribe_capacity, LISTS | {"resourceDescriptor"}),
            (f"unsubscribe{k}Capacity", _unsubscribe, {"capacityChangeSubscriptionId"}),
            (f"create{k}Reservation", api.create_reservation, LISTS),
            (
                f"query{k}Reservation",
                lambda m, kd, d: _as_list(api.query_reservation(m, kd, d)),
                LISTS,
            ),
            (f"update{k}Reservation", lambda m, kd, d: _as_list(api.update_reservation(m, kd, d)),
             LISTS),
            (f"terminate{k}Reservation", _terminate, {"reservationId"}),
        ]
        for name, call, lists in ops:
            registry.register(ESC, name, _handler(name, kind, call, lists), validate_input=True)
