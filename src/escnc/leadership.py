"""Active/standby (issue 18, docs/ha.md): only the leader runs the engine.

With ``settings.database`` set, app.py builds one :class:`Leadership` per node: a
:class:`~escnc.cluster.LeaderElector` on the shared database and the work a term
runs (:class:`LeaderWork`: the engine -- hypervisor connections, reconcile, jobs,
monitor, capacity, elastic -- and the callback outbox). On election the node reloads
what it is given (``reloadables``: anything with ``reload()``, e.g. the datastore and
the stores once they live in the database), then starts the work on a thread of its
own (the elector keeps renewing meanwhile). On demotion the work stops at once, with
what is left of the lease as the budget for running jobs; a demotion that comes while
the work is still starting stops it as soon as the start returns. Every node serves
sessions; writes are refused on a standby in the request layer (rpc/standby.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from lxml import etree

from escnc.cluster import ElectionTimings, LeaderElector, NotLeader
from escnc.cluster.elector import default_node_id
from escnc.ns import ESC
from escnc.storage import Connection, Storage

log = logging.getLogger(__name__)


class Reloadable(Protocol):
    def reload(self) -> None:
        """Re-read durable state another node may have changed (before the term)."""


@dataclass
class LeaderWork:
    """What a term starts and stops (app.py provides it)."""

    start: Callable[[int], None]  # (fencing token)
    stop: Callable[[str, float], None]  # (reason, seconds running jobs may take)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def stop_budget(timings: ElectionTimings) -> float:
    """Seconds the work may take to stop: it must be over before a standby can take
    over, i.e. within lease_duration - renew_deadline of the last good renewal."""
    return max(0.2, (timings.lease_duration - timings.renew_deadline) * 0.8)


class Leadership:
    def __init__(
        self,
        storage: Storage,
        work: LeaderWork,
        *,
        address: str,
        node_id: str = "",
        timings: ElectionTimings | None = None,
        reloadables: Sequence[Reloadable] = (),
    ) -> None:
        self.work = work
        self.reloadables = list(reloadables)  # the lead plugs more in (docs/ha.md)
        self.timings = timings or ElectionTimings()
        self.elector = LeaderElector(
            storage, address=address, node_id=node_id or default_node_id(),
            timings=self.timings, on_elected=self._elected, on_demoted=self._demoted,
        )
        self.fence = TermFence(self)
        self._work_lock = threading.Lock()  # one start or stop at a time
        self._running: int | None = None  # the token whose work runs
        self.engine = "stopped"  # stopped | starting | running | failed
        self.engine_changed_ms = wall_ms()
        self.terms = 0  # terms whose work started (tests)

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self.elector.start()

    def stop(self) -> None:
        self.elector.stop()  # demotes first (on_demoted stops the work)
        self._end("stopping")

    @property
    def working(self) -> bool:
        """The term's work is starting or running (the engine takes commits)."""
        return self.engine in ("starting", "running")

    def _set(self, state: str) -> None:
        self.engine, self.engine_changed_ms = state, wall_ms()

    def _elected(self, token: int) -> None:
        threading.Thread(target=self._begin, args=(token,), name="leader-term",
                         daemon=True).start()

    def _begin(self, token: int) -> None:
        with self._work_lock:
            if self.elector.valid_token() != token:
                return  # the term ended before it began
            self._set("starting")
            try:
                for item in self.reloadables:
                    item.reload()
                self.work.start(token)
            except Exception:
                log.exception("the leader's engine did not start (token %d): resigning",
                              token)
                self._running = token
                self._stop_locked("start failed")
                self._set("failed")
                threading.Thread(target=self.elector.resign, args=("engine start failed",),
                                 name="leader-resign", daemon=True).start()
                return
            self._running = token
            self.terms += 1
            self._set("running")
            log.info("engine started as leader (fencing token %d) at %s", token,
                        iso(self.engine_changed_ms))
            if self.elector.valid_token() != token:
                self._stop_locked("demoted while starting")

    def _demoted(self, reason: str) -> None:
        self._end(reason)

    def _end(self, reason: str) -> None:
        with self._work_lock:
            if self._running is not None:
                self._stop_locked(reason)

    def _stop_locked(self, reason: str) -> None:
        began = time.monotonic()
        try:
            self.work.stop(reason, stop_budget(self.timings))
        except Exception:
            log.exception("stopping the leader's engine")
        self._running = None
        self._set("stopped")
        log.warning("engine stopped (%s) in %.2f s at %s", reason,
                    time.monotonic() - began, iso(self.engine_changed_ms))

    # -- operators --------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        out = self.elector.status()
        out.update(address=self.elector.address, engine=self.engine,
                   engine_changed_ms=self.engine_changed_ms)
        return out

    def opdata(self) -> list[etree._Element]:
        """esc_datamodel/opdata/cluster; and system_status while this node's engine is
        not running (the engine's own opdata has it otherwise)."""
        st = self.status()
        root = etree.Element(_q("esc_datamodel"), nsmap={None: ESC})  # type: ignore[dict-item]
        op = etree.SubElement(root, _q("opdata"))
        if self.engine != "running":
            s = etree.SubElement(op, _q("system_status"))
            leader = st["leader"] or "not known yet"
            _leaf(s, "status", "ACTIVE" if st["role"] == "standby" else "STARTING")
            _leaf(s, "status_message", f"standby (the leader is {leader})"
                  if st["role"] == "standby" else f"leader, engine {self.engine}")
        c = etree.SubElement(op, _q("cluster"))
        _leaf(c, "role", st["role"])
        _leaf(c, "node", st["node"])
        _leaf(c, "address", st["address"])
        _leaf(c, "leader", st["leader"])
        _leaf(c, "token", st["token"])
        _leaf(c, "lease_version", st["lease_version"])
        _leaf(c, "lease_age_ms", st["lease_age_ms"])
        _leaf(c, "engine", self.engine)
        _leaf(c, "engine_changed", iso(self.engine_changed_ms))
        for m in self.elector.last_members():  # no I/O on the session's thread
            e = etree.SubElement(c, _q("member"))
            _leaf(e, "node", m.node)
            _leaf(e, "address", m.address)
            _leaf(e, "role", m.role)
            _leaf(e, "last_seen", iso(m.seen_ms))
        return [root]


class TermFence:
    """The elector's fence, and a leader whose engine failed to start takes no writes
    (they would not be acted on); the not-leader error names this node, the client
    retries. ``check_in`` is the elector's, for storage writes."""

    def __init__(self, leadership: Leadership) -> None:
        self._leadership = leadership
        self._fence = leadership.elector.fence

    @property
    def token(self) -> int | None:
        return self._fence.token

    def check(self) -> int:
        token = self._fence.check()
        if self._leadership.engine == "failed":
            raise NotLeader("this node leads but its engine failed to start (see its log)",
                            self._leadership.elector.address)
        return token

    def check_in(self, conn: Connection) -> int:
        self.check()
        return self._fence.check_in(conn)


def _q(name: str) -> str:
    return f"{{{ESC}}}{name}"


def _leaf(parent: etree._Element, name: str, value: object) -> None:
    if value is not None and value != "":
        etree.SubElement(parent, _q(name)).text = str(value)
