"""The candidate datastore: copy-on-write overlay, commit, confirmed commit.
"""

from __future__ import annotations

import contextlib
import copy
import threading

from lxml import etree

from escnc.datastore.committing import Committing
from escnc.datastore.edit import (
    EditOptions,
    Editor,
    Journal,
    UnitKey,
)
from escnc.datastore.persistence import Write
from escnc.datastore.state import (
    _PARSER,
    _Pending,
    _raise_collected,
    _Unrepresentable,
    log,
    unit_path,
)
from escnc.datastore.units import (
    shell,
)
from escnc.errors import RpcError, RpcErrors
from escnc.ns import ESC
from escnc.services import Change


class Candidates(Committing):
    def candidate_dirty(self) -> bool:
        return self._candidate is not None or self._overlay is not None

    def _edit_candidate(
        self,
        config: etree._Element,
        options: EditOptions,
        test_option: str,
        session_id: int = 0,
        username: str = "",
    ) -> None:
        materialized = self._candidate is None
        before = self._overlay
        if materialized:
            if self.overlay_candidate and self._overlay_edit(
                config, options, test_option, session_id, username
            ):
                return
            self._materialize()
        if self._candidate is None:
            self._candidate = copy.deepcopy(self._running)
            self._candidate_index.clear()
            self._cand_dirty = set()
        assert self._candidate is not None
        journal = Journal(self._candidate_index)
        editor = Editor(self.schema, journal, options)
        try:
            editor.apply(self._candidate, config)
            if self._authorizes(session_id, username):
                # the old units are gone from the edited tree: undo, read, redo
                new = self._journal_bytes(self._candidate, journal.units)
                journal.undo()
                old = self._journal_bytes(self._candidate, set(new))
                self._authorize(
                    session_id, username, "edit-config", new, lambda k: old.get(k)
                )
                editor = Editor(self.schema, journal, options)
                editor.apply(self._candidate, config)
            if test_option != "set":
                self._validate_units(self._candidate, journal.units, None)
            if test_option == "test-only":
                journal.undo()
            elif self._cand_dirty is not None:
                self._cand_dirty.update(journal.units)
        except BaseException:
            journal.undo()
            if materialized:
                self._candidate = None
                self._cand_dirty = None
                self._overlay = before
            raise
        _raise_collected(editor.errors)

    def _overlay_edit(
        self,
        config: etree._Element,
        options: EditOptions,
        test_option: str,
        session_id: int = 0,
        username: str = "",
    ) -> bool:
        """Edit the candidate as running plus the overlay; False (nothing changed)
        if the edit reaches beyond deployment units (then the candidate is copied)."""
        ov = dict(self._overlay or {})
        try:
            swap = self._swap_in(ov)
        except _Unrepresentable:
            return False
        journal = Journal(self._index)
        editor = Editor(self.schema, journal, options)
        try:
            editor.apply(self._running, config)
            touched = set(journal.units)
            if any(k[0] != "d" for k in touched):
                return False
            if self._authorizes(session_id, username):
                self._authorize(
                    session_id, username, "edit-config",
                    self._journal_bytes(self._running, touched),
                    lambda k: ov[k] if k in ov else self._units.get(k),
                )
            if test_option != "set":
                self._validate_units(self._running, touched, None)
            if test_option != "test-only":
                for k in touched:
                    el = self._find_unit(self._running, k)
                    ov[k] = None if el is None else shell(el, k)
                self._overlay = ov
        finally:
            journal.undo()
            swap.undo()
        _raise_collected(editor.errors)
        return True

    def _swap_in(self, ov: dict[UnitKey, bytes | None]) -> Journal:
        """Put the overlay's deployments into running (undo with the journal)."""
        journal = Journal(self._index)
        try:
            for k, raw in ov.items():
                tenants = self._running.find(f"{{{ESC}}}esc_datamodel/{{{ESC}}}tenants")
                ten = (
                    None
                    if tenants is None
                    else self._index.lookup(tenants, self._tenant_sn, (k[1],))
                )
                deps = None if ten is None else ten.find(f"{{{ESC}}}deployments")
                if deps is None:
                    raise _Unrepresentable
                cur = self._index.lookup(deps, self._dep_sn, (k[2],))
                pos = len(deps) if cur is None else deps.index(cur)
                if cur is not None:
                    journal.remove(cur, self._dep_sn)
                if raw is not None:
                    journal.insert(deps, pos, etree.fromstring(raw, _PARSER), self._dep_sn)
        except BaseException:
            journal.undo()
            raise
        return journal

    def _materialize(self) -> None:
        """Turn the overlay into a separate candidate tree."""
        ov = self._overlay
        if ov is None:
            return
        try:
            swap = self._swap_in(ov)
        except _Unrepresentable:
            tree = self._assemble_candidate(ov)
        else:
            try:
                tree = copy.deepcopy(self._running)
            finally:
                swap.undo()
        self._candidate = tree
        self._candidate_index.clear()
        self._cand_dirty = set(ov)
        self._overlay = None

    def _commit_overlay(self, session_id: int, username: str) -> int | None:
        ov = self._overlay
        assert ov is not None
        try:
            swap = self._swap_in(ov)
        except _Unrepresentable:
            self._materialize()
            assert self._candidate is not None
            return self._commit_tree(
                self._candidate, session_id, username, keep_tree=False, dirty=self._cand_dirty
            )
        self._overlay = None
        try:
            changed: dict[UnitKey, bytes | None] = {}
            for k in ov:
                el = self._find_unit(self._running, k)
                raw = None if el is None else shell(el, k)
                if raw != self._units.get(k):
                    changed[k] = raw
            if not changed:
                swap.undo()
                return None
            self._authorize(session_id, username, "commit", changed, self._units)
            self._validate_units(self._running, set(changed), self._units)
            changes = [
                Change(
                    "create" if k not in self._units else "delete" if v is None else "replace",
                    unit_path(k),
                    {"esc": ESC},
                )
                for k, v in changed.items()
            ]
            return self._finish(changed, changes, session_id, username)
        except BaseException:
            swap.undo()
            self._overlay = ov
            raise

    def commit(
        self,
        session_id: int,
        username: str,
        confirmed: bool = False,
        timeout: int | None = None,
        persist: str | None = None,
        persist_id: str | None = None,
    ) -> None:
        with self._locked():
            p = self._pending
            if persist_id is not None and (p is None or p.persist != persist_id):
                raise RpcError(
                    "invalid-value",
                    "no pending confirmed commit with that persist-id",
                    type="protocol",
                    info={"bad-element": "persist-id"},
                )
            if (
                p is not None
                and persist_id is None
                and p.persist is None
                and p.session_id != session_id
            ):
                raise RpcError(
                    "in-use",
                    "a confirmed commit of another session is pending",
                    type="protocol",
                    info={"session-id": str(p.session_id)},
                )
            if p is not None and p.persist is not None and persist_id is None:
                raise RpcError(
                    "in-use",
                    "a persistent confirmed commit is pending; give its persist-id",
                    type="protocol",
                    info={"session-id": str(p.session_id)},
                )
            self.check_writable("running", session_id)
            hid = None
            if self._candidate is not None:
                hid = self._commit_tree(
                    self._candidate, session_id, username, keep_tree=False, dirty=self._cand_dirty
                )
                self._discard_locked()
            elif self._overlay is not None:
                hid = self._commit_overlay(session_id, username)
                self._discard_locked()
            if confirmed:
                secs = int(timeout if timeout is not None else 600)
                if p is None:
                    rollback_id = hid if hid is not None else self._next_history_marker()
                    self._pending = _Pending(session_id, username, persist, rollback_id)
                    self._enqueue(
                        Write("running", [], [], meta={"pending_confirm": str(rollback_id)})
                    )
                    kind = "start"
                else:
                    if p.timer is not None:
                        p.timer.cancel()
                    p.persist = persist
                    kind = "extend"
                assert self._pending is not None
                self._arm_timer(secs)
                self._notify_cc(kind, session_id, username, secs, persist)
            elif p is not None:
                self._cancel_pending_locked("complete", session_id, username, rollback=False)

    def cancel_commit(self, session_id: int, username: str, persist_id: str | None) -> None:
        with self._locked():
            p = self._pending
            if p is None:
                raise RpcError(
                    "operation-failed", "no confirmed commit is pending", type="protocol"
                )
            if p.persist is not None and persist_id != p.persist:
                raise RpcError(
                    "invalid-value",
                    "wrong or missing persist-id",
                    type="protocol",
                    info={"bad-element": "persist-id"},
                )
            if p.persist is None and p.session_id != session_id:
                raise RpcError(
                    "operation-failed",
                    "the pending confirmed commit belongs to another session",
                    type="protocol",
                )
            self._cancel_pending_locked("cancel", session_id, username, rollback=True)

    def discard_changes(self, session_id: int) -> None:
        with self._locked():
            self.check_writable("candidate", session_id)
            self._discard_locked()

    def _discard_locked(self) -> None:
        self._overlay = None
        self._candidate = None
        self._candidate_index.clear()
        self._cand_dirty = None

    def _next_history_marker(self) -> int:
        return self._next_hid

    def _arm_timer(self, secs: int) -> None:
        assert self._pending is not None
        pending = self._pending
        timer = threading.Timer(secs, self._timeout, args=(pending,))
        timer.daemon = True
        pending.timer = timer
        timer.start()

    def _timeout(self, pending: _Pending) -> None:
        with self._locked():
            if self._pending is not pending or self._closed:
                return
            self._cancel_pending_locked(
                "timeout", pending.session_id, pending.username, rollback=True
            )

    def _cancel_pending_locked(
        self, kind: str, session_id: int, username: str, rollback: bool
    ) -> None:
        p = self._pending
        assert p is not None
        if p.timer is not None:
            p.timer.cancel()
        self._pending = None
        if rollback and p.rollback_id is not None:
            with contextlib.suppress(RpcError, RpcErrors):
                self._rollback_locked(p.rollback_id, 0, "escnc")
            self._candidate = None
            self._overlay = None
            self._candidate_index.clear()
        self._enqueue(Write("running", [], [], meta={"pending_confirm": None}))
        self._notify_cc(kind, session_id, username, 0, p.persist)

    def _notify_cc(self, kind: str, sid: int, user: str, timeout: int, persist: str | None) -> None:
        for cb in list(self._cc_listeners):
            try:
                cb(kind, sid, user, timeout, persist)
            except Exception:
                log.exception("confirmed-commit listener failed")
