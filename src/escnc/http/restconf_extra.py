"""RESTCONF beyond plain data resources: RFC 8072 YANG Patch, ``/restconf/operations``
and the event streams as Server-Sent Events (used by escnc.http.restconf)."""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from lxml import etree
from starlette.requests import Request
from starlette.responses import Response

from escnc.errors import RpcError
from escnc.http import restconf_insert as positions
from escnc.http.auth import Unauthorized
from escnc.http.context import Timeout
from escnc.http.payload import BadRequest, read_body
from escnc.http.restconf_base import _OP, JSON, RESTCONF_NS, XML, Seg, _bad, _Fail
from escnc.http.sse import event_stream
from escnc.ns import NC, qn
from escnc.rpc.errors import error_dict, error_headers, http_status
from escnc.rpc.events import xpath_filter
from escnc.xmlutil import parse_untrusted

if TYPE_CHECKING:
    from escnc.http.restconf import Restconf

async def yang_patch(rc: Restconf, request: Request, user: str, segs: list[Seg]) -> Response:
    """RFC 8072: every edit in one edit-config (all or nothing)."""
    body = await read_body(request, rc.ctx.services.settings.http_max_body)
    json_mode = "json" in request.headers.get("content-type", "")
    edits: list[tuple[str, str, str, Any, str | None, str | None]] = []
    if json_mode:
        try:
            patch = json.loads(body)["ietf-yang-patch:yang-patch"]
            patch_id = str(patch["patch-id"])
            for e in patch["edit"]:
                value = e.get("value")
                item = next(iter(value.items())) if isinstance(value, dict) and value \
                    else None
                where, point = e.get("where"), e.get("point")
                edits.append((str(e["edit-id"]), str(e["operation"]), str(e["target"]),
                              item, None if where is None else str(where),
                              None if point is None else str(point)))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise _bad(f"malformed YANG Patch: {exc}", "malformed-message") from None
    else:
        try:
            el = parse_untrusted(body)
        except RpcError as exc:
            raise _Fail([exc], 400) from None
        yp = "urn:ietf:params:xml:ns:yang:ietf-yang-patch"
        patch_id = el.findtext(qn(yp, "patch-id")) or ""
        for e in el.iterfind(qn(yp, "edit")):
            value = e.find(qn(yp, "value"))
            kids = [c for c in value if isinstance(c.tag, str)] if value is not None else []
            edits.append((e.findtext(qn(yp, "edit-id")) or "",
                          e.findtext(qn(yp, "operation")) or "",
                          e.findtext(qn(yp, "target")) or "", kids[0] if kids else None,
                          e.findtext(qn(yp, "where")), e.findtext(qn(yp, "point"))))
    if not edits:
        raise _bad("a YANG Patch needs at least one edit")
    holder = etree.Element("config")
    for edit_id, operation, target, value, where, point in edits:
        tsegs = rc.parse_path(target, segs)
        if not tsegs:
            raise _bad(f"edit {edit_id}: no target")
        if operation not in ("insert", "move") and (where is not None or point is not None):
            raise _bad(f"edit {edit_id}: where and point are for insert and move")
        if operation == "move":
            # RFC 8072: moves an existing entry (a merge without content, repositioned)
            if not await rc._exists(user, tsegs):
                raise _bad(f"edit {edit_id}: {target} does not exist", "data-missing", 404)
            top, el_target = rc.chain(tsegs)
            assert el_target is not None
            await positions.place(rc, user, el_target, tsegs[-1].node, tsegs[:-1],
                                  where or "last", point, segs)
            operation = "merge"
        elif operation in ("delete", "remove"):
            top, el_target = rc.chain(tsegs)
        elif operation in ("create", "merge", "replace", "insert"):
            if value is None:
                raise _bad(f"edit {edit_id}: {operation} needs a value", "missing-element")
            top, el_target = (rc.tree_for(tsegs, False, json_value=value) if json_mode
                              else rc.tree_for(tsegs, False, xml_value=value))
        else:
            raise _bad(f"edit {edit_id}: operation {operation} is not supported",
                       "operation-not-supported")
        assert top is not None and el_target is not None
        if operation == "insert":  # a create at a position
            await positions.place(rc, user, el_target, tsegs[-1].node, tsegs[:-1],
                                  where or "last", point, segs)
            operation = "create"
        el_target.set(_OP, operation)
        _merge(holder, top, rc.schema.root)
    op = etree.Element(qn(NC, "edit-config"), nsmap={None: NC})  # type: ignore[dict-item]
    etree.SubElement(etree.SubElement(op, qn(NC, "target")), qn(NC, "running"))
    config = etree.SubElement(op, qn(NC, "config"))
    for child in list(holder):
        config.append(child)
    done = await rc.ctx.run(user, op)
    status: dict[str, Any] = {"patch-id": patch_id}
    code = 200
    if done.errors:
        status["errors"] = {"error": [error_dict(e) for e in done.errors]}
        code = http_status(done.errors)
    else:
        status["ok"] = [None]
    return Response(json.dumps({"ietf-yang-patch:yang-patch-status": status}), code,
                    headers=error_headers(done.errors), media_type=JSON)


