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
from dataclasses import dataclass
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
from escnc.datastore.xpath_names import NameIndex
from escnc.datastore.xpath_rewrite import BUDGET_NS, FilterBudget, rewrite
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
    group = _compile_group(filter_el)
    if group is None:
        return out  # an empty filter selects nothing (RFC 6241 6.4.2)
    nodes = [d for d in tops if isinstance(d.tag, str)]
    sel = _select(nodes, group, keys)
    if sel:
        for d in _ordered(nodes, sel):
            out.append(_emit(d, sel[d]))
    return out


def _filter_ns(f: etree._Element) -> str | None:
    """The namespace a filter node asks for; None matches every namespace (6.2.2).

    Filter elements written without xmlns inherit the NETCONF base namespace of
    the <rpc>; no data node lives there, so that also means "any namespace".
    """
    ns = etree.QName(f).namespace
    return None if ns in (None, "", NC) else ns


_TAGS: dict[str, tuple[str | None, str]] = {}


def _split(tag: str) -> tuple[str | None, str]:
    """Clark tag -> (namespace, local name), cached (a datastore has few distinct tags)."""
    got = _TAGS.get(tag)
    if got is None:
        if tag.startswith("{"):
            ns, _, local = tag[1:].partition("}")
            got = (ns, local)
        else:
            got = (None, tag)
        if len(_TAGS) < 4096:
            _TAGS[tag] = got
    return got


class _FNode:
    """One filter node, compiled: name, namespace, attribute matches, kind."""

    __slots__ = ("attrs", "group", "local", "ns", "prefilter", "tag", "text", "values")

    def __init__(self, f: etree._Element) -> None:
        self.local = etree.QName(f).localname
        self.ns = _filter_ns(f)
        self.tag = f"{{{self.ns}}}{self.local}" if self.ns is not None else None
        self.attrs = tuple(
            (name, value)
            for name, value in attr_items(f)
            if not name.startswith(f"{{{NC}}}") and not name.startswith(_XMLNS)
        )
        kids = [x for x in f if isinstance(x.tag, str)]
        text = (f.text or "").strip()
        # content-match node: a leaf with text; selection: empty; else containment
        self.text: str | None = text if not kids and text else None
        self.group = _FGroup([_FNode(x) for x in kids]) if kids else None
        self.prefilter, self.values = self._prefilter()

    def _prefilter(self) -> tuple[etree.XPath | None, dict[str, str]]:
        """For a list entry picked by content-match children (``<deployment><name>x``):
        an XPath that finds the candidate entries in C instead of a Python loop.

        It compares ``normalize-space()``, a superset of the exact (stripped) match
        that :meth:`content_ok` then checks, so it never loses an entry.
        """
        g = self.group
        if self.tag is None or g is None or not g.cms or any(c.tag is None for c in g.cms):
            return None, {}
        ns = {"x0": self.ns or ""}
        preds, values = [], {}
        for i, c in enumerate(g.cms, 1):
            ns[f"x{i}"] = c.ns or ""
            preds.append(f"[normalize-space(x{i}:{c.local}) = normalize-space($v{i})]")
            values[f"v{i}"] = c.text or ""
        try:
            return etree.XPath(f"x0:{self.local}{''.join(preds)}", namespaces=ns), values
        except etree.XPathSyntaxError:  # an odd local name: use the Python loop
            return None, {}

    def matches(self, d: etree._Element) -> bool:
        """Name, namespace and attribute match expressions (6.2.2, 6.2.3)."""
        ns, local = _split(d.tag)
        if local != self.local or (self.ns is not None and self.ns != ns):
            return False
        return all(d.get(name) == value for name, value in self.attrs)

    def content_ok(self, d: etree._Element) -> bool:
        return (d.text or "").strip() == self.text and self.matches(d)


