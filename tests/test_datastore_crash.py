"""Crash safety: SIGKILL a child process during a stream of acknowledged edits.

Both backends (the ``backend`` parameter): the SQLite file in the state directory and
a PostgreSQL database (``settings.database``), a fresh one per round.

The child applies edits to a Datastore and prints "ack i" after each returns (the
point where a NETCONF server sends <ok/>). After the kill, a fresh Datastore over the
same state directory must hold every acknowledged edit, plus at most the one edit
that was in flight, and nothing else.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from escnc.datastore.schema import Schema
from escnc.datastore.store import Datastore
from escnc.settings import Settings

E = "http://www.cisco.com/esc/esc"

CHILD = r"""
import sys
from pathlib import Path
from lxml import etree
from escnc.datastore.edit import EditOptions
from escnc.datastore.schema import Schema
from escnc.datastore.store import Datastore
from escnc.settings import Settings
E = "http://www.cisco.com/esc/esc"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
ds = Datastore(Settings(state_dir=Path(sys.argv[1]), database=sys.argv[2]), Schema.load())
i = 0
while True:
    cfg = etree.fromstring(
        f'<config xmlns="{NC}"><esc_datamodel xmlns="{E}"><tenants><tenant><name>t{i}</name>'
        f"<description>{i}</description></tenant></tenants></esc_datamodel></config>")
    ds.edit("running", cfg, EditOptions(), 1, "u")
    if i % 3 == 2:  # mix in deletes so the state is not just a growing list
        d = etree.fromstring(
            f'<config xmlns="{NC}" xmlns:nc="{NC}"><esc_datamodel xmlns="{E}"><tenants>'
            f'<tenant nc:operation="delete"><name>t{i - 1}</name></tenant></tenants>'
            "</esc_datamodel></config>")
        ds.edit("running", d, EditOptions(), 1, "u")
    print(f"ack {i}", flush=True)
    i += 1
"""


@pytest.fixture
def fresh_db(backend: str, request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    """``settings.database`` for a fresh datastore: "" (SQLite in the state directory)
    or a new, empty PostgreSQL database on the session's server."""
    made: list[str] = []
    server = request.getfixturevalue("pg_server") if backend == "postgresql" else None

    def make() -> str:
        if server is None:
            return ""
        dsn = str(server.create_database())
        made.append(dsn)
        return dsn

    yield make
    for dsn in made:
        server.drop_database(dsn)  # type: ignore[union-attr]


def expected(n: int) -> set[str]:
    """Tenants present after edits 0..n-1 completed."""
    names: set[str] = set()
    for i in range(n):
        names.add(f"t{i}")
        if i % 3 == 2:
            names.discard(f"t{i - 1}")
    return names


def test_sigkill_during_edits_keeps_exactly_acked_state(
    tmp_path: Path, fresh_db: Callable[[], str]
) -> None:
    rng = random.Random(1234)
    schema = Schema.load()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    for round_no in range(4):
        state = tmp_path / f"s{round_no}"
        state.mkdir()
        db = fresh_db()
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(state), db], stdout=subprocess.PIPE, text=True,
            env=env,
        )
        assert proc.stdout is not None
        acked = -1
        target = rng.randint(5, 60)
        deadline = time.time() + 60
        while acked < target and time.time() < deadline:
            line = proc.stdout.readline()
            if line.startswith("ack "):
                acked = int(line.split()[1])
        time.sleep(rng.random() * 0.02)  # land somewhere inside a later edit
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for line in proc.stdout:  # acks written before the kill count too
            if line.startswith("ack "):
                acked = int(line.split()[1])
        ds = Datastore(Settings(state_dir=state, database=db), schema)
        with ds.reading("running") as tree:
            names = {el.text for el in tree.iter(f"{{{E}}}name")}
        ds.close()
        done = expected(acked + 1)
        # the in-flight iteration may have committed its create but not yet its delete
        allowed = (done, done | {f"t{acked + 1}"}, expected(acked + 2))
        assert names in allowed, (round_no, acked, sorted(names ^ done))


THREADED_CHILD = r"""
import sys, threading
from pathlib import Path
from lxml import etree
from escnc.datastore.edit import EditOptions
from escnc.datastore.schema import Schema
from escnc.datastore.store import Datastore
from escnc.settings import Settings
E = "http://www.cisco.com/esc/esc"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
ds = Datastore(Settings(state_dir=Path(sys.argv[1]), database=sys.argv[2]), Schema.load())
out = threading.Lock()

def writer(k):
    i = 0
    while True:
        cfg = etree.fromstring(
            f'<config xmlns="{NC}"><esc_datamodel xmlns="{E}"><tenants><tenant>'
            f"<name>w{k}</name><description>{i}</description></tenant></tenants>"
            "</esc_datamodel></config>")
        ds.edit("running", cfg, EditOptions(), k + 1, "u")
        with out:
            print(f"ack {k} {i}", flush=True)
        i += 1

for k in range(6):
    threading.Thread(target=writer, args=(k,), daemon=True).start()
threading.Event().wait()
"""


def test_sigkill_with_concurrent_writers_keeps_every_ack(
    tmp_path: Path, fresh_db: Callable[[], str]
) -> None:
    """Group commit: with six threads committing at once, every acknowledged edit
    survives SIGKILL (each writer's tenant holds its last ack or the one after)."""
    rng = random.Random(99)
    schema = Schema.load()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    for round_no in range(3):
        state = tmp_path / f"w{round_no}"
        state.mkdir()
        db = fresh_db()
        proc = subprocess.Popen(
            [sys.executable, "-c", THREADED_CHILD, str(state), db],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        acked: dict[int, int] = {}
        target = rng.randint(30, 150)
        deadline = time.time() + 60
        n = 0
        while n < target and time.time() < deadline:
            line = proc.stdout.readline()
            if line.startswith("ack "):
                _, k, i = line.split()
                acked[int(k)] = int(i)
                n += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for line in proc.stdout:
            if line.startswith("ack "):
                _, k, i = line.split()
                acked[int(k)] = max(acked.get(int(k), -1), int(i))
        ds = Datastore(Settings(state_dir=state, database=db), schema)
        with ds.reading("running") as tree:
            got = {
                t.findtext(f"{{{E}}}name"): int(t.findtext(f"{{{E}}}description") or -1)
                for t in tree.iter(f"{{{E}}}tenant")
            }
        ds.close()
        assert acked, round_no
        for k, i in acked.items():
            assert got.get(f"w{k}") in (i, i + 1), (round_no, k, i, got)
