"""Notifications over real NETCONF/SSH: ncclient subscribers and a raw paramiko client.

The server here is the real NETCONF layer (MiniServer) plus the real EventBus and the
notifications operations; a small fake datastore stands in for commits, so these
tests do not depend on the datastore or the engine. Events are published directly
on the bus, as the engine does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lxml import etree
from ncclient import manager
from ncclient.operations import RPCError

from conftest import connect
from escnc.events.bus import EventBus
from escnc.events.esc_event import EscEvent, VmRef
from escnc.ns import ESC, NC, NC_NOTIF_BASE, NC_NOTIFICATIONS, NOTIF
from escnc.operations import notifications
from escnc.services import Change, CommitEvent
from netconf_helpers import TEST_NS, MiniServer, RawClient, errors, wait_for

N = f"{{{NOTIF}}}"
B = f"{{{NC_NOTIF_BASE}}}"
E = f"{{{ESC}}}"


class FakeDatastore:
    def __init__(self) -> None:
        self.commit_listeners: list[Callable[[CommitEvent], None]] = []
        self.cc_listeners: list[Callable[..., None]] = []

    def add_commit_listener(self, cb: Callable[[CommitEvent], None]) -> None:
        self.commit_listeners.append(cb)

    def add_confirmed_commit_listener(self, cb: Callable[..., None]) -> None:
        self.cc_listeners.append(cb)

    def release_session(self, session_id: int) -> None:
        pass

    def commit(self, session_id: int, username: str, changes: tuple[Change, ...]) -> None:
        data = etree.Element(f"{{{NC}}}data")
        for cb in self.commit_listeners:
            cb(CommitEvent(data, data, changes, session_id, username))


class NotifServer(MiniServer):
    def __init__(self, state_dir: Path, **overrides: object) -> None:
        self.store = FakeDatastore()
        super().__init__(state_dir, datastore=self.store, **overrides)
        self.bus = EventBus(self.settings)
        self.services.events = self.bus
        notifications.register(self.services.registry, self.services)

    def publish(self, dep: str = "dep", type_: str = "VM_ALIVE", n: int = 0) -> int:
        body = EscEvent(type=type_, depname=dep, tenant="t", status_message=str(n),
                        vm_source=VmRef(vmname=f"{dep}_g_0", hostname="h1")).to_xml()
        return self.bus.publish("escEvent", body)

    def stop(self) -> None:
        super().stop()
        self.bus.close()


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[NotifServer]:
    s = NotifServer(tmp_path / "state")
    yield s
    s.stop()


def take(m: manager.Manager, timeout: float = 10) -> etree._Element:
    n = m.take_notification(block=True, timeout=timeout)
    assert n is not None, "no notification arrived"
    return etree.fromstring(n.notification_xml.encode())


def take_until(m: manager.Manager, localname: str, limit: int = 20000) -> list[etree._Element]:
    out = []
    for _ in range(limit):
        note = take(m)
        out.append(note)
        if etree.QName(note[1]).localname == localname:
            return out
    raise AssertionError(f"no {localname}")


def body_names(notes: list[etree._Element]) -> list[str]:
    return [n[1].findtext(f"{E}depname") or etree.QName(n[1]).localname for n in notes]


def test_capabilities_and_streams(srv: NotifServer) -> None:
    with connect(srv) as m:
        caps = set(m.server_capabilities)
    assert notifications.CAP_NOTIFICATION in caps
    assert notifications.CAP_INTERLEAVE in caps
    ns = f"{{{NC_NOTIFICATIONS}}}"
    [state] = [el for p in srv.services.state_providers for el in p() if el.tag == f"{ns}netconf"]
    streams = {s.findtext(f"{ns}name"): s for s in state.iter(f"{ns}stream")}
    assert set(streams) == {"NETCONF", "escEvent"}
    for s in streams.values():
        assert s.findtext(f"{ns}replaySupport") == "true"
        assert s.findtext(f"{ns}replayLogCreationTime") == srv.bus.log_creation_time


def test_escevent_delivered_as_esc_sends_it(srv: NotifServer) -> None:
    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent")
        srv.publish("dep1", "SERVICE_ALIVE")
        note = take(m)
    assert note.tag == f"{N}notification"
    assert note[0].tag == f"{N}eventTime"
    assert len(note[0].text or "") == len("2021-09-14T12:18:39.836+00:00")
    esc = note[1]
    assert esc.tag == f"{E}escEvent"
    assert [etree.QName(c).localname for c in esc] == [
        "status", "status_code", "status_message", "depname", "tenant", "vm_source", "event",
    ]
    assert esc.findtext(f"{E}event/{E}type") == "SERVICE_ALIVE"


def test_subtree_and_xpath_filters(srv: NotifServer) -> None:
    by_dep = f'<escEvent xmlns="{ESC}"><depname>b</depname></escEvent>'
    by_type = f'<escEvent xmlns="{ESC}"><event><type>VM_DEPLOYED</type></event></escEvent>'
    xpath = ("xpath", ({"esc": ESC}, "/esc:escEvent[esc:depname='c']"))
    with connect(srv) as ms, connect(srv) as mt, connect(srv) as mx:
        ms.create_subscription(stream_name="escEvent", filter=("subtree", by_dep))
        mt.create_subscription(stream_name="escEvent", filter=("subtree", by_type))
        mx.create_subscription(stream_name="escEvent", filter=xpath)
        for dep in ("a", "b", "c"):
            srv.publish(dep)
        srv.publish("a", "VM_DEPLOYED")
        srv.publish("b")
        assert [take(ms)[1].findtext(f"{E}depname") for _ in range(2)] == ["b", "b"]
        assert take(mt)[1].findtext(f"{E}depname") == "a"
        assert take(mx)[1].findtext(f"{E}depname") == "c"
        for m in (ms, mt, mx):
            assert m.take_notification(block=True, timeout=0.3) is None


def test_replay_window_then_complete(srv: NotifServer) -> None:
    srv.publish("before")
    time.sleep(0.01)
    start = srv.bus.events_after(0)[-1].event_time
    time.sleep(0.01)
    for dep in ("r1", "r2"):
        srv.publish(dep)
    time.sleep(0.01)
    stop_ms = srv.bus.events_after(0)[-1].ts_ms + 5
    time.sleep(0.02)
    srv.publish("after")
    from escnc.events.log import format_event_time

    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent", start_time=start,
                              stop_time=format_event_time(stop_ms))
        notes = take_until(m, "notificationComplete")
    assert body_names(notes) == ["before", "r1", "r2", "replayComplete", "notificationComplete"]
    assert notes[3][1].tag == f"{{{NC_NOTIFICATIONS}}}replayComplete"


def test_replay_then_live_and_interleave(srv: NotifServer) -> None:
    for i in range(3):
        srv.publish(f"old{i}")
    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent", start_time="2000-01-01T00:00:00Z")
        assert body_names(take_until(m, "replayComplete")) == [
            "old0", "old1", "old2", "replayComplete"]
        stop = threading.Event()

        def flow() -> None:
            i = 0
            while not stop.is_set():
                srv.publish(f"live{i}")
                i += 1
                time.sleep(0.002)

        publisher = threading.Thread(target=flow)
        publisher.start()
        try:
            # :interleave: RPCs keep working on the subscribed session
            for i in range(20):
                echo = etree.fromstring(f'<echo xmlns="{TEST_NS}"><a>{i}</a></echo>')
                reply = m.dispatch(echo)
                assert etree.fromstring(reply.xml.encode()).findtext(f".//{{{TEST_NS}}}a") == str(i)
        finally:
            stop.set()
            publisher.join()
        live = [take(m)[1].findtext(f"{E}depname") for _ in range(10)]
        assert live == [f"live{i}" for i in range(10)]
        with pytest.raises(RPCError) as info:
            m.create_subscription()
        assert info.value.tag == "in-use"


def test_create_subscription_errors_on_the_wire(srv: NotifServer) -> None:
    raw = RawClient(srv.port)
    raw.hello()
    cases = {
        "<stopTime>2020-01-01T00:00:00Z</stopTime>": "missing-element",
        "<startTime>2999-01-01T00:00:00Z</startTime>": "bad-element",
        "<stream>nosuch</stream>": "invalid-value",
    }
    for i, (body, tag) in enumerate(cases.items()):
        reply = raw.rpc(f'<create-subscription xmlns="{NOTIF}">{body}</create-subscription>', i)
        assert [e["error-tag"] for e in errors(reply)] == [tag]
    raw.close()


def test_session_start_end_and_config_change(srv: NotifServer) -> None:
    with connect(srv) as m:
        m.create_subscription()  # NETCONF stream
        a = RawClient(srv.port)
        a.hello()
        b = RawClient(srv.port)
        b.hello()
        b.rpc(f'<kill-session xmlns="{NC}"><session-id>{a.session_id}</session-id>'
              "</kill-session>")
        b.rpc(f'<close-session xmlns="{NC}"/>')
        assert wait_for(lambda: srv.sessions.get(b.session_id) is None)
        srv.store.commit(int(m.session_id), "admin", (
            Change("create", "/esc:esc_datamodel/esc:tenants/esc:tenant[esc:name='t1']",
                   {"esc": ESC}),
            Change("delete", "/esc:esc_datamodel/esc:flavors/esc:flavor[esc:name='f']",
                   {"esc": ESC}),
        ))
        srv.store.commit(0, "escnc", ())
        notes = [take(m)[1] for _ in range(6)]
    kinds = [etree.QName(n).localname for n in notes]
    assert kinds == ["netconf-session-start", "netconf-session-start", "netconf-session-end",
                     "netconf-session-end", "netconf-config-change", "netconf-config-change"]
    start_a, _, end_a, end_b, change, system = notes
    assert start_a.findtext(f"{B}username") == "admin"
    assert start_a.findtext(f"{B}session-id") == str(a.session_id)
    assert start_a.findtext(f"{B}source-host") == "127.0.0.1"
    assert end_a.findtext(f"{B}termination-reason") == "killed"
    assert end_a.findtext(f"{B}killed-by") == str(b.session_id)
    assert end_b.findtext(f"{B}termination-reason") == "closed"
    assert change.findtext(f"{B}changed-by/{B}session-id") == str(m.session_id)
    assert change.findtext(f"{B}changed-by/{B}source-host") == "127.0.0.1"
    assert change.findtext(f"{B}datastore") == "running"
    edits = [(e.findtext(f"{B}target"), e.findtext(f"{B}operation"))
             for e in change.iter(f"{B}edit")]
    assert edits == [
        ("/esc:esc_datamodel/esc:tenants/esc:tenant[esc:name='t1']", "create"),
        ("/esc:esc_datamodel/esc:flavors/esc:flavor[esc:name='f']", "delete"),
    ]
    assert change.find(f"{B}edit/{B}target").nsmap["esc"] == ESC  # type: ignore[union-attr]
    assert system.find(f"{B}changed-by/{B}server") is not None
    a.close()
    b.close()


def test_order_per_deployment_across_parallel_publishers(srv: NotifServer) -> None:
    deployments, per = 6, 150
    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent")

        def run(d: int) -> None:
            for i in range(per):
                srv.publish(f"dep{d}", n=i)

        threads = [threading.Thread(target=run, args=(d,)) for d in range(deployments)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got: dict[str, list[int]] = {}
        for _ in range(deployments * per):
            body = take(m)[1]
            got.setdefault(body.findtext(f"{E}depname") or "", []).append(
                int(body.findtext(f"{E}status_message") or -1))
    assert got == {f"dep{d}": list(range(per)) for d in range(deployments)}


def _raw_subscribe(port: int, body: str = "<stream>escEvent</stream>") -> RawClient:
    raw = RawClient(port)
    raw.hello()
    reply = raw.rpc(f'<create-subscription xmlns="{NOTIF}">{body}</create-subscription>')
    # RFC 5277: the <ok/> comes before any (replayed) notification
    assert reply.find(f"{{{NC}}}ok") is not None, etree.tostring(reply)
    return raw


@pytest.mark.slow
def test_stuck_subscriber_others_unaffected_resume_by_replay(tmp_path: Path) -> None:
    total = 10_000
    # the stuck client reads only after the healthy one has all 10,000, which can take
    # longer than the default grace on a loaded machine
    srv = NotifServer(tmp_path / "state", subscriber_max_lag=2000,
                      subscriber_terminate_grace=600.0)
    try:
        stuck = _raw_subscribe(srv.port)
        with connect(srv) as healthy:
            healthy.create_subscription(stream_name="escEvent")
            started = time.monotonic()
            for i in range(total):
                srv.publish(f"d{i}")
            publish_secs = time.monotonic() - started
            got = [take(healthy)[1].findtext(f"{E}depname") for _ in range(total)]
        assert got == [f"d{i}" for i in range(total)]
        assert publish_secs < 30
        # the stuck client reads again: it finds it was told and closed ...
        seen: list[etree._Element] = []
        try:
            while True:
                seen.append(stuck.read_xml())
        except (EOFError, OSError):
            pass
        assert wait_for(lambda: srv.services.sessions.get(stuck.session_id) is None, 20)
        events = [n for n in seen if n[1].tag == f"{E}escEvent"]
        assert seen and etree.QName(seen[-1][1]).localname == "subscription-terminated"
        last_time = events[-1].findtext(f"{N}eventTime") if events else "2000-01-01T00:00:00Z"
        # ... and resumes by replay from the last eventTime it received
        resumed = _raw_subscribe(srv.port, f"<stream>escEvent</stream><startTime>{last_time}"
                                 "</startTime>")
        replayed: list[etree._Element] = []
        while True:
            note = resumed.read_xml()
            if note[1].tag != f"{E}escEvent":
                break
            replayed.append(note)
        names = [n[1].findtext(f"{E}depname") for n in events + replayed]
        assert set(names) == {f"d{i}" for i in range(total)}
        assert len(events) < total  # it really was cut off
        resumed.close()
        stuck.close()
    finally:
        srv.stop()


def test_slow_reader_without_limit_gets_everything_later(tmp_path: Path) -> None:
    total = 3000
    srv = NotifServer(tmp_path / "state")
    try:
        slow = _raw_subscribe(srv.port)
        for i in range(total):
            srv.publish(f"d{i}")
        time.sleep(0.5)  # the client reads nothing meanwhile
        names = [slow.read_xml()[1].findtext(f"{E}depname") for _ in range(total)]
        assert names == [f"d{i}" for i in range(total)]
        slow.close()
    finally:
        srv.stop()


def test_replay_after_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    srv = NotifServer(state)
    try:
        srv.publish("before-restart")
    finally:
        srv.stop()
    srv = NotifServer(state)
    try:
        srv.publish("after-restart")
        with connect(srv) as m:
            m.create_subscription(stream_name="escEvent", start_time="2000-01-01T00:00:00Z")
            notes = take_until(m, "replayComplete")
        assert body_names(notes) == ["before-restart", "after-restart", "replayComplete"]
    finally:
        srv.stop()


def test_subscription_cleaned_up_on_session_end(srv: NotifServer) -> None:
    m = connect(srv)
    m.create_subscription()
    assert wait_for(lambda: len(srv.bus.subscriptions.active()) == 1)
    m.close_session()
    assert wait_for(lambda: srv.bus.subscriptions.active() == {})
    assert wait_for(lambda: srv.bus.consumers() == [])
