"""A standby's datastore: re-reading storage another node writes (issue 18).

Several escnc nodes share one PostgreSQL database; only the leader writes (its
writes are fenced, persistence.py). A standby serves reads, so its Datastore must
show what the leader committed:

- :meth:`Following.reload` reads running, startup and the history counter from
  storage in one snapshot (outside the datastore lock: no remote I/O under it),
  builds the trees, and swaps them in under the write lock: a reader sees the old
  or the new state, never a mix. A snapshot older than what this node itself has
  written (it is the writer) is dropped. **No commit listeners run**: a standby runs
  no engine, and the engine reads the whole configuration when it starts on
  election. Reload listeners (:meth:`add_reload_listener`) get the loaded version,
  after the swap, outside the lock (e.g. to refresh caches built from running).
  An open candidate keeps its content; its change tracking is reset, so a later
  commit compares every unit.
- :meth:`Following.follow` starts a thread that LISTENs on ``escnc_datastore``
  (PostgresStorage.listen: every commit's NOTIFY, plus a re-read every ``poll``
  seconds in case one was lost) and reloads when the version in storage is one
  this node has not written or loaded. On the leader its own NOTIFYs are
  recognised and cost nothing, so following may stay on across elections. SQLite
  cannot notify: ``follow`` returns False.
- :meth:`Following.take_over` (on election): reload, then do what a restart does
  to the state the previous leader left -- write startup if it never was, migrate
  an old unit layout, roll back a confirmed commit that was pending (its session
  and timer died with that leader).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

from escnc.cluster.errors import NotLeader
from escnc.datastore.candidate import Candidates
from escnc.datastore.persistence import Snapshot, UnitRow, Write
from escnc.datastore.state import UNIT_LAYOUT
from escnc.datastore.units import all_units, shell
from escnc.errors import RpcError, RpcErrors
from escnc.storage import StorageError

log = logging.getLogger("escnc.datastore.follow")


class Following(Candidates):
    # -- loading ----------------------------------------------------------------------

    def reload(self) -> int | None:
        """Replace running and startup with what storage holds now; returns the
        version loaded (None: this node's memory was newer, nothing was replaced)."""
        snap = self._store.snapshot()
        if not self._swap(snap):
            return None
        for cb in list(self._reload_listeners):
            try:
                cb(snap.version)
            except Exception:
                log.exception("reload listener failed")
        return snap.version

    def add_reload_listener(self, listener: Callable[[int], None]) -> None:
        """``listener(version)`` after every reload that replaced the trees."""
        self._reload_listeners.append(listener)

    def _swap(self, snap: Snapshot) -> bool:
        with self._locked():
            with self._q:
                # commits of this node not yet written, or written after the
                # snapshot was taken: memory is ahead (we are the writer)
                ahead = bool(self._queue) or self._durable != self._version
            if ahead or self._store.version > snap.version:
                return False
            if self._overlay is not None:
                self._materialize()  # the candidate, against the old running
            self._install(snap)
            if self._candidate is not None:
                self._cand_dirty = None
            with self._q:
                self._version += 1  # what readers saw before is durable; so is this
                self._durable = self._version
        return True

    def take_over(self) -> int | None:
        """This node was elected: load the newest state, then settle what the previous
        leader left (see the module docstring). Returns the version loaded."""
        snap = self._store.snapshot()
        self._swap(snap)
        with self._locked():
            self._settle_storage(snap)
        return snap.version

    def _may_write(self) -> bool:
        fence = self._store.fence
        if fence is None:
            return True
        try:
            fence.check()
        except NotLeader:
            return False
        return True

    def _settle_storage(self, snap: Snapshot) -> None:
        """Writes a fresh start needs (only the leader does them)."""
        if snap.startup is None:
            self._write_startup()
        if snap.meta.get("unit_layout") != UNIT_LAYOUT:
            self._migrate_units(bool(snap.running))
        pending = snap.meta.get("pending_confirm")
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

    # -- following ----------------------------------------------------------------------

    def follow(self, poll: float = 1.0) -> bool:
        """Reload whenever another node commits (see the module docstring); False
        when the backend cannot notify (SQLite: a single node needs no following)."""
        if getattr(self._store.storage, "listen", None) is None:
            return False
        if self._follower is not None:
            return True
        stop = threading.Event()
        self._follow_stop = stop
        self._follower = threading.Thread(
            target=self._store.listen, args=(stop, self._on_version, poll),
            name="datastore-follower", daemon=True)
        self._follower.start()
        return True

    def _on_version(self, version: int) -> None:
        if self._closed or self._store.seen(version):
            return
        try:
            self.reload()
        except StorageError as exc:  # the next notification or poll tries again
            if not self._closed:
                log.warning("datastore reload failed (retrying): %s", exc)

    def stop_following(self, timeout: float = 5.0) -> None:
        stop, thread = self._follow_stop, self._follower
        self._follow_stop = self._follower = None
        if stop is not None:
            stop.set()
        if thread is not None:
            thread.join(timeout)
