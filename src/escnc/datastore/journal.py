"""The undo journal of in-place edits, with a key index for long lists.

The datastore edits its live tree in place and records every mutation here, so a
failed or rejected edit is undone exactly; the journal also collects the units the
edit touched and the changes it made (for listeners)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from lxml import etree

from escnc.datastore.schema import SNode
from escnc.datastore.unitkeys import UnitKey, unit_key, units_within
from escnc.services import Change

_INDEX_MIN = 48  # lists shorter than this are scanned; longer ones get a key index


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
    ktag = sn.key_tags[0]
    return {((child_text(ch, ktag) or "").strip(),): ch for ch in parent.iterchildren(sn.tag)}


def child_text(el: etree._Element, tag: str) -> str | None:
    """``el.findtext(tag)`` for a plain child tag, without ElementPath (half the time:
    it runs for every key of every entry of a large edit)."""
    for ch in el.iterchildren(tag):
        return ch.text or ""
    return None


def entry_key(el: etree._Element, sn: SNode) -> tuple[str, ...]:
    tags = sn.key_tags
    if len(tags) == 1:  # the common case, on every entry of a large edit
        return ((child_text(el, tags[0]) or "").strip(),)
    return tuple((child_text(el, t) or "").strip() for t in tags)


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