class _FGroup:
    """Sibling filter nodes: content-match nodes and the others, indexed by name."""

    __slots__ = ("by_local", "by_tag", "cm_local", "cms", "others")

    def __init__(self, nodes: list[_FNode]) -> None:
        self.cms = [n for n in nodes if n.text is not None]
        self.others = [n for n in nodes if n.text is None]
        self.by_tag: dict[str, list[_FNode]] = {}  # namespace-qualified filter nodes
        self.by_local: dict[str, list[_FNode]] = {}  # namespace wildcards
        for n in self.others:
            if n.tag is not None:
                self.by_tag.setdefault(n.tag, []).append(n)
            else:
                self.by_local.setdefault(n.local, []).append(n)
        self.cm_local = {n.local for n in self.cms}

    def candidates(self, d: etree._Element) -> list[_FNode]:
        hit = self.by_tag.get(d.tag)
        if self.by_local:
            wild = self.by_local.get(_split(d.tag)[1])
            if wild:
                return wild if hit is None else hit + wild
        return hit or []


def _compile_group(filter_el: etree._Element) -> _FGroup | None:
    kids = [x for x in filter_el if isinstance(x.tag, str)]
    return _FGroup([_FNode(x) for x in kids]) if kids else None


Nodes = etree._Element | list[etree._Element]  # a parent's children, or a list


def _children(nodes: Nodes, tag: str | None = None) -> Iterable[etree._Element]:
    if isinstance(nodes, list):
        return nodes if tag is None else [d for d in nodes if d.tag == tag]
    if tag is not None:
        return nodes.iterchildren(tag)
    return (d for d in nodes if isinstance(d.tag, str))


_PREFILTER_MIN = 64  # children of a parent before candidates are found with XPath


class _KeyCache:
    """Positions of the entries of a few long lists by key, for filters that pick
    entries by key.

    Built with one pass over a parent's children and reused while the parent has
    as many children as then. A hit is used only after checking that the child at
    that position still has that key; a miss falls back to the XPath prefilter, so
    a stale map can cost time but never a wrong answer. Positions, not elements:
    the cache keeps no removed entry alive (lxml elements take no weak references)."""

    _MAX = 8

    def __init__(self) -> None:
        self._maps: dict[tuple[etree._Element, str, str], tuple[int, dict[str, int]]] = {}

    def lookup(
        self, parent: etree._Element, tag: str, key_tag: str, value: str, fresh: bool = False
    ) -> etree._Element | None:
        k = (parent, tag, key_tag)
        n = len(parent)
        got = None if fresh else self._maps.get(k)
        if got is None or got[0] != n:
            fresh = True
            for old in [o for o in self._maps if o[0].getparent() is None]:
                del self._maps[old]  # a removed container: let it go
            if len(self._maps) >= self._MAX:
                self._maps.clear()
            m: dict[str, int] = {}
            for i, ch in enumerate(parent):
                if ch.tag == tag:
                    m.setdefault((ch.findtext(key_tag) or "").strip(), i)
            got = self._maps[k] = (n, m)
        pos = got[1].get(value)
        if pos is None or pos >= n:
            # absent, or added after the map was made: only a fresh map can tell
            return None
        hit = parent[pos]  # a walk in C
        if hit.tag != tag or (hit.findtext(key_tag) or "").strip() != value:
            # entries moved while the count stayed: rebuild once, then trust the map
            return None if fresh else self.lookup(parent, tag, key_tag, value, fresh=True)
        return hit


_KEYS = _KeyCache()


def _by_key(parent: etree._Element, f: _FNode, keys: KeyResolver) -> list[etree._Element] | None:
    """The entry ``f`` picks by its one key from a long list (None: not that case)."""
    g = f.group
    if f.tag is None or g is None or len(g.cms) != 1 or g.cms[0].tag is None:
        return None
    first = next(parent.iterchildren(f.tag), None)
    if first is None or keys(first) != [g.cms[0].tag]:
        return None
    hit = _KEYS.lookup(parent, f.tag, g.cms[0].tag, g.cms[0].text or "")
    return None if hit is None else [hit]


