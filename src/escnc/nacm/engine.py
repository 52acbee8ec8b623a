"""The NACM engine (RFC 8341 section 3.4): protocol-neutral access decisions.

Every northbound (NETCONF today, an HTTP API tomorrow) asks the same object:

* :meth:`Nacm.check_exec` - protocol operations (3.4.4);
* :meth:`Nacm.prune` - read access, a pass over a reply tree (3.4.5);
* :meth:`Nacm.check_writes` - create/update/delete of every changed node (3.4.5);
* :meth:`Nacm.notification_allowed` - notifications (3.4.6).

The rules are compiled from running's ``/nacm`` once per change (:meth:`load`) and
per user once per configuration (:class:`View`); the tree walks stop descending
as soon as no rule can decide differently below a node, so a subtree that is
wholly readable (or wholly hidden) costs one step.

Assumption: below a top-level node every descendant is in the same module (true
for every module escnc serves: no cross-module augments), so ``module-name`` is
checked once per top-level node.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lxml import etree

from escnc.nacm.config import (
    NACM_NS,
    NACM_TAG,
    NacmConfig,
    Rule,
    compile_config,
    rules_for,
)
from escnc.nacm.extensions import Extensions, scan
from escnc.nacm.paths import BadPath, parse_path
from escnc.nacm.walk import (
    READ_EXT,
    WRITE_EXT,
    CRule,
    Cursor,
    TrieNode,
    Walk,
    by_identity,
    key_tags,
    remove,
    settled,
)
from escnc.ns import NC

if TYPE_CHECKING:
    from escnc.datastore.schema import Schema, SNode

log = logging.getLogger(__name__)

# RFC 8341 3.4.4 step 11: denied unless a rule permits them
DENY_ALL_OPERATIONS = frozenset({(NC, "kill-session"), (NC, "delete-config")})
_ALWAYS_NOTIFICATIONS = frozenset({"replayComplete", "notificationComplete"})
WRITE_OPS = ("create", "update", "delete")


@dataclass(frozen=True)
class Principal:
    """Who asks: the user name and the session (0 = the system itself)."""

    user: str
    session_id: int = 0


class AccessDenied(Exception):
    """Raised by :meth:`Nacm.check_exec` / :meth:`Nacm.check_writes`; the RPC layer
    turns it into an ``access-denied`` rpc-error."""

    def __init__(
        self, message: str, path: str, nsmap: dict[str, str], kind: str
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.nsmap = nsmap
        self.kind = kind  # "operation" | "data"


@dataclass
class View:
    """One user's rules under one configuration, ready for matching."""

    user: str
    groups: frozenset[str]
    config: NacmConfig
    exec_rules: list[Rule]
    notif_rules: list[Rule]
    data: dict[str, tuple[CRule, ...]]  # access operation -> data rules in order
    # reads: nothing is denied by a rule (the reply pass only enforces extensions
    # and the private entries)
    read_all: bool = False
    # access operation -> module -> rule-path trie (walk.py), built on first use
    tries: dict[str, dict[str, TrieNode]] = field(default_factory=dict)


@dataclass
class Counters:
    denied_operations: int = 0
    denied_data_writes: int = 0
    denied_notifications: int = 0


# A private list entry (e.g. another user's NETCONF session): its owner, from the entry
OwnerOf = Callable[[etree._Element], str]


@dataclass
class _Modules:
    by_ns: dict[str, str] = field(default_factory=dict)  # namespace -> module name
    names: dict[str, str] = field(default_factory=dict)  # module name or prefix -> namespace


