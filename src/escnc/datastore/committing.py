"""Turning changed units into a commit: authorization, persistence, history.

Commit listeners and engine validators receive *pruned* <data> trees: the root
shell plus every root list entry, tenant and deployment the commit touched;
untouched ones are omitted so the cost follows the size of the edit.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Collection

from lxml import etree

from escnc.datastore.edit import (
    ROOT_UNIT,
    EntryIndex,
    Journal,
    UnitKey,
)
from escnc.datastore.persistence import UnitRow, Write
from escnc.datastore.state import (
    _TRIM_UNITS,
    UnitChanges,
    _now,
    _write_failed,
    log,
    unit_path,
)
from escnc.datastore.units import (
    all_units,
    assemble,
    shell,
)
from escnc.datastore.validating import Validating
from escnc.errors import RpcError
from escnc.ns import ESC
from escnc.services import Change, CommitEvent


class Committing(Validating):
    def check_writable(self, name: str, session_id: int) -> None:
        held = self._locks.get(name)
        if held is not None and held[0] != session_id and session_id != 0:
            raise RpcError(
                "in-use",
                f"{name} is locked by session {held[0]}",
                type="protocol",
                info={"session-id": str(held[0])},
            )

    def _authorizes(self, session_id: int, username: str) -> bool:
        a = self._authorizer
        return a is not None and session_id != 0 and a.applies(session_id, username)

    def _authorize(
        self,
        session_id: int,
        username: str,
        operation: str,
        new: dict[UnitKey, bytes | None],
        old: dict[UnitKey, bytes] | Callable[[UnitKey], bytes | None],
        complete: bool = False,
    ) -> None:
        """Hand the changed units (old and new bytes) to the write authorizer; a
        vanished tenant brings its deployments as deletions. ``complete``: ``new``
        holds every unit of the new tree (units only in ``old`` are deleted)."""
        if not self._authorizes(session_id, username):
            return
        get = old.get if isinstance(old, dict) else old
        changes: UnitChanges = {}
        for k, raw in new.items():
            before = get(k)
            if before != raw:
                changes[k] = (before, raw)
        if isinstance(old, dict) and complete:
            for k, before in old.items():
                if k not in new:
                    changes[k] = (before, None)
        if isinstance(old, dict):
            for k, pair in list(changes.items()):
                if k[0] == "t" and pair[1] is None:
                    for dk, dv in old.items():
                        if dk[0] == "d" and dk[1] == k[1] and dk not in changes:
                            changes[dk] = (dv, new.get(dk))
        if changes:
            assert self._authorizer is not None
            self._authorizer.check(session_id, username, operation, changes)

    def _unit_bytes(self, tree: etree._Element) -> dict[UnitKey, bytes]:
        return {k: shell(el, k) for k, el in all_units(tree).items()}

    def _journal_bytes(
        self, tree: etree._Element, keys: Collection[UnitKey]
    ) -> dict[UnitKey, bytes | None]:
        found = self._find_units(tree, list(keys))
        return {k: None if (el := found[k]) is None else shell(el, k) for k in keys}

    def _notify_startup(self, operation: str, session_id: int, username: str) -> None:
        for cb in list(self._startup_listeners):
            try:
                cb(operation, session_id, username)
            except Exception:
                log.exception("startup listener failed")

    def _assemble_candidate(self, ov: dict[UnitKey, bytes | None]) -> etree._Element:
        """The candidate from running's stored units plus the overlay."""
        units = dict(self._units)
        for k, raw in ov.items():
            if raw is None:
                units.pop(k, None)
            else:
                units[k] = raw
        return assemble(units, sorted(units, key=lambda k: (self._seq.get(k, 1 << 60), k)))

    def history(self) -> list[tuple[int, str, str, int, int]]:
        with self._q:
            last = self._version
        self._wait_durable(last)
        return [(h.id, h.time, h.username, h.session_id, h.nchanges) for h in self._store.history()]

    def rollback(self, commit_id: int, session_id: int, username: str) -> None:
        with self._locked():
            self.check_writable("running", session_id)
            self._rollback_locked(commit_id, session_id, username)

    def _rollback_locked(self, commit_id: int, session_id: int, username: str) -> None:
        self._flush_locked()
        hist = self._store.history()
        if not any(h.id == commit_id for h in hist) and not (hist and commit_id > hist[0].id):
            raise RpcError(
                "invalid-value",
                f"commit {commit_id} is not in the rollback history",
                info={"bad-element": "id"},
            )
        units = dict(self._units)
        seq = dict(self._seq)
        for h in hist:  # newest first
            if h.id < commit_id:
                break
            for key, s, raw in h.undo:
                if raw is None:
                    units.pop(key, None)
                    seq.pop(key, None)
                else:
                    units[key] = raw
                    seq[key] = s
        order = sorted(units, key=lambda k: seq.get(k, 0))
        tree = assemble({k: units[k] for k in order})
        self._commit_tree(tree, session_id, username, seq_hint=seq, operation="rollback")

    def _commit_journal(
        self,
        journal: Journal,
        session_id: int,
        username: str,
        raws: dict[UnitKey, bytes | None] | None = None,
    ) -> None:
        """``raws``: the units' new bytes, when already serialized (write authorizer)."""
        changed: dict[UnitKey, bytes | None] = {}
        missing = [k for k in journal.units if raws is None or k not in raws]
        found = self._find_units(self._running, missing) if missing else {}
        for key in journal.units:
            if raws is not None and key in raws:
                raw = raws[key]
            else:
                el = found[key]
                raw = None if el is None else shell(el, key)
            if raw != self._units.get(key):
                changed[key] = raw
        if not changed:
            return
        self._finish(changed, journal.changes, session_id, username)

    def _commit_tree(
        self,
        data: etree._Element,
        session_id: int,
        username: str,
        keep_tree: bool = True,
        seq_hint: dict[UnitKey, int] | None = None,
        dirty: set[UnitKey] | None = None,
        elements: dict[UnitKey, etree._Element] | None = None,
        operation: str = "commit",
    ) -> int | None:
        """Make ``data`` the new running (used by commit, copy-config, rollback).

        ``dirty``: the only units that can differ from running (candidate
        tracking); None compares every unit.
        """
        changed: dict[UnitKey, bytes | None]
        if dirty is not None:
            changed = {}
            for k in dirty:
                el = self._find_unit(data, k)
                raw = None if el is None else shell(el, k)
                if raw != self._units.get(k):
                    changed[k] = raw
            new = [k for k, v in changed.items() if v is not None and k not in self._seq]
            if len(new) > 1:  # give units new to running their sequence in tree order
                order = {k: i for i, k in enumerate(all_units(data))}
                changed = dict(
                    sorted(changed.items(), key=lambda kv: order.get(kv[0], len(order)))
                )
        else:
            if elements is None:
                elements = all_units(data)
            new_units = {k: shell(el, k) for k, el in elements.items()}
            changed = {k: v for k, v in new_units.items() if self._units.get(k) != v}
            for k in self._units:
                if k not in new_units:
                    changed[k] = None
        if not changed:
            return None
        self._authorize(session_id, username, operation, changed, self._units)
        self._validate_units(data, set(changed), self._units, elements)
        new_tree = data if not keep_tree else copy.deepcopy(data)
        changes = [
            Change(
                "create" if k not in self._units else "delete" if v is None else "replace",
                unit_path(k),
                {"esc": ESC},
            )
            for k, v in changed.items()
        ]
        old_tree, old_index = self._running, self._index
        self._running = new_tree
        if new_tree is self._candidate:  # the candidate's key index stays valid
            self._index, self._candidate_index = self._candidate_index, EntryIndex()
        else:
            self._index = EntryIndex()
        try:
            return self._finish(changed, changes, session_id, username, seq_hint=seq_hint)
        except BaseException:
            self._running, self._index = old_tree, old_index
            self._index.clear()
            raise

    def _finish(
        self,
        changed: dict[UnitKey, bytes | None],
        changes: list[Change],
        session_id: int,
        username: str,
        seq_hint: dict[UnitKey, int] | None = None,
    ) -> int | None:
        """Persist ``changed`` units durably, update caches, notify listeners."""
        upserts: list[UnitRow] = []
        deletes: list[UnitKey] = []
        undo: list[tuple[UnitKey, int, bytes | None]] = []
        new_seq: dict[UnitKey, int] = {}
        for key, raw in changed.items():
            undo.append((key, self._seq.get(key, 0), self._units.get(key)))
            if raw is None:
                deletes.append(key)
                continue
            seq = self._seq.get(key)
            if seq_hint is not None and key in seq_hint:
                seq = seq_hint[key]
            if seq is None:
                seq = self._next_seq
                self._next_seq += 1
            new_seq[key] = seq
            upserts.append(UnitRow(key, seq, raw))
        if self._broken is not None:
            raise _write_failed(self._broken)
        if len(changed) >= _TRIM_UNITS:  # a large commit: give the freed heap back after it
            self._tls.trim = True
        if self._cand_dirty is not None:  # running moved under an open candidate
            self._cand_dirty.update(changed)
        if self._overlay is not None:  # keep the candidate as it was
            if all(k[0] == "d" for k in changed):
                for k in changed:
                    self._overlay.setdefault(k, self._units.get(k))
            else:
                self._candidate = self._assemble_candidate(self._overlay)
                self._candidate_index.clear()
                self._cand_dirty = set(self._overlay) | set(changed)
                self._overlay = None
        hid = self._next_hid
        self._next_hid += 1
        write = Write(
            "running",
            upserts,
            deletes,
            history=(_now(), username, session_id, len(changes), undo),
            hid=hid,
            keep=self.settings.rollback_history,
        )
        event = None
        keys = self._context_keys(changed) if self._listeners else []
        old_view = {k: self._units[k] for k in keys if k in self._units}
        for key, raw in changed.items():
            if raw is None:
                self._units.pop(key, None)
                self._seq.pop(key, None)
            else:
                self._units[key] = raw
                self._seq[key] = new_seq[key]
            if key[0] == "t" and raw is None:
                # a vanished tenant takes its deployments with it
                for k in [k for k in self._units if k[0] == "d" and k[1] == key[1]]:
                    self._units.pop(k, None)
                    self._seq.pop(k, None)
        if self._listeners:
            old = assemble(old_view, [k for k in keys if k in old_view])
            new = assemble(self._units, [k for k in keys if k in self._units])
            event = CommitEvent(
                old=old, new=new, changes=tuple(changes), session_id=session_id, username=username
            )
        self._enqueue(write, event)
        return hid

    def _context_keys(self, changed: dict[UnitKey, bytes | None] | set[UnitKey]) -> list[UnitKey]:
        keys = set(changed)
        for k in list(keys):
            if k[0] == "d":
                keys.add(("t", k[1]))
        keys.add(ROOT_UNIT)
        return sorted(keys, key=lambda k: (self._seq.get(k, 1 << 60), k))

    def _write_startup(self) -> None:
        units = {k: shell(el, k) for k, el in all_units(self._startup).items()}
        rows = [UnitRow(k, i, raw) for i, (k, raw) in enumerate(units.items())]
        try:
            self._store.write("startup", rows, [], replace_all=True)
        except BaseException:
            # refused (fence) or failed: memory must not stay ahead of storage
            with contextlib.suppress(Exception):
                stored = self._store.load("startup")
                self._startup = (assemble({r.key: r.xml for r in stored}) if stored
                                 else copy.deepcopy(self._running))
            raise