def _candidates(
    parent: etree._Element, group: _FGroup, keys: KeyResolver = _no_keys
) -> Iterable[etree._Element]:
    """Children of a long list parent that ``group``'s filter nodes can select."""
    if group.cms or group.by_local or len(parent) < _PREFILTER_MIN:
        return _children(parent)
    found: dict[etree._Element, None] = {}
    for f in group.others:
        picked = _by_key(parent, f, keys) if f.prefilter is not None else None
        if picked is not None:
            found.update((h, None) for h in picked)
        elif f.prefilter is not None:
            hits = f.prefilter(parent, **f.values)
            if isinstance(hits, list):
                found.update((h, None) for h in hits if isinstance(h, etree._Element))
        else:
            assert f.tag is not None  # group.by_local is empty
            found.update((h, None) for h in parent.iterchildren(f.tag))
    return found


def _select(nodes: Nodes, group: _FGroup, keys: KeyResolver) -> Selection | None:
    """Which of the sibling data ``nodes`` the sibling filter nodes ``group`` select.

    ``nodes`` is a parent element (its children) or a list of nodes. Returns None
    when a content-match node fails (the parent is not selected), else a
    (possibly empty) selection map.
    """
    for f in group.cms:  # all sibling content-match nodes must be true (6.2.5)
        if not any(f.content_ok(d) for d in _children(nodes, f.tag)):
            return None
    sel: Selection = {}
    if not group.others:
        # only content-match nodes: every sibling is selected
        for d in _children(nodes):
            sel[d] = FULL
        return sel
    for d in _candidates(nodes, group, keys) if isinstance(nodes, etree._Element) else nodes:
        if (
            group.cm_local
            and _split(d.tag)[1] in group.cm_local
            and any(f.content_ok(d) for f in group.cms)
        ):
            sel[d] = FULL  # the matching content-match node itself is returned
            continue
        cands = group.candidates(d)
        if not cands:
            continue
        merged: Selection | _Full | None = None
        for f in cands:
            if not f.matches(d):
                continue
            if f.group is None:  # selection node: the whole subtree
                merged = FULL
                break
            sub = _select(d, f.group, keys)
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
    env: XPathEnv | None = None,
) -> etree._Element:
    """Select with an XPath 1.0 expression evaluated against each top-level tree."""
    return xpath_nodes([d for d in data_el if isinstance(d.tag, str)], xpath, nsmap, keys, env)


@dataclass
class XPathEnv:
    """What one request's XPath filter evaluations share.

    ``names``: resolve unprefixed names and undeclared prefixes against the served
    modules (and refuse names no module defines); None keeps plain XPath 1.0.
    ``budget``: the request's node/time limit; None: unlimited.
    """

    names: NameIndex | None = None
    budget: FilterBudget | None = None


def _compile(xpath: str, nsmap: NsMap) -> etree.XPath:
    try:
        return etree.XPath(xpath, namespaces=prefixes(nsmap))
    except etree.XPathSyntaxError as exc:
        raise RpcError(
            "invalid-value",
            f"invalid XPath {xpath!r}: {exc}",
            info={"bad-attribute": "select", "bad-element": "filter"},
        ) from exc


def _failed(xpath: str, exc: Exception) -> RpcError:
    return RpcError(
        "invalid-value",
        f"XPath {xpath!r} failed: {exc}",
        info={"bad-attribute": "select", "bad-element": "filter"},
    )


Evaluator = Callable[[etree._Element], object]


def compile_filter(xpath: str, nsmap: NsMap, env: XPathEnv | None = None) -> Evaluator:
    """The client's expression, checked, names resolved and budgeted per ``env``.

    Returns a function evaluating it with a given element as the document root.
    """
    _compile(xpath, nsmap)  # syntax errors -> invalid-value, in the client's own terms
    env = env or XPathEnv()
    budget = env.budget if env.budget is not None and env.budget.active else None
    rw = rewrite(xpath, prefixes(nsmap), env.names, budget is not None)
    expr, namespaces = rw.xpath, rw.namespaces
    extensions = {(BUDGET_NS, "budget"): budget.tick} if budget is not None else None
    try:
        etree.XPath(expr, namespaces=namespaces, extensions=extensions)
    except etree.XPathSyntaxError as exc:
        raise _failed(xpath, exc) from exc

    def evaluate(top: etree._Element) -> object:
        # an ElementTree over ``top`` evaluates with ``top`` as document root; lxml
        # builds a shallow fake root for that (XPathDocumentEvaluator), no copy
        tree = etree.ElementTree(top)
        return etree.XPathDocumentEvaluator(
            tree, namespaces=namespaces, extensions=extensions
        )(expr)

    try:
        # undefined prefixes and functions surface only when evaluated: evaluate once
        # on an empty document, so the error does not depend on the datastore's content
        evaluate(make_element(DATA))
    except etree.XPathEvalError as exc:
        raise _failed(xpath, exc) from exc
    return evaluate


