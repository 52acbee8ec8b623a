"""Live NETCONF sessions: ids, lookup, kill-session, statistics, start/end listeners."""

from __future__ import annotations

import builtins
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, Protocol

from escnc.errors import RpcError

if TYPE_CHECKING:
    from escnc.services import Services

log = logging.getLogger(__name__)

TerminationReason = Literal["closed", "killed", "dropped", "timeout", "bad-hello", "other"]


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Counters:
    in_rpcs: int = 0
    in_bad_rpcs: int = 0
    out_rpc_errors: int = 0
    out_notifications: int = 0

    def add(self, other: Counters) -> None:
        self.in_rpcs += other.in_rpcs
        self.in_bad_rpcs += other.in_bad_rpcs
        self.out_rpc_errors += other.out_rpc_errors
        self.out_notifications += other.out_notifications


@dataclass
class SessionInfo:
    """A snapshot of one session (also handed to session listeners)."""

    session_id: int
    username: str
    source_host: str
    source_port: int = 0
    login_time: str = ""
    transport: str = "netconf-ssh"
    counters: Counters = field(default_factory=Counters)
    # set for "end"
    killed_by: int | None = None
    termination_reason: TerminationReason | None = None


SessionListener = Callable[[str, SessionInfo], None]


class ManagedSession(Protocol):
    """What the manager needs from a session (escnc.netconf.session.NetconfSession)."""

    session_id: int
    username: str

    def info(self) -> SessionInfo: ...
    def terminate(
        self, reason: TerminationReason, killed_by: int | None = None, flush: bool = True
    ) -> None: ...
    def wait_ended(self, timeout: float) -> bool: ...


@dataclass
class GlobalStats:
    netconf_start_time: str = field(default_factory=now_iso)
    in_bad_hellos: int = 0
    in_sessions: int = 0
    dropped_sessions: int = 0
    counters: Counters = field(default_factory=Counters)


class SessionManager:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._lock = threading.Lock()
        self._next_id = 1
        # every session that has a session-id, hello complete or not
        self._sessions: dict[int, ManagedSession] = {}
        self._started: set[int] = set()
        self._listeners: list[SessionListener] = []
        self._stats = GlobalStats()
        # counters of sessions that have ended
        self._finished = Counters()

    # --- used by the session layer -------------------------------------------------

    def allocate(self, session: ManagedSession) -> int:
        with self._lock:
            sid = self._next_id
            self._next_id += 1
            self._sessions[sid] = session
        return sid

    def started(self, session: ManagedSession) -> None:
        """The hello exchange completed."""
        with self._lock:
            self._started.add(session.session_id)
            self._stats.in_sessions += 1
        self._notify("start", session.info())

    def ended(self, session: ManagedSession, info: SessionInfo) -> None:
        with self._lock:
            was_started = info.session_id in self._started
        if was_started:
            # before the session disappears from the list: whoever sees it gone finds its
            # session-end already in the event log (ordered before later events)
            self._notify("end", info)
        with self._lock:
            self._sessions.pop(info.session_id, None)
            self._started.discard(info.session_id)
            self._finished.add(info.counters)
            if info.termination_reason == "bad-hello":
                self._stats.in_bad_hellos += 1
            elif was_started and info.termination_reason not in ("closed", "killed"):
                self._stats.dropped_sessions += 1

    def _notify(self, kind: str, info: SessionInfo) -> None:
        for listener in list(self._listeners):
            try:
                listener(kind, info)
            except Exception:
                log.exception("session listener failed for %s of session %d", kind, info.session_id)

    # --- public API ------------------------------------------------------------------

    def add_session_listener(self, listener: SessionListener) -> None:
        self._listeners.append(listener)

    def get(self, session_id: int) -> ManagedSession | None:
        with self._lock:
            return self._sessions.get(session_id)

    def list(self) -> builtins.list[SessionInfo]:
        """Sessions whose hello exchange completed, by session id."""
        with self._lock:
            live = [self._sessions[s] for s in sorted(self._started) if s in self._sessions]
        return [s.info() for s in live]

    def kill(self, session_id: int, by_session: int) -> None:
        """RFC 6241 kill-session: end ``session_id`` and release its locks now."""
        if session_id == by_session:
            raise RpcError(
                "invalid-value", "a session cannot kill itself (use close-session)",
                type="protocol", info={"bad-element": "session-id"},
            )
        session = self.get(session_id)
        if session is None or session_id not in self._started:
            raise RpcError(
                "invalid-value", f"no session with id {session_id}", type="protocol",
                info={"bad-element": "session-id"},
            )
        log.info("session %d killed by session %d", session_id, by_session)
        session.terminate("killed", killed_by=by_session)
        if not session.wait_ended(5.0):
            # Its thread is stuck in a handler: release its locks without waiting.
            release = getattr(self.services.datastore, "release_session", None)
            if release is not None:
                release(session_id)

    def stats(self) -> GlobalStats:
        with self._lock:
            live = list(self._sessions.values())
            total = Counters()
            total.add(self._finished)
            out = GlobalStats(
                netconf_start_time=self._stats.netconf_start_time,
                in_bad_hellos=self._stats.in_bad_hellos,
                in_sessions=self._stats.in_sessions,
                dropped_sessions=self._stats.dropped_sessions,
                counters=total,
            )
        for s in live:
            total.add(s.info().counters)
        return out

    def terminate_all(self) -> None:
        with self._lock:
            live = list(self._sessions.values())
        for s in live:
            s.terminate("other", flush=False)
        for s in live:
            s.wait_ended(5.0)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
