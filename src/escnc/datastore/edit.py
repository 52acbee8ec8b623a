"""RFC 6241 edit-config semantics on lxml trees, with an undo journal.

The datastore edits its live tree in place (a deep copy of 10,000 deployments costs
~0.25 s) and records every mutation in a :class:`Journal` (journal.py), so a failed
or rejected edit is undone exactly. The journal also names the *units* (the datastore root,
each entry of a root list, each tenant, each deployment: unitkeys.py) that changed:
validation and persistence work on those only. The unit and journal names are
re-exported here for the modules that import them with the editor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lxml import etree

from escnc.datastore.journal import EntryIndex as EntryIndex
from escnc.datastore.journal import Journal as Journal
from escnc.datastore.journal import child_text
from escnc.datastore.journal import entry_key as entry_key
from escnc.datastore.lxmltypes import NsMap, drop_attr, make_element
from escnc.datastore.schema import Schema, SNode
from escnc.datastore.unitkeys import CONTAINER_TAGS as CONTAINER_TAGS
from escnc.datastore.unitkeys import DEPLOYMENT as DEPLOYMENT
from escnc.datastore.unitkeys import ENTRY_CONTAINER as ENTRY_CONTAINER
from escnc.datastore.unitkeys import ESC_ROOT as ESC_ROOT
from escnc.datastore.unitkeys import NAME as NAME
from escnc.datastore.unitkeys import ROOT_LISTS as ROOT_LISTS
from escnc.datastore.unitkeys import ROOT_UNIT as ROOT_UNIT
from escnc.datastore.unitkeys import TENANT as TENANT
from escnc.datastore.unitkeys import UnitKey as UnitKey
from escnc.datastore.unitkeys import root_entry_key as root_entry_key
from escnc.datastore.unitkeys import unit_key as unit_key
from escnc.datastore.unitkeys import units_within as units_within
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
        key: list[str] = []
        for name, tag in zip(sn.keys, sn.key_tags, strict=True):
            kel = next(e.iterchildren(tag), None)
            if kel is None:
                raise RpcError(
                    "missing-element",
                    f"list entry {sn.name!r} lacks key {name!r}",
                    path=path,
                    path_nsmap=self._nsmap(),
                    info={"bad-element": name},
                )
            key.append((kel.text or "").strip())
        return tuple(key)

    def _new_element(
        self, e: etree._Element, sn: SNode, parent: etree._Element | None = None
    ) -> etree._Element:
        # a top-level node declares its namespace as default (no ns0: prefixes)
        # (the parent's namespace read off its Clark tag: no QName object per entry)
        nsmap: NsMap | None = (
            {None: sn.ns}
            if parent is None or not str(parent.tag).startswith(sn.tag[: len(sn.ns) + 2])
            else None
        )
        if sn.kind == "anydata":
            return _clean_copy(e)
        # made in the parent's document: a free element gets a libxml2 document of
        # its own, which inserting it then moves over (most of a new entry's cost)
        el = (
            make_element(sn.tag, nsmap=nsmap)
            if parent is None
            else parent.makeelement(sn.tag, nsmap=_nsmap_arg(nsmap))
        )
        if sn.kind in ("leaf", "leaf-list"):
            el.text = _text(e)
            return el
        for ktag in sn.key_tags:  # keys first, as RFC 7950 7.8.5 asks
            kel = next(e.iterchildren(ktag), None)
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
        key_tags = sn.key_tags if sn.kind == "list" else ()
        children = sn.children
        seen: set[str] = set()  # leaves placed so far: a repeated one takes the full path
        for ch in e:
            tag = ch.tag
            if not isinstance(tag, str):
                continue
            if tag in key_tags:
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
            if not ch.attrib and tag not in seen:
                csn = children.get(tag)
                if csn is not None and csn.kind == "leaf" and csn.config and csn.ns == sn.ns:
                    # a plain leaf in a node this edit created: what _node would do
                    # (merge into nothing: a new leaf with the edit's text), without
                    # an undo step (undoing the node's insert drops it with the node)
                    etree.SubElement(new, tag).text = ch.text or ""
                    seen.add(tag)
                    continue
            seen.add(tag)
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
            for k, ktag in zip(sn.keys, sn.key_tags, strict=True):
                v = child_text(e, ktag)
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


def _nsmap_arg(nsmap: NsMap | None) -> Any:
    # lxml takes None as the default namespace's prefix; its stubs do not say so
    return nsmap


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
