"""RFC 5277 content filters for notifications: subtree (RFC 6241 6.2) and XPath.

A notification passes a filter when the filter selects anything from its content
(the body element, e.g. ``<escEvent>``, is the document root for XPath, so
``/esc:escEvent[esc:depname='d1']`` works). :func:`compile_filter` checks the
filter once, at create-subscription time, and returns a predicate on bodies.
Subtree matching is the datastore's (``escnc.datastore.filters``), so a filter
means the same in <get> and in a subscription; XPath is compiled once here.
"""

from __future__ import annotations

from collections.abc import Callable

from lxml import etree

from escnc.datastore.filters import notification_matches
from escnc.errors import RpcError
from escnc.ns import NC

BodyPredicate = Callable[[etree._Element], bool]


def compile_filter(filter_el: etree._Element | None) -> BodyPredicate | None:
    """``<filter>`` element of create-subscription -> predicate (None: no filter)."""
    if filter_el is None:
        return None
    kind = filter_el.get("type") or filter_el.get(f"{{{NC}}}type") or "subtree"
    if kind == "subtree":
        return lambda body: notification_matches(body, filter_el)
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
            # lxml finds an undefined prefix or function only when it evaluates
            xpath(etree.Element("probe"))
        except (etree.XPathSyntaxError, etree.XPathEvalError) as exc:
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
        return bool(xpath(body))  # node-set non-empty, or a true boolean/number/string
    except etree.XPathEvalError:
        return False
