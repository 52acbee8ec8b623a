"""The seed's capacity and reservation endpoints (seed 003: OPNFV Promise / ETSI NFV
IFA 005) over HTTP, as the seed shows them::

    GET    /capacity/{compute|network|storage}/query
    POST   /capacity/{kind}/subscribe          DELETE /capacity/{kind}/subscribe/{id}
    POST   /reservation/{kind}/create          GET    /reservation/{kind}/query
    POST   /reservation/{kind}/update          DELETE /reservation/{kind}/{id}

Each request becomes the NETCONF RPC of the same name and runs through the request
layer as the authenticated user (``escnc.rpc``: NACM, YANG input validation and the
same handler, operations/esc_capacity.py), so a request means exactly what it means
over NETCONF. The seed's JSON members are the RPC's YANG nodes; a GET's body is
accepted as the seed shows, and query parameters as well (a body member wins).
The reply is the seed's JSON: one reservation as an object, several as a list, and
the YANG integer leaves as JSON numbers.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from lxml import etree
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from yangson.datatype import IntegralType
from yangson.schemanode import InternalNode, LeafListNode, LeafNode

from escnc.http.auth import Unauthorized
from escnc.http.context import HttpContext, Timeout
from escnc.http.payload import BadRequest, read_body
from escnc.ns import ESC
from escnc.operations.capacity_rest import merge_query
from escnc.operations.esc_capacity import to_json, to_xml
from escnc.rpc.errors import error_dict, error_headers, http_status

if TYPE_CHECKING:
    from escnc.errors import RpcError

KINDS = ("compute", "network", "storage")
# method, path, RPC (with {Kind}), success status (the seed's)
ENDPOINTS: list[tuple[str, str, str, int]] = [
    ("GET", "/capacity/{kind}/query", "query{Kind}Capacity", 200),
    ("POST", "/capacity/{kind}/subscribe", "subscribe{Kind}Capacity", 201),
    ("DELETE", "/capacity/{kind}/subscribe/{id}", "unsubscribe{Kind}Capacity", 200),
    ("POST", "/reservation/{kind}/create", "create{Kind}Reservation", 201),
    ("GET", "/reservation/{kind}/query", "query{Kind}Reservation", 200),
    ("POST", "/reservation/{kind}/update", "update{Kind}Reservation", 201),
    ("DELETE", "/reservation/{kind}/{id}", "terminate{Kind}Reservation", 200),
]
# the path's {id} is this member of the RPC's input
PATH_ID = {"unsubscribe": "capacityChangeSubscriptionId", "terminate": "reservationId"}


class CapacityFace:
    def __init__(self, ctx: HttpContext) -> None:
        self.ctx = ctx
        self._numeric: dict[str, frozenset[str]] = {}

    def routes(self) -> list[BaseRoute]:
        return [self._route(method, path, rpc, status)
                for method, path, rpc, status in ENDPOINTS]

    def _route(self, method: str, path: str, rpc: str, status: int) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                user = await self.ctx.auth.username(request)
            except Unauthorized as exc:
                return _error(401, str(exc), headers={"WWW-Authenticate": 'Basic realm="escnc"'})
            kind = request.path_params["kind"]
            if kind not in KINDS:
                return _error(404, f"unknown resource kind {kind!r} (one of {', '.join(KINDS)})")
            name = rpc.replace("{Kind}", kind.capitalize())
            try:
                body = await self._body(request)
            except BadRequest as exc:
                return _error(exc.status, exc.message)
            if "id" in request.path_params:
                body[PATH_ID[name.split(kind.capitalize())[0]]] = request.path_params["id"]
            op = etree.Element(f"{{{ESC}}}{name}", nsmap={None: ESC})  # type: ignore[dict-item]
            to_xml(op, _as_text(body))
            try:
                done = await self.ctx.run(user, op)
            except Timeout:
                return _error(503, "the request did not end in time")
            if done.errors:
                return _failed(done.errors)
            return JSONResponse(self._seed_json(name, done.result), status)

        return Route(path, endpoint, methods=[method])

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await read_body(request, self.ctx.services.settings.http_max_body)
        data: Any = {}
        if raw.strip():
            try:
                data = json.loads(raw)
            except ValueError as exc:
                raise BadRequest(f"the body is not JSON: {exc}") from None
            if not isinstance(data, dict):
                raise BadRequest("the body must be a JSON object")
        # query parameters fill what the body lacks, as the protocol-neutral API reads
        # them (e.g. ?reservationId= is a queryReservationFilter)
        return merge_query(data, dict(request.query_params))

    def _seed_json(self, rpc: str, result: Any) -> dict[str, Any]:
        holder = etree.Element("output")
        if isinstance(result, etree._Element):
            holder.append(result)
        elif result is not None:
            holder.extend(result)
        out = to_json(holder, set())
        return _numbers(out, self._numeric_leaves(rpc))

    def _numeric_leaves(self, rpc: str) -> frozenset[str]:
        """Names of the integer leaves of ``rpc``'s output (from the YANG model)."""
        if rpc not in self._numeric:
            names: set[str] = set()
            schema = self.ctx.services.schema
            node = schema.dm.schema.get_child(rpc, "escnc") if schema is not None else None
            output = node.get_child("output") if isinstance(node, InternalNode) else None
            stack = [output] if output is not None else []
            while stack:
                sn = stack.pop()
                for ch in getattr(sn, "children", []):
                    if isinstance(ch, (LeafNode, LeafListNode)):
                        if isinstance(ch.type, IntegralType):
                            names.add(ch.name)
                    elif isinstance(ch, InternalNode):
                        stack.append(ch)
            self._numeric[rpc] = frozenset(names)
        return self._numeric[rpc]


def _as_text(value: Any) -> Any:
    """JSON scalars as the XML texts YANG reads (true/false, not Python's True)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return {k: _as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_text(v) for v in value]
    return value


def _numbers(value: Any, numeric: frozenset[str], name: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _numbers(v, numeric, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v, numeric, name) for v in value]
    if name in numeric and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def _failed(errors: list[RpcError]) -> Response:
    first = errors[0]
    # the capacity API puts its HTTP status in error-app-tag (operations/esc_capacity.py)
    app_tag = first.app_tag or ""
    status = int(app_tag) if app_tag.isdigit() else None
    if status is None:
        status = http_status(errors)
    return JSONResponse({"error": {"error_code": status,
                                   "error_message": "; ".join(e.message for e in errors),
                                   "errors": [error_dict(e) for e in errors]}}, status,
                        headers=error_headers(errors))


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": {"error_code": status, "error_message": message}}, status,
                        headers=headers)


def routes(ctx: HttpContext) -> list[BaseRoute]:
    return CapacityFace(ctx).routes()