# -- operations -------------------------------------------------------------------

async def operations(rc: Restconf, request: Request) -> Response:
    try:
        user = await rc._user(request)
    except Unauthorized as exc:
        return rc.errors(request, [RpcError("access-denied", str(exc),
                                              type="protocol")], 401,
                           {"WWW-Authenticate": 'Basic realm="escnc"'})
    name = request.path_params.get("name")
    if request.method == "GET":
        names = [(rc.module_by_ns.get(ns), local)
                 for ns, local in rc.ctx.services.registry.names()]
        names = [(m, n) for m, n in names if m]
        if rc.wants_json(request):
            return Response(json.dumps({"ietf-restconf:operations": {
                f"{m}:{n}": [None] for m, n in names}}), media_type=JSON)
        root = etree.Element(qn(RESTCONF_NS, "operations"), nsmap={None: RESTCONF_NS})  # type: ignore[dict-item]
        for m, n in names:
            ns = rc.schema.namespace_of(m)
            etree.SubElement(root, qn(ns, n))
        return Response(etree.tostring(root), media_type=XML)
    try:
        return await invoke(rc, request, user, name or "")
    except _Fail as f:
        return rc.errors(request, f.errors, f.status)
    except BadRequest as exc:
        return rc.errors(request, [RpcError("invalid-value", exc.message)], exc.status)
    except Timeout:
        return rc.errors(request, [RpcError("operation-failed", "timed out")], 503)

async def invoke(rc: Restconf, request: Request, user: str, name: str) -> Response:
    mod, _, local = name.partition(":")
    try:
        ns = rc.schema.namespace_of(mod)
    except KeyError:
        raise _bad(f"unknown module {mod!r}", "invalid-value", 404) from None
    if (ns, local) not in rc.ctx.services.registry:
        raise _bad(f"no operation {name}", "invalid-value", 404)
    body = await read_body(request, rc.ctx.services.settings.http_max_body)
    op = etree.Element(qn(ns, local), nsmap={None: ns})  # type: ignore[dict-item]
    if body.strip():
        if "json" in request.headers.get("content-type", ""):
            try:
                data = json.loads(body)
            except ValueError as exc:
                raise _bad(f"malformed JSON: {exc}", "malformed-message") from None
            value = data.get(f"{mod}:input") if isinstance(data, dict) else None
            if not isinstance(value, dict):
                raise _bad(f"the body must be {{\"{mod}:input\": {{...}}}}")
            _json_into(op, ns, value)
        else:
            try:
                el = parse_untrusted(body)
            except RpcError as exc:
                raise _Fail([exc], 400) from None
            if etree.QName(el).localname != "input":
                raise _bad("the body must be an <input> element")
            for child in el:
                op.append(child)
    done = await rc.ctx.run(user, op)
    if done.errors:
        raise _Fail(done.errors)
    result = done.result
    items = [result] if isinstance(result, etree._Element) else list(result or [])
    if not items:
        return Response(status_code=204)
    if rc.wants_json(request):
        from escnc.http.payload import to_json_value

        out: dict[str, Any] = {}
        for el in items:
            out[etree.QName(el).localname] = to_json_value(el)
        return Response(json.dumps({f"{mod}:output": out}), media_type=JSON)
    output = etree.Element(qn(ns, "output"), nsmap={None: ns})  # type: ignore[dict-item]
    for el in items:
        output.append(copy.deepcopy(el))
    return Response(etree.tostring(output), media_type=XML)

