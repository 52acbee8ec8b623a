"""Group commit: the datastore lock, queued durable writes, listener delivery.

A commit is applied in memory under the datastore lock and queued; its durable
SQLite write happens after the lock is released, and one writer writes every
queued commit in one transaction (one fsync) while the others wait. A caller
returns (the session sends <ok/>) only once its commit is on disk, and readers
wait, outside the lock, until everything they saw is on disk, so no client ever
sees a commit that a crash could lose. Listeners run in commit order, after
durability, outside the datastore lock. If a write fails, the queued commits fail
and the in-memory state is reloaded from disk.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

from escnc.cluster.errors import NotLeader
from escnc.datastore.edit import (
    EntryIndex,
)
from escnc.datastore.memory import release_memory
from escnc.datastore.persistence import Snapshot, Write
from escnc.datastore.state import (
    DatastoreState,
    _Queued,
    _write_failed,
    log,
)
from escnc.datastore.units import (
    assemble,
    empty_data,
)
from escnc.services import CommitEvent


class GroupCommit(DatastoreState):
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
                    if isinstance(exc, NotLeader):  # fenced: expected after a takeover
                        log.warning("datastore write refused by the fence: %s", exc)
                    else:
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

    def _install(self, snap: Snapshot) -> None:
        """Make ``snap`` (read from storage) running and startup in memory (datastore
        lock held for writing, or in __init__)."""
        rows = snap.running or []
        self._units = {r.key: r.xml for r in rows}
        self._seq = {r.key: r.seq for r in rows}
        self._running = assemble(self._units) if rows else empty_data()
        self._index = EntryIndex()
        self._next_seq = max(self._seq.values(), default=0) + 1
        self._next_hid = snap.next_hid
        if snap.startup is not None:
            self._startup = assemble({r.key: r.xml for r in snap.startup})
        else:  # never written (a fresh database): startup starts as running
            self._startup = copy.deepcopy(self._running)
        self._store.loaded(snap.version)

    def _recover_locked(self) -> None:
        """A write failed: running in memory is ahead of the disk; reload it."""
        log.warning("reloading running from disk after a failed write")
        self._install(self._store.snapshot())
        self._cand_dirty = None
        with self._q:
            self._broken = None
            self._version += 1  # a fresh version (not lost) for what is now in memory,
            self._durable = self._version  # which is what is on disk
