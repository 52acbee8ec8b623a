"""RFC 5277 content filters for notifications: subtree (RFC 6241 6.2) and XPath.

A notification passes a filter when the filter selects anything from its content
(the body element, e.g. ``<escEvent>``, is the document root for XPath, so
``/esc:escEvent[esc:depname='d1']`` works). :func:`compile_filter` checks the
filter once, at create-subscription time, and returns a predicate on bodies.
"""

from __future__ import annotations

from collections.abc import Callable

from lxml import etree

from escnc.errors import RpcError
from escnc.ns import NC

BodyPredicate = Callable[[etree._Element], bool]


def compile_filter(filter_el: etree._Element | None) -> BodyPredicate | None:
    """``<filter>`` element of create-subscription -> predicate (None: no filter)."""
    if filter_el is None:
        return None
    kind = filter_el.get("type") or filter_el.get(f"{{{NC}}}type") or "subtree"
    if kind == "subtree":
        children = [c for c in filter_el if isinstance(c.tag, str)]
        return lambda body: any(_subtree_match(body, f) for f in children)
    if kind == "xpath":
        select = filter_el.get("select") or filter_el.get(f"{{{NC}}}select")
        if not select:
            raise RpcError(
                "missing-attribute", "xpath filter without select", type="protocol",
                info={"bad-attribute": "select", "bad-element": "filter"},
            )
        nsmap = {p: u for p, u in filter_el.nsmap.items() if p}
        try:
            xpath = etree.XPath(select, namespaces=nsmap)
        except etree.XPathSyntaxError as exc:
            raise RpcError(
                "invalid-value", f"invalid XPath filter {select!r}: {exc}",
                info={"bad-element": "filter"},
            ) from exc
        return lambda body: _xpath_true(xpath, body)
    raise RpcError(
        "bad-attribute", f"unsupported filter type {kind!r}", type="protocol",
        info={"bad-attribute": "type", "bad-element": "filter"},
    )


def _xpath_true(xpath: etree.XPath, body: etree._Element) -> bool:
    try:
        result = xpath(body)
    except etree.XPathEvalError:
        return False
    if isinstance(result, list):
        return bool(result)
    return bool(result)


def _names_match(el: etree._Element, f: etree._Element) -> bool:
    fq, eq = etree.QName(f), etree.QName(el)
    # a filter node without a namespace matches any namespace (lenient, like ConfD)
    return fq.localname == eq.localname and (not fq.namespace or fq.namespace == eq.namespace)


def _text(el: etree._Element) -> str:
    return (el.text or "").strip()


def _is_content_match(f: etree._Element) -> bool:
    return not any(isinstance(c.tag, str) for c in f) and bool(_text(f))


def _subtree_match(el: etree._Element, f: etree._Element) -> bool:
    """Does filter node ``f`` select anything from ``el`` (RFC 6241 6.2 semantics)?"""
    if not _names_match(el, f):
        return False
    for name, value in f.attrib.items():
        if el.get(name) != value:
            return False
    children = [c for c in f if isinstance(c.tag, str)]
    if not children:
        # selection node, or a content match node at the top
        return not _text(f) or _text(el) == _text(f)
    el_children = [c for c in el if isinstance(c.tag, str)]
    content = [c for c in children if _is_content_match(c)]
    others = [c for c in children if not _is_content_match(c)]
    for c in content:
        if not any(_names_match(x, c) and _text(x) == _text(c) for x in el_children):
            return False
    if not others:
        return True
    return any(_subtree_match(x, c) for c in others for x in el_children)