class Nacm:
    def __init__(self, schema: Schema, recovery_user: str | None = "admin") -> None:
        self.schema = schema
        self.recovery_user = recovery_user or None
        self.modules = _Modules()
        for m in schema.modules():
            self.modules.by_ns[m.namespace] = m.name
            self.modules.names.setdefault(m.prefix, m.namespace)
        for m in schema.modules():
            self.modules.names[m.name] = m.namespace
        self.prefixes = dict(schema.prefixes)
        self.extensions: Extensions = scan(
            [(m.name, m.namespace, m.path) for m in schema.modules()]
        )
        self._ext: dict[int, str] = {}
        self._below: dict[int, set[str]] = {}
        self._index_extensions()
        self.config = NacmConfig()
        self._raw: bytes | None = None
        self._loaded = False
        self._views: dict[str, View] = {}
        self._lock = threading.Lock()
        self.counters = Counters()
        self._private: dict[str, object] = {}

    # ------------------------------------------------------------------ setup

    def _index_extensions(self) -> None:
        for path, kind in self.extensions.data.items():
            sn: SNode | None = self.schema.root
            chain: list[SNode] = []
            for tag in path:
                sn = sn.child(tag) if sn is not None else None
                if sn is None:
                    break
                chain.append(sn)
            if sn is None:
                continue
            self._ext[id(sn)] = kind
            for anc in [self.schema.root, *chain[:-1]]:
                self._below.setdefault(id(anc), set()).add(kind)

    def ext_kind(self, sn: SNode) -> str | None:
        return self._ext.get(id(sn))

    def ext_below(self, sn: SNode, kinds: frozenset[str]) -> bool:
        below = self._below.get(id(sn))
        return bool(below and below & kinds)

    def module_of(self, tag: object) -> str:
        if not isinstance(tag, str):
            return ""
        return self.modules.by_ns.get(etree.QName(tag).namespace or "", "")

    def add_private_entries(self, tags: Sequence[str], owner_of: OwnerOf) -> None:
        """Entries at ``tags`` (Clark names from the top) are readable only by their
        owner unless a rule permits them (as if marked default-deny-all)."""
        node = self._private
        for tag in tags[:-1]:
            nxt = node.setdefault(tag, {})
            assert isinstance(nxt, dict)
            node = nxt
        node[tags[-1]] = owner_of

    def load(self, running: etree._Element | None) -> None:
        """(Re)compile from a running ``<data>`` tree (or its ``<nacm>`` element)."""
        if running is None:
            nacm = None
        elif running.tag == NACM_TAG:
            nacm = running
        else:
            nacm = running.find(NACM_TAG)
        raw = None if nacm is None else etree.tostring(nacm)
        if self._loaded and raw == self._raw:
            return
        config = compile_config(nacm, self.modules.names)
        with self._lock:
            self.config = config
            self._raw = raw
            self._loaded = True
            self._views = {}

    def validate(self, running: etree._Element) -> None:
        """Raise BadRule for a rule path NACM cannot use (a datastore validator)."""
        nacm = running.find(NACM_TAG)
        if nacm is not None and etree.tostring(nacm) != self._raw:
            compile_config(nacm, self.modules.names)

    # ------------------------------------------------------------------ views

    def view(self, who: Principal) -> View | None:
        """The user's compiled rules; None when NACM does not apply (disabled, the
        recovery user, the system)."""
        config = self.config
        if not config.enable or who.session_id == 0 or who.user == self.recovery_user:
            return None
        v = self._views.get(who.user)
        if v is not None and v.config is config:
            return v
        groups = config.groups_of(who.user)
        rules = rules_for(config, groups) if groups else []
        data: dict[str, list[CRule]] = {op: [] for op in ("read", *WRITE_OPS)}
        for i, r in enumerate(rules):
            if r.kind not in ("", "data"):
                continue
            for op in data:
                if op in r.ops:
                    data[op].append(CRule(i, r.path or (), r.module, r.permit))
        v = View(
            user=who.user,
            groups=groups,
            config=config,
            exec_rules=[r for r in rules if "exec" in r.ops and r.kind in ("", "rpc")],
            notif_rules=[r for r in rules if "read" in r.ops and r.kind in ("", "notification")],
            data={op: tuple(rs) for op, rs in data.items()},
        )
        v.read_all = config.read_default and all(r.permit for r in v.data["read"])
        with self._lock:
            if self.config is config:
                self._views[who.user] = v
        return v

    def _walk(self, v: View, op: str) -> Walk:
        default = v.config.read_default if op == "read" else v.config.write_default
        kinds = READ_EXT if op == "read" else WRITE_EXT
        return Walk(self, v.user, v.data[op], default, kinds, v.tries.setdefault(op, {}))

    # ------------------------------------------------------------------ 3.4.4 operations

    def exec_allowed(self, v: View | None, namespace: str, name: str) -> bool:
        if v is None or (namespace == NC and name == "close-session"):
            return True
        module = self.modules.by_ns.get(namespace, "")
        for r in v.exec_rules:
            if r.module not in ("*", module):
                continue
            if r.kind == "rpc" and r.target not in ("*", name):
                continue
            return r.permit
        if (namespace, name) in self.extensions.rpcs or (namespace, name) in DENY_ALL_OPERATIONS:
            return False
        return v.config.exec_default

    def check_exec(self, who: Principal, namespace: str, name: str) -> None:
        if self.exec_allowed(self.view(who), namespace, name):
            return
        prefix = self.prefixes.get(namespace, "x")
        path = f"/nc:rpc/{prefix}:{name}"
        nsmap = {"nc": NC, prefix: namespace}
        self.denied("operation", who, name, path)
        raise AccessDenied(f"access denied: {name} is not permitted for user {who.user}",
                           path, nsmap, "operation")

    # ------------------------------------------------------------------ 3.4.5 reads

    def prune(self, who: Principal, data: etree._Element) -> None:
        """Remove from ``data`` (a ``<data>``-like holder of top-level nodes, modified
        in place) every node ``who`` may not read. A node that is not readable but
        holds readable descendants stays as their container (with its list keys)."""
        v = self.view(who)
        if v is None:
            return
        root = self._walk(v, "read").root(self._private)
        for ch in list(data):
            if isinstance(ch.tag, str) and not self._prune(root.child(ch), ch):
                remove(data, ch)

    def _prune(self, c: Cursor, el: etree._Element) -> bool:
        if c.uniform():
            return c.allowed()
        readable = c.allowed()
        keys = key_tags(c.snode)
        kept = False
        for ch in list(el):
            if not isinstance(ch.tag, str):
                continue
            if self._prune(c.child(ch), ch):
                if ch.tag not in keys:
                    kept = True
            elif readable or ch.tag not in keys:
                remove(el, ch)
        return readable or kept

    def readable(self, who: Principal, chain: Sequence[etree._Element]) -> bool:
        """May ``who`` read the node at the end of ``chain`` (top-level first; the
        elements need only their tag and key leaves)?"""
        v = self.view(who)
        if v is None:
            return True
        c = self._walk(v, "read").root(self._private)
        for el in chain:
            c = c.child(el)
        return c.allowed()

    def chain_of(self, path: str, nsmap: Mapping[str | None, str]) -> list[etree._Element] | None:
        """Elements (tag and key leaves) for an instance-identifier such as an RFC 6470
        edit target; None when it cannot be parsed."""
        try:
            steps = parse_path(path, nsmap, self.modules.names)
        except BadPath:
            return None
        chain = []
        for st in steps:
            el = etree.Element(st.tag)
            for key, value in st.preds:
                etree.SubElement(el, key).text = value
            chain.append(el)
        return chain

    def check_node(
        self, who: Principal, chain: Sequence[etree._Element], access: str, operation: str
    ) -> None:
        """Raise AccessDenied unless ``who`` has ``access`` (read, create, update,
        delete) to the node at the end of ``chain`` (e.g. the deployment a vmAction
        acts on)."""
        v = self.view(who)
        if v is None:
            return
        c = self._walk(v, access).root(self._private if access == "read" else None)
        for el in chain:
            c = c.child(el)
        if c.allowed():
            return
        path, nsmap = self.error_path(c)
        self.denied("data", who, operation, path, access)
        raise AccessDenied(
            f"access denied: {operation} needs {access} access to {path}, "
            f"not permitted for user {who.user}",
            path, nsmap, "data",
        )

    # ------------------------------------------------------------------ 3.4.5 writes

    def check_writes(
        self,
        who: Principal,
        pairs: Iterable[tuple[Sequence[etree._Element], etree._Element | None,
                              etree._Element | None]],
        operation: str,
    ) -> None:
        """Check create/update/delete for every node that differs between ``old`` and
        ``new`` of each pair. A pair is (ancestors top-level first, old, new); when
        old/new are ``<data>`` holders their children are compared. Raises
        :class:`AccessDenied` naming the first denied node."""
        v = self.view(who)
        if v is None:
            return
        walks = {op: self._walk(v, op) for op in WRITE_OPS}
        for anchors, old, new in pairs:
            cur = {op: w.root(None) for op, w in walks.items()}
            for el in anchors:
                cur = {op: c.child(el) for op, c in cur.items()}
            denied = self._diff_pair(cur, old, new)
            if denied is not None:
                c, op = denied
                path, nsmap = self.error_path(c)
                self.denied("data", who, operation, path, op)
                raise AccessDenied(
                    f"access denied: {op} of {path} is not permitted for user {who.user}",
                    path, nsmap, "data",
                )

    def _diff_pair(
        self, cur: dict[str, Cursor], old: etree._Element | None, new: etree._Element | None
    ) -> tuple[Cursor, str] | None:
        holder = (old if old is not None else new)
        if holder is not None and holder.tag == f"{{{NC}}}data":
            return self._diff_children(cur, old, new)
        if old is None and new is not None:
            return self._subtree(cur["create"].child(new), new, "create")
        if new is None and old is not None:
            return self._subtree(cur["delete"].child(old), old, "delete")
        if old is None or new is None:
            return None
        return self._diff({op: c.child(new) for op, c in cur.items()}, old, new)

    def _subtree(self, c: Cursor, el: etree._Element, op: str) -> tuple[Cursor, str] | None:
        if not c.allowed():
            return c, op
        if c.uniform():
            return None
        for ch in el:
            if isinstance(ch.tag, str):
                d = self._subtree(c.child(ch), ch, op)
                if d is not None:
                    return d
        return None

    def _diff(
        self, cur: dict[str, Cursor], old: etree._Element, new: etree._Element
    ) -> tuple[Cursor, str] | None:
        if settled(cur, old, new):
            return None
        sn = cur["update"].snode
        if (sn is not None and sn.kind in ("leaf", "anydata")) or (
            sn is None and len(old) == 0 and len(new) == 0
        ):
            changed = (old.text or "").strip() != (new.text or "").strip()
            if changed and not cur["update"].allowed():
                return cur["update"], "update"
            return None
        return self._diff_children(cur, old, new)

    def _diff_children(
        self, cur: dict[str, Cursor], old: etree._Element | None, new: etree._Element | None
    ) -> tuple[Cursor, str] | None:
        sn = cur["update"].snode
        a = by_identity(old, sn)
        b = by_identity(new, sn)
        for ident, el in a.items():
            if ident not in b:
                d = self._subtree(cur["delete"].child(el), el, "delete")
                if d is not None:
                    return d
        for ident, el in b.items():
            prev = a.get(ident)
            if prev is None:
                d = self._subtree(cur["create"].child(el), el, "create")
            else:
                d = self._diff({op: c.child(el) for op, c in cur.items()}, prev, el)
            if d is not None:
                return d
        return None

    def error_path(self, c: Cursor) -> tuple[str, dict[str, str]]:
        parts: list[str] = []
        nsmap: dict[str, str] = {}
        for step in c.chain():
            assert step.el is not None
            q = etree.QName(step.el)
            prefix = self.prefixes.get(q.namespace or "", "x")
            nsmap[prefix] = q.namespace or ""
            part = f"{prefix}:{q.localname}"
            for key in key_tags(step.snode):
                value = (step.el.findtext(key) or "").strip()
                part += f"[{prefix}:{etree.QName(key).localname}='{value}']"
            parts.append(part)
        return "/" + "/".join(parts), nsmap

    # ------------------------------------------------------------------ 3.4.6 notifications

    def notification_allowed(
        self,
        who: Principal,
        namespace: str,
        name: str,
        resources: Iterable[Sequence[etree._Element]] = (),
    ) -> bool:
        """May ``who`` receive this notification? ``resources``: data nodes the
        notification is about (an escEvent's deployment, the targets of a config
        change) that ``who`` must also be able to read. Counts a denial."""
        v = self.view(who)
        if v is None or name in _ALWAYS_NOTIFICATIONS:
            return True
        allowed = self._notification_rule(v, namespace, name)
        if allowed:
            allowed = all(self.readable(who, chain) for chain in resources)
        if not allowed:
            with self._lock:
                self.counters.denied_notifications += 1
        return allowed

    def _notification_rule(self, v: View, namespace: str, name: str) -> bool:
        module = self.modules.by_ns.get(namespace, "")
        for r in v.notif_rules:
            if r.module not in ("*", module):
                continue
            if r.kind == "notification" and r.target not in ("*", name):
                continue
            return r.permit
        if (namespace, name) in self.extensions.notifications:
            return False
        return v.config.read_default

    # ------------------------------------------------------------------ counters, log

    def denied(self, kind: str, who: Principal, operation: str, path: str, access: str = "exec"
               ) -> None:
        with self._lock:
            if kind == "operation":
                self.counters.denied_operations += 1
            else:
                self.counters.denied_data_writes += 1
        log.warning(
            "nacm: access denied: user %s session %d operation %s %s %s",
            who.user, who.session_id, operation, access, path,
        )

    def state(self) -> etree._Element:
        """``<nacm>`` with the three counters (config false) for <get>."""
        root = etree.Element(NACM_TAG, nsmap={None: NACM_NS})  # type: ignore[dict-item]
        with self._lock:
            c = Counters(**vars(self.counters))
        for name, value in (
            ("denied-operations", c.denied_operations),
            ("denied-data-writes", c.denied_data_writes),
            ("denied-notifications", c.denied_notifications),
        ):
            etree.SubElement(root, f"{{{NACM_NS}}}{name}").text = str(value)
        return root
