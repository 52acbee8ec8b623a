"""Safe XML parsing and small helpers shared by every layer."""

from __future__ import annotations

from typing import Any

from lxml import etree

from escnc.errors import RpcError

# Untrusted input: no entities, no DTD loading, no network, bounded depth/size (huge_tree off).
_SAFE_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_blank_text=True,
    remove_comments=True,
    remove_pis=True,
)

MAX_DEPTH = 256


def parse_untrusted(data: bytes | str) -> etree._Element:
    """Parse one XML document from a client.

    Raises ``RpcError(malformed-message)`` for anything that is not a well-formed,
    entity-free document of reasonable depth.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        root = etree.fromstring(data, _SAFE_PARSER)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise RpcError("malformed-message", f"malformed XML: {exc}", type="rpc") from exc
    if root.getroottree().docinfo.internalDTD is not None or _has_entities(root):
        raise RpcError("malformed-message", "DTDs and entities are not accepted", type="rpc")
    if (_depth(root) if len(data) > _WALK_MAX else _walk_depth(root)) > MAX_DEPTH:
        raise RpcError("malformed-message", f"XML nested deeper than {MAX_DEPTH}", type="rpc")
    return root


def _walk_depth(root: etree._Element) -> int:
    deepest = 0
    stack = [(root, 1)]
    while stack:
        el, d = stack.pop()
        deepest = max(deepest, d)
        if d > MAX_DEPTH:
            return d
        stack.extend((child, d + 1) for child in el)
    return deepest


def _has_entities(root: etree._Element) -> bool:
    return any(isinstance(el, etree._Entity) for el in root.iter())


# an element MAX_DEPTH + 1 levels down, found by libxml2 (a Python walk over every
# element of a 10,000-entry edit cost ~0.1 s; on a small rpc the walk is cheaper)
_WALK_MAX = 16 * 1024
_TOO_DEEP = etree.XPath("boolean(/" + "/".join(["*"] * (MAX_DEPTH + 1)) + ")")


def _depth(root: etree._Element) -> int:
    """MAX_DEPTH + 1 when ``root`` nests deeper than MAX_DEPTH, else at most MAX_DEPTH."""
    return MAX_DEPTH + 1 if _TOO_DEEP(root) else MAX_DEPTH


def localname(el: etree._Element) -> str:
    return etree.QName(el).localname


def namespace(el: etree._Element) -> str | None:
    return etree.QName(el).namespace


def to_bytes(el: etree._Element, pretty: bool = False) -> bytes:
    return etree.tostring(el, encoding="utf-8", pretty_print=pretty)


def to_json_value(el: etree._Element) -> Any:
    """An element as a plain JSON value by local names: a leaf's text, or an object
    whose repeated names become lists (ESC's REST JSON and its callbacks)."""
    children = [c for c in el if isinstance(c.tag, str)]
    if not children:
        return el.text or ""
    out: dict[str, Any] = {}
    for c in children:
        name = etree.QName(c).localname
        value = to_json_value(c)
        if name in out:
            if not isinstance(out[name], list):
                out[name] = [out[name]]
            out[name].append(value)
        else:
            out[name] = value
    return out