def xpath_nodes(
    tops: Iterable[etree._Element],
    xpath: str,
    nsmap: NsMap,
    keys: KeyResolver = _no_keys,
    env: XPathEnv | None = None,
) -> etree._Element:
    """XPath-filter top-level data nodes (read only) into a new <data> element.

    Each top node is evaluated as the root of its own tree, so absolute paths
    start at it (``/esc:esc_datamodel/...``) without copying it out of its parent.
    With ``env.budget``, evaluation stops with operation-failed /
    filter-limit-exceeded when the budget runs out.
    """
    compiled = compile_filter(xpath, nsmap, env)
    budget = env.budget if env is not None else None
    out = make_element(DATA, nsmap={None: NC})
    grafter = _Grafter(out, keys)
    for top in tops:
        if not isinstance(top.tag, str):
            continue
        try:
            found = compiled(top)
        except etree.XPathEvalError as exc:
            raise _failed(xpath, exc) from exc
        if not isinstance(found, list):
            continue
        for node in found:
            target: object = node
            if not isinstance(target, etree._Element):
                getparent = getattr(node, "getparent", None)
                target = getparent() if getparent is not None else None
            if isinstance(target, etree._Element) and isinstance(target.tag, str):
                grafter.add(target, top)
        if budget is not None:
            budget.check_time()
    return out


class _Grafter:
    """Copies selected nodes into ``out`` under copies of their ancestors, each once.

    Linear in the selection: the copies are indexed by their source element, so a
    thousand selected list entries do not compare against each other. A node inside
    a subtree already copied whole is skipped; list entries on the way carry their
    key leaves (which then count as selected).
    """

    def __init__(self, out: etree._Element, keys: KeyResolver) -> None:
        self.out = out
        self.keys = keys
        self.copies: dict[etree._Element, etree._Element] = {}  # source -> copy
        self.full: set[etree._Element] = set()  # sources copied with their subtree

    def add(self, node: etree._Element, top: etree._Element) -> None:
        chain: list[etree._Element] = []  # ancestors of node, up to top
        anc: etree._Element | None = node
        while anc is not None:
            if anc in self.full:
                return
            if anc is top:
                break
            anc = anc.getparent()
            if anc is not None:
                chain.append(anc)
        here = self.out
        for a in reversed(chain):
            done = self.copies.get(a)
            here = done if done is not None else self._shell(here, a)
        new = copy.deepcopy(node)
        old = self.copies.get(node)
        if old is not None:  # was an ancestor of an earlier selection: now whole
            parent = old.getparent()
            if parent is not None:
                parent.replace(old, new)
        else:
            here.append(new)
        self.copies[node] = new
        self.full.add(node)

    def _shell(self, here: etree._Element, a: etree._Element) -> etree._Element:
        new = sub_element(here, a.tag, nsmap=a.nsmap)
        self.copies[a] = new
        for k in self.keys(a):
            kel = a.find(k)
            if kel is not None:
                kcopy = copy.deepcopy(kel)
                new.append(kcopy)
                self.copies[kel] = kcopy
                self.full.add(kel)
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
        group = _compile_group(filt)
        if group is None:
            return False
        return bool(_select([body_el], group, _no_keys))
    try:
        result = etree.ElementTree(body_el).xpath(xpath, namespaces=prefixes(ns))
    except etree.XPathError:
        return False
    return bool(result)
