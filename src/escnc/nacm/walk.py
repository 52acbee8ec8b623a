"""Tree walks for NACM decisions: where a walk is and which rules may still match.

A :class:`Cursor` follows one access operation down a tree: the first rule matching
the node so far (a rule whose path is the node or an ancestor) and the positions in
the user's rule-path trie that may still match a descendant. When none is left
that could decide otherwise, and no default-deny extension or private entry is
below, the subtree is ``uniform`` and the walk stops descending.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lxml import etree

from escnc.nacm.paths import Step

if TYPE_CHECKING:
    from escnc.datastore.schema import SNode
    from escnc.nacm.engine import Nacm


@dataclass(frozen=True)
class CRule:
    idx: int
    steps: tuple[Step, ...]  # () matches every node of the rule's module
    module: str
    permit: bool


_NONE = 1 << 62  # "no rule": larger than every rule index


class TrieNode:
    """The rule paths of one user, access operation and module as a trie: a walk
    keeps the few trie nodes matching the current tree node instead of every rule."""

    __slots__ = ("actions_below", "ends", "keyed", "min_below", "multi", "plain")

    def __init__(self) -> None:
        self.ends: CRule | None = None  # the first rule whose path ends here
        self.plain: dict[str, TrieNode] = {}  # step without predicates, by tag
        # step with one key predicate: tag -> key leaf tag -> value -> node
        self.keyed: dict[str, dict[str, dict[str, TrieNode]]] = {}
        self.multi: list[tuple[Step, TrieNode]] = []  # several predicates
        self.min_below = _NONE  # lowest index of a rule ending strictly below
        self.actions_below: frozenset[bool] = frozenset()

    def insert(self, rule: CRule) -> None:
        node = self
        for step in rule.steps:
            node.min_below = min(node.min_below, rule.idx)
            node.actions_below = node.actions_below | {rule.permit}
            if not step.preds:
                nxt = node.plain.setdefault(step.tag, TrieNode())
            elif len(step.preds) == 1:
                key, value = step.preds[0]
                nxt = node.keyed.setdefault(step.tag, {}).setdefault(key, {}).setdefault(
                    value, TrieNode()
                )
            else:
                found = next((n for s, n in node.multi if s == step), None)
                if found is None:
                    found = TrieNode()
                    node.multi.append((step, found))
                nxt = found
            node = nxt
        if node.ends is None:
            node.ends = rule

    def step(self, el: etree._Element) -> list[TrieNode]:
        tag = el.tag
        out: list[TrieNode] = []
        plain = self.plain.get(tag)  # type: ignore[call-overload]
        if plain is not None:
            out.append(plain)
        keyed = self.keyed.get(tag)  # type: ignore[call-overload]
        if keyed:
            for key, by_value in keyed.items():
                hit = by_value.get((el.findtext(key) or "").strip())
                if hit is not None:
                    out.append(hit)
        for st, node in self.multi:
            if st.matches(el):
                out.append(node)
        return out


def build_trie(rules: tuple[CRule, ...], module: str) -> TrieNode:
    root = TrieNode()
    for r in rules:
        if r.module == "*" or r.module == module:
            root.insert(r)
    return root


class Cursor:
    """Where a tree walk is, for one access operation: the first rule matching the
    node so far and the trie nodes whose rules may still match below it."""

    __slots__ = ("active", "best", "el", "ext", "parent", "priv", "snode", "walk")

    def __init__(
        self,
        walk: Walk,
        el: etree._Element | None,
        parent: Cursor | None,
        snode: SNode | None,
        best: CRule | None,
        active: tuple[TrieNode, ...],
        ext: bool,
        priv: dict[str, object] | None,
    ) -> None:
        self.walk = walk
        self.el = el
        self.parent = parent
        self.snode = snode
        self.best = best
        self.active = active
        self.ext = ext
        self.priv = priv

    def child(self, el: etree._Element) -> Cursor:
        w = self.walk
        tag = el.tag
        if self.parent is None:  # a top-level node: its module picks the rules
            trie = w.trie(w.nacm.module_of(tag))
            best = trie.ends
            active: tuple[TrieNode, ...] = (trie,)
            snode = w.nacm.schema.root.child(tag) if isinstance(tag, str) else None
        else:
            best = self.best
            active = self.active
            snode = self.snode.child(tag) if self.snode is not None else None
        nxt: list[TrieNode] = []
        for node in active:
            for hit in node.step(el):
                if hit.ends is not None and (best is None or hit.ends.idx < best.idx):
                    best = hit.ends
                if hit.min_below != _NONE:
                    nxt.append(hit)
        if best is not None and nxt:
            nxt = [n for n in nxt if n.min_below < best.idx]
        ext = self.ext or (snode is not None and w.nacm.ext_kind(snode) in w.ext_kinds)
        priv: dict[str, object] | None = None
        if self.priv is not None:
            sub = self.priv.get(tag)  # type: ignore[call-overload]
            if callable(sub):
                if sub(el) != w.user:
                    ext = True
            elif isinstance(sub, dict):
                priv = sub
        return Cursor(w, el, self, snode, best, tuple(nxt), ext, priv)

    def allowed(self) -> bool:
        if self.best is not None:
            return self.best.permit
        if self.ext:
            return False
        return self.walk.default

    def uniform(self) -> bool:
        """Every descendant gets this node's decision (conservative: False when
        unsure)."""
        if self.priv is not None:
            return False
        decision = self.allowed()
        if (
            self.best is None
            and not self.ext
            and self.snode is not None
            and self.walk.nacm.ext_below(self.snode, self.walk.ext_kinds)
        ):
            return False
        return all(n.actions_below <= {decision} for n in self.active)

    def chain(self) -> list[Cursor]:
        out: list[Cursor] = []
        c: Cursor | None = self
        while c is not None and c.el is not None:
            out.append(c)
            c = c.parent
        out.reverse()
        return out


@dataclass
class Walk:
    nacm: Nacm
    user: str
    rules: tuple[CRule, ...]
    default: bool
    ext_kinds: frozenset[str]
    # (module) -> trie, shared by every walk of this user, operation and configuration
    tries: dict[str, TrieNode]

    def trie(self, module: str) -> TrieNode:
        t = self.tries.get(module)
        if t is None:
            t = self.tries[module] = build_trie(self.rules, module)
        return t

    def root(self, priv: dict[str, object] | None) -> Cursor:
        return Cursor(self, None, None, self.nacm.schema.root, None, (), False, priv)


READ_EXT = frozenset({"all"})
WRITE_EXT = frozenset({"all", "write"})


def settled(cur: dict[str, Cursor], old: etree._Element, new: etree._Element) -> bool:
    """Nothing below needs a look: one decision per access operation for the whole
    subtree, and either all permit or nothing changed (equal bytes, compared in C)."""
    if not all(c.uniform() for c in cur.values()):
        return False
    return all(c.allowed() for c in cur.values()) or etree.tostring(old) == etree.tostring(new)


def key_tags(sn: SNode | None) -> tuple[str, ...]:
    if sn is None or sn.kind != "list":
        return ()
    return tuple(f"{{{sn.ns}}}{k}" for k in sn.keys)


def by_identity(
    parent: etree._Element | None, sn: SNode | None
) -> dict[tuple[str, ...], etree._Element]:
    out: dict[tuple[str, ...], etree._Element] = {}
    if parent is None:
        return out
    seen: dict[str, int] = {}
    for ch in parent:
        if not isinstance(ch.tag, str):
            continue
        csn = sn.child(ch.tag) if sn is not None else None
        if csn is not None and csn.kind == "list":
            ident = (ch.tag, *((ch.findtext(k) or "").strip() for k in key_tags(csn)))
        elif csn is not None and csn.kind == "leaf-list":
            ident = (ch.tag, "=", (ch.text or "").strip())
        else:
            n = seen.get(ch.tag, 0)
            seen[ch.tag] = n + 1
            ident = (ch.tag, "#", str(n))
        out[ident] = ch
    return out


def remove(parent: etree._Element, child: etree._Element) -> None:
    tail = child.tail
    prev = child.getprevious()
    parent.remove(child)
    if tail and tail.strip():
        if prev is not None:
            prev.tail = (prev.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