# -- streams ----------------------------------------------------------------------

async def stream(rc: Restconf, request: Request) -> Response:
    try:
        user = await rc._user(request)
    except Unauthorized as exc:
        return rc.errors(request, [RpcError("access-denied", str(exc),
                                              type="protocol")], 401,
                           {"WWW-Authenticate": 'Basic realm="escnc"'})
    bus = rc.ctx.services.events
    name = request.path_params["stream"]
    if name not in bus.streams:
        return rc.errors(request, [RpcError("invalid-value", f"no stream {name}")], 404)
    start = request.query_params.get("start-time")
    try:
        start_seq = bus.first_seq_at_or_after(start) if start else None
    except Exception:
        return rc.errors(request, [RpcError("invalid-value", "bad start-time")], 400)
    select = request.query_params.get("filter")
    content = None
    if select is not None:  # RFC 8040 4.8.4: prefixes are the module names
        prefixes = {m.name: m.namespace for m in rc.schema.modules()}
        try:
            content = xpath_filter(select, prefixes)
        except RpcError as exc:
            return rc.errors(request, [exc], 400)
    return event_stream(rc.ctx, user, name, start_seq, content=content)

async def streams_list(rc: Restconf, request: Request) -> Response:
    try:
        await rc._user(request)
    except Unauthorized as exc:
        return rc.errors(request, [RpcError("access-denied", str(exc),
                                              type="protocol")], 401,
                           {"WWW-Authenticate": 'Basic realm="escnc"'})
    bus = rc.ctx.services.events
    base = str(request.base_url).rstrip("/")
    streams = [{"name": s, "replay-support": True,
                "replay-log-creation-time": bus.log_creation_time,
                "access": [{"encoding": "xml",
                            "location": f"{base}/restconf/streams/{s}"}]}
               for s in sorted(bus.streams)]
    return Response(json.dumps({"ietf-restconf-monitoring:restconf-state": {
        "streams": {"stream": streams}}}), media_type=JSON)


def _merge(dst: etree._Element, src: etree._Element, node: Any) -> None:
    """Put ``src`` (a child of ``node``'s element) into ``dst``, sharing the path of
    elements an earlier edit already built (same tag and keys, no operation)."""
    sn = node.child(src.tag)
    keys = [f"{{{sn.ns}}}{k}" for k in sn.keys] if sn is not None else []

    def same(a: etree._Element) -> bool:
        return a.tag == src.tag and all(a.findtext(k) == src.findtext(k) for k in keys)

    match = next((c for c in dst if same(c)), None)
    if match is None or sn is None or _OP in match.attrib or _OP in src.attrib \
            or sn.kind in ("leaf", "leaf-list"):
        dst.append(src)
        return
    for child in list(src):
        if isinstance(child.tag, str) and child.tag not in keys:
            _merge(match, child, sn)


def _json_into(parent: etree._Element, ns: str, value: dict[str, Any]) -> None:
    for key, sub in value.items():
        local = key.rpartition(":")[2]
        items = sub if isinstance(sub, list) else [sub]
        for item in items:
            el = etree.SubElement(parent, qn(ns, local))
            if isinstance(item, dict):
                _json_into(el, ns, item)
            elif isinstance(item, bool):
                el.text = "true" if item else "false"
            elif item is not None:
                el.text = str(item)


