"""escnc.storage on both backends: SQL dialect, migrations with a version table, the
event log's sequence numbers with two writers on one database, a lost connection."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from escnc.events.log import EventLog, format_event_time, now_ms
from escnc.storage import (
    Migration,
    SchemaTooNew,
    Storage,
    StorageError,
    StorageUnavailable,
    migrate,
    open_storage,
    schema_version,
)
from escnc.storage.base import POSTGRESQL, SQLITE
from escnc.storage.postgresql import PostgresStorage, redact
from escnc.storage.sqlite import SqliteStorage

Factory = Callable[[], Storage]


def test_dialect_translation() -> None:
    sql = "SELECT '?', x FROM t WHERE a = ? AND b LIKE 'a%' AND c = ? {for_share}"
    assert SQLITE.sql(sql) == "SELECT '?', x FROM t WHERE a = ? AND b LIKE 'a%' AND c = ? "
    assert POSTGRESQL.sql(sql) == (
        "SELECT '?', x FROM t WHERE a = %s AND b LIKE 'a%%' AND c = %s  FOR SHARE"
    )
    assert POSTGRESQL.sql("CREATE TABLE t (b {blob}, n {bigint})") == (
        "CREATE TABLE t (b BYTEA, n BIGINT)"
    )


def test_open_storage_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_storage("", tmp_path / "x.sqlite3"), SqliteStorage)
    pg = open_storage("postgresql://u:secret@db.example:5432/escnc", tmp_path / "x")
    assert isinstance(pg, PostgresStorage)
    assert "secret" not in pg.describe() and "db.example" in pg.describe()
    assert redact("postgresql://u@h/d") == "postgresql://u@h/d"
    with pytest.raises(ValueError):
        open_storage("mysql://h/d", tmp_path / "x")


def test_unreachable_postgresql_is_unavailable() -> None:
    port = 1  # nothing listens on port 1 of loopback
    storage = PostgresStorage(f"postgresql://u@127.0.0.1:{port}/d", connect_timeout=2)
    with pytest.raises(StorageUnavailable):
        storage.connect()


MIGRATIONS = (
    Migration(1, ("CREATE TABLE things (id {bigint} PRIMARY KEY, data {blob} NOT NULL)",)),
    Migration(2, ("ALTER TABLE things ADD COLUMN name TEXT",)),
)


def test_migrations_run_once_and_refuse_a_newer_schema(make_storage: Factory) -> None:
    conn = make_storage().connect()
    assert schema_version(conn, "things") == 0
    assert migrate(conn, "things", MIGRATIONS[:1]) == 1
    conn.execute("INSERT INTO things(id, data) VALUES(?, ?)", (1, b"\x00\xff"))
    assert migrate(conn, "things", MIGRATIONS) == 2  # only migration 2 runs
    assert migrate(conn, "things", MIGRATIONS) == 2  # nothing to do
    conn.execute("UPDATE things SET name = ? WHERE id = ?", ("one", 1))
    assert conn.execute("SELECT data, name FROM things").fetchall() == [(b"\x00\xff", "one")]
    assert schema_version(conn, "things") == 2
    # an older escnc (knows version 1 only) must not touch a version-2 schema
    with pytest.raises(SchemaTooNew):
        migrate(conn, "things", MIGRATIONS[:1])
    with pytest.raises(ValueError):
        migrate(conn, "things", (Migration(2, ()),))
    conn.close()


def test_a_failed_migration_changes_nothing(make_storage: Factory) -> None:
    conn = make_storage().connect()
    broken = (*MIGRATIONS, Migration(3, ("CREATE TABLE more (x TEXT)", "NOT SQL AT ALL")))
    with pytest.raises(StorageError):
        migrate(conn, "things", broken)
    assert schema_version(conn, "things") == 0  # the whole upgrade rolled back
    assert migrate(conn, "things", MIGRATIONS) == 2
    conn.close()


def test_transactions_commit_or_roll_back(make_storage: Factory) -> None:
    conn = make_storage().connect()
    migrate(conn, "things", MIGRATIONS)
    with conn.transaction():
        conn.execute("INSERT INTO things(id, data) VALUES(?, ?)", (1, b"a"))
    with pytest.raises(KeyError), conn.transaction():  # the caller's error passes through
        conn.execute("INSERT INTO things(id, data) VALUES(?, ?)", (2, b"b"))
        raise KeyError("boom")
    with pytest.raises(StorageError), conn.transaction():  # duplicate key
        conn.execute("INSERT INTO things(id, data) VALUES(?, ?)", (3, b"c"))
        conn.execute("INSERT INTO things(id, data) VALUES(?, ?)", (1, b"d"))
    assert conn.execute("SELECT id FROM things ORDER BY id").fetchall() == [(1,)]
    conn.close()


def test_two_migrating_nodes_migrate_once(make_storage: Factory) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def node() -> None:
        conn = make_storage().connect()
        try:
            barrier.wait(timeout=30)
            migrate(conn, "things", MIGRATIONS)
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=node) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    conn = make_storage().connect()
    assert schema_version(conn, "things") == 2
    conn.close()


def test_two_writers_share_one_gapless_sequence(make_storage: Factory) -> None:
    """Two logs on one database (two nodes): sequence numbers are unique, each writer's
    are increasing, the table holds 1..N without gaps, eventTime follows the sequence,
    and a reader polling during the writes never sees an older seq appear later."""
    logs = [EventLog(storage=make_storage()) for _ in range(2)]
    per = 300
    got: dict[int, list[int]] = {0: [], 1: []}
    seen: list[int] = []
    done = threading.Event()
    gaps: list[tuple[int, int]] = []

    def write(i: int) -> None:
        for n in range(per):
            body = f"<e>{i}.{n}</e>".encode()
            got[i].append(logs[i].append_event("NETCONF", now_ms(), body).seq)

    def read() -> None:
        reader = EventLog(storage=make_storage())
        cursor = 0
        while True:
            finished = done.is_set()
            batch = reader.read_after(cursor, 1000)
            if not batch:
                time.sleep(0.002)
            for event in batch:
                if event.seq != cursor + 1:
                    gaps.append((cursor, event.seq))
                cursor = event.seq
                seen.append(cursor)
            if finished:
                break
        reader.close()

    readers = [threading.Thread(target=read)]
    writers = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(timeout=120)
    done.set()
    readers[0].join(timeout=60)
    assert all(got[i] == sorted(got[i]) and len(got[i]) == per for i in got)
    assert sorted(got[0] + got[1]) == list(range(1, 2 * per + 1))
    assert gaps == [] and seen == list(range(1, 2 * per + 1))
    replayed = list(logs[0].replay(None))
    assert [e.seq for e in replayed] == list(range(1, 2 * per + 1))
    times = [e.ts_ms for e in replayed]
    assert times == sorted(times)
    assert {e.body for e in replayed} == {
        f"<e>{i}.{n}</e>".encode() for i in range(2) for n in range(per)
    }
    assert logs[1].size_bytes == sum(len(e.body) for e in replayed)
    for log in logs:
        log.close()


def test_an_event_key_is_logged_once_across_writers(make_storage: Factory) -> None:
    """An idempotency key is stored in its event's transaction: of two nodes (or a
    publisher before and after a restart) publishing under one key, one appends, the
    other appends nothing; the key outlives retention until it is forgotten."""
    logs = [EventLog(storage=make_storage()) for _ in range(2)]
    results: list[object] = []
    barrier = threading.Barrier(2)

    def write(i: int) -> None:
        barrier.wait()
        results.append(logs[i].append_keyed("escEvent", now_ms(), b"<alive/>", "d1/vm1/alive"))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r is None for r in results) == [False, True]
    assert logs[0].count() == 1
    assert logs[1].logged_keys(["d1/vm1/alive", "d1/vm2/alive"]) == {"d1/vm1/alive"}
    logs[0].prune(None, 0)  # retention drops the event, not its key
    assert logs[0].append_keyed("escEvent", now_ms(), b"<alive/>", "d1/vm1/alive") is None
    assert logs[0].forget_keys("d1/") == 1
    assert logs[0].logged_keys(["d1/vm1/alive"]) == set()
    assert logs[0].append_keyed("escEvent", now_ms(), b"<alive/>", "d1/vm1/alive") is not None
    for log in logs:
        log.close()


def test_a_log_written_before_the_storage_interface_is_adopted(tmp_path: Path) -> None:
    """events.sqlite3 of an older escnc: its events, counter and creation time stay."""
    path = tmp_path / "events.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL,"
        " ts_ms INTEGER NOT NULL, event_time TEXT NOT NULL, body BLOB NOT NULL);"
        "CREATE INDEX events_ts ON events(ts_ms);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    )
    old.execute("INSERT INTO meta VALUES('created', '2020-01-01T00:00:00.000+00:00')")
    for i in range(5):
        old.execute("INSERT INTO events(stream, ts_ms, event_time, body) VALUES(?,?,?,?)",
                    ("NETCONF", 1000 + i, format_event_time(1000 + i), b"<x/>"))
    old.execute("DELETE FROM events WHERE seq >= 4")  # pruned: the counter is at 5
    old.commit()
    old.close()
    log = EventLog(path)
    assert log.created == "2020-01-01T00:00:00.000+00:00"
    assert log.last_seq() == 5 and log.count() == 3 and log.size_bytes == 12
    assert log.append_event("NETCONF", 0, b"<y/>").seq == 6  # never reuses 4 and 5
    assert [e.seq for e in log.replay(None)] == [1, 2, 3, 6]
    assert list(log.replay(None))[-1].ts_ms == 1002  # not before the newest kept event
    log.close()


@pytest.mark.postgresql
def test_a_lost_postgresql_connection_is_replaced(pg_dsn: str) -> None:
    """The server ends the log's connections (a PostgreSQL restart, a failover under
    Patroni): the next call fails cleanly, the one after reconnects, nothing is lost."""
    import psycopg

    log = EventLog(storage=PostgresStorage(pg_dsn, application_name="escnc-victim"))
    assert log.append_event("NETCONF", now_ms(), b"<a/>").seq == 1
    assert log.count() == 1
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                      " WHERE application_name = 'escnc-victim'")
    outcomes = []
    for body in (b"<b/>", b"<c/>"):
        try:
            outcomes.append(log.append_event("NETCONF", now_ms(), body).seq)
        except StorageUnavailable:
            outcomes.append(None)
    assert outcomes in ([None, 2], [2, 3])  # at most the first call fails
    for _ in range(2):  # the pooled reader connection was cut too
        try:
            count = log.count()
            break
        except StorageUnavailable:
            continue
    assert count == len([o for o in outcomes if o]) + 1
    assert [e.seq for e in log.replay(None)] == list(range(1, count + 1))
    log.close()


def test_storage_and_cluster_sit_at_the_bottom() -> None:
    from test_layers import modules

    for package, allowed in (("storage", ("escnc.storage",)),
                             ("cluster", ("escnc.storage", "escnc.cluster"))):
        for name, found in modules(package).items():
            for module, _ in found:
                if module.startswith("escnc"):
                    assert module.startswith(allowed), f"{name} imports {module}"


def test_without_postgresql_ci_fails_instead_of_skipping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pg_server fixture: no server -> skip on a workstation, failure when CI=true."""
    import os
    import subprocess
    import sys

    from pg_support import PgServer, PgUnavailable

    here = Path(__file__).resolve().parent
    monkeypatch.setenv("PG_BINDIR", str(tmp_path / "no-such-dir"))
    with pytest.raises(PgUnavailable):
        PgServer().start()
    test = "tests/test_storage.py::test_a_lost_postgresql_connection_is_replaced"
    outcomes = {}
    for ci in ("true", ""):
        env = {k: v for k, v in os.environ.items() if k != "ESCNC_TEST_POSTGRES"}
        env["CI"] = ci
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              test], cwd=here.parent, env=env, capture_output=True,
                             text=True, timeout=300)
        outcomes[ci] = (run.returncode, run.stdout)
    assert outcomes["true"][0] == 1 and "PostgreSQL did not start in CI" in outcomes["true"][1]
    assert outcomes[""][0] == 0 and "1 skipped" in outcomes[""][1]


