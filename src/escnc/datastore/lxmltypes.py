"""Typed wrappers for the few lxml calls whose stubs (lxml-stubs) are too narrow.

lxml accepts ``None`` as the default-namespace prefix in ``nsmap`` and any
``_Attrib``/mapping as attributes, and ``xpath()`` returns a union the caller
must narrow. These helpers state the real types once, so the rest of the
datastore code stays typed without ``type: ignore``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from lxml import etree

NsMap = Mapping[str | None, str]


def _ns(nsmap: NsMap | None) -> Mapping[str, str] | None:
    # lxml-stubs declare Mapping[str, str]; lxml itself takes None for the default ns
    return cast("Mapping[str, str] | None", nsmap)


def make_element(
    tag: str, nsmap: NsMap | None = None, attrib: Mapping[str, str] | None = None
) -> etree._Element:
    """``etree.Element`` with a possibly default-namespace ``nsmap``."""
    return etree.Element(tag, dict(attrib) if attrib else None, nsmap=_ns(nsmap))


def sub_element(parent: etree._Element, tag: str, nsmap: NsMap | None = None) -> etree._Element:
    return etree.SubElement(parent, tag, nsmap=_ns(nsmap))


def shallow_copy(el: etree._Element) -> etree._Element:
    """A new element with ``el``'s tag, attributes, namespace map and text (no children)."""
    new = etree.Element(el.tag, _attrs(el), nsmap=_ns(el.nsmap))
    new.text = el.text
    return new


def _attrs(el: etree._Element) -> dict[str, str] | None:
    if not len(el.attrib):
        return None
    return {str(k): str(v) for k, v in el.attrib.items()}


def attr_items(el: etree._Element) -> list[tuple[str, str]]:
    """Attributes as ``str`` pairs (the stubs type keys/values as ``str | bytes``)."""
    return [(str(k), str(v)) for k, v in el.attrib.items()]


def drop_attr(el: etree._Element, name: str) -> None:
    if name in el.attrib:
        del el.attrib[name]


def xpath_elements(
    node: etree._Element, expr: str, namespaces: Mapping[str, str] | None = None
) -> list[etree._Element]:
    """Elements selected by ``expr`` (non-element results are ignored)."""
    found = node.xpath(expr, namespaces=dict(namespaces or {}))
    if not isinstance(found, list):
        return []
    return [n for n in found if isinstance(n, etree._Element)]


def xpath_texts(
    node: etree._Element, expr: str, namespaces: Mapping[str, str] | None = None
) -> list[str]:
    """String results of ``expr`` (text(), attribute and string nodes)."""
    found = node.xpath(expr, namespaces=dict(namespaces or {}))
    if not isinstance(found, list):
        return [] if isinstance(found, bool) else [str(found)]
    return [str(n) for n in found if isinstance(n, str)]


def prefixes(nsmap: NsMap) -> dict[str, str]:
    """An XPath ``namespaces`` argument: prefixed entries only."""
    return {k: v for k, v in nsmap.items() if k}
