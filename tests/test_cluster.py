"""Leader election and fencing (escnc.cluster) on a real database.

Time is the injectable ManualClock, shared by the contenders (each measures only its
own durations, so one clock for both is no shortcut); the database is real. Every wait
for a thread is bounded; nothing asserts how fast anything is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest

from escnc.cluster import ElectionTimings, LeaderElector, NotLeader, SingleNodeFence
from escnc.engine.clock import ManualClock
from escnc.storage import Storage, StorageError
from escnc.storage.postgresql import PostgresStorage
from pg_support import wait_for

TIMINGS = ElectionTimings(lease_duration=15.0, renew_deadline=10.0, retry=2.0)
Factory = Callable[[], Storage]


class Journal:
    """What the nodes report, in the order they report it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[tuple[str, str, object]] = []

    def add(self, node: str, what: str, detail: object) -> None:
        with self.lock:
            self.entries.append((node, what, detail))

    def index(self, node: str, what: str, detail: object = None) -> int:
        """Position of the first such report (with ``detail`` if given)."""
        with self.lock:
            for i, (n, w, d) in enumerate(self.entries):
                if (n, w) == (node, what) and detail in (None, d):
                    return i
        raise AssertionError(f"{node} never reported {what}: {self.entries}")

    def has(self, node: str, what: str) -> bool:
        with self.lock:
            return any((n, w) == (node, what) for n, w, _ in self.entries)


@pytest.fixture
def cluster() -> Iterator[Callable[..., LeaderElector]]:
    made: list[LeaderElector] = []

    def make(storage: Storage, name: str, clock: ManualClock, journal: Journal,
             start: bool = True) -> LeaderElector:
        elector = LeaderElector(
            storage, address=f"{name}.example:830", node_id=name, timings=TIMINGS,
            clock=clock,
            on_elected=lambda token: journal.add(name, "elected", token),
            on_demoted=lambda reason: journal.add(name, "demoted", reason),
        )
        made.append(elector)
        return elector.start() if start else elector

    yield make
    for elector in made:
        elector.stop(timeout=30)


def step(clock: ManualClock, *electors: LeaderElector, seconds: float = TIMINGS.retry) -> None:
    """Advance the clock one poll interval and wait (bounded) for a round of each."""
    before = [e.ticks for e in electors]
    clock.advance(seconds)
    assert wait_for(lambda: all(e.ticks > b for e, b in zip(electors, before, strict=True)),
                    timeout=30), (f"an elector did not finish its round: ticks {before} ->"
                                  f" {[e.ticks for e in electors]} at {clock.now()}")


def run_until(clock: ManualClock, predicate: Callable[[], bool], *electors: LeaderElector,
              rounds: int = 30) -> None:
    for _ in range(rounds):
        if predicate():
            return
        step(clock, *electors)
    assert predicate(), f"not reached within {rounds} rounds"


def first_round(clock: ManualClock, *electors: LeaderElector) -> None:
    assert wait_for(lambda: all(e.ticks >= 1 for e in electors), timeout=30)


def test_one_leader_and_a_clean_handover(make_storage: Factory) -> None:
    """Both backends: one of two contenders leads; the other waits; when the leader
    stops it releases the lease and the standby leads at its next poll, with a higher
    token; while a node is not the leader its fence refuses."""
    clock, journal = ManualClock(), Journal()
    a = LeaderElector(make_storage(), address="a:830", node_id="a", timings=TIMINGS,
                      clock=clock, on_elected=lambda t: journal.add("a", "elected", t),
                      on_demoted=lambda r: journal.add("a", "demoted", r)).start()
    first_round(clock, a)
    assert a.is_leader and a.fence.check() == 1
    b = LeaderElector(make_storage(), address="b:830", node_id="b", timings=TIMINGS,
                      clock=clock, on_elected=lambda t: journal.add("b", "elected", t))
    b.start()
    try:
        first_round(clock, b)
        for _ in range(10):  # far beyond the lease duration: a keeps renewing
            step(clock, a, b)
        assert a.is_leader and not b.is_leader
        with pytest.raises(NotLeader) as err:
            b.fence.check()
        assert err.value.leader == "a:830"
        assert b.status()["role"] == "standby" and b.status()["leader"] == "a:830"
        assert a.status()["role"] == "leader" and a.status()["token"] == 1
        assert [(m.node, m.address, m.role) for m in b.members()] == [
            ("a", "a:830", "leader"), ("b", "b:830", "standby")]
        a.stop()
        assert [m.node for m in b.members()] == ["b"]  # a left
        assert journal.has("a", "demoted") and not a.is_leader
        step(clock, b)  # no lease duration to wait out: the lease was released
        assert b.is_leader and b.fence.check() == 2
        assert journal.index("a", "demoted") < journal.index("b", "elected")
        with pytest.raises(NotLeader):
            a.fence.check()
    finally:
        b.stop()
        a.stop()


