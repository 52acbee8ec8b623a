"""Which top-level lists validate entry by entry (incremental YANG validation).

The entries of the top-level lists (images, flavors, networks, VIM connectors)
are units of their own (units.py); validation.py gives yangson only the entries a
write touched or names, for the lists :func:`analyse` finds entry-local (the others
are validated whole). :func:`prune` does the same cut on a whole tree.

A top-level list is *entry-local* when nothing in the schema can make one entry's
validity depend on another entry of it: no min/max-elements or unique on the list,
no must/when/leafref inside an entry that leaves the entry (absolute path, ``..``
above the entry, deref), and nothing outside the list mentions it
except leafrefs to its key. For such lists yangson needs to see only

* the entries that differ from the last validated (running) root, and
* the entries whose key occurs as a value in the rest of the pruned tree (the
  targets of leafrefs from the deployments being validated),

and gives the same verdict as with the whole list. Removing an entry that an
untouched deployment still uses is caught by references.check_references, as
before. The analysis is conservative: anything it does not understand makes the
list non-prunable (validated whole, as before).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree
from yangson.datatype import DataType, LeafrefType, UnionType
from yangson.schemanode import (
    CaseNode,
    ChoiceNode,
    InternalNode,
    LeafListNode,
    LeafNode,
    ListNode,
    NotificationNode,
    RpcActionNode,
    SchemaNode,
)

from escnc.datastore.edit import TENANT

_ABSOLUTE = re.compile(r"(?:^|[\s(\[,=<>!|+*])/")

EntryKey = tuple[str, str]  # (list tag, key value)


@dataclass(frozen=True)
class PrunableList:
    steps: tuple[str, ...]  # Clark tags from <data> down to the list's parent container
    tag: str  # Clark tag of the entries
    key: str  # Clark tag of the (single) key leaf


def _ns_of(sn: SchemaNode, ns_by_module: dict[str, str]) -> str:
    return ns_by_module.get(sn.ns, sn.ns)


def _leafref_paths(t: DataType) -> list[str]:
    if isinstance(t, LeafrefType):
        return [str(t.path)]
    if isinstance(t, UnionType):
        return [p for m in t.types for p in _leafref_paths(m)]
    return []


def _expressions(sn: SchemaNode) -> list[tuple[str, bool]]:
    """(expression text, is a leafref path) of the constraints on one node."""
    out: list[tuple[str, bool]] = [(str(m.expression), False) for m in (sn.must or [])]
    when = getattr(sn, "when", None)
    if when is not None:
        out.append((str(when), False))
    if isinstance(sn, (LeafNode, LeafListNode)):
        out.extend((p, True) for p in _leafref_paths(sn.type))
    return out


def _walk(sn: InternalNode) -> list[SchemaNode]:
    out: list[SchemaNode] = []
    for ch in sn.children:
        if isinstance(ch, (RpcActionNode, NotificationNode)):
            continue
        out.append(ch)
        if isinstance(ch, InternalNode):
            out.extend(_walk(ch))
    return out


def _inside(node: SchemaNode, ancestor: SchemaNode) -> int | None:
    """Depth of ``node`` below ``ancestor`` (0: itself), or None if not inside."""
    depth = 0
    cur: SchemaNode | None = node
    while cur is not None:
        if cur is ancestor:
            return depth
        if not isinstance(cur, (ChoiceNode, CaseNode)):  # not XPath steps
            depth += 1
        cur = cur.parent
    return None


def analyse(root: InternalNode, ns_by_module: dict[str, str]) -> list[PrunableList]:
    """The entry-local top-level lists of a yangson schema (see the module doc)."""
    candidates: list[tuple[ListNode, tuple[str, ...]]] = []

    def find(sn: InternalNode, steps: tuple[str, ...]) -> None:
        for ch in sn.children:
            if isinstance(ch, (RpcActionNode, NotificationNode)) or not ch.config:
                continue
            tag = f"{{{_ns_of(ch, ns_by_module)}}}{ch.name}"
            if isinstance(ch, ListNode):
                candidates.append((ch, steps))
            elif isinstance(ch, InternalNode):
                if isinstance(ch, (ChoiceNode, CaseNode)):
                    find(ch, steps)
                else:
                    find(ch, (*steps, tag))

    find(root, ())
    exprs = [(n, text, ref) for n in _walk(root) for text, ref in _expressions(n)]
    out: list[PrunableList] = []
    for lst, steps in candidates:
        tag = f"{{{_ns_of(lst, ns_by_module)}}}{lst.name}"
        if tag == TENANT or len(lst.keys) != 1:
            continue
        if lst.min_elements or lst.max_elements is not None or lst.unique:
            continue
        key_name = lst.keys[0][0]
        name_re = re.compile(rf"(?<![\w.-]){re.escape(lst.name)}(?![\w.-])")
        ref_re = re.compile(
            rf"^/[\w.:/-]*?(?:[\w.-]+:)?{re.escape(lst.name)}/(?:[\w.-]+:)?{re.escape(key_name)}$"
        )
        ok = True
        for node, text, is_ref in exprs:
            depth = _inside(node, lst)
            if depth is not None:
                if _ABSOLUTE.search(text) or "deref" in text or text.count("..") > depth:
                    ok = False
            elif name_re.search(text) and not (
                is_ref and ref_re.match(text) and len(name_re.findall(text)) == 1
            ):
                ok = False
            if not ok:
                break
        if ok:
            key_tag = f"{{{_ns_of(lst, ns_by_module)}}}{key_name}"
            out.append(PrunableList(steps, tag, key_tag))
    return out


def _key(el: etree._Element, key_tag: str) -> str:
    return (el.findtext(key_tag) or "").strip()


def entries(data: etree._Element, lists: list[PrunableList]) -> dict[EntryKey, bytes] | None:
    """Serialized entries of the prunable lists in ``data`` (None: a duplicate key)."""
    out: dict[EntryKey, bytes] = {}
    for pl in lists:
        parent = _parent(data, pl)
        if parent is None:
            continue
        for el in parent.iterchildren(pl.tag):
            k = (pl.tag, _key(el, pl.key))
            if k in out:
                return None
            out[k] = etree.tostring(el)
    return out


def _parent(data: etree._Element, pl: PrunableList) -> etree._Element | None:
    node: etree._Element | None = data
    for step in pl.steps:
        assert node is not None
        node = node.find(step)
        if node is None:
            return None
    return node


class Pruned:
    """Entries taken out of a tree for validation; ``restore`` puts them back."""

    def __init__(self) -> None:
        self._parents: list[tuple[etree._Element, list[etree._Element]]] = []

    def restore(self) -> None:
        for parent, children in self._parents:
            parent[:] = children
        self._parents.clear()


def prune(data: etree._Element, lists: list[PrunableList], changed: set[EntryKey] | None) -> Pruned:
    """Remove the entries yangson does not need from ``data`` (a private tree).

    ``changed``: entries that differ from the validated root (None: all, no
    pruning). Kept as well: entries whose key occurs as a text value in the rest
    of the tree (or in another kept entry)."""
    pruned = Pruned()
    if changed is None or not lists:
        return pruned
    taken: list[tuple[PrunableList, list[etree._Element]]] = []
    for pl in lists:
        parent = _parent(data, pl)
        if parent is None:
            continue
        children = list(parent)
        pruned._parents.append((parent, children))
        parent[:] = [el for el in children if el.tag != pl.tag]
        taken.append((pl, [el for el in children if el.tag == pl.tag]))
    by_key: dict[str, list[etree._Element]] = {}
    keep: set[etree._Element] = set()
    pending: set[str] = {str(t).strip() for t in data.itertext()}
    for pl, out in taken:
        for el in out:
            k = _key(el, pl.key)
            if (pl.tag, k) in changed:
                keep.add(el)
                pending.update(str(t).strip() for t in el.itertext())
            else:
                by_key.setdefault(k, []).append(el)
    seen: set[str] = set()
    while pending:  # entries named by kept content, transitively
        t = pending.pop()
        if t in seen:
            continue
        seen.add(t)
        for el in by_key.pop(t, ()):
            keep.add(el)
            pending.update(str(u).strip() for u in el.itertext())
    dropped = {el for _, out in taken for el in out} - keep
    for parent, children in pruned._parents:
        parent[:] = [el for el in children if el not in dropped]
    return pruned
