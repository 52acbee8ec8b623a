"""Leader election on the lease row, renewed on a thread of its own.

The leader renews every ``retry`` seconds. Its term is valid until the *start* of its
last successful renewal plus ``renew_deadline``; a watchdog demotes it at that moment
even if the renew call is stuck (dead network), and any failed renewal demotes it at
once. A standby takes the lease over only when the lease's version has not changed for
``lease_duration`` since it last saw it change (measured on its own clock, after its
read returned). Because ``renew_deadline < lease_duration``, the old leader has
stopped acting before a standby can take over, and the takeover's compare-and-set
gives the new leader a strictly higher fencing token. A leader that stops releases
the lease, so a standby takes over at its next poll.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from escnc.cluster.clock import Clock, MonotonicClock
from escnc.cluster.fence import Fence
from escnc.cluster.lease import LeaseRow, LeaseStore, Member, wall_ms
from escnc.storage import Connection, Storage, StorageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ElectionTimings:
    """Seconds. retry < renew_deadline < lease_duration (the gap absorbs clock-rate
    differences between nodes and the time the old leader needs to stop)."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry < self.renew_deadline < self.lease_duration:
            raise ValueError("need 0 < retry < renew_deadline < lease_duration")


def default_node_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaderElector:
    def __init__(
        self,
        storage: Storage,
        *,
        address: str,
        node_id: str | None = None,
        timings: ElectionTimings | None = None,
        clock: Clock | None = None,
        on_elected: Callable[[int], None] | None = None,
        on_demoted: Callable[[str], None] | None = None,
        lease_name: str = "escnc",
    ) -> None:
        """``address``: where clients reach this node (named in not-leader errors).
        ``on_elected(token)`` / ``on_demoted(reason)`` run on the elector's threads:
        start / stop the engine there (on_demoted must stop it promptly)."""
        self.storage = storage
        self.address = address
        self.node_id = node_id or default_node_id()
        self.timings = timings or ElectionTimings()
        self.clock: Clock = clock or MonotonicClock()
        self.store = LeaseStore(lease_name)
        self.fence = Fence(self)
        self._on_elected = on_elected
        self._on_demoted = on_demoted
        self._lock = threading.Lock()
        self._token: int | None = None  # set while we lead
        self._valid_until = 0.0
        self._last: LeaseRow | None = None  # the lease as last read
        self._observed: tuple[int, int] | None = None  # (token, version) ...
        self._observed_at = 0.0  # ... and when we first saw it
        self._conn: Connection | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # elected: the watchdog starts watching
        self.ticks = 0  # finished loop rounds (tests wait on it)
        self._members: list[Member] = []  # as the last round read them
        self._hold_off_until = 0.0  # resign(): no acquisition before this
        self._resigned: int | None = None  # resign(): the token to release
        self._threads = [
            threading.Thread(target=self._run, name="cluster-elector", daemon=True),
            threading.Thread(target=self._watchdog, name="cluster-watchdog", daemon=True),
        ]

    # -- public -------------------------------------------------------------------

    def start(self) -> LeaderElector:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Demote (if leading) at once, stop the threads, release the lease so a
        standby need not wait the lease duration out."""
        token = self._demote("stopping")  # first: stop acting, whatever happens next
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout)
        if self._threads[0].is_alive():
            # stuck in a database call on the connection: leave both alone (the
            # thread releases the lease itself if that call renews it after all)
            log.warning("leader election thread still busy; the lease is not released")
            return
        token = self._demote("stopping") or token  # elected while we were stopping
        if token is None and (self._conn is None or self._conn.closed):
            return  # nothing to hand back, and no reason to wait for a connection
        try:
            conn = self._connection()
            if token is not None:
                self.store.release(conn, self.node_id, token)
            self.store.leave(conn, self.node_id)
        except StorageError as exc:
            log.warning("could not release the lease (standbys wait it out): %s", exc)
        if self._conn is not None:
            self._conn.close()

    def resign(self, reason: str) -> None:
        """Give the lead up (e.g. this node cannot run the engine): demote now; the
        elector's thread hands the lease on at its next round, and this node does not
        take it again for ``lease_duration`` (another node gets its chance)."""
        token = self._demote(reason)
        with self._lock:
            self._hold_off_until = self.clock.now() + self.timings.lease_duration
            if token is not None:
                self._resigned = token

    @property
    def is_leader(self) -> bool:
        return self.valid_token() is not None

    def valid_token(self) -> int | None:
        """Our token if our term is valid right now (checked against the clock)."""
        with self._lock:
            if self._token is not None and self.clock.now() < self._valid_until:
                return self._token
            return None

    def leader_address(self) -> str | None:
        with self._lock:
            if self._token is not None:
                return self.address
            row = self._last
        return row.address if row and row.holder else None

    def members(self) -> list[Member]:
        """The nodes of the cluster as their heartbeats recorded them (own connection:
        callers are opdata readers, not the elector thread)."""
        conn = self.storage.connect()
        try:
            return self.store.members(conn)
        finally:
            conn.close()

    def last_members(self) -> list[Member]:
        """members() as the elector's last round read them: no I/O (opdata on a
        session thread; stale by up to one retry, or since the database was lost)."""
        return list(self._members)

    def status(self) -> dict[str, object]:
        """For opdata / escnc status: role, leader, token, lease version and age."""
        with self._lock:
            row, token = self._last, self._token
        renewed = row.renewed_ms if row and row.renewed_ms else None
        return {
            "node": self.node_id,
            "role": "leader" if self.valid_token() is not None else "standby",
            "leader": self.leader_address(),
            "token": token if token is not None else (row.token if row else None),
            "lease_version": row.version if row else None,
            "lease_age_ms": None if renewed is None else max(0, wall_ms() - renewed),
        }

    # -- the loop -------------------------------------------------------------------

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self.storage.connect()
            self.store.setup(self._conn)
        return self._conn

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self.clock.now()
            try:
                self._round(started)
                # after the renewal (it is what must be on time); informational
                self.store.heartbeat(self._connection(), self.node_id, self.address,
                                     "leader" if self.is_leader else "standby")
                self._members = self.store.members(self._connection())
            except StorageError as exc:
                if self._conn is not None:
                    self._conn.close()
                if self._demote(f"database lost: {exc}") is None:
                    log.debug("lease poll failed: %s", exc)
            except Exception:  # never let the elector thread die silently
                log.exception("leader election round failed")
                self._demote("election error")
            self.ticks += 1
            self.clock.wait_until(started + self.timings.retry, self._stop)

    def _round(self, started: float) -> None:
        with self._lock:
            token, resigned, self._resigned = self._token, self._resigned, None
        conn = self._connection()
        if resigned is not None:
            self.store.release(conn, self.node_id, resigned)
        if token is not None:
            renewed = self.store.renew(conn, self.node_id, token)
            with self._lock:
                still = self._token == token
                if renewed and still:
                    self._valid_until = started + self.timings.renew_deadline
            if not still:
                # the watchdog demoted us while the call was stuck: hand the lease on
                if renewed:
                    self.store.release(conn, self.node_id, token)
            elif not renewed:
                self._demote("the lease was taken over")
            return
        row = self.store.read(conn)
        now = self.clock.now()  # after the read: never earlier than what it saw
        if row is None:
            return
        with self._lock:
            self._last = row
            if self._observed != (row.token, row.version):
                self._observed, self._observed_at = (row.token, row.version), now
        free = row.holder is None
        if not free and now - self._observed_at < self.timings.lease_duration:
            return
        if now < self._hold_off_until:
            return
        new = self.store.acquire(conn, self.node_id, self.address, row)
        if new is None:
            return
        if self._stop.is_set():  # stop() ran meanwhile: do not start a term
            self.store.release(conn, self.node_id, new)
            return
        with self._lock:
            self._token = new
            self._valid_until = started + self.timings.renew_deadline
            self._last = LeaseRow(self.node_id, self.address, new, row.version + 1, 0)
        self._wake.set()
        log.info("elected leader with fencing token %d", new)
        if self._on_elected is not None:
            self._on_elected(new)  # an error here demotes us (the _run handler)

    def _watchdog(self) -> None:
        """Demote at the renew deadline, whatever the renew thread is doing."""
        while not self._stop.is_set():
            with self._lock:
                leading, deadline = self._token is not None, self._valid_until
            if not leading:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            if self._demote("renew deadline passed", only_if_expired=True) is None:
                # a renewal moves the deadline on: waking at the old one just re-checks
                self.clock.wait_until(deadline, self._stop)

    def _demote(self, reason: str, *, only_if_expired: bool = False) -> int | None:
        """End our term (once); returns the token we held, None if we did not lead."""
        with self._lock:
            if only_if_expired and self.clock.now() < self._valid_until:
                return None
            token, self._token = self._token, None
            self._valid_until = 0.0
            self._observed = None  # re-observe the lease from scratch
        if token is None:
            return None
        log.warning("demoted (fencing token %d): %s", token, reason)
        if self._on_demoted is not None:
            try:
                self._on_demoted(reason)
            except Exception:  # the term is over regardless; keep the watchdog alive
                log.exception("on_demoted failed")
        return token
