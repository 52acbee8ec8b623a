"""The datastore on the storage interface for active/standby (issue 18).

A standby Datastore follows the leader's commits on one PostgreSQL database; a write
with a stale fencing token commits nothing (both backends); a standby writes nothing
when it opens and settles what the old leader left when it takes over; a
datastore.sqlite3 from before the storage interface is adopted with its units and
its rollback history. The database and the elector are real; time is a ManualClock.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lxml import etree

from escnc.cluster import ElectionTimings, LeaderElector, NotLeader
from escnc.datastore.edit import EditOptions
from escnc.datastore.schema import Schema
from escnc.datastore.store import Datastore
from escnc.engine.clock import ManualClock
from escnc.services import CommitEvent
from escnc.settings import Settings
from escnc.storage import Storage
from pg_support import wait_for

E = "http://www.cisco.com/esc/esc"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
SCHEMA = Schema.load()
TIMINGS = ElectionTimings(lease_duration=15.0, renew_deadline=10.0, retry=2.0)
Factory = Callable[[], Storage]


def cfg(inner: str) -> etree._Element:
    return etree.fromstring(f'<config xmlns="{NC}" xmlns:nc="{NC}"><esc_datamodel '
                            f'xmlns="{E}">{inner}</esc_datamodel></config>')


def tenant(name: str, desc: str) -> etree._Element:
    return cfg(f"<tenants><tenant><name>{name}</name><description>{desc}</description>"
               "</tenant></tenants>")


def tenants(ds: Datastore, name: str = "running") -> dict[str, str]:
    with ds.reading(name) as tree:
        return {t.findtext(f"{{{E}}}name") or "": t.findtext(f"{{{E}}}description") or ""
                for t in tree.iter(f"{{{E}}}tenant")}


def query(storage: Storage, sql: str) -> list[tuple[object, ...]]:
    conn = storage.connect()
    try:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
    finally:
        conn.close()


@pytest.fixture
def electors() -> Iterator[Callable[[Storage, str], LeaderElector]]:
    made: list[LeaderElector] = []
    clock = ManualClock()

    def make(storage: Storage, name: str) -> LeaderElector:
        elector = LeaderElector(storage, address=f"{name}:830", node_id=name,
                                timings=TIMINGS, clock=clock).start()
        made.append(elector)
        assert wait_for(lambda: elector.ticks >= 1, timeout=30)
        return elector

    make.clock = clock  # type: ignore[attr-defined]
    yield make
    for elector in made:
        elector.stop(timeout=30)


def step(clock: ManualClock, *electors: LeaderElector) -> None:
    before = [e.ticks for e in electors]
    clock.advance(TIMINGS.retry)
    assert wait_for(lambda: all(e.ticks > b for e, b in zip(electors, before, strict=True)),
                    timeout=30)


@pytest.mark.postgresql
def test_a_standby_follows_the_leaders_commits(tmp_path: Path, pg_dsn: str) -> None:
    """Two Datastores on one database: the second shows every commit of the first
    (running, startup, history) without commit listeners; the first, following too,
    recognises its own notifications and never reloads."""
    a = Datastore(Settings(state_dir=tmp_path / "a", database=pg_dsn), SCHEMA)
    b = Datastore(Settings(state_dir=tmp_path / "b", database=pg_dsn), SCHEMA)
    try:
        heard: list[CommitEvent] = []
        b.add_commit_listener(heard.append)
        reloads: dict[str, list[int]] = {"a": [], "b": []}
        a.add_reload_listener(reloads["a"].append)
        b.add_reload_listener(reloads["b"].append)
        assert a.follow(poll=0.5) and b.follow(poll=0.5)
        # b has a candidate open: a reload keeps its content
        b.edit("candidate", tenant("cand", "mine"), EditOptions(), 7, "u")
        a.edit("running", tenant("t1", "one"), EditOptions(), 1, "u")
        assert wait_for(lambda: tenants(b) == {"t1": "one"}, timeout=10), tenants(b)
        for i in range(20):
            a.edit("running", tenant(f"t{i % 3}", str(i)), EditOptions(), 1, "u")
        want = tenants(a)
        assert wait_for(lambda: tenants(b) == want, timeout=10), (tenants(b), want)
        assert tenants(b, "candidate") == {"cand": "mine"}
        a.copy_config("startup", etree.fromstring(
            f'<config xmlns="{NC}"><esc_datamodel xmlns="{E}"><tenants><tenant>'
            "<name>s</name></tenant></tenants></esc_datamodel></config>"), 1, "u")
        assert wait_for(lambda: "s" in tenants(b, "startup"), timeout=10)
        assert wait_for(lambda: b.history() == a.history(), timeout=10)
        assert heard == [] and reloads["a"] == [] and reloads["b"]
        assert reloads["b"] == sorted(reloads["b"])
    finally:
        b.close()
        a.close()


@pytest.mark.parametrize("target", ["running", "startup"])
def test_a_write_with_a_stale_token_commits_nothing(
    tmp_path: Path, make_storage: Factory,
    electors: Callable[[Storage, str], LeaderElector], target: str,
) -> None:
    """Both backends: the leader's Datastore writes under its fence; once another node
    has taken the lease (the token moved on) its next write is refused with NotLeader
    before anything reaches storage, and memory is back to what storage holds."""
    leader = electors(make_storage(), "a")
    assert leader.is_leader
    storage = make_storage()
    ds = Datastore(Settings(state_dir=tmp_path), SCHEMA, storage=storage, fence=leader.fence)
    try:
        ds.edit("running", tenant("t", "1"), EditOptions(), 1, "u")
        units = query(storage, "SELECT ds, key, seq, xml FROM units ORDER BY ds, key")
        head = query(storage, "SELECT version, hid FROM datastore_head")
        history = ds.history()
        conn = storage.connect()
        conn.execute("UPDATE cluster_lease SET token = token + 1, holder = 'z'")
        conn.close()
        assert leader.fence.check() == 1  # the old leader has not noticed yet
        with pytest.raises(NotLeader):
            if target == "running":
                ds.edit("running", tenant("t", "2"), EditOptions(), 1, "u")
            else:
                ds.copy_config("startup", cfg("<tenants><tenant><name>x</name></tenant>"
                                              "</tenants>"), 1, "u")
        assert query(storage, "SELECT ds, key, seq, xml FROM units ORDER BY ds, key") == units
        assert query(storage, "SELECT version, hid FROM datastore_head") == head
        assert tenants(ds) == {"t": "1"} and tenants(ds, "startup") == {}
        assert ds.history() == history
    finally:
        ds.close()


@pytest.mark.postgresql
def test_a_standby_writes_nothing_until_it_takes_over(
    tmp_path: Path, pg_dsn: str, electors: Callable[[Storage, str], LeaderElector]
) -> None:
    """A standby opening the database neither writes startup nor rolls back the
    leader's pending confirmed commit; after the takeover it rolls that commit back
    (its session and timer died with the old leader), as a restart would."""
    from escnc.storage.postgresql import PostgresStorage

    clock: ManualClock = electors.clock  # type: ignore[attr-defined]
    ea = electors(PostgresStorage(pg_dsn), "a")
    eb = electors(PostgresStorage(pg_dsn), "b")
    assert ea.is_leader and not eb.is_leader
    a = Datastore(Settings(state_dir=tmp_path / "a"), SCHEMA,
                  storage=PostgresStorage(pg_dsn), fence=ea.fence)
    a.edit("running", tenant("keep", "1"), EditOptions(), 1, "u")
    a.edit("candidate", tenant("trial", "1"), EditOptions(), 1, "u")
    a.commit(1, "u", confirmed=True, timeout=600)
    b = Datastore(Settings(state_dir=tmp_path / "b"), SCHEMA,
                  storage=PostgresStorage(pg_dsn), fence=eb.fence)
    try:
        assert tenants(b) == {"keep": "1", "trial": "1"}  # not rolled back by b
        assert tenants(a) == {"keep": "1", "trial": "1"}
        with pytest.raises(NotLeader):
            b.edit("running", tenant("b", "1"), EditOptions(), 2, "u")
        a.close()  # the old leader goes away with its confirmed commit pending
        ea.stop()
        step(clock, eb)
        assert eb.is_leader
        b.take_over()
        assert tenants(b) == {"keep": "1"}
        b.edit("running", tenant("b", "1"), EditOptions(), 2, "u")
        again = Datastore(Settings(state_dir=tmp_path / "c"), SCHEMA,
                          storage=PostgresStorage(pg_dsn))
        assert tenants(again) == {"keep": "1", "b": "1"}
        again.close()
    finally:
        b.close()


OLD_SCHEMA = """
CREATE TABLE units (
    ds TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, xml BLOB NOT NULL,
    PRIMARY KEY (ds, key));
