"""The datastore: running, candidate and startup, transactions, locks, persistence.

Running is one live lxml tree edited in place under a lock with an undo journal
(see edit.py); readers take the same lock, so a session sees the old or the new
running, never a mix. A commit validates only the units it touched (plus the
cross-tree references that reach them), writes those units durably (SQLite file
or PostgreSQL, persistence.py; fenced when a fence is given), then notifies
listeners with pruned trees (committing.py). A standby follows another node's
writes (follow.py: ``follow()``, ``reload()``, ``take_over()``). Units (units.py): the
root shell, each root list entry, each tenant, each deployment.

This module is the public API; the machinery is layered below it (state.py lists
the layers): group commit, validation, commit/history, candidate.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections import deque
from collections.abc import Collection, Iterator

from lxml import etree

from escnc.cluster.errors import NotLeader
from escnc.datastore.edit import (
    ENTRY_CONTAINER,
    EditOptions,
    Editor,
    EntryIndex,
    Journal,
)
from escnc.datastore.follow import Following
from escnc.datastore.memory import limit_arenas
from escnc.datastore.persistence import Store, WriteFence
from escnc.datastore.pruning import analyse
from escnc.datastore.rwlock import RWLock
from escnc.datastore.schema import Schema
from escnc.datastore.state import (
    DATASTORES,
    ConfirmedCommitListener,
    StartupListener,
    UnitChanges,
    WriteAuthorizer,
    _now,
    _raise_collected,
    log,
    unit_path,
)
from escnc.datastore.units import (
    empty_data,
    split_units,
)
from escnc.errors import RpcError, RpcErrors
from escnc.services import CommitListener, ConfigValidator
from escnc.settings import Settings
from escnc.storage import Storage, open_storage

__all__ = [
    "DATASTORES",
    "ConfirmedCommitListener",
    "Datastore",
    "StartupListener",
    "UnitChanges",
    "WriteAuthorizer",
    "unit_path",
]


class Datastore(Following):
    def __init__(
        self,
        settings: Settings,
        schema: Schema,
        incremental: bool = True,
        overlay_candidate: bool = True,
        *,
        storage: Storage | None = None,
        fence: WriteFence | None = None,
    ) -> None:
        """``storage``: where the units live; by default ``settings.database`` (a
        PostgreSQL URL) or state_dir/datastore.sqlite3. ``fence``: checked first thing
        in every write transaction (escnc.cluster.Fence; None: no check)."""
        self.settings = settings
        self.schema = schema
        self.incremental = incremental
        self.overlay_candidate = overlay_candidate
        self._lock = RWLock()
        # session threads would each get a glibc arena that keeps a large edit's
        # freed heap (memory.py); the datastore is made before the server's threads
        limit_arenas()
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        if storage is None:
            storage = open_storage(
                settings.database, settings.state_dir / "datastore.sqlite3",
                synchronous="FULL" if settings.durable_commits else "NORMAL")
        self._store = Store(storage=storage, durable=settings.durable_commits, fence=fence)
        log.info("datastore on %s", storage.describe())
        self._index = EntryIndex()
        self._listeners = []
        self._validators = []
        self._cc_listeners = []
        self._startup_listeners = []
        self._authorizer = None
        self._locks = {}
        self._candidate = None  # None: candidate equals running
        self._candidate_index = EntryIndex()
        # units that may differ between candidate and running: touched by candidate
        # edits or changed in running since the candidate was made (None: unknown)
        self._cand_dirty = None
        # copy-on-write candidate: while the candidate differs from running only in
        # deployment units it is running plus this overlay (deployment unit key ->
        # serialized deployment, None: absent), not a copy of running
        self._overlay = None
        self._pending = None
        self._closed = False
        # group commit (see the module docstring); _q guards the fields below it
        self._q = threading.Condition(threading.Lock())
        self._queue = []
        self._version = 0  # the last commit applied in memory
        self._durable = 0  # every commit up to this one is on disk
        self._lost = []  # commits whose write failed
        self._broken = None  # memory ahead of a failed write
        self._to_notify = deque()
        self._flush_lock = threading.Lock()
        self._notify_lock = threading.Lock()
        self._tls = threading.local()
        self._entry_sn = {}  # root list container name -> list SNode
        # root lists whose entries validate alone (the others are validated whole)
        ns = {m.name: m.namespace for m in schema.modules()}
        self._prunable = {p.tag for p in analyse(schema.dm.schema, ns) if p.tag in ENTRY_CONTAINER}
        self._reload_listeners = []
        self._follow_stop = None
        self._follower = None
        snap = self._store.snapshot()
        self._install(snap)
        if self._may_write():  # a standby leaves this to the leader (take_over)
            self._settle_storage(snap)

    # ------------------------------------------------------------------ API (services)

    def running_xml(self) -> etree._Element:
        with self.reading("running") as tree:
            return copy.deepcopy(tree)

    # ------------------------------------------------------------------ group commit








    def add_commit_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    def add_validator(
        self, validator: ConfigValidator, whole_lists: Collection[str] = ()
    ) -> None:
        """``validator`` sees the (pruned) proposed tree of every write. ``whole_lists``:
        entry tags of root lists (e.g. ``{esc}vim_connector``) whose entries it checks
        against each other; its tree then holds every entry of those lists."""
        self._validators.append(validator)
        self._prunable -= set(whole_lists)

    def add_confirmed_commit_listener(self, listener: ConfirmedCommitListener) -> None:
        self._cc_listeners.append(listener)

    def add_startup_listener(self, listener: StartupListener) -> None:
        self._startup_listeners.append(listener)

    def set_write_authorizer(self, authorizer: WriteAuthorizer | None) -> None:
        self._authorizer = authorizer






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
        with contextlib.suppress(RpcError, NotLeader):  # a failed write was reported
            self._wait_durable(self._version)
        self.stop_following()
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
                # the touched units serialized once: for the authorizer, validation
                # and the commit
                raws = self._journal_bytes(self._running, journal.units)
                if self._authorizes(session_id, username):
                    self._authorize(session_id, username, "edit-config", raws, self._units)
                if test_option != "set":
                    self._validate_units(self._running, journal.units, self._units, raws=raws)
                if test_option == "test-only":
                    journal.undo()
                else:
                    self._commit_journal(journal, session_id, username, raws)
            except BaseException:
                journal.undo()
                raise
            _raise_collected(editor.errors)


    # ------------------------------------------------------------------ copy-on-write candidate






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










    # ------------------------------------------------------------------ rollback history




    # ------------------------------------------------------------------ commit machinery












    # ------------------------------------------------------------------ validation











