"""RFC 6241 subtree and XPath filtering of <data> trees, and notification matching.

Both filters read the source tree without modifying it and return a new <data>
element holding copies of the selected nodes only, so a caller can filter the
live datastore under its read lock and release the lock right after.

Subtree filtering (RFC 6241 section 6) works in two passes: :func:`_select`
walks the data and the filter together and records *which* data nodes are
selected (a map keyed by the data elements, ``FULL`` for whole subtrees); then
:func:`_build` copies exactly those. Several filter nodes selecting the same
data node (multiple subtrees, section 6.4.7) merge in the map, so the output
has each node once, in data order. List entries reached through a containment
node always carry their key leaves (RFC 6241 6.2.5 / RFC 7950 7.8.5).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Union

from lxml import etree

from escnc.datastore.lxmltypes import (
    NsMap,
    attr_items,
    make_element,
    prefixes,
    shallow_copy,
    sub_element,
)
from escnc.errors import RpcError
from escnc.ns import NC

DATA = f"{{{NC}}}data"
_XMLNS = "{http://www.w3.org/2000/xmlns/}"
KeyResolver = Callable[[etree._Element], list[str]]  # data element -> key child tags


def _no_keys(_: etree._Element) -> list[str]:
    return []


class _Full:
    """Marker: the whole subtree of a data node is selected."""

    def __repr__(self) -> str:
        return "FULL"


FULL = _Full()
Selection = dict[etree._Element, Union[_Full, "Selection"]]


# ---------------------------------------------------------------- subtree


def apply_subtree_filter(
    data_el: etree._Element, filter_el: etree._Element, keys: KeyResolver = _no_keys
) -> etree._Element:
    """Filter the children of ``data_el`` with the <filter> element ``filter_el``."""
    return filter_nodes([d for d in data_el if isinstance(d.tag, str)], filter_el, keys)


def filter_nodes(
    tops: Iterable[etree._Element], filter_el: etree._Element, keys: KeyResolver = _no_keys
) -> etree._Element:
    """Subtree-filter a sequence of top-level data nodes into a new <data> element.

    The nodes need not share a parent (``get`` passes running's and each state
    provider's top-level nodes); they are only read.
    """
    out = make_element(DATA, nsmap={None: NC})
    fchildren = _felements(filter_el)
    if not fchildren:
        return out  # an empty filter selects nothing (RFC 6241 6.4.2)
    nodes = [d for d in tops if isinstance(d.tag, str)]
    sel = _select(nodes, fchildren, keys)
    if sel:
        for d in _ordered(nodes, sel):
            out.append(_emit(d, sel[d]))
    return out


def _felements(f: etree._Element) -> list[etree._Element]:
    return [x for x in f if isinstance(x.tag, str)]


def _is_content_match(f: etree._Element) -> bool:
    return len(f) == 0 and bool((f.text or "").strip())


def _filter_ns(f: etree._Element) -> str | None:
    """The namespace a filter node asks for; None matches every namespace (6.2.2).

    Filter elements written without xmlns inherit the NETCONF base namespace of
    the <rpc>; no data node lives there, so that also means "any namespace".
    """
    ns = etree.QName(f).namespace
    return None if ns in (None, "", NC) else ns


def _name_matches(f: etree._Element, d: etree._Element) -> bool:
    fq, dq = etree.QName(f), etree.QName(d)
    if fq.localname != dq.localname:
        return False
    ns = _filter_ns(f)
    return ns is None or ns == dq.namespace


def _attrs_match(f: etree._Element, d: etree._Element) -> bool:
    """Attribute match expressions (6.2.3): every filter attribute must be on ``d``."""
    for name, value in attr_items(f):
        if name.startswith(f"{{{NC}}}") or name.startswith(_XMLNS):
            continue
        if d.get(name) != value:
            return False
    return True


def _content_ok(f: etree._Element, nodes: list[etree._Element]) -> bool:
    want = (f.text or "").strip()
    ns = _filter_ns(f)
    if ns is not None:
        tag = f"{{{ns}}}{etree.QName(f).localname}"
        return any(
            (d.text or "").strip() == want and _attrs_match(f, d) for d in nodes if d.tag == tag
        )
    return any(
        _name_matches(f, d) and (d.text or "").strip() == want and _attrs_match(f, d) for d in nodes
    )


def _select(
    nodes: list[etree._Element], fchildren: list[etree._Element], keys: KeyResolver
) -> Selection | None:
    """Which of the sibling data ``nodes`` the sibling filter nodes select.

    Returns None when a content-match node fails (the parent is not selected),
    else a (possibly empty) selection map.
    """
    cms = [f for f in fchildren if _is_content_match(f)]
    others = [f for f in fchildren if not _is_content_match(f)]
    for f in cms:  # all sibling content-match nodes must be true (6.2.5)
        if not _content_ok(f, nodes):
            return None
    sel: Selection = {}
    if not others:
        if cms:  # only content-match nodes: every sibling is selected
            for d in nodes:
                sel[d] = FULL
        return sel
    by_name: dict[str, list[etree._Element]] = {}
    for f in others:
        by_name.setdefault(etree.QName(f).localname, []).append(f)
    cm_names = {etree.QName(f).localname for f in cms}
    for d in nodes:
        local = etree.QName(d).localname
        if local in cm_names and any(
            _name_matches(f, d) and (d.text or "").strip() == (f.text or "").strip() for f in cms
        ):
            sel[d] = FULL  # the matching content-match node itself is returned
            continue
        candidates = by_name.get(local)
        if not candidates:
            continue
        merged: Selection | _Full | None = None
        for f in candidates:
            if not _name_matches(f, d) or not _attrs_match(f, d):
                continue
            fsub = _felements(f)
            if not fsub:  # selection node: the whole subtree
                merged = FULL
                break
            sub = _select([x for x in d if isinstance(x.tag, str)], fsub, keys)
            if not sub:
                continue
            for ktag in keys(d):  # key leaves of a list entry are always returned
                k = d.find(ktag)
                if k is not None and k not in sub:
                    sub[k] = FULL
            merged = sub if merged is None else _merge(merged, sub)
        if merged is not None:
            sel[d] = merged
    return sel


def _merge(a: Selection | _Full, b: Selection | _Full) -> Selection | _Full:
    if isinstance(a, _Full) or isinstance(b, _Full):
        return FULL
    out: Selection = dict(a)
    for d, s in b.items():
        out[d] = s if d not in out else _merge(out[d], s)
    return out


def _ordered(nodes: list[etree._Element], sel: Selection) -> list[etree._Element]:
    if len(sel) <= 1:
        return list(sel)
    return [d for d in nodes if d in sel]


def _emit(d: etree._Element, s: Selection | _Full) -> etree._Element:
    if isinstance(s, _Full):
        return copy.deepcopy(d)
    new = shallow_copy(d)
    if len(s) == 1 or (len(s) <= 16 and len(s) * 4 < len(d)):
        # few selected children of a long list: order them without scanning it all
        kids = sorted(s, key=d.index) if len(s) > 1 else list(s)
    else:
        kids = [x for x in d if x in s]
    for k in kids:
        new.append(_emit(k, s[k]))
    return new


# ---------------------------------------------------------------- xpath


def apply_xpath_filter(
    data_el: etree._Element,
    xpath: str,
    nsmap: NsMap,
    keys: KeyResolver = _no_keys,
) -> etree._Element:
    """Select with an XPath 1.0 expression evaluated against each top-level tree."""
    return xpath_nodes([d for d in data_el if isinstance(d.tag, str)], xpath, nsmap, keys)


def _compile(xpath: str, nsmap: NsMap) -> etree.XPath:
    try:
        return etree.XPath(xpath, namespaces=prefixes(nsmap))
    except etree.XPathSyntaxError as exc:
        raise RpcError(
            "invalid-value",
            f"invalid XPath {xpath!r}: {exc}",
            info={"bad-attribute": "select", "bad-element": "filter"},
        ) from exc


def xpath_nodes(
    tops: Iterable[etree._Element],
    xpath: str,
    nsmap: NsMap,
    keys: KeyResolver = _no_keys,
) -> etree._Element:
    """XPath-filter top-level data nodes (read only) into a new <data> element.

    Each top node is evaluated as the root of its own tree, so absolute paths
    start at it (``/esc:esc_datamodel/...``) without copying it out of its parent.
    """
    _compile(xpath, nsmap)  # syntax errors -> invalid-value
    ns = prefixes(nsmap)
    out = make_element(DATA, nsmap={None: NC})
    for top in tops:
        if not isinstance(top.tag, str):
            continue
        try:
            # an ElementTree over ``top`` evaluates with ``top`` as document root;
            # lxml builds a shallow fake root for that, it does not copy the tree
            found = etree.XPathDocumentEvaluator(etree.ElementTree(top), namespaces=ns)(xpath)
        except etree.XPathEvalError as exc:
            raise RpcError(
                "invalid-value",
                f"XPath {xpath!r} failed: {exc}",
                info={"bad-attribute": "select", "bad-element": "filter"},
            ) from exc
        if not isinstance(found, list):
            continue
        for node in found:
            target: object = node
            if not isinstance(target, etree._Element):
                getparent = getattr(node, "getparent", None)
                target = getparent() if getparent is not None else None
            if isinstance(target, etree._Element) and isinstance(target.tag, str):
                _graft(out, target, top, keys)
    return out


def _graft(
    out: etree._Element, node: etree._Element, top: etree._Element, keys: KeyResolver
) -> None:
    """Copy ``node`` (whole subtree) into ``out`` under copies of its ancestors up to ``top``."""
    chain: list[etree._Element] = []
    if node is not top:
        anc = node.getparent()
        while anc is not None:
            chain.append(anc)
            if anc is top:
                break
            anc = anc.getparent()
    chain.reverse()
    here = out
    for a in chain:
        here = _child_like(here, a, keys)
    # avoid duplicates when several selected nodes overlap
    for existing in here:
        if existing.tag == node.tag and _same_entry(existing, node, keys):
            if (len(node) == 0 and existing.text == node.text) or len(existing) >= len(node):
                return
            here.remove(existing)
            break
    here.append(copy.deepcopy(node))


def _same_entry(a: etree._Element, b: etree._Element, keys: KeyResolver) -> bool:
    ks = keys(b)
    if ks:
        return all(a.findtext(k) == b.findtext(k) for k in ks)
    if len(b) == 0:
        return a.text == b.text
    return (
        len(a) > 0
        and a.find("*") is not None
        and b.find("*") is not None
        and etree.tostring(a) == etree.tostring(b)
    )


def _child_like(here: etree._Element, a: etree._Element, keys: KeyResolver) -> etree._Element:
    ks = keys(a)
    for ch in here.iterchildren(a.tag):
        if all(ch.findtext(k) == a.findtext(k) for k in ks):
            return ch
    new = sub_element(here, a.tag, nsmap=a.nsmap)
    for k in ks:
        kel = a.find(k)
        if kel is not None:
            new.append(copy.deepcopy(kel))
    return new


# ---------------------------------------------------------------- notifications


def notification_matches(
    body_el: etree._Element,
    filt: etree._Element | str | None,
    nsmap: Mapping[str | None, str] | None = None,
) -> bool:
    """Does a notification body pass a subscription filter (RFC 5277 3.6)?

    ``filt``: None (everything), a <filter> element (type subtree, or type xpath
    with a ``select`` attribute and its namespace declarations), or an XPath string.
    The body is only read.
    """
    if filt is None:
        return True
    if isinstance(filt, str):
        xpath, ns = filt, dict(nsmap or {})
    elif filt.get("type", "subtree") == "xpath":
        xpath, ns = filt.get("select") or "", dict(filt.nsmap)
    else:
        fchildren = _felements(filt)
        if not fchildren:
            return False
        return bool(_select([body_el], fchildren, _no_keys))
    try:
        result = etree.ElementTree(body_el).xpath(xpath, namespaces=prefixes(ns))
    except etree.XPathError:
        return False
    return bool(result)
