"""escnc.leadership on real electors (a SQLite lease file, real time, short retry):
the work of a term starts after the reloads and stops on demotion; a node whose work
fails to start resigns and another takes over long before the lease would expire;
the cluster opdata is built without I/O."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from escnc.cluster import ElectionTimings, NotLeader
from escnc.leadership import Leadership, LeaderWork
from escnc.ns import ESC
from escnc.storage.sqlite import SqliteStorage
from pg_support import wait_for

TIMINGS = ElectionTimings(lease_duration=30, renew_deadline=20, retry=0.05)


class Journal:
    def __init__(self) -> None:
        self.items: list[str] = []
        self._lock = threading.Lock()

    def add(self, item: str) -> None:
        with self._lock:
            self.items.append(item)

    def has(self, item: str) -> bool:
        with self._lock:
            return item in self.items


class Reload:
    def __init__(self, journal: Journal, name: str) -> None:
        self.journal, self.name = journal, name

    def reload(self) -> None:
        self.journal.add(f"{self.name} reload")


@pytest.fixture
def make(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    made: list[Leadership] = []
    storage = SqliteStorage(tmp_path / "lease.sqlite3")

    def factory(name: str, journal: Journal, fail: bool = False) -> Leadership:
        def start(token: int) -> None:
            journal.add(f"{name} start {token}")
            if fail:
                raise RuntimeError("no engine today")

        def stop(reason: str, budget: float) -> None:
            journal.add(f"{name} stop")

        lead = Leadership(storage, LeaderWork(start, stop), address=f"{name}:830",
                          node_id=name, timings=TIMINGS,
                          reloadables=[Reload(journal, name)])
        made.append(lead)
        lead.start()
        return lead

    yield factory
    for lead in made:
        lead.stop()


def test_a_term_reloads_then_starts_and_stops_on_handover(make) -> None:  # type: ignore[no-untyped-def]
    journal = Journal()
    a = make("a", journal)
    assert wait_for(lambda: a.engine == "running", 10)
    assert journal.items == ["a reload", "a start 1"]
    a.fence.check()
    b = make("b", journal)
    assert wait_for(lambda: b.elector.ticks >= 2, 10)
    with pytest.raises(NotLeader) as refused:
        b.fence.check()
    assert refused.value.leader == "a:830"
    opdata = b.opdata()[0]
    assert opdata.findtext(f".//{{{ESC}}}cluster/{{{ESC}}}role") == "standby"
    assert opdata.findtext(f".//{{{ESC}}}system_status/{{{ESC}}}status_message") \
        == "standby (the leader is a:830)"
    a.stop()  # a clean stop releases the lease: b leads at its next poll
    assert journal.items[2] == "a stop"
    assert wait_for(lambda: b.engine == "running", 5)
    assert journal.items[3:] == ["b reload", "b start 2"]
    assert etree.QName(b.opdata()[0]).localname == "esc_datamodel"


def test_a_node_whose_work_fails_to_start_resigns(make) -> None:  # type: ignore[no-untyped-def]
    journal = Journal()
    a = make("a", journal, fail=True)
    assert wait_for(lambda: journal.has("a stop"), 10)
    assert a.engine == "failed"
    with pytest.raises(NotLeader):
        a.fence.check()
    b = make("b", journal)
    # far sooner than the 30 s lease: a handed it on and keeps off it
    assert wait_for(lambda: b.engine == "running", 5), journal.items
    assert journal.has("b start 2") and not a.elector.is_leader
