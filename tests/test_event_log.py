"""Event log and bus: durability, order, replay windows, retention, slow consumers."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree

from escnc.events import bus as bus_mod
from escnc.events import log as log_mod
from escnc.events.bus import EventBus
from escnc.events.esc_event import EscEvent, VmRef
from escnc.events.log import StoredEvent, format_event_time, parse_event_time
from escnc.ns import ESC, NOTIF
from escnc.settings import Settings
from escnc.storage import Storage

Factory = Callable[[], Storage]
EVENT_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")


def make_bus(tmp_path: Path, make_storage: Factory,
             **overrides: object) -> EventBus:
    """A bus on the test's backend (sqlite or postgresql; see conftest ``backend``)."""
    settings = Settings(state_dir=tmp_path / "state")
    for key, value in overrides.items():
        setattr(settings, key, value)
    return EventBus(settings, make_storage())


def esc(dep: str = "d", n: int = 0, type_: str = "VM_ALIVE") -> etree._Element:
    return EscEvent(type=type_, depname=dep, status_message=str(n)).to_xml()


class FakeClock:
    def __init__(self, start_ms: int) -> None:
        self.ms = start_ms

    def __call__(self) -> int:
        return self.ms


def collect(events: list[StoredEvent], n: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(events) < n and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(events) >= n, f"got {len(events)} of {n} events"


def test_time_format_round_trip() -> None:
    text = format_event_time(1631621919836)
    assert text == "2021-09-14T12:18:39.836+00:00"
    assert parse_event_time(text) == 1631621919836
    assert parse_event_time("2021-09-14T14:18:39.836123+02:00") == 1631621919836
    assert parse_event_time("2021-09-14T12:18:39Z") == 1631621919000
    with pytest.raises(ValueError):
        parse_event_time("2021-09-14T12:18:39")


def test_publish_is_durable_and_framed(tmp_path: Path, make_storage: Factory) -> None:
    bus = make_bus(tmp_path, make_storage)
    body = EscEvent(
        type="VM_BACKUP_CREATED", status_code=202, status_message="Snapshot is now active.",
        depname="dep", tenant="t", vm_group="g",
        vm_source=VmRef(vmid="1", vmname="vm", vim_project_id="p", hostname="h"),
    ).to_xml()
    seq = bus.publish("escEvent", body)
    assert seq == 1
    stored = list(bus.replay("escEvent"))
    assert [e.seq for e in stored] == [1]
    note = stored[0].notification_element()
    assert note.tag == f"{{{NOTIF}}}notification"
    assert EVENT_TIME.match(note[0].text or "")
    assert note[1].tag == f"{{{ESC}}}escEvent"
    assert etree.tostring(note[1]) == etree.tostring(body)
    names = [etree.QName(c).localname for c in note[1].find(f"{{{ESC}}}vm_source")]
    assert names == ["vmid", "vmname", "vim_project_id", "hostname"]
    with pytest.raises(ValueError):
        bus.publish("nosuchstream", body)
    bus.close()


def test_restart_keeps_events_and_sequence(tmp_path: Path, make_storage: Factory) -> None:
    bus = make_bus(tmp_path, make_storage)
    for i in range(5):
        bus.publish("escEvent", esc(n=i))
    created = bus.log_creation_time
    bus.close()
    bus = make_bus(tmp_path, make_storage)
    assert bus.head == 5
    assert bus.log_creation_time == created
    assert bus.publish("NETCONF", esc(n=5)) == 6
    assert [e.seq for e in bus.replay("escEvent")] == [1, 2, 3, 4, 5]
    assert [e.seq for e in bus.replay("NETCONF")] == [1, 2, 3, 4, 5, 6]
    bus.close()


def test_replay_window_by_time(
    tmp_path: Path, make_storage: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(1_700_000_000_000)
    monkeypatch.setattr(bus_mod, "now_ms", clock)
    bus = make_bus(tmp_path, make_storage)
    times = []
    for i in range(10):
        clock.ms += 1000
        times.append(clock.ms)
        bus.publish("escEvent", esc(n=i))
    window = list(bus.replay("escEvent", start=times[3] / 1000, stop=times[6] / 1000))
    assert [e.seq for e in window] == [4, 5, 6, 7]
    text_window = list(bus.replay("escEvent", start=format_event_time(times[8])))
    assert [e.seq for e in text_window] == [9, 10]
    # the clock never runs backwards in the log, even if the system clock does
    clock.ms -= 5000
    bus.publish("escEvent", esc(n=99))
    last = list(bus.replay("escEvent"))[-1]
    assert last.ts_ms == times[-1]
    bus.close()


def test_retention_by_count_and_age(
    tmp_path: Path, make_storage: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(1_700_000_000_000)
    monkeypatch.setattr(bus_mod, "now_ms", clock)
    monkeypatch.setattr(log_mod, "now_ms", clock)
    bus = make_bus(tmp_path, make_storage, event_retention_count=50, event_retention_days=1.0)
    for i in range(100):
        clock.ms += 60_000  # one a minute
        bus.publish("escEvent", esc(n=i))
    assert bus.prune() == 50
    assert [e.seq for e in bus.replay(None)][:2] == [51, 52]
    clock.ms += 86_400_000 - 10 * 60_000 + 1  # only the last 10 events are within a day
    assert bus.prune() == 40
    assert [e.seq for e in bus.replay(None)] == list(range(91, 101))
    # sequence numbers are never reused after pruning
    assert bus.publish("escEvent", esc()) == 101
    bus.close()


def test_parallel_publishers_keep_per_deployment_order(
    tmp_path: Path, make_storage: Factory
) -> None:
    bus = make_bus(tmp_path, make_storage)
    got: list[StoredEvent] = []
    bus.add_listener(got.append)
    threads, per = 8, 300

    def work(t: int) -> None:
        for i in range(per):
            bus.publish("escEvent", esc(dep=f"dep{t}", n=i))

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    collect(got, threads * per)
    assert [e.seq for e in got] == list(range(1, threads * per + 1))
    seen: dict[str, list[int]] = {}
    for e in got:
        body = e.body_element()
        seen.setdefault(body.findtext(f"{{{ESC}}}depname") or "", []).append(
            int(body.findtext(f"{{{ESC}}}status_message") or -1)
        )
    assert all(v == list(range(per)) for v in seen.values()) and len(seen) == threads
    times = [e.ts_ms for e in got]
    assert times == sorted(times)
    bus.close()


def test_blocked_listener_delays_nobody_and_loses_nothing(
    tmp_path: Path, make_storage: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EventBus, "WINDOW", 64)  # force the slow one onto the log
    bus = make_bus(tmp_path, make_storage)
    gate = threading.Event()
    slow: list[StoredEvent] = []
    fast: list[StoredEvent] = []

    def blocked(event: StoredEvent) -> None:
        gate.wait()
        slow.append(event)

    bus.add_listener(blocked)
    bus.add_listener(fast.append, stream="escEvent")
    started = time.monotonic()
    for i in range(2000):
        bus.publish("escEvent", esc(n=i))
    elapsed = time.monotonic() - started
    collect(fast, 2000)
    assert not slow and elapsed < 20
    gate.set()
    collect(slow, 2000)
    assert [e.seq for e in slow] == list(range(1, 2001))
    bus.close()


def test_memory_window_is_bounded_by_bytes(
    tmp_path: Path, make_storage: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large events (a 10,000-entry config change) do not pile up in memory: the
    window keeps at most WINDOW_BYTES (and always the newest); older events are
    read back from the log, complete and in order."""
    monkeypatch.setattr(EventBus, "WINDOW_BYTES", 64 * 1024)
    bus = make_bus(tmp_path, make_storage)
    big = "x" * 20_000
    for i in range(40):
        bus.publish("escEvent", esc(n=i, dep=big))
    kept = sum(len(e.body) + len(e.notification) for e in bus._recent.values())
    assert 0 < kept <= 64 * 1024, kept
    assert len(bus._recent) < 40 and max(bus._recent) == 40
    seqs: list[int] = []
    after = 0
    while batch := bus.events_after(after, 7):
        seqs += [e.seq for e in batch]
        after = batch[-1].seq
    assert seqs == list(range(1, 41))
    bus.publish("escEvent", esc(n=99, dep="x" * 200_000))  # bigger than the window
    assert list(bus._recent) == [41]
    assert bus.events_after(40)[0].seq == 41
    bus.close()


def test_listener_errors_are_contained(tmp_path: Path, make_storage: Factory) -> None:
    bus = make_bus(tmp_path, make_storage)
    got: list[int] = []

    def flaky(event: StoredEvent) -> None:
        if event.seq == 2:
            raise RuntimeError("boom")
        got.append(event.seq)

    consumer = bus.add_listener(flaky)
    for i in range(4):
        bus.publish("escEvent", esc(n=i))
    deadline = time.monotonic() + 5
    while len(got) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == [1, 3, 4]
    consumer.close(wait=True)
    bus.publish("escEvent", esc())
    time.sleep(0.05)
    assert got == [1, 3, 4]
    bus.close()


@pytest.mark.postgresql
def test_two_nodes_on_one_database_see_each_others_events_live(
    tmp_path: Path, pg_dsn: str
) -> None:
    """Two buses on one PostgreSQL (two escnc nodes): a listener on either gets every
    event of both, once each, in sequence order (LISTEN/NOTIFY wakes it; events the
    other node wrote come from the table)."""
    from escnc.storage.postgresql import PostgresStorage

    buses = [make_bus(tmp_path / f"node{i}", lambda: PostgresStorage(pg_dsn))
             for i in range(2)]
    got: list[list[StoredEvent]] = [[], []]
    for bus, sink in zip(buses, got, strict=True):
        bus.add_listener(sink.append)
    per = 150

    def work(i: int) -> None:
        for n in range(per):
            buses[i].publish("escEvent", esc(dep=f"node{i}", n=n))

    workers = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    for sink in got:
        collect(sink, 2 * per, timeout=60)
    for sink in got:
        assert [e.seq for e in sink] == list(range(1, 2 * per + 1))
        for node in ("node0", "node1"):
            mine = [e for e in sink if (e.body_element().findtext(f"{{{ESC}}}depname")) == node]
            assert [int(e.body_element().findtext(f"{{{ESC}}}status_message") or -1)
                    for e in mine] == list(range(per))
    assert [e.notification for e in got[0]] == [e.notification for e in got[1]]
    for bus in buses:
        bus.close()