_WRITER = """
import sys
from pathlib import Path
from escnc.events.log import EventLog, now_ms
from escnc.storage.postgresql import PostgresStorage
from escnc.storage.sqlite import SqliteStorage
target = sys.argv[1]
storage = PostgresStorage(target) if target.startswith("postgresql://") else SqliteStorage(
    Path(target))
log = EventLog(storage=storage)
n = 0
while True:
    n += 1
    seq = log.append_event("escEvent", now_ms(), b"<e>%d</e>" % n).seq
    print(seq, n, flush=True)  # printed = acknowledged to the caller
"""


def test_acknowledged_events_survive_kill_9(backend: str, tmp_path: Path,
                                            request: pytest.FixtureRequest) -> None:
    """A writer killed with SIGKILL mid-stream: every event whose append returned is in
    the log, the sequence has no gap, and the next writer continues after it."""
    import os
    import signal
    import subprocess
    import sys

    target = (request.getfixturevalue("pg_dsn") if backend == "postgresql"
              else str(tmp_path / "events.sqlite3"))
    src = Path(__file__).resolve().parent.parent / "src"
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, target], stdout=subprocess.PIPE,
                            text=True, env=env)
    acked: list[tuple[int, int]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seq, n = map(int, line.split())
            acked.append((seq, n))
            if len(acked) == 300:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert len(acked) == 300
    storage = PostgresStorage(target) if backend == "postgresql" else SqliteStorage(
        Path(target))
    log = EventLog(storage=storage)
    stored = {e.seq: e.body for e in log.replay(None)}
    assert all(stored.get(seq) == b"<e>%d</e>" % n for seq, n in acked)
    assert sorted(stored) == list(range(1, len(stored) + 1))  # no gap
    assert log.last_seq() == len(stored) >= 300
    assert log.append_event("escEvent", now_ms(), b"<next/>").seq == len(stored) + 1
    log.close()