def victim_pids(dsn: str, node: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s", (f"escnc-{node}",)).fetchall()
    return len(rows)


def pg(dsn: str, node: str) -> PostgresStorage:
    return PostgresStorage(dsn, application_name=f"escnc-{node}", network_timeout=5)


@pytest.mark.postgresql
def test_leader_that_loses_the_database_steps_down_before_takeover(
    pg_dsn: str, cluster: Callable[..., LeaderElector]
) -> None:
    """pg_terminate_backend on the leader's connection: the leader reports demoted at
    its next renewal, the standby takes over only after the lease duration, with a
    strictly higher token; the old leader comes back as a standby naming the new one."""
    clock, journal = ManualClock(), Journal()
    a = cluster(pg(pg_dsn, "a"), "a", clock, journal)
    first_round(clock, a)
    b = cluster(pg(pg_dsn, "b"), "b", clock, journal)
    first_round(clock, b)
    step(clock, a, b)
    assert a.fence.check() == 1 and not b.is_leader
    assert victim_pids(pg_dsn, "a") >= 1
    step(clock, a, b)  # a's renewal fails on the dead connection
    assert journal.has("a", "demoted") and not a.is_leader
    with pytest.raises(NotLeader):
        a.fence.check()
    assert not b.is_leader  # the lease has not expired for b yet
    run_until(clock, lambda: b.is_leader, a, b)
    assert journal.index("a", "demoted") < journal.index("b", "elected", 2)
    assert b.fence.check() == 2
    run_until(clock, lambda: a.status()["leader"] == "b.example:830", a, b)
    for _ in range(10):
        step(clock, a, b)
    assert b.is_leader and not a.is_leader and b.fence.check() == 2


@pytest.mark.postgresql
def test_a_stuck_renewal_demotes_at_the_deadline(
    pg_dsn: str, cluster: Callable[..., LeaderElector]
) -> None:
    """The leader's renewal hangs (its lease row is locked, as on a dead network): the
    watchdog demotes it at the renew deadline although the call has not returned, and
    the standby -- whose takeover blocks on the same row -- is not elected before."""
    clock, journal = ManualClock(), Journal()
    a = cluster(pg(pg_dsn, "a"), "a", clock, journal)
    first_round(clock, a)
    b = cluster(pg(pg_dsn, "b"), "b", clock, journal)
    first_round(clock, b)
    step(clock, a, b)
    assert a.fence.check() == 1
    blocker = psycopg.connect(pg_dsn)
    try:
        blocker.execute("SELECT * FROM cluster_lease FOR UPDATE")  # held: renewals wait
        ticks = a.ticks
        clock.advance(TIMINGS.retry)  # a's next renewal starts and blocks
        assert wait_for(lambda: b.ticks > 0 and a.ticks == ticks, timeout=5)
        for _ in range(int(TIMINGS.renew_deadline / TIMINGS.retry) + 1):
            clock.advance(TIMINGS.retry)
            if wait_for(lambda: journal.has("a", "demoted"), timeout=1):
                break

        def state() -> str:  # what a failure message shows
            return (f"clock {clock.now()}, ticks a {a.ticks} (was {ticks}) b {b.ticks},"
                    f" journal {journal.entries}, a {a.status()}, b {b.status()}")

        assert wait_for(lambda: journal.has("a", "demoted"), timeout=30), state()
        assert a.ticks == ticks, state()  # its renewal is still stuck
        assert not a.is_leader and not b.is_leader, state()
        with pytest.raises(NotLeader):
            a.fence.check()
        clock.advance(TIMINGS.lease_duration)  # b now tries to take over (and waits)
    finally:
        blocker.rollback()
        blocker.close()
    electors = (a, b)
    run_until(clock, lambda: any(e.is_leader for e in electors), a, b)
    leader = a if a.is_leader else b
    assert leader.fence.check() == 2, state()
    assert journal.index("a", "demoted") < journal.index(leader.node_id, "elected", 2), state()


@pytest.mark.postgresql
def test_the_storage_fence_refuses_a_stale_token(
    pg_dsn: str, cluster: Callable[..., LeaderElector]
) -> None:
    """A leader that has not noticed the takeover yet passes check() but its write
    transaction fails check_in() and commits nothing."""
    clock, journal = ManualClock(), Journal()
    a = cluster(pg(pg_dsn, "a"), "a", clock, journal)
    first_round(clock, a)
    conn = pg(pg_dsn, "writer").connect()
    conn.execute("CREATE TABLE edits (n INTEGER)")
    with conn.transaction():
        assert a.fence.check_in(conn) == 1
        conn.execute("INSERT INTO edits VALUES (1)")
    with psycopg.connect(pg_dsn, autocommit=True) as other:  # another node took over
        other.execute("UPDATE cluster_lease SET token = token + 1, holder = 'z'")
    assert a.fence.check() == 1  # locally still within its term
    with pytest.raises(NotLeader), conn.transaction():
        a.fence.check_in(conn)
        conn.execute("INSERT INTO edits VALUES (2)")
    assert conn.execute("SELECT n FROM edits").fetchall() == [(1,)]
    step(clock, a)  # the next renewal notices
    assert journal.has("a", "demoted") and not a.is_leader
    conn.close()


def test_single_node_fence_and_timing_rules() -> None:
    assert SingleNodeFence().check() == 0
    with pytest.raises(ValueError):
        ElectionTimings(lease_duration=10, renew_deadline=10, retry=1)
    with pytest.raises(ValueError):
        ElectionTimings(lease_duration=10, renew_deadline=5, retry=5)


def test_an_unreachable_database_leaves_the_node_standby() -> None:
    clock = ManualClock()
    elector = LeaderElector(
        PostgresStorage("postgresql://u@127.0.0.1:1/d", connect_timeout=1),
        address="x:830", node_id="x", timings=TIMINGS, clock=clock).start()
    try:
        first_round(clock, elector)
        assert not elector.is_leader
        with pytest.raises(NotLeader) as err:
            elector.fence.check()
        assert err.value.leader is None
    finally:
        elector.stop()
    assert issubclass(NotLeader, Exception) and not issubclass(NotLeader, StorageError)


@pytest.mark.postgresql
def test_a_takeover_waits_for_a_fenced_write_in_flight(
    pg_dsn: str, cluster: Callable[..., LeaderElector]
) -> None:
    """check_in share-locks the lease row to the commit: a takeover issued while the
    leader's write transaction is open waits for it, so the write commits under the
    token that was current, and the new token only exists after it."""
    from escnc.cluster.lease import LeaseStore

    clock, journal = ManualClock(), Journal()
    a = cluster(pg(pg_dsn, "a"), "a", clock, journal)
    first_round(clock, a)
    writer = pg(pg_dsn, "writer").connect()
    writer.execute("CREATE TABLE edits (n INTEGER, token INTEGER)")
    thief_conn = pg(pg_dsn, "thief").connect()
    store = LeaseStore()
    seen = store.read(thief_conn)
    assert seen is not None
    taken: list[int | None] = []
    with writer.transaction():
        token = a.fence.check_in(writer)
        writer.execute("INSERT INTO edits VALUES (1, ?)", (token,))
        thief = threading.Thread(
            target=lambda: taken.append(store.acquire(thief_conn, "z", "z:830", seen)))
        thief.start()

        def thief_waits() -> bool:
            with psycopg.connect(pg_dsn, autocommit=True) as admin:
                row = admin.execute(
                    "SELECT wait_event_type FROM pg_stat_activity"
                    " WHERE application_name = 'escnc-thief'").fetchone()
            return row is not None and row[0] == "Lock"

        assert wait_for(thief_waits, timeout=30), "the takeover did not wait for the write"
        assert taken == []
    thief.join(timeout=30)
    assert taken == [2]
    assert writer.execute("SELECT n, token FROM edits").fetchall() == [(1, 1)]
    with pytest.raises(NotLeader), writer.transaction():
        a.fence.check_in(writer)  # token 1 is stale now
    writer.close()
    thief_conn.close()
