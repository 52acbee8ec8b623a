"""RFC 6241 subtree and XPath filtering of <data> trees, and notification matching.

Both filters return a new <data> element holding copies of the selected nodes,
so callers may release the datastore lock right after filtering.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

from lxml import etree

from escnc.errors import RpcError
from escnc.ns import NC

DATA = f"{{{NC}}}data"
KeyResolver = Callable[[etree._Element], list[str]]  # data element -> key child tags


def _no_keys(_: etree._Element) -> list[str]:
    return []


# ---------------------------------------------------------------- subtree


def apply_subtree_filter(
    data_el: etree._Element, filter_el: etree._Element, keys: KeyResolver = _no_keys
) -> etree._Element:
    """``filter_el`` is the <filter> element (its children are the filter)."""
    out = etree.Element(DATA, nsmap={None: NC})
    fchildren = [f for f in filter_el if isinstance(f.tag, str)]
    if not fchildren:
        return out  # an empty filter selects nothing (RFC 6241 6.4.2)
    for node in _select(data_el, fchildren, keys):
        out.append(node)
    return out


def _is_content_match(f: etree._Element) -> bool:
    return len(f) == 0 and bool((f.text or "").strip())


def _name_matches(f: etree._Element, d: etree._Element) -> bool:
    fq, dq = etree.QName(f), etree.QName(d)
    if fq.localname != dq.localname:
        return False
    return fq.namespace is None or fq.namespace == dq.namespace


def _attrs_match(f: etree._Element, d: etree._Element) -> bool:
    for name, value in f.attrib.items():
        if name.startswith(f"{{{NC}}}") or name.startswith("{http://www.w3.org/2000/xmlns/}"):
            continue
        if d.get(name) != value:
            return False
    return True


def _select(
    parent: etree._Element, fchildren: list[etree._Element], keys: KeyResolver
) -> list[etree._Element]:
    """Filter ``parent``'s children by the sibling filter nodes ``fchildren``."""
    cms = [f for f in fchildren if _is_content_match(f)]
    others = [f for f in fchildren if not _is_content_match(f)]
    children = [d for d in parent if isinstance(d.tag, str)]
    # content-match siblings: all must match for the parent to be selected
    for f in cms:
        want = (f.text or "").strip()
        if not any(
            _name_matches(f, d) and (d.text or "").strip() == want and _attrs_match(f, d)
            for d in children
        ):
            return []
    if not others:
        if cms:  # only content-match nodes: the whole parent is selected
            return [copy.deepcopy(d) for d in children]
        return []
    result: list[etree._Element] = []
    included: set[int] = set()
    for i, d in enumerate(children):
        if any(_name_matches(f, d) for f in cms):
            result.append(copy.deepcopy(d))
            included.add(i)
            continue
        for f in others:
            if not _name_matches(f, d) or not _attrs_match(f, d):
                continue
            fsub = [x for x in f if isinstance(x.tag, str)]
            if not fsub:  # selection node
                result.append(copy.deepcopy(d))
                included.add(i)
                break
            sub = _select(d, fsub, keys)
            if sub:
                new = etree.Element(d.tag, nsmap=d.nsmap)
                have = {etree.QName(s).localname for s in sub}
                for ktag in keys(d):
                    k = d.find(ktag)
                    if k is not None and etree.QName(k).localname not in have:
                        new.append(copy.deepcopy(k))
                for s in sub:
                    new.append(s)
                result.append(new)
                included.add(i)
                break
    return result


# ---------------------------------------------------------------- xpath


def apply_xpath_filter(
    data_el: etree._Element,
    xpath: str,
    nsmap: Mapping[str | None, str],
    keys: KeyResolver = _no_keys,
) -> etree._Element:
    """Select with an XPath 1.0 expression evaluated against each top-level tree."""
    ns = {k: v for k, v in nsmap.items() if k}
    try:
        compiled = etree.XPath(xpath, namespaces=ns)
    except etree.XPathSyntaxError as exc:
        raise RpcError(
            "invalid-value",
            f"invalid XPath {xpath!r}: {exc}",
            info={"bad-attribute": "select", "bad-element": "filter"},
        ) from exc
    out = etree.Element(DATA, nsmap={None: NC})
    for top in data_el:
        if not isinstance(top.tag, str):
            continue
        doc = copy.deepcopy(top)  # its own document: absolute paths start at the top node
        try:
            found = compiled(doc)
        except etree.XPathEvalError as exc:
            raise RpcError(
                "invalid-value",
                f"XPath {xpath!r} failed: {exc}",
                info={"bad-attribute": "select", "bad-element": "filter"},
            ) from exc
        if not isinstance(found, list):
            continue
        for node in found:
            target = node
            if not isinstance(target, etree._Element):
                target = getattr(node, "getparent", lambda: None)()
            if isinstance(target, etree._Element):
                _graft(out, target, keys)
    return out


def _graft(out: etree._Element, node: etree._Element, keys: KeyResolver) -> None:
    """Copy ``node`` (whole subtree) into ``out`` under copies of its ancestors."""
    chain = []
    anc = node.getparent()
    while anc is not None:
        chain.append(anc)
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
        len(keys(b)) == 0
        and len(a) > 0
        and a.find("*") is not None
        and b.find("*") is not None
        and etree.tostring(a) == etree.tostring(b)
    )


def _child_like(here: etree._Element, a: etree._Element, keys: KeyResolver) -> etree._Element:
    ks = keys(a)
    for ch in here.iterchildren(a.tag):
        if all(ch.findtext(k) == a.findtext(k) for k in ks):
            return ch
    new = etree.SubElement(here, a.tag, nsmap=a.nsmap)
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
    """Does a notification body pass a subscription filter?

    ``filt``: None (everything), a <filter> element (type subtree, or type xpath
    with a ``select`` attribute and its namespace declarations), or an XPath string.
    """
    if filt is None:
        return True
    if isinstance(filt, str):
        xpath, ns = filt, dict(nsmap or {})
    elif filt.get("type", "subtree") == "xpath":
        xpath, ns = filt.get("select") or "", dict(filt.nsmap)
    else:
        wrapper = etree.Element(DATA)
        wrapper.append(copy.deepcopy(body_el))
        return len(apply_subtree_filter(wrapper, filt)) > 0
    doc = copy.deepcopy(body_el)
    try:
        result = doc.xpath(xpath, namespaces={k: v for k, v in ns.items() if k})
    except etree.XPathError:
        return False
    return bool(result)
