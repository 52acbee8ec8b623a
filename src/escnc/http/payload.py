"""Request and response bodies: ESC's XML (verbatim) and JSON, by Content-Type/Accept."""

from __future__ import annotations

import json
from typing import Any

from lxml import etree
from starlette.requests import Request
from starlette.responses import Response

from escnc.errors import RpcError
from escnc.ns import ESC, NC
from escnc.rpc.errors import error_dict, error_headers, http_status
from escnc.xmlutil import parse_untrusted, to_json_value

XML = "application/xml"
JSON = "application/json"
_MAX_JSON_DEPTH = 32


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


async def read_body(request: Request, limit: int) -> bytes:
    """The body, at most ``limit`` bytes (413 beyond it, whatever Content-Length says)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BadRequest(f"request body over {limit} bytes", 413)
        except ValueError:
            raise BadRequest("bad Content-Length") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"request body over {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def is_json(content_type: str) -> bool:
    return "json" in content_type.split(";", 1)[0].lower()


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    if "json" in accept and "xml" not in accept.split("json", 1)[0]:
        return True
    if "xml" in accept:
        return False
    return is_json(request.headers.get("content-type", ""))


def _depth(value: Any, level: int = 0) -> None:
    if level > _MAX_JSON_DEPTH:
        raise BadRequest("JSON nested too deeply")
    if isinstance(value, dict):
        for v in value.values():
            _depth(v, level + 1)
    elif isinstance(value, list):
        for v in value:
            _depth(v, level + 1)


def _from_json(tag: str, value: Any, parent: etree._Element | None) -> etree._Element:
    el = etree.Element(tag) if parent is None else etree.SubElement(parent, tag)
    if isinstance(value, dict):
        for key, sub in value.items():
            if not isinstance(key, str) or not key or ":" in key or key[0].isdigit():
                raise BadRequest(f"bad JSON member name {key!r}")
            name = f"{{{ESC}}}{key}"
            if isinstance(sub, list):
                for item in sub:
                    _from_json(name, item, el)
            else:
                _from_json(name, sub, el)
    elif isinstance(value, bool):
        el.text = "true" if value else "false"
    elif value is not None:
        el.text = str(value)
    return el


def parse(body: bytes, content_type: str, root: str) -> etree._Element:
    """The body as an element in the ESC namespace (whatever namespace ESC's XML uses:
    its REST payloads say the NETCONF base one). JSON objects become elements named
    after their members; a JSON body's root is ``root`` (or its single member of that
    name)."""
    if not body.strip():
        return etree.Element(f"{{{ESC}}}{root}")
    if is_json(content_type):
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"malformed JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadRequest("the JSON body must be an object")
        _depth(data)
        if len(data) == 1 and root in data and isinstance(data[root], dict):
            data = data[root]
        return _from_json(f"{{{ESC}}}{root}", data, None)
    try:
        el = parse_untrusted(body.lstrip())
    except RpcError as exc:
        raise BadRequest(f"malformed XML: {exc.message}") from None
    return to_esc(el)


def to_esc(el: etree._Element) -> etree._Element:
    """A copy of ``el`` with every element in the ESC namespace."""
    out = etree.Element(f"{{{ESC}}}{etree.QName(el).localname}", nsmap={None: ESC})  # type: ignore[dict-item]
    _copy_into(el, out)
    return out


def _copy_into(src: etree._Element, dst: etree._Element) -> None:
    for name, value in src.attrib.items():
        q = etree.QName(name)
        if q.namespace is None:
            continue
        dst.set(name, value)
    dst.text = src.text if len(src) == 0 else None
    for child in src:
        if not isinstance(child.tag, str):
            continue
        sub = etree.SubElement(dst, f"{{{ESC}}}{etree.QName(child).localname}")
        _copy_into(child, sub)


def leaf(el: etree._Element, name: str) -> str:
    return (el.findtext(f"{{{ESC}}}{name}") or "").strip()


def in_namespace(el: etree._Element, namespace: str) -> etree._Element:
    """A copy of ``el`` (no attributes) with every element in ``namespace``."""
    out = etree.Element(f"{{{namespace}}}{etree.QName(el).localname}",
                        nsmap={None: namespace})  # type: ignore[dict-item]
    stack = [(el, out)]
    while stack:
        src, dst = stack.pop()
        dst.text = src.text if len([c for c in src if isinstance(c.tag, str)]) == 0 else None
        for child in src:
            if isinstance(child.tag, str):
                sub = etree.SubElement(dst, f"{{{namespace}}}{etree.QName(child).localname}")
                stack.append((child, sub))
    return out


def render(request: Request, el: etree._Element, status: int = 200,
           headers: dict[str, str] | None = None) -> Response:
    """``el`` as ESC's XML (NETCONF base namespace, as the guides show) or as JSON."""
    if wants_json(request):
        body = json.dumps({etree.QName(el).localname: to_json_value(el)}).encode()
        return Response(body, status, headers=headers, media_type=JSON)
    xml = etree.tostring(in_namespace(el, NC), encoding="UTF-8", xml_declaration=True,
                         standalone=True)
    return Response(xml, status, headers=headers, media_type=XML)


def error_response(request: Request, errors: list[RpcError] | str, status: int | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    """ESC's error body: ``<error><error_code/><error_message/></error>`` (+ the rpc-error
    fields, so a client sees the same precise reason as over NETCONF)."""
    if isinstance(errors, str):
        code = status or 400
        items: list[dict[str, object]] = [{"error-message": errors}]
        message = errors
    else:
        code = status or http_status(errors)
        headers = {**error_headers(errors), **(headers or {})}
        items = [error_dict(e) for e in errors]
        message = "; ".join(e.message for e in errors)
    if wants_json(request):
        body = json.dumps({"error": {"error_code": code, "error_message": message,
                                     "errors": items}}).encode()
        return Response(body, code, headers=headers, media_type=JSON)
    root = etree.Element(f"{{{NC}}}error", nsmap={None: NC})  # type: ignore[dict-item]
    etree.SubElement(root, f"{{{NC}}}error_code").text = str(code)
    etree.SubElement(root, f"{{{NC}}}error_message").text = message
    if not isinstance(errors, str):
        for e in errors:
            root.append(e.to_xml())
    xml = etree.tostring(root, encoding="UTF-8", xml_declaration=True)
    return Response(xml, code, headers=headers, media_type=XML)
