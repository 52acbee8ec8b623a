"""Event log append throughput and read-after latency on SQLite and PostgreSQL.

Appends N events of ~600 bytes (an escEvent's size) from one thread and from W
writer threads each with its own EventLog (W nodes on one database), then reads them
all back in batches of 1000; then appends N events under idempotency keys (the
engine's flagged outcomes, engine/outbox.py), repeats them (all no-ops) and looks the
N keys up (what a restart does). Prints events/s. PostgreSQL: ``--dsn postgresql://...``
or, without it, a throw-away server from tests/pg_support.py. Usage:
    python bench/event_log_bench.py [--events 5000] [--writers 4] [--dsn URL]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from escnc.events.log import EventLog, now_ms
from escnc.storage import Storage
from escnc.storage.postgresql import PostgresStorage
from escnc.storage.sqlite import SqliteStorage

BODY = b"<escEvent>" + b"x" * 580 + b"</escEvent>"


def run(name: str, make: Callable[[], Storage], events: int, writers: int) -> None:
    log = EventLog(storage=make())
    t0 = time.perf_counter()
    for _ in range(events):
        log.append_event("escEvent", now_ms(), BODY)
    one = events / (time.perf_counter() - t0)

    logs = [EventLog(storage=make()) for _ in range(writers)]
    per = events // writers

    def write(w: EventLog) -> None:
        for _ in range(per):
            w.append_event("escEvent", now_ms(), BODY)

    threads = [threading.Thread(target=write, args=(w,)) for w in logs]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    many = per * writers / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    seq, n = 0, 0
    while batch := log.read_after(seq, 1000):
        seq, n = batch[-1].seq, n + len(batch)
    read = n / (time.perf_counter() - t0)
    print(f"{name:10} append 1 writer {one:8.0f}/s   {writers} writers {many:8.0f}/s"
          f"   read {read:9.0f}/s  ({n} events)")
    keys = [f"dep/vm{i}/alive" for i in range(events)]
    t0 = time.perf_counter()
    for key in keys:
        log.append_keyed("escEvent", now_ms(), BODY, key)
    keyed = events / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for key in keys:
        assert log.append_keyed("escEvent", now_ms(), BODY, key) is None
    repeat = events / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    found = log.logged_keys(keys)
    lookup = time.perf_counter() - t0
    assert len(found) == events
    print(f"{name:10} keyed append {keyed:8.0f}/s   repeat (no-op) {repeat:8.0f}/s"
          f"   look up {events} keys {lookup * 1000:6.1f} ms")
    for w in [log, *logs]:
        w.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--dsn", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.sqlite3"
        run("sqlite", lambda: SqliteStorage(path), args.events, args.writers)
    server = None
    dsn = args.dsn
    if not dsn:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from pg_support import PgServer

        server = PgServer().start()  # fsync off: measures escnc, not the disk
        dsn = server.create_database()
    try:
        run("postgresql", lambda: PostgresStorage(dsn), args.events, args.writers)
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