CREATE TABLE history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, username TEXT NOT NULL,
    session_id INTEGER NOT NULL, nchanges INTEGER NOT NULL, undo TEXT NOT NULL);
CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT);
"""


def test_an_old_format_sqlite_file_is_adopted(tmp_path: Path) -> None:
    """A datastore.sqlite3 written by an escnc before the storage interface (the
    schema above, verbatim): units, rollback history and meta stay; new history ids
    continue after the AUTOINCREMENT counter (ids are never reused)."""
    root = f'<data xmlns="{NC}"><esc_datamodel xmlns="{E}"><tenants/></esc_datamodel></data>'
    t1 = f'<tenant xmlns="{E}"><name>old</name><description>v2</description></tenant>'
    t1_before = f'<tenant xmlns="{E}"><name>old</name><description>v1</description></tenant>'
    db = sqlite3.connect(tmp_path / "datastore.sqlite3")
    db.executescript(OLD_SCHEMA)
    for ds in ("running", "startup"):
        db.execute("INSERT INTO units VALUES (?, ?, ?, ?)", (ds, '["r"]', 1, root.encode()))
        db.execute("INSERT INTO units VALUES (?, ?, ?, ?)",
                   (ds, '["t", "old"]', 2, t1.encode()))
    db.execute("INSERT INTO meta VALUES ('unit_layout', '2')")
    undo = json.dumps([[["t", "old"], 2, t1_before]])
    for _ in range(1, 8):  # ids 1..7, then 6 and 7 dropped: the counter stays at 7
        db.execute("INSERT INTO history(time, username, session_id, nchanges, undo)"
                   " VALUES ('2026-01-01T00:00:00Z', 'old', 1, 1, ?)", (undo,))
    db.execute("DELETE FROM history WHERE id >= 6")
    db.commit()
    db.close()
    ds = Datastore(Settings(state_dir=tmp_path), SCHEMA)
    try:
        assert tenants(ds) == {"old": "v2"} and tenants(ds, "startup") == {"old": "v2"}
        assert [h[0] for h in ds.history()] == [5, 4, 3, 2, 1]
        ds.edit("running", tenant("new", "x"), EditOptions(), 1, "u")
        assert [h[0] for h in ds.history()][:2] == [8, 5]
        ds.rollback(5, 1, "u")  # an old entry's undo data still applies
        assert tenants(ds) == {"old": "v1"}
    finally:
        ds.close()
    again = Datastore(Settings(state_dir=tmp_path), SCHEMA)
    try:
        assert tenants(again) == {"old": "v1"}
        assert [h[0] for h in again.history()][:3] == [9, 8, 5]
    finally:
        again.close()
    db = sqlite3.connect(tmp_path / "datastore.sqlite3")
    assert db.execute("SELECT version FROM escnc_schema WHERE component = 'datastore'"
                      ).fetchone() == (1,)
    db.close()


@pytest.mark.postgresql
def test_a_lost_postgresql_connection_is_replaced(tmp_path: Path, pg_dsn: str) -> None:
    """The server ends the datastore's connections (a PostgreSQL restart, a failover):
    a commit whose connection died before COMMIT is written once more on a new
    connection, reads retry on a fresh pooled one; nothing is lost or doubled, and a
    standby following it keeps following (its LISTEN connection reconnects)."""
    import psycopg

    from escnc.storage.postgresql import PostgresStorage

    a = Datastore(Settings(state_dir=tmp_path / "a"), SCHEMA,
                  storage=PostgresStorage(pg_dsn, application_name="escnc-victim"))
    b = Datastore(Settings(state_dir=tmp_path / "b", database=pg_dsn), SCHEMA)
    try:
        assert b.follow(poll=0.2)
        a.edit("running", tenant("t", "0"), EditOptions(), 1, "u")
        for i in range(1, 4):
            with psycopg.connect(pg_dsn, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name IN ('escnc-victim', 'escnc')").fetchone()
            assert killed is not None and killed[0] >= 1
            a.edit("running", tenant("t", str(i)), EditOptions(), 1, "u")
            assert a.history()[0][0] == i + 1
        assert wait_for(lambda: tenants(b) == {"t": "3"}, timeout=10), tenants(b)
    finally:
        b.close()
        a.close()
    again = Datastore(Settings(state_dir=tmp_path / "c", database=pg_dsn), SCHEMA)
    try:
        assert tenants(again) == {"t": "3"}
        assert [h[0] for h in again.history()] == [4, 3, 2, 1]
    finally:
        again.close()
