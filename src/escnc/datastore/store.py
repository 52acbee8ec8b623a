"""The datastore: running, candidate and startup, transactions, locks, persistence.

Running is one live lxml tree edited in place under a lock with an undo journal
(see edit.py); readers take the same lock, so a session sees the old or the new
running, never a mix. A commit validates only the units it touched (plus the
cross-tree references that reach them), writes those units to SQLite durably,
then notifies listeners. Commit listeners and engine validators receive *pruned*
<data> trees: the datastore root (images, flavors, networks, VIM connectors) plus
every tenant/deployment the commit touched, complete; untouched deployments are
omitted so the cost follows the size of the edit (``running_xml()`` gives all).

Group commit: a commit is applied in memory under the datastore lock and queued;
its durable SQLite write happens after the lock is released, and one writer
writes every queued commit in one transaction (one fsync) while the others wait.
A caller returns (the session sends <ok/>) only once its commit is on disk, and
readers wait, outside the lock, until everything they saw is on disk, so no client
ever sees a commit that a crash could lose. Listeners run in commit order, after
durability, outside the datastore lock. If a write fails, the queued commits
fail and the in-memory state is reloaded from disk.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from lxml import etree

from escnc.datastore.edit import (
    CONTAINER_TAGS,
    DEPLOYMENT,
    ENTRY_CONTAINER,
    ESC_ROOT,
    ROOT_LISTS,
    ROOT_UNIT,
    TENANT,
    EditOptions,
    Editor,
    EntryIndex,
    Journal,
    UnitKey,
)
from escnc.datastore.memory import release_memory
from escnc.datastore.persistence import Store, UnitRow, Write
from escnc.datastore.pruning import analyse
from escnc.datastore.references import check_removed
from escnc.datastore.rwlock import RWLock
from escnc.datastore.schema import Schema, SNode
from escnc.datastore.units import (
    all_units,
    assemble,
    empty_data,
    find_unit,
    find_units,
    shell,
    split_units,
)
from escnc.datastore.validation import needed_entries
from escnc.errors import RpcError, RpcErrors
from escnc.ns import ESC
from escnc.services import Change, CommitEvent, CommitListener, ConfigValidator
from escnc.settings import Settings

log = logging.getLogger(__name__)
_TRIM_UNITS = 1000

DATASTORES = ("running", "candidate", "startup")
ConfirmedCommitListener = Callable[[str, int, str, int, "str | None"], None]
# (operation "replace"|"delete", session_id, username): startup was written by a
# session (copy-config / delete-config), for RFC 6470 netconf-config-change
StartupListener = Callable[[str, int, str], None]
# Unit changes of one write: key -> (old serialized unit or None, new or None)
UnitChanges = dict[UnitKey, tuple[bytes | None, bytes | None]]


class WriteAuthorizer(Protocol):
    """Access control for writes by sessions (NACM, installed by operations/authorize.py).

    ``applies`` says whether the user is subject to it at all (cheap); ``check``
    raises an RpcError when a change is not permitted (nothing has been changed
    for good then: the datastore undoes the edit)."""

    def applies(self, session_id: int, username: str) -> bool: ...
    def check(
        self, session_id: int, username: str, operation: str, changes: UnitChanges
    ) -> None: ...


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


UNIT_LAYOUT = "2"  # meta unit_layout: root list entries are units of their own


def unit_path(key: UnitKey) -> str:
    base = "/esc:esc_datamodel"
    if key[0] == "r":
        return base
    if key[0] == "e":
        entry = ROOT_LISTS[key[1]].split("}")[1]
        return f"{base}/esc:{key[1]}/esc:{entry}[esc:name='{key[2]}']"
    path = f"{base}/esc:tenants/esc:tenant[esc:name='{key[1]}']"
    if key[0] == "d":
        path += f"/esc:deployments/esc:deployment[esc:name='{key[2]}']"
    return path


class _Unrepresentable(Exception):
    """The overlay cannot be applied to running (its tenant is gone)."""


@dataclass
class _Pending:
    """A confirmed commit waiting for its confirming commit."""

    session_id: int
    username: str
    persist: str | None
    rollback_id: int | None  # history id of the first confirmed commit (undo it and later)
    timer: threading.Timer | None = None


@dataclass
class _Queued:
    """A commit applied in memory, waiting for its durable write."""

    version: int
    write: Write
    event: CommitEvent | None


class Datastore:
    def __init__(
        self,
        settings: Settings,
        schema: Schema,
        incremental: bool = True,
        overlay_candidate: bool = True,
    ) -> None:
        self.settings = settings
        self.schema = schema
        self.incremental = incremental
        self.overlay_candidate = overlay_candidate
        self._lock = RWLock()
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self._store = Store(
            settings.state_dir / "datastore.sqlite3", durable=settings.durable_commits
        )
        self._index = EntryIndex()
        self._listeners: list[CommitListener] = []
        self._validators: list[ConfigValidator] = []
        self._cc_listeners: list[ConfirmedCommitListener] = []
        self._startup_listeners: list[StartupListener] = []
        self._authorizer: WriteAuthorizer | None = None
        self._locks: dict[str, tuple[int, str]] = {}
        self._candidate: etree._Element | None = None  # None: candidate equals running
        self._candidate_index = EntryIndex()
        # units that may differ between candidate and running: touched by candidate
        # edits or changed in running since the candidate was made (None: unknown)
        self._cand_dirty: set[UnitKey] | None = None
        # copy-on-write candidate: while the candidate differs from running only in
        # deployment units it is running plus this overlay (deployment unit key ->
        # serialized deployment, None: absent), not a copy of running
        self._overlay: dict[UnitKey, bytes | None] | None = None
        self._pending: _Pending | None = None
        self._closed = False
        # group commit (see the module docstring); _q guards the fields below it
        self._q = threading.Condition(threading.Lock())
        self._queue: list[_Queued] = []
        self._version = 0  # the last commit applied in memory
        self._durable = 0  # every commit up to this one is on disk
        self._lost: list[tuple[int, int]] = []  # commits whose write failed
        self._broken: BaseException | None = None  # memory ahead of a failed write
        self._to_notify: deque[tuple[int, CommitEvent]] = deque()
        self._flush_lock = threading.Lock()
        self._notify_lock = threading.Lock()
        self._tls = threading.local()
        self._entry_sn: dict[str, SNode] = {}  # root list container name -> list SNode
        # root lists whose entries validate alone (the others are validated whole)
        ns = {m.name: m.namespace for m in schema.modules()}
        self._prunable = {p.tag for p in analyse(schema.dm.schema, ns) if p.tag in ENTRY_CONTAINER}
        self._next_hid = self._store.next_history_id()

        rows = self._store.load("running")
        self._units: dict[UnitKey, bytes] = {}
        self._seq: dict[UnitKey, int] = {}
        if rows:
            for r in rows:
                self._units[r.key] = r.xml
                self._seq[r.key] = r.seq
            self._running = assemble(self._units)
        else:
            self._running = empty_data()
        self._next_seq = max(self._seq.values(), default=0) + 1
        startup = self._store.load("startup")
        if startup is None:
            self._startup: etree._Element = copy.deepcopy(self._running)
            self._write_startup()
        else:
            self._startup = assemble({r.key: r.xml for r in startup})
        if self._store.get_meta("unit_layout") != UNIT_LAYOUT:
            self._migrate_units(bool(rows))
        pending = self._store.get_meta("pending_confirm")
        if pending is not None:  # crashed during a confirmed commit: undo it
            log.warning("rolling back an unconfirmed commit left by a restart")
            with contextlib.suppress(RpcError, RpcErrors):
                self._rollback_locked(int(pending), 0, "escnc")
            self._enqueue(Write("running", [], [], meta={"pending_confirm": None}))
            self._wait_durable(self._version)

    def _migrate_units(self, had_rows: bool) -> None:
        """A state directory of the previous layout (root list entries inside the root
        unit): rewrite running and startup as today's units. The rollback history
        holds old-layout units, so it is dropped."""
        if had_rows:
            log.warning("datastore: migrating to per-entry units (rollback history dropped)")
            units = {k: shell(el, k) for k, el in all_units(self._running).items()}
            for k in units:
                if k not in self._seq:
                    self._seq[k] = self._next_seq
                    self._next_seq += 1
            self._units = units
            self._seq = {k: self._seq[k] for k in units}
            rows = [UnitRow(k, self._seq[k], raw) for k, raw in units.items()]
            self._store.write_batch([
                Write("running", rows, [], replace_all=True, clear_history=True,
                      meta={"unit_layout": UNIT_LAYOUT}),
            ])
            self._write_startup()
            self._next_hid = self._store.next_history_id()
        else:
            self._store.write("running", [], [], meta={"unit_layout": UNIT_LAYOUT})

    # ------------------------------------------------------------------ API (services)

    def running_xml(self) -> etree._Element:
        with self.reading("running") as tree:
            return copy.deepcopy(tree)

    # ------------------------------------------------------------------ group commit

    @contextlib.contextmanager
    def _locked(self, read: bool = False) -> Iterator[None]:
        """The datastore lock (``read``: shared with other readers, see rwlock.py);
        on leaving the outermost level, wait until every commit this thread made (or,
        ``read``, saw) is durable, then run the commit listeners up to it (outside the
        lock). Nested use keeps the outermost mode; a write inside a read section is a
        programming error (it could deadlock two readers upgrading)."""
        tls = self._tls
        depth = getattr(tls, "depth", 0)
        if depth == 0:
            shared = read and self._broken is None
            if shared:
                self._lock.acquire_read()
            else:
                self._lock.acquire_write()
            tls.shared = shared
        elif tls.shared and not read:
            raise RuntimeError("datastore write inside a read-only section")
        try:
            try:
                if depth == 0 and not tls.shared and self._broken is not None:
                    self._recover_locked()
                tls.depth = depth + 1
                try:
                    if read:
                        tls.seen = max(getattr(tls, "seen", 0), self._version)
                    yield
                finally:
                    tls.depth = depth
            finally:
                if depth == 0:
                    if tls.shared:
                        self._lock.release_read()
                    else:
                        self._lock.release_write()
        finally:
            if depth == 0:
                self._settle()

    def _settle(self) -> None:
        tls = self._tls
        mine = getattr(tls, "mine", 0)
        seen = getattr(tls, "seen", 0)
        tls.mine = tls.seen = 0
        upto = max(mine, seen)
        if upto:
            self._wait_durable(upto)
        if mine:
            self._deliver(mine)
        if getattr(tls, "trim", False):
            tls.trim = False
            release_memory()

    def _enqueue(self, write: Write, event: CommitEvent | None = None) -> int:
        """Queue a commit already applied in memory (datastore lock held)."""
        with self._q:
            self._version += 1
            v = self._version
            if self._broken is not None:
                self._lost.append((v, v))
                raise _write_failed(self._broken)
            self._queue.append(_Queued(v, write, event))
        self._tls.mine = v
        return v

    def _wait_durable(self, v: int) -> None:
        """Return once commit ``v`` is on disk, writing the queue if nobody is."""
        while True:
            with self._q:
                if self._lost and any(lo <= v <= hi for lo, hi in self._lost):
                    raise _write_failed(self._broken)
                if self._durable >= v:
                    return
            with self._flush_lock:
                with self._q:
                    batch, self._queue = self._queue, []
                if not batch:
                    continue
                try:
                    self._store.write_batch([q.write for q in batch])
                except BaseException as exc:
                    log.exception("datastore write failed; reloading from disk")
                    with self._q:
                        self._lost.append((batch[0].version, max(self._version, v)))
                        for q in self._queue:
                            self._lost.append((q.version, q.version))
                        self._queue = []
                        self._broken = exc
                    raise _write_failed(exc) from exc
                with self._q:
                    self._durable = batch[-1].version
                    self._to_notify.extend((q.version, q.event) for q in batch if q.event)

    def _deliver(self, v: int) -> None:
        """Run the commit listeners, in commit order, for commits up to ``v``."""
        tls = self._tls
        if getattr(tls, "delivering", False):  # a listener committed: the outer loop delivers
            tls.upto = max(tls.upto, v)
            return
        with self._notify_lock:
            tls.delivering = True
            tls.upto = v
            try:
                while True:
                    with self._q:
                        if not self._to_notify or self._to_notify[0][0] > tls.upto:
                            break
                        _, event = self._to_notify.popleft()
                    for cb in list(self._listeners):
                        try:
                            cb(event)
                        except Exception:
                            log.exception("commit listener failed")
            finally:
                tls.delivering = False

    def _flush_locked(self) -> None:
        """Make every queued commit durable (before reading the history from disk)."""
        self._wait_durable(self._version)

    def _recover_locked(self) -> None:
        """A write failed: running in memory is ahead of the disk; reload it."""
        log.warning("reloading running from disk after a failed write")
        rows = self._store.load("running") or []
        self._units = {r.key: r.xml for r in rows}
        self._seq = {r.key: r.seq for r in rows}
        self._running = assemble(self._units) if rows else empty_data()
        self._index = EntryIndex()
        self._next_seq = max(self._seq.values(), default=0) + 1
        self._next_hid = self._store.next_history_id()
        self._cand_dirty = None
        with self._q:
            self._broken = None
            self._version += 1  # a fresh version (not lost) for what is now in memory,
            self._durable = self._version  # which is what is on disk

    def add_commit_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    def add_validator(self, validator: ConfigValidator) -> None:
        self._validators.append(validator)

    def add_confirmed_commit_listener(self, listener: ConfirmedCommitListener) -> None:
        self._cc_listeners.append(listener)

    def add_startup_listener(self, listener: StartupListener) -> None:
        self._startup_listeners.append(listener)

    def set_write_authorizer(self, authorizer: WriteAuthorizer | None) -> None:
        self._authorizer = authorizer

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
        self, tree: etree._Element, keys: set[UnitKey]
    ) -> dict[UnitKey, bytes | None]:
        out: dict[UnitKey, bytes | None] = {}
        for k in keys:
            el = self._find_unit(tree, k)
            out[k] = None if el is None else shell(el, k)
        return out

    def _notify_startup(self, operation: str, session_id: int, username: str) -> None:
        for cb in list(self._startup_listeners):
            try:
                cb(operation, session_id, username)
            except Exception:
                log.exception("startup listener failed")

    def locks(self) -> dict[str, tuple[int, str]]:
        with self._locked():
            return dict(self._locks)

    def system_edit(self, config: etree._Element, username: str = "escnc") -> None:
        self.edit("running", config, EditOptions(), session_id=0, username=username)
        with self._locked(), contextlib.suppress(RpcError, RpcErrors):
            # keep startup in step with engine-originated changes (best effort)
            j = Journal(EntryIndex())
            Editor(self.schema, j, EditOptions()).apply(self._startup, config)
            self._write_startup()

    def release_session(self, session_id: int) -> None:
        with self._locked():
            for name, (sid, _) in list(self._locks.items()):
                if sid == session_id:
                    del self._locks[name]
                    if name == "candidate":  # RFC 6241 8.3.5.2: discard on lock loss
                        self._discard_locked()
            p = self._pending
            if p is not None and p.session_id == session_id and p.persist is None:
                self._cancel_pending_locked("cancel", session_id, p.username, rollback=True)

    def close(self) -> None:
        with contextlib.suppress(RpcError):
            self._wait_durable(self._version)
        with self._locked():
            if self._pending is not None and self._pending.timer is not None:
                self._pending.timer.cancel()
            if not self._closed:
                self._store.close()
                self._closed = True

    # ------------------------------------------------------------------ reading

    @contextlib.contextmanager
    def reading(self, name: str) -> Iterator[etree._Element]:
        """Hold the datastore stable while the caller reads (never modify the tree).
        Other readers read at the same time; edits wait until the caller is done.

        On leaving, waits (outside the lock) until what was read is durable."""
        self._check_name(name)
        while True:
            if name == "candidate" and self._overlay is not None:
                with self._locked():  # building the candidate tree is a write
                    if self._overlay is not None:
                        self._materialize()
            with self._locked(read=True):
                if name == "candidate" and self._overlay is not None:
                    continue  # a commit and a new overlay came in between: again
                yield self._tree(name)
                return

    def _tree(self, name: str) -> etree._Element:
        self._check_name(name)
        if name == "running":
            return self._running
        if name == "candidate":
            if self._overlay is not None:
                self._materialize()
            return self._candidate if self._candidate is not None else self._running
        return self._startup

    @staticmethod
    def _check_name(name: str) -> None:
        if name not in DATASTORES:
            raise RpcError("invalid-value", f"unknown datastore {name!r}", type="protocol")

    def candidate_dirty(self) -> bool:
        return self._candidate is not None or self._overlay is not None

    # ------------------------------------------------------------------ locks

    def lock(self, name: str, session_id: int) -> None:
        with self._locked():
            self._check_name(name)
            held = self._locks.get(name)
            if held is not None:
                raise RpcError(
                    "lock-denied",
                    f"{name} is locked by session {held[0]}",
                    type="protocol",
                    info={"session-id": str(held[0])},
                )
            if name == "candidate" and self.candidate_dirty():
                raise RpcError(
                    "lock-denied",
                    "candidate has uncommitted changes",
                    type="protocol",
                    info={"session-id": "0"},
                )
            if (
                self._pending is not None
                and name in ("running", "candidate")
                and self._pending.session_id != session_id
            ):
                raise RpcError(
                    "lock-denied",
                    "a confirmed commit is pending",
                    type="protocol",
                    info={"session-id": str(self._pending.session_id)},
                )
            self._locks[name] = (session_id, _now())

    def unlock(self, name: str, session_id: int) -> None:
        with self._locked():
            self._check_name(name)
            held = self._locks.get(name)
            if held is None or held[0] != session_id:
                raise RpcError(
                    "operation-failed",
                    f"{name} is not locked by this session",
                    type="protocol",
                    info={"session-id": str(held[0]) if held else "0"},
                )
            del self._locks[name]
            if name == "candidate":
                self._discard_locked()

    def check_writable(self, name: str, session_id: int) -> None:
        held = self._locks.get(name)
        if held is not None and held[0] != session_id and session_id != 0:
            raise RpcError(
                "in-use",
                f"{name} is locked by session {held[0]}",
                type="protocol",
                info={"session-id": str(held[0])},
            )

    # ------------------------------------------------------------------ edit-config

    def edit(
        self,
        target: str,
        config: etree._Element,
        options: EditOptions,
        session_id: int,
        username: str,
        test_option: str = "test-then-set",
    ) -> None:
        with self._locked():
            self._check_name(target)
            if target == "startup":
                raise RpcError(
                    "operation-not-supported",
                    "edit-config on startup is not supported; use copy-config",
                    type="protocol",
                )
            self.check_writable(target, session_id)
            if target == "candidate":
                self._edit_candidate(config, options, test_option, session_id, username)
                return
            journal = Journal(self._index)
            editor = Editor(self.schema, journal, options)
            try:
                editor.apply(self._running, config)
                raws = None
                if self._authorizes(session_id, username):
                    raws = self._journal_bytes(self._running, journal.units)
                    self._authorize(session_id, username, "edit-config", raws, self._units)
                if test_option != "set":
                    self._validate_units(self._running, journal.units, self._units)
                if test_option == "test-only":
                    journal.undo()
                else:
                    self._commit_journal(journal, session_id, username, raws)
            except BaseException:
                journal.undo()
                raise
            _raise_collected(editor.errors)

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

    # ------------------------------------------------------------------ copy-on-write candidate

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

    def _assemble_candidate(self, ov: dict[UnitKey, bytes | None]) -> etree._Element:
        """The candidate from running's stored units plus the overlay."""
        units = dict(self._units)
        for k, raw in ov.items():
            if raw is None:
                units.pop(k, None)
            else:
                units[k] = raw
        return assemble(units, sorted(units, key=lambda k: (self._seq.get(k, 1 << 60), k)))

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

    # ------------------------------------------------------------------ copy/delete/validate

    def copy_config(
        self,
        target: str,
        source: etree._Element,
        session_id: int,
        username: str,
        owned: bool = False,
    ) -> None:
        """Replace datastore ``target`` with the <data>/<config> tree ``source``.

        ``owned``: the caller hands ``source`` over (its children are moved, not copied).
        """
        with self._locked():
            self._check_name(target)
            self.check_writable(target, session_id)
            data = empty_data()
            for ch in list(source):
                if isinstance(ch.tag, str):
                    data.append(ch if owned else copy.deepcopy(ch))
            units = split_units(data) if target == "running" and self.incremental else None
            if units is not None:
                # units equal to running's are valid; _commit_tree validates the rest
                self._commit_tree(
                    data, session_id, username, keep_tree=False, elements=units,
                    operation="copy-config",
                )
                return
            self._check_known(data)
            if target == "running":
                if self.incremental:  # not well formed: units would not show it all
                    self._full_validate(data)
                self._commit_tree(
                    data, session_id, username, keep_tree=False, operation="copy-config"
                )
                return
            if self._authorizes(session_id, username):
                self._authorize(
                    session_id, username, "copy-config", dict(self._unit_bytes(data)),
                    self._unit_bytes(self._tree(target)), complete=True,
                )
            if target == "candidate":
                self._full_validate(data, syntax_only=True)
                self._candidate = data
                self._overlay = None
                self._candidate_index.clear()
                self._cand_dirty = None
            else:
                self._full_validate(data)
                self._startup = data
                self._write_startup()
                self._notify_startup("replace", session_id, username)

    def delete_config(self, target: str, session_id: int, username: str = "") -> None:
        with self._locked():
            if target == "running":
                raise RpcError(
                    "operation-not-supported", "running cannot be deleted", type="protocol"
                )
            self._check_name(target)
            self.check_writable(target, session_id)
            if self._authorizes(session_id, username):
                self._authorize(
                    session_id, username, "delete-config", {},
                    self._unit_bytes(self._tree(target)), complete=True,
                )
            if target == "startup":
                self._startup = empty_data()
                self._write_startup()
                self._notify_startup("delete", session_id, username)
            else:
                self._candidate = empty_data()
                self._overlay = None
                self._candidate_index.clear()
                self._cand_dirty = None

    def validate(self, source: str | etree._Element) -> None:
        with self._locked():
            if isinstance(source, str):
                tree = self._tree(source)
                if source == "running" or (source == "candidate" and self._candidate is None):
                    self._full_validate(tree)
                    return
            else:
                tree = empty_data()
                for ch in source:
                    if isinstance(ch.tag, str):
                        tree.append(copy.deepcopy(ch))
                self._check_known(tree)
            self._full_validate(tree)

    # ------------------------------------------------------------------ candidate commit

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

    # ------------------------------------------------------------------ rollback history

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

    # ------------------------------------------------------------------ commit machinery

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

    def _find_units(
        self, data: etree._Element, keys: set[UnitKey] | list[UnitKey]
    ) -> dict[UnitKey, etree._Element | None]:
        if len(keys) <= 8:  # a few lookups: the key index is cheaper than a map
            return {k: self._find_unit(data, k) for k in keys}
        return find_units(data, keys)

    def _find_unit(self, data: etree._Element, key: UnitKey) -> etree._Element | None:
        if key[0] == "d":
            return self._find_dep(data, key)
        if key[0] == "e":
            return self._find_entry(data, key)
        return find_unit(data, key)

    def _find_entry(self, data: etree._Element, key: UnitKey) -> etree._Element | None:
        holder = data.find(f"{ESC_ROOT}/{{{ESC}}}{key[1]}")
        if holder is None:
            return None
        index = self._index if data is self._running else self._candidate_index
        return index.lookup(holder, self._entry_snode(key[1]), (key[2],))

    def _entry_snode(self, cname: str) -> SNode:
        sn = self._entry_sn.get(cname)
        if sn is None:
            sn = self._entry_sn[cname] = (
                self.schema.root.children[ESC_ROOT]
                .children[f"{{{ESC}}}{cname}"]
                .children[ROOT_LISTS[cname]]
            )
        return sn

    def _find_dep(self, data: etree._Element, key: UnitKey) -> etree._Element | None:
        ten_sn = self._tenant_sn
        ten_parent = data.find(f"{{{ESC}}}esc_datamodel/{{{ESC}}}tenants")
        if ten_parent is None:
            return None
        index = self._index if data is self._running else self._candidate_index
        ten = index.lookup(ten_parent, ten_sn, (key[1],))
        if ten is None:
            return None
        deps = ten.find(f"{{{ESC}}}deployments")
        if deps is None:
            return None
        return index.lookup(deps, self._dep_sn, (key[2],))

    @property
    def _tenant_sn(self):  # type: ignore[no-untyped-def]
        return (
            self.schema.root.children[f"{{{ESC}}}esc_datamodel"]
            .children[f"{{{ESC}}}tenants"]
            .children[TENANT]
        )

    @property
    def _dep_sn(self):  # type: ignore[no-untyped-def]
        return self._tenant_sn.children[f"{{{ESC}}}deployments"].children[DEPLOYMENT]

    # ------------------------------------------------------------------ validation

    def _validate_units(
        self,
        data: etree._Element,
        keys: set[UnitKey],
        old_units: dict[UnitKey, bytes] | None,
        elements: dict[UnitKey, etree._Element] | None = None,
    ) -> None:
        """Validate a proposed tree; incrementally (touched units) when enabled.

        yangson sees a private tree of the touched units, the root shell and the root
        list entries they need (needed_entries); removed root entries that untouched
        deployments still use are found by check_removed."""
        if not self.incremental:
            self._full_validate(data)
            return
        present: dict[UnitKey, bytes] = {}
        ctx = set(keys) | {ROOT_UNIT}
        for k in list(ctx):
            if k[0] == "d":
                ctx.add(("t", k[1]))
        found = self._find_units(data, ctx) if elements is None else elements
        gone: dict[str, set[str]] = {}
        for k in ctx:
            el = found.get(k)
            if el is not None:
                present[k] = shell(el, k)
            elif k[0] == "e":
                gone.setdefault(ROOT_LISTS[k[1]], set()).add(k[2])
        pruned = assemble(present, sorted(present, key=lambda k: (self._seq.get(k, 1 << 60), k)))
        needed_entries(pruned, data, self._prunable, self._entry_lookup(data))
        self.schema.validate_config(pruned)
        if gone:
            check_removed(data, gone)
        for v in self._validators:
            v(pruned)

    def _entry_lookup(
        self, data: etree._Element
    ) -> Callable[[str, str], etree._Element | None]:
        index = self._index if data is self._running else self._candidate_index
        holders: dict[str, etree._Element | None] = {}

        def lookup(tag: str, name: str) -> etree._Element | None:
            cname = CONTAINER_TAGS[ENTRY_CONTAINER[tag]]
            if cname not in holders:
                holders[cname] = data.find(f"{ESC_ROOT}/{ENTRY_CONTAINER[tag]}")
            holder = holders[cname]
            if holder is None:
                return None
            return index.lookup(holder, self._entry_snode(cname), (name,))

        return lookup

    def _full_validate(self, data: etree._Element, syntax_only: bool = False) -> None:
        if syntax_only:
            self.schema.to_instance(data)
            return
        self.schema.validate_config(data)
        for v in self._validators:
            v(data)

    def _check_known(self, data: etree._Element) -> None:
        self.schema.to_instance(data)

    def _write_startup(self) -> None:
        units = {k: shell(el, k) for k, el in all_units(self._startup).items()}
        rows = [UnitRow(k, i, raw) for i, (k, raw) in enumerate(units.items())]
        self._store.write("startup", rows, [], replace_all=True)


_PARSER = etree.XMLParser(remove_blank_text=True, resolve_entities=False, huge_tree=True)


def _write_failed(exc: BaseException | None) -> RpcError:
    return RpcError("operation-failed", f"the datastore could not be written: {exc}")


def _raise_collected(errors: list[RpcError]) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise RpcErrors(errors)
