"""RESTCONF (RFC 8040) over the same YANG and the same operations as NETCONF.

``/restconf/data`` GET (content, depth, fields, with-defaults; ETag), POST (create a child),
PUT (create or replace), PATCH (plain merge; RFC 8072 YANG Patch), DELETE -- each the ``get``/
``get-config``/``edit-config`` a NETCONF client would send, run through escnc.rpc
(YANG validation, NACM). ``/restconf/operations`` lists and runs escnc's RPCs.
Bodies and answers in RFC 7951 JSON (``application/yang-data+json``, by yangson) or
XML (``application/yang-data+xml``); errors as ``ietf-restconf:errors``. Event
streams as Server-Sent Events at ``/restconf/streams/{stream}`` (replay with
``start-time``), listed in ``ietf-restconf-monitoring:restconf-state``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import urllib.parse
import xml.etree.ElementTree as ET
from email.utils import formatdate
from functools import partial
from typing import TYPE_CHECKING, Any

from lxml import etree
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from escnc.errors import RpcError
from escnc.http.auth import Unauthorized
from escnc.http.context import Timeout
from escnc.http.payload import BadRequest, read_body
from escnc.ns import NC, qn
from escnc.rpc.errors import error_dict, error_headers, http_status
from escnc.xmlutil import parse_untrusted

if TYPE_CHECKING:
    from escnc.http.context import HttpContext

from escnc.http import restconf_extra as extra
from escnc.http import restconf_insert as positions
from escnc.http.restconf_base import (
    JSON,
    RESTCONF_NS,
    XML,
    Seg,
    _bad,
    _Fail,
)

_OP = f"{{{NC}}}operation"


class Restconf:
    def __init__(self, ctx: HttpContext) -> None:
        self.ctx = ctx
        self.schema = ctx.services.schema
        self.module_by_ns = {m.namespace: m.name for m in self.schema.modules()}
        # Last-Modified of the configuration: the last commit to running seen (or the
        # start of this server)
        self.last_modified = formatdate(usegmt=True)
        add = getattr(ctx.services.datastore, "add_commit_listener", None)
        if add is not None:
            add(self._committed)

    def _committed(self, event: Any) -> None:
        if getattr(event, "datastore", "running") == "running":
            self.last_modified = formatdate(usegmt=True)

    # -- paths ------------------------------------------------------------------------

    def parse_path(self, path: str, start: list[Seg] | None = None) -> list[Seg]:
        """The schema nodes ``path`` names (below ``start``, for a YANG Patch target)."""
        segs: list[Seg] = list(start or [])
        node = segs[-1].node if segs else self.schema.root
        module = segs[-1].module if segs else ""
        for raw in [p for p in path.split("/") if p]:
            name, eq, keys = raw.partition("=")
            name = urllib.parse.unquote(name)
            mod, colon, local = name.rpartition(":")
            if colon:
                try:
                    ns = self.schema.namespace_of(mod)
                except KeyError:
                    raise _bad(f"unknown module {mod!r}", "unknown-element", 400) from None
                module = mod
            elif not segs:
                raise _bad(f"{name!r}: the first node must be module-qualified")
            else:
                ns, local = node.ns, name
            child = node.child(f"{{{ns}}}{local}")
            if child is None:
                raise _bad(f"no data node {name!r} here", "invalid-value", 404)
            values = [urllib.parse.unquote(k) for k in keys.split(",")] if eq else []
            if child.kind == "list":
                if len(values) != len(child.keys):
                    raise _bad(f"{local}: give the key{'s' if len(child.keys) > 1 else ''} "
                               f"{', '.join(child.keys)} as {local}=...", "missing-attribute")
            elif eq and child.kind != "leaf-list":
                raise _bad(f"{local} is not a list: no key values")
            segs.append(Seg(child, module, values))
            node = child
        return segs

    def chain(self, segs: list[Seg]) -> tuple[etree._Element | None, etree._Element | None]:
        """Elements from the top node down to the target (keys filled in)."""
        top: etree._Element | None = None
        parent: etree._Element | None = None
        for seg in segs:
            tag = seg.node.tag
            el = etree.Element(tag) if parent is None else etree.SubElement(parent, tag)
            if seg.node.kind == "leaf-list" and seg.keys:
                el.text = seg.keys[0]
            for key, value in zip(seg.node.keys, seg.keys, strict=True):
                etree.SubElement(el, f"{{{seg.node.ns}}}{key}").text = value
            top = el if top is None else top
            parent = el
        return top, parent

    @staticmethod
    def find(data: etree._Element, segs: list[Seg]) -> list[etree._Element]:
        found = [data]
        for seg in segs:
            nxt = []
            for el in found:
                for child in el.iterfind(seg.node.tag):
                    if all((child.findtext(f"{{{seg.node.ns}}}{k}") or "") == v
                           for k, v in zip(seg.node.keys, seg.keys, strict=True)):
                        nxt.append(child)
            found = nxt
        return found

    # -- rendering --------------------------------------------------------------------

    @staticmethod
    def wants_json(request: Request) -> bool:
        accept = request.headers.get("accept", "")
        if "json" in accept:
            return True
        if "xml" in accept:
            return False
        return "json" in request.headers.get("content-type", "")

    def errors(self, request: Request, errors: list[RpcError], status: int | None = None,
               headers: dict[str, str] | None = None) -> Response:
        code = status or http_status(errors)
        headers = {**error_headers(errors), **(headers or {})}
        if self.wants_json(request):
            body = json.dumps({"ietf-restconf:errors": {"error": [error_dict(e)
                                                                  for e in errors]}})
            return Response(body, code, headers=headers, media_type=JSON)
        root = etree.Element(qn(RESTCONF_NS, "errors"), nsmap={None: RESTCONF_NS})  # type: ignore[dict-item]
        for e in errors:
            err = etree.SubElement(root, qn(RESTCONF_NS, "error"))
            for name, value in error_dict(e).items():
                sub = etree.SubElement(err, qn(RESTCONF_NS, name))
                if isinstance(value, dict):
                    for k, v in value.items():
                        etree.SubElement(sub, qn(RESTCONF_NS, k)).text = str(v)
                else:
                    sub.text = str(value)
        return Response(etree.tostring(root, encoding="UTF-8", xml_declaration=True), code,
                        headers=headers, media_type=XML)

    def _qualified(self, seg: Seg, parent_module: str | None) -> str:
        name = seg.node.name
        return f"{seg.module}:{name}" if seg.module != parent_module else name

    def to_json(self, data: etree._Element, segs: list[Seg]) -> dict[str, Any]:
        try:
            raw = self.schema.dm.from_xml(data).raw_value()
        except Exception as exc:  # a state tree yangson cannot take
            raise _Fail([RpcError("operation-failed", f"cannot encode as JSON: {exc}")]) \
                from None
        if not segs:
            return {"ietf-restconf:data": raw}
        value: Any = raw
        parent_module: str | None = None
        for i, seg in enumerate(segs):
            member = self._qualified(seg, parent_module)
            value = value.get(member) if isinstance(value, dict) else None
            if value is None:
                raise _bad("no such data", "invalid-value", 404)
            if seg.node.kind == "list":
                value = [e for e in value if all(str(e.get(k)) == v for k, v in
                                                 zip(seg.node.keys, seg.keys, strict=True))]
                if not value:
                    raise _bad("no such data", "invalid-value", 404)
                if i < len(segs) - 1:
                    value = value[0]
            parent_module = seg.module
        return {f"{segs[-1].module}:{segs[-1].node.name}": value}

    def body_tree(self, request: Request, body: bytes, segs: list[Seg], child: bool
                  ) -> tuple[etree._Element, etree._Element]:
        """The request body as a config tree from the top node: (top, target)."""
        if not body.strip():
            raise _bad("a body is required", "missing-element")
        if "json" in request.headers.get("content-type", ""):
            try:
                data = json.loads(body)
            except ValueError as exc:
                raise _bad(f"malformed JSON: {exc}", "malformed-message") from None
            if not isinstance(data, dict) or len(data) != 1:
                raise _bad("the JSON body must be an object with one member")
            return self.tree_for(segs, child, json_value=next(iter(data.items())))
        try:
            el = parse_untrusted(body)
        except RpcError as exc:
            raise _Fail([exc], 400) from None
        return self.tree_for(segs, child, xml_value=el)

    def tree_for(self, segs: list[Seg], child: bool, *,
                 json_value: tuple[str, Any] | None = None,
                 xml_value: etree._Element | None = None,
                 ) -> tuple[etree._Element, etree._Element]:
        """A value placed at ``segs`` (``child``: under it) as a config tree from the
        top node: (top, the value's element)."""
        if json_value is not None:
            raw = self._wrap(segs, *json_value)
            try:
                tree = self.schema.dm.from_raw(raw).to_xml()
            except Exception as exc:
                raise _bad(f"body does not match the schema: {exc}") from None
            top = etree.fromstring(ET.tostring(tree))[0]
        else:
            assert xml_value is not None
            outer, parent = self.chain(segs if child else segs[:-1])
            if outer is None or parent is None:
                top = xml_value
            else:
                parent.append(xml_value)
                top = outer
        root = etree.Element("root")
        root.append(top)
        found = self.find(root, segs)
        if not found:
            raise _bad("the body is not the resource the URL names")
        base = found[0]
        if child:
            keys = {f"{{{segs[-1].node.ns}}}{k}" for k in segs[-1].node.keys} if segs else set()
            kids = [c for c in base if isinstance(c.tag, str) and c.tag not in keys]
            if len(kids) != 1:
                raise _bad("POST: the body must be one child resource")
            return top, kids[0]
        return top, base

    def _wrap(self, segs: list[Seg], member: str, value: Any) -> dict[str, Any]:
        """An RFC 7951 tree from the top holding the body ``member`` at its place."""
        mod, _, local = member.rpartition(":")
        inner: dict[str, Any] = {}
        target_module = mod or (segs[-1].module if segs else "")
        out: dict[str, Any] = inner
        cursor = out
        parent_module: str | None = None
        for seg in segs:
            name = self._qualified(seg, parent_module)
            entry: dict[str, Any] = dict(zip(seg.node.keys, seg.keys, strict=True))
            cursor[name] = [entry] if seg.node.kind == "list" else entry
            cursor = entry
            parent_module = seg.module
        key = local if parent_module == target_module else f"{target_module}:{local}"
        if not segs:
            key = f"{target_module}:{local}"
        if isinstance(value, list) and len(value) == 1 and segs and \
                segs[-1].node.name == local:
            # PUT/PATCH of a list entry: {"m:tenant": [{...}]} is the entry itself
            cursor.update(value[0])
            return out
        if segs and segs[-1].node.name == local and isinstance(value, dict):
            cursor.update(value)
            return out
        cursor[key] = value
        return out

    # -- handlers ---------------------------------------------------------------------

    async def _user(self, request: Request) -> str:
        return await self.ctx.auth.username(request)

    async def data(self, request: Request) -> Response:
        try:
            user = await self._user(request)
        except Unauthorized as exc:
            return self.errors(request, [RpcError("access-denied", str(exc),
                                                  type="protocol")], 401,
                               {"WWW-Authenticate": 'Basic realm="escnc"'})
        try:
            segs = self.parse_path(request.path_params.get("path", ""))
            if request.method == "GET" or request.method == "HEAD":
                return await self._get(request, user, segs)
            return await self._write(request, user, segs)
        except _Fail as f:
            return self.errors(request, f.errors, f.status)
        except BadRequest as exc:
            return self.errors(request, [RpcError("invalid-value", exc.message,
                                                  type="protocol")], exc.status)
        except Timeout:
            return self.errors(request, [RpcError("operation-failed", "timed out")], 503)

    async def _get(self, request: Request, user: str, segs: list[Seg]) -> Response:
        params = request.query_params
        content = params.get("content", "all")
        if content not in ("all", "config", "nonconfig"):
            raise _bad("content must be all, config or nonconfig")
        unknown = set(params) - {"content", "depth", "with-defaults", "fields"}
        if unknown:
            raise _bad(f"query parameter {sorted(unknown)[0]} is not supported",
                       "invalid-value")
        depth = params.get("depth", "unbounded")
        if depth != "unbounded" and not (depth.isdigit() and 1 <= int(depth) <= 65535):
            raise _bad("depth must be 1..65535 or unbounded")
        # A subtree without state data reads the same through get-config, which does not
        # build the state trees (opdata of every deployment) only to filter them away.
        config_only = content == "config" or (
            content == "all" and bool(segs) and not _has_state(segs[-1].node))
        op = etree.Element(qn(NC, "get-config" if config_only else "get"),
                           nsmap={None: NC})  # type: ignore[dict-item]
        if config_only:
            etree.SubElement(etree.SubElement(op, qn(NC, "source")), qn(NC, "running"))
        top, _ = self.chain(segs)
        if top is not None:
            flt = etree.SubElement(op, qn(NC, "filter"))
            flt.set("type", "subtree")
            flt.append(top)
        wd = params.get("with-defaults")
        if wd is not None:
            if wd not in ("report-all", "trim", "explicit", "report-all-tagged"):
                raise _bad("bad with-defaults value")
            wns = "urn:ietf:params:xml:ns:yang:ietf-netconf-with-defaults"
            etree.SubElement(op, qn(wns, "with-defaults"), nsmap={None: wns}).text = wd  # type: ignore[dict-item]
        done = await self.ctx.run(user, op)
        if done.errors:
            raise _Fail(done.errors)
        result = done.result
        items = [result] if isinstance(result, etree._Element) else list(result or [])
        data = items[0] if items else etree.Element(qn(NC, "data"))
        if content == "nonconfig":
            self._drop_config(data, self.schema.root)
        if depth != "unbounded":
            self._prune_depth(data, segs, int(depth))
        fields = params.get("fields")
        if fields is not None:
            selection = parse_fields(fields)
            for target in (self.find(data, segs) if segs else list(data)):
                _select(target, selection, segs[-1].node if segs else self.schema.root
                        .child(target.tag))
        if segs:
            found = self.find(data, segs)
            if not found:
                raise _bad("no such data", "invalid-value", 404)
        if self.wants_json(request):
            body = json.dumps(self.to_json(data, segs)).encode()
            media = JSON
        else:
            if segs:
                node = found[0]
            else:
                node = etree.Element(qn(RESTCONF_NS, "data"), nsmap={None: RESTCONF_NS})  # type: ignore[dict-item]
                for child in data:
                    node.append(copy.deepcopy(child))
            body = etree.tostring(node, encoding="UTF-8", xml_declaration=True)
            media = XML
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        headers = {"ETag": etag}
        if content == "config":
            headers["Last-Modified"] = self.last_modified
        return Response(body if request.method == "GET" else b"", 200, media_type=media,
                        headers=headers)

    def _drop_config(self, el: etree._Element, node: Any) -> bool:
        """Remove configuration leaves (keys stay); True when nothing is left."""
        keep = False
        keys = {f"{{{node.ns}}}{k}" for k in getattr(node, "keys", ())}
        for child in list(el):
            if not isinstance(child.tag, str):
                continue
            sn = node.child(child.tag)
            if sn is None or child.tag in keys:
                continue
            if sn.kind in ("leaf", "leaf-list"):
                if sn.config:
                    el.remove(child)
                else:
                    keep = True
            elif self._drop_config(child, sn):
                el.remove(child)
            else:
                keep = True
        return not keep

    def _prune_depth(self, data: etree._Element, segs: list[Seg], depth: int) -> None:
        for target in (self.find(data, segs) if segs else list(data)):
            stack = [(target, 1)]
            while stack:
                el, level = stack.pop()
                for child in list(el):
                    if level >= depth:
                        el.remove(child)
                    else:
                        stack.append((child, level + 1))

    async def _write(self, request: Request, user: str, segs: list[Seg]) -> Response:
        method = request.method
        if method == "PATCH" and "yang-patch" in request.headers.get("content-type", ""):
            return await extra.yang_patch(self, request, user, segs)
        if not segs and method != "POST":
            raise _bad(f"{method} of the whole datastore is not supported",
                       "operation-not-supported", 405)
        if method == "DELETE":
            top, target = self.chain(segs)
            if top is None or target is None:
                raise _bad("DELETE needs a data resource", "operation-not-supported", 405)
            target.set(_OP, "delete")
            created = False
        else:
            body = await read_body(request, self.ctx.services.settings.http_max_body)
            top, target = self.body_tree(request, body, segs, child=method == "POST")
            if method in ("POST", "PUT"):
                await self._place(request, user, segs, target)
            if method == "PUT":
                exists = await self._exists(user, segs)
                created = not exists
                target.set(_OP, "replace")
            elif method == "POST":
                target.set(_OP, "create")
                created = True
            else:
                target.set(_OP, "merge")
                created = False
        op = etree.Element(qn(NC, "edit-config"), nsmap={None: NC})  # type: ignore[dict-item]
        etree.SubElement(etree.SubElement(op, qn(NC, "target")), qn(NC, "running"))
        etree.SubElement(op, qn(NC, "config")).append(top)
        done = await self.ctx.run(user, op)
        if done.errors:
            raise _Fail(done.errors)
        if created:
            return Response(status_code=201, headers={"Location": str(request.url)})
        return Response(status_code=204)

    async def _place(self, request: Request, user: str, segs: list[Seg],
                     target: etree._Element) -> None:
        """RFC 8040 4.8.5/4.8.6: ``insert``/``point`` onto the edit's element."""
        params = request.query_params
        insert, point = params.get("insert"), params.get("point")
        if insert is None and point is None:
            return
        if request.method == "POST":
            node = (segs[-1].node if segs else self.schema.root).child(target.tag)
            parent = segs
        else:
            node, parent = segs[-1].node, segs[:-1]
        if node is None:
            raise _bad("no such data node", "invalid-value", 400)
        await positions.place(self, user, target, node, parent, insert, point)

    async def _exists(self, user: str, segs: list[Seg]) -> bool:
        if not segs:
            return True
        top, _ = self.chain(segs)
        op = etree.Element(qn(NC, "get-config"), nsmap={None: NC})  # type: ignore[dict-item]
        etree.SubElement(etree.SubElement(op, qn(NC, "source")), qn(NC, "running"))
        flt = etree.SubElement(op, qn(NC, "filter"))
        flt.set("type", "subtree")
        flt.append(top)  # type: ignore[arg-type]
        done = await self.ctx.run(user, op)
        if done.errors:
            raise _Fail(done.errors)
        data = done.result if isinstance(done.result, etree._Element) else None
        return data is not None and bool(self.find(data, segs))

    def routes(self) -> list[BaseRoute]:
        async def host_meta(_request: Request) -> Response:
            return Response('<XRD xmlns="http://docs.oasis-open.org/ns/xri/xrd-1.0">'
                            "<Link rel='restconf' href='/restconf'/></XRD>",
                            media_type="application/xrd+xml")

        async def root(request: Request) -> Response:
            return Response(json.dumps({"ietf-restconf:restconf": {
                "data": {}, "operations": {}, "yang-library-version": "2019-01-04"}}),
                media_type=JSON)

        async def version(_request: Request) -> Response:
            return Response(json.dumps({"ietf-restconf:yang-library-version": "2019-01-04"}),
                            media_type=JSON)

        methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        return [
            Route("/.well-known/host-meta", host_meta, methods=["GET"]),
            Route("/restconf", root, methods=["GET"]),
            Route("/restconf/yang-library-version", version, methods=["GET"]),
            Route("/restconf/data/ietf-restconf-monitoring:restconf-state/streams",
                  partial(extra.streams_list, self), methods=["GET"]),
            Route("/restconf/data", self.data, methods=methods),
            Route("/restconf/data/{path:path}", self.data, methods=methods),
            Route("/restconf/operations", partial(extra.operations, self), methods=["GET"]),
            Route("/restconf/operations/{name}", partial(extra.operations, self),
                  methods=["POST"]),
            Route("/restconf/streams/{stream}", partial(extra.stream, self), methods=["GET"]),
        ]


Fields = dict[str, "Fields | None"]


def parse_fields(text: str) -> Fields:
    """RFC 8040 4.8.3 ``fields``: ``a(b;c);d/e`` -> {"a": {"b": None, "c": None},
    "d": {"e": None}}; names may be module-qualified (the prefix is dropped)."""
    pos = 0

    def expr() -> Fields:
        nonlocal pos
        out: Fields = {}
        while True:
            path: list[str] = []
            while True:
                start = pos
                while pos < len(text) and text[pos] not in "/;()":
                    pos += 1
                name = text[start:pos].rpartition(":")[2]
                if not name:
                    raise _bad(f"fields: a node name is missing at {start}")
                path.append(name)
                if pos < len(text) and text[pos] == "/":
                    pos += 1
                    continue
                break
            sub: Fields | None = None
            if pos < len(text) and text[pos] == "(":
                pos += 1
                sub = expr()
                if pos >= len(text) or text[pos] != ")":
                    raise _bad("fields: unbalanced parentheses")
                pos += 1
            cursor = out
            for name in path[:-1]:
                nxt = cursor.get(name)
                if nxt is None:
                    nxt = cursor[name] = {}
                cursor = nxt
            cursor[path[-1]] = sub
            if pos < len(text) and text[pos] == ";":
                pos += 1
                continue
            return out

    if len(text) > 4096:
        raise _bad("fields: too long")
    result = expr()
    if pos != len(text):
        raise _bad(f"fields: unexpected {text[pos]!r} at {pos}")
    return result


def _select(el: etree._Element, selection: Fields, node: Any) -> None:
    """Keep of ``el`` the children ``selection`` names (list keys always)."""
    keys = {f"{{{node.ns}}}{k}" for k in getattr(node, "keys", ())} if node else set()
    for child in list(el):
        if not isinstance(child.tag, str) or child.tag in keys:
            continue
        name = etree.QName(child).localname
        if name not in selection:
            el.remove(child)
            continue
        sub = selection[name]
        if sub is not None:
            _select(child, sub, node.child(child.tag) if node else None)


def _has_state(node: Any) -> bool:
    """Whether the schema subtree of ``node`` holds any config false node."""
    if not node.config:
        return True
    return any(_has_state(child) for child in node.children.values())


def routes(ctx: HttpContext) -> list[BaseRoute]:
    return Restconf(ctx).routes()
