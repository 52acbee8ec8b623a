"""RFC 6241 edit-config semantics on lxml trees, with an undo journal.

The datastore edits its live tree in place (a deep copy of 10,000 deployments costs
~0.25 s) and records every mutation in a :class:`Journal`, so a failed or rejected
edit is undone exactly. The journal also names the *units* (the datastore root,
each entry of a root list, each tenant, each deployment) that changed: validation
and persistence work on those only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from lxml import etree

from escnc.datastore.lxmltypes import NsMap, drop_attr, make_element
from escnc.datastore.schema import Schema, SNode
from escnc.errors import RpcError
from escnc.ns import ESC, NC
from escnc.services import Change

OPERATION = f"{{{NC}}}operation"
YANG_NS = "urn:ietf:params:xml:ns:yang:1"
INSERT = f"{{{YANG_NS}}}insert"
KEY_ATTR = f"{{{YANG_NS}}}key"
VALUE_ATTR = f"{{{YANG_NS}}}value"
# RFC 6243 lets a client echo wd:default="true" from a report-all-tagged reply
WD_DEFAULT = "{urn:ietf:params:xml:ns:netconf:default:1.0}default"
# attributes edit-config content may carry; anything else is refused (unknown-attribute)
_KNOWN_ATTRIBUTES = frozenset({OPERATION, INSERT, KEY_ATTR, VALUE_ATTR, WD_DEFAULT})
OPERATIONS = ("merge", "replace", "create", "delete", "remove", "none")

TENANT = f"{{{ESC}}}tenant"
DEPLOYMENT = f"{{{ESC}}}deployment"
NAME = f"{{{ESC}}}name"

ESC_ROOT = f"{{{ESC}}}esc_datamodel"

UnitKey = tuple[str, ...]
ROOT_UNIT: UnitKey = ("r",)
# the lists directly below esc_datamodel (container local name -> entry tag); each
# entry is its own unit ("e", container, name), so a one-flavor edit of 10,000
# flavors serializes, stores and validates one flavor
ROOT_LISTS: dict[str, str] = {
    name: f"{{{ESC}}}{name[:-1]}" for name in ("vim_connectors", "images", "flavors", "networks")
}
CONTAINER_TAGS: dict[str, str] = {f"{{{ESC}}}{name}": name for name in ROOT_LISTS}
ENTRY_CONTAINER: dict[str, str] = {tag: f"{{{ESC}}}{name}" for name, tag in ROOT_LISTS.items()}
_INDEX_MIN = 48  # lists shorter than this are scanned; longer ones get a key index


def unit_key(el: etree._Element) -> UnitKey:
    """The persistence/validation unit an element belongs to."""
    dep = ten = None
    node: etree._Element | None = el
    while node is not None:
        tag = node.tag
        if tag == DEPLOYMENT and dep is None:
            dep = node
        elif tag == TENANT:
            ten = node
            break
        elif tag in ENTRY_CONTAINER:
            key = root_entry_key(node)
            if key is not None:
                return key
        node = node.getparent()
    if ten is None:
        return ROOT_UNIT
    tname = ten.findtext(NAME) or ""
    if dep is None:
        return ("t", tname)
    return ("d", tname, dep.findtext(NAME) or "")


def root_entry_key(el: etree._Element) -> UnitKey | None:
    """("e", container, name) when ``el`` is an entry of a root list, else None."""
    parent = el.getparent()
    if parent is None or parent.tag != ENTRY_CONTAINER.get(el.tag):
        return None
    top = parent.getparent()
    if top is None or top.tag != ESC_ROOT:
        return None
    return ("e", CONTAINER_TAGS[parent.tag], (el.findtext(NAME) or "").strip())


def _root_entries_within(el: etree._Element) -> list[UnitKey]:
    tag = el.tag
    if tag in ENTRY_CONTAINER:
        key = root_entry_key(el)
        return [] if key is None else [key]
    if tag in CONTAINER_TAGS:
        parent = el.getparent()
        if parent is None or parent.tag != ESC_ROOT:
            return []
        name = CONTAINER_TAGS[tag]
        entry = ROOT_LISTS[name]
        return [("e", name, (ch.findtext(NAME) or "").strip()) for ch in el.iterchildren(entry)]
    if tag == ESC_ROOT:
        return [k for ch in el.iterchildren(*CONTAINER_TAGS) for k in _root_entries_within(ch)]
    if tag == f"{{{NC}}}data":
        return [k for ch in el.iterchildren(ESC_ROOT) for k in _root_entries_within(ch)]
    return []


def units_within(el: etree._Element) -> list[UnitKey]:
    """Units wholly inside ``el`` (root list entries, tenants and deployments below
    it, or itself)."""
    out: list[UnitKey] = _root_entries_within(el)
    if el.tag in (TENANT, DEPLOYMENT):
        out.append(unit_key(el))
    for ten in el.iter(TENANT):
        if ten is not el:
            out.append(("t", ten.findtext(NAME) or ""))
    for dep in el.iter(DEPLOYMENT):
        if dep is not el:
            out.append(unit_key(dep))
    return out


class EntryIndex:
    """Key -> entry dictionaries for long lists, kept current by the journal."""

    def __init__(self) -> None:
        self._maps: dict[tuple[etree._Element, str], dict[tuple[str, ...], etree._Element]] = {}

    def clear(self) -> None:
        self._maps.clear()

    def lookup(
        self, parent: etree._Element, sn: SNode, key: tuple[str, ...]
    ) -> etree._Element | None:
        m = self._maps.get((parent, sn.tag))
        if m is None:
            if len(parent) < _INDEX_MIN:
                for ch in parent:
                    if ch.tag == sn.tag and entry_key(ch, sn) == key:
                        return ch
                return None
            m = _build_map(parent, sn)
            self._maps[(parent, sn.tag)] = m
        return m.get(key)

    def inserted(self, parent: etree._Element, child: etree._Element, sn: SNode | None) -> None:
        if sn is not None and sn.kind == "list":
            m = self._maps.get((parent, child.tag))
            if m is not None:
                m[entry_key(child, sn)] = child

    def removed(self, parent: etree._Element, child: etree._Element, sn: SNode | None) -> None:
        self._maps.pop((child, ""), None)
        if sn is not None and sn.kind == "list":
            m = self._maps.get((parent, child.tag))
            if m is not None:
                m.pop(entry_key(child, sn), None)
        # entries below a removed subtree keep stale maps keyed by detached parents:
        # they are harmless (never looked up again) but drop them to free memory
        if len(child):
            for key in [k for k in self._maps if k[0] is child]:
                del self._maps[key]


def _build_map(parent: etree._Element, sn: SNode) -> dict[tuple[str, ...], etree._Element]:
    if len(sn.keys) != 1:
        return {entry_key(ch, sn): ch for ch in parent.iterchildren(sn.tag)}
    ktag = f"{{{sn.ns}}}{sn.keys[0]}"
    return {((ch.findtext(ktag) or "").strip(),): ch for ch in parent.iterchildren(sn.tag)}


def entry_key(el: etree._Element, sn: SNode) -> tuple[str, ...]:
    return tuple((el.findtext(f"{{{sn.ns}}}{k}") or "").strip() for k in sn.keys)


# undo operations are partials of these (not closures over the journal: no reference
# cycle keeps a large edit's detached subtrees alive until the cyclic GC runs)
def _detach(
    index: EntryIndex, parent: etree._Element, child: etree._Element, sn: SNode | None
) -> None:
    tail = child.tail
    parent.remove(child)
    child.tail = tail
    index.removed(parent, child, sn)


def _attach(
    index: EntryIndex,
    parent: etree._Element,
    prev: etree._Element | None,
    child: etree._Element,
    sn: SNode | None,
) -> None:
    if prev is None:
        parent.insert(0, child)
    else:
        prev.addnext(child)  # O(1); prev keeps its tail, child its own
    index.inserted(parent, child, sn)


@dataclass
class Journal:
    """Undo log of in-place mutations plus the set of units they touched."""

    index: EntryIndex
    undo_ops: list[Callable[[], None]] = field(default_factory=list)
    # touched units in the order first touched (new units get their stored sequence
    # numbers in this order, so entries created by one edit keep their order on disk)
    units: dict[UnitKey, None] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)

    def insert(
        self, parent: etree._Element, pos: int | None, child: etree._Element, sn: SNode | None
    ) -> None:
        """Insert ``child`` at ``pos`` (None: append; lxml's insert and len walk the
        children, which made long lists quadratic)."""
        if pos is None:
            parent.append(child)
        else:
            parent.insert(pos, child)
        self.index.inserted(parent, child, sn)
        self.units[unit_key(parent)] = None
        self.units.update(dict.fromkeys(units_within(child)))
        self.undo_ops.append(partial(_detach, self.index, parent, child, sn))

    def append_leaf(self, parent: etree._Element, child: etree._Element) -> None:
        """Append a leaf to a node this edit created: its unit is already recorded
        (the node's insert named it) and a leaf holds no unit of its own."""
        parent.append(child)
        self.undo_ops.append(partial(_detach, self.index, parent, child, None))

    def remove(self, child: etree._Element, sn: SNode | None) -> None:
        parent = child.getparent()
        assert parent is not None
        # the previous sibling, not the index (O(n) in lxml): undo runs in reverse
        # order, so that sibling is where it was when this removal is undone
        prev = child.getprevious()
        self.units[unit_key(parent)] = None
        self.units.update(dict.fromkeys(units_within(child)))
        _detach(self.index, parent, child, sn)
        self.undo_ops.append(partial(_attach, self.index, parent, prev, child, sn))

    def set_text(self, el: etree._Element, text: str | None) -> None:
        old = el.text
        el.text = text
        self.units[unit_key(el)] = None
        self.undo_ops.append(lambda: setattr(el, "text", old))

    def undo(self) -> None:
        while self.undo_ops:
            self.undo_ops.pop()()
        self.units.clear()
        self.changes.clear()

    def mark(self) -> int:
        return len(self.undo_ops)

    def undo_to(self, mark: int) -> None:
        while len(self.undo_ops) > mark:
            self.undo_ops.pop()()


@dataclass
class EditOptions:
    default_operation: str = "merge"
    error_option: str = "stop-on-error"


class Editor:
    """Applies one <config> to a <data> tree in place, recording into a journal."""

    def __init__(self, schema: Schema, journal: Journal, options: EditOptions) -> None:
        self.schema = schema
        self.j = journal
        self.opts = options
        self.errors: list[RpcError] = []
        self._quiet = 0  # >0 while filling a created node: one change for the whole subtree

    def apply(self, data: etree._Element, config: etree._Element) -> None:
        default_op = self.opts.default_operation
        if default_op == "replace":
            wanted = {el.tag for el in config if isinstance(el.tag, str)}
            for old in list(data):
                if old.tag not in wanted:
                    self.j.remove(old, self.schema.root.child(old.tag))
                    self._change("delete", old)
        self._children(data, config, self.schema.root, default_op, "")
        # continue-on-error: the failed parts were undone, the rest stays applied;
        # the caller commits it and then reports self.errors

    # -- recursion ----------------------------------------------------------------

    def _children(
        self, data: etree._Element, edit: etree._Element, sparent: SNode, parent_op: str, path: str
    ) -> None:
        for e in edit:
            if not isinstance(e.tag, str):
                continue
            mark = self.j.mark()
            try:
                self._node(data, e, sparent, parent_op, path)
            except RpcError as err:
                if self.opts.error_option == "continue-on-error":
                    self.j.undo_to(mark)
                    self.errors.append(err)
                else:
                    raise

    def _node(
        self, data: etree._Element, e: etree._Element, sparent: SNode, parent_op: str, path: str
    ) -> None:
        sn = sparent.child(e.tag)
        qn = etree.QName(e)
        if sn is None:
            known_ns = qn.namespace in self.schema.prefixes
            raise RpcError(
                "unknown-element" if known_ns else "unknown-namespace",
                f"unknown element {qn.localname!r} in {path or '/'}",
                type="application" if known_ns else "protocol",
                path=path or "/",
                path_nsmap=self._nsmap(),
                info={"bad-element": qn.localname}
                | ({} if known_ns else {"bad-namespace": qn.namespace or ""}),
            )
        for attr in e.attrib:
            if attr not in _KNOWN_ATTRIBUTES:
                aq = etree.QName(attr)
                raise RpcError(
                    "unknown-attribute",
                    f"unknown attribute {aq.localname!r}"
                    + (f" in namespace {aq.namespace!r}" if aq.namespace else
                       " (not namespace-qualified: write nc:operation with the base:1.0 "
                       "namespace)")
                    + f" on {qn.localname!r}",
                    type="application",
                    path=path or "/",
                    path_nsmap=self._nsmap(),
                    info={"bad-attribute": aq.localname, "bad-element": qn.localname},
                )
        op = e.get(OPERATION, parent_op)
        if op not in OPERATIONS or (OPERATION in e.attrib and op == "none"):
            raise RpcError(
                "bad-attribute",
                f"invalid operation {op!r}",
                type="protocol",
                info={"bad-attribute": "operation", "bad-element": qn.localname},
            )
        if (
            parent_op in ("delete", "remove")
            and OPERATION in e.attrib
            and op not in ("delete", "remove")
        ):
            raise RpcError(
                "bad-attribute",
                f"operation {op!r} inside a {parent_op}",
                type="protocol",
                info={"bad-attribute": "operation", "bad-element": qn.localname},
            )
        if not sn.config:
            raise RpcError(
                "invalid-value",
                f"{qn.localname!r} is read-only (config false)",
                path=self._path(path, sn, e),
                path_nsmap=self._nsmap(),
                info={"bad-element": qn.localname},
            )
        my_path = self._path(path, sn, e)
        existing = self._find(data, e, sn, my_path)

        if op == "create":
            if existing is not None:
                raise RpcError(
                    "data-exists",
                    f"{my_path} already exists",
                    path=my_path,
                    path_nsmap=self._nsmap(),
                )
            self._create(data, e, sn, "merge", my_path)
            self._change("create", e, my_path)
        elif op in ("delete", "remove"):
            if existing is None:
                if op == "delete":
                    raise RpcError(
                        "data-missing",
                        f"{my_path} does not exist",
                        path=my_path,
                        path_nsmap=self._nsmap(),
                    )
                return
            if (
                sn.kind in ("leaf", "leaf-list", "list")
                or OPERATION in e.attrib
                or not any(isinstance(c.tag, str) for c in e)
            ):
                self.j.remove(existing, sn)
                self._change(op, e, my_path)
            else:
                self._children(existing, e, sn, op, my_path)
        elif op == "replace":
            if existing is not None:
                pos: int | None = data.index(existing)
                self.j.remove(existing, sn)
                if e.get(INSERT) is not None and sn.user_ordered:
                    pos = self._position(data, e, sn)  # a replace may move the entry
                new = self._new_element(e, sn, data)
                self.j.insert(data, pos, new, sn)
                self._fill(new, e, sn, my_path)
            else:
                self._create(data, e, sn, "replace", my_path)
            self._change("replace", e, my_path)
        elif op == "merge":
            if existing is None:
                self._create(data, e, sn, "merge", my_path)
                self._change("create" if OPERATION not in e.attrib else "merge", e, my_path)
            elif sn.kind == "leaf":
                new_text = _text(e)
                if (existing.text or "") != new_text:
                    self.j.set_text(existing, new_text)
                    self._change("merge", e, my_path)
            elif sn.kind == "leaf-list":
                self._reorder(data, existing, e, sn)
            elif sn.kind == "anydata":
                pos = data.index(existing)
                self.j.remove(existing, sn)
                self.j.insert(data, pos, _clean_copy(e), sn)
                self._change("merge", e, my_path)
            else:
                if sn.kind == "list":
                    self._reorder(data, existing, e, sn)
                self._children(existing, e, sn, "merge", my_path)
        else:  # none
            if sn.kind in ("leaf", "leaf-list", "anydata"):
                return
            if existing is None:
                raise RpcError(
                    "data-missing",
                    f"{my_path} does not exist (operation none)",
                    path=my_path,
                    path_nsmap=self._nsmap(),
                )
            self._children(existing, e, sn, "none", my_path)

    # -- helpers ------------------------------------------------------------------

    def _find(
        self, data: etree._Element, e: etree._Element, sn: SNode, path: str
    ) -> etree._Element | None:
        if sn.kind == "list":
            key = self._edit_key(e, sn, path)
            return self.j.index.lookup(data, sn, key)
        if sn.kind == "leaf-list":
            value = _text(e)
            for ch in data.iterchildren(sn.tag):
                if (ch.text or "") == value:
                    return ch
            return None
        return data.find(sn.tag)

    def _edit_key(self, e: etree._Element, sn: SNode, path: str) -> tuple[str, ...]:
        key = entry_key(e, sn)
        for name in sn.keys:
            if e.find(f"{{{sn.ns}}}{name}") is None:
                raise RpcError(
                    "missing-element",
                    f"list entry {sn.name!r} lacks key {name!r}",
                    path=path,
                    path_nsmap=self._nsmap(),
                    info={"bad-element": name},
                )
        return key

    def _new_element(
        self, e: etree._Element, sn: SNode, parent: etree._Element | None = None
    ) -> etree._Element:
        # a top-level node declares its namespace as default (no ns0: prefixes)
        nsmap: NsMap | None = (
            {None: sn.ns} if parent is None or etree.QName(parent).namespace != sn.ns else None
        )
        if sn.kind in ("leaf", "leaf-list"):
            el = make_element(sn.tag, nsmap=nsmap)
            el.text = _text(e)
            return el
        if sn.kind == "anydata":
            return _clean_copy(e)
        el = make_element(sn.tag, nsmap=nsmap)
        for k in sn.keys:  # keys first, as RFC 7950 7.8.5 asks
            kel = e.find(f"{{{sn.ns}}}{k}")
            if kel is not None:
                etree.SubElement(el, kel.tag).text = _text(kel)
        return el

    def _create(
        self, data: etree._Element, e: etree._Element, sn: SNode, op: str, path: str
    ) -> None:
        new = self._new_element(e, sn, data)
        if self._quiet and sn.kind == "leaf":  # inside a node this edit created
            self.j.append_leaf(data, new)
            return
        self.j.insert(data, self._position(data, e, sn), new, sn)
        self._fill(new, e, sn, path)

    def _fill(self, new: etree._Element, e: etree._Element, sn: SNode, path: str) -> None:
        """Populate a freshly created node from the edit (children may carry ops)."""
        if sn.kind not in ("container", "list"):
            return
        self._quiet += 1
        try:
            self._fill_children(new, e, sn, path)
        finally:
            self._quiet -= 1

    def _fill_children(self, new: etree._Element, e: etree._Element, sn: SNode, path: str) -> None:
        for ch in e:
            if not isinstance(ch.tag, str):
                continue
            if (
                sn.kind == "list"
                and etree.QName(ch).localname in sn.keys
                and ch.tag.startswith(f"{{{sn.ns}}}")
            ):
                if ch.get(OPERATION) in ("delete", "remove", "create", "replace"):
                    raise RpcError(
                        "bad-attribute",
                        "operation on a list key",
                        type="protocol",
                        info={
                            "bad-attribute": "operation",
                            "bad-element": etree.QName(ch).localname,
                        },
                    )
                continue
            op = ch.get(OPERATION, "merge")
            if op == "delete":
                raise RpcError(
                    "data-missing",
                    f"{self._path(path, sn.child(ch.tag) or sn, ch)} does not exist",
                    path=path,
                    path_nsmap=self._nsmap(),
                )
            if op == "remove":
                continue
            self._node(new, ch, sn, "merge", path)

    def _position(self, data: etree._Element, e: etree._Element, sn: SNode) -> int | None:
        """Where a new ``sn`` node goes in ``data`` (None: at the end)."""
        insert = e.get(INSERT)
        if insert is not None and sn.user_ordered:
            same = list(data.iterchildren(sn.tag))
            if insert == "first" and same:
                return data.index(same[0])
            if insert in ("before", "after"):
                target = self._insert_target(data, e, sn)
                return data.index(target) + (1 if insert == "after" else 0)
        # fast path: appending keeps schema order (the common case of long lists);
        # inside a freshly created node keep the client's order (read back as sent)
        if self._quiet:
            return None
        last = next(data.iterchildren(reversed=True), None)
        if last is None:
            return None
        order = _schema_order(sn.parent) if sn.parent else {}
        mine = order.get(sn.tag, 1 << 30)
        if order.get(last.tag, -1) <= mine:
            return None
        n = len(data)
        for i in range(n - 1, -1, -1):
            if order.get(data[i].tag, -1) <= mine:
                return i + 1
        return 0

    def _insert_target(self, data: etree._Element, e: etree._Element, sn: SNode) -> etree._Element:
        if sn.kind == "leaf-list":
            value = e.get(VALUE_ATTR)
            for ch in data.iterchildren(sn.tag):
                if ch.text == value:
                    return ch
        else:
            keyexpr = e.get(KEY_ATTR) or ""
            import re

            vals = dict(re.findall(r"\[(?:\w+:)?(\w+)\s*=\s*['\"]([^'\"]*)['\"]\]", keyexpr))
            key = tuple(vals.get(k, "") for k in sn.keys)
            found = self.j.index.lookup(data, sn, key)
            if found is not None:
                return found
        raise RpcError(
            "bad-attribute",
            "insert target does not exist",
            type="protocol",
            app_tag="missing-instance",
            info={"bad-attribute": "key" if sn.kind == "list" else "value", "bad-element": sn.name},
        )

    def _reorder(
        self, data: etree._Element, existing: etree._Element, e: etree._Element, sn: SNode
    ) -> None:
        if e.get(INSERT) is None or not sn.user_ordered:
            return
        self.j.remove(existing, sn)
        self.j.insert(data, self._position(data, e, sn), existing, sn)

    def _change(self, op: str, e: etree._Element, path: str | None = None) -> None:
        if self._quiet:
            return
        self.j.changes.append(Change(op, path or "/", self._nsmap()))

    def _nsmap(self) -> dict[str, str]:
        return {"esc": ESC}

    def _path(self, parent_path: str, sn: SNode, e: etree._Element) -> str:
        prefix = self.schema.prefixes.get(sn.ns, "x")
        step = f"{parent_path}/{prefix}:{sn.name}"
        if sn.kind == "list":
            for k in sn.keys:
                v = e.findtext(f"{{{sn.ns}}}{k}")
                if v is not None:
                    step += f"[{prefix}:{k}={_quote(v.strip())}]"
        elif sn.kind == "leaf-list":
            step += f"[.={_quote(_text(e))}]"
        return step


_ORDER_CACHE: dict[int, dict[str, int]] = {}


def _schema_order(sn: SNode) -> dict[str, int]:
    got = _ORDER_CACHE.get(id(sn))
    if got is None:
        got = {tag: i for i, tag in enumerate(sn.children)}
        _ORDER_CACHE[id(sn)] = got
    return got


def _text(e: etree._Element) -> str:
    return e.text or ""


def _quote(v: str) -> str:
    return f"'{v}'" if "'" not in v else f'"{v}"'


def _clean_copy(e: etree._Element) -> etree._Element:
    import copy

    c = copy.deepcopy(e)
    for el in c.iter():
        for attr in (OPERATION, INSERT, KEY_ATTR, VALUE_ATTR):
            drop_attr(el, attr)
    return c
