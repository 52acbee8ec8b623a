"""Positions in ordered-by-user lists for RESTCONF: the ``insert``/``point`` query
parameters (RFC 8040 4.8.5, 4.8.6) and YANG Patch ``where``/``point`` (RFC 8072), as the
``yang:insert``/``yang:key``/``yang:value`` attributes of the NETCONF edit (RFC 7950 7.8.6)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lxml import etree

from escnc.http.restconf_base import Seg, _bad

if TYPE_CHECKING:
    from escnc.http.restconf import Restconf

YANG_NS = "urn:ietf:params:xml:ns:yang:1"
INSERT = f"{{{YANG_NS}}}insert"
KEY_ATTR = f"{{{YANG_NS}}}key"
VALUE_ATTR = f"{{{YANG_NS}}}value"
WHERE = ("first", "last", "before", "after")
MAX_POINT = 4096


def check(insert: str | None, point: str | None, name: str = "insert") -> None:
    """Syntax only: a known position, and a point exactly for before/after."""
    if insert is None and point is None:
        return
    if insert is not None and insert not in WHERE:
        raise _bad(f"{name} must be first, last, before or after")
    if insert in ("before", "after") and not point:
        raise _bad(f"{name}={insert} needs a point")
    if point is not None and insert not in ("before", "after"):
        raise _bad(f"point is only allowed with {name}=before or after")
    if point is not None and len(point) > MAX_POINT:
        raise _bad("point: too long")


async def place(rc: Restconf, user: str, el: etree._Element, node: Any, parent: list[Seg],
                insert: str | None, point: str | None,
                point_base: list[Seg] | None = None) -> None:
    """Mark ``el`` (the edit's element of schema ``node``, below ``parent``) to go to
    ``insert`` relative to ``point`` (a data path, from ``point_base`` when given)."""
    check(insert, point)
    if insert is None:
        return
    if node.kind not in ("list", "leaf-list") or not node.user_ordered:
        raise _bad(f"{node.name} is not an ordered-by user list: no insert",
                   "invalid-value", 400)
    el.set(INSERT, insert)
    if point is None:
        return
    text = point  # key values in it stay percent-encoded: parse_path decodes them
    if text.startswith("/restconf/data"):
        text = text[len("/restconf/data"):]
    psegs = rc.parse_path(text, point_base)
    last = psegs[-1] if psegs else None
    same_parent = [(s.node.tag, s.keys) for s in psegs[:-1]] == \
        [(s.node.tag, s.keys) for s in parent]
    if last is None or last.node is not node or not same_parent:
        raise _bad("point must name an entry of the same list", "invalid-value", 400)
    if not await rc._exists(user, psegs):
        raise _bad("the point does not exist", "invalid-value", 400)
    if node.kind == "leaf-list":
        el.set(VALUE_ATTR, last.keys[0])
    else:
        el.set(KEY_ATTR, "".join(f"[{k}={_quote(v)}]"
                                 for k, v in zip(node.keys, last.keys, strict=True)))


def _quote(value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise _bad("point: a key value holding both quote characters")
