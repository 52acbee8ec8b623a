"""RFC 5277 subscriptions against a fake session: parameters, filters, replay,
replayComplete / notificationComplete, a stuck subscriber, RFC 6470 bodies."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree

from escnc.errors import RpcError
from escnc.events import base
from escnc.events.bus import EventBus
from escnc.events.esc_event import EscEvent, VmRef
from escnc.events.filtering import compile_filter
from escnc.events.log import format_event_time, now_ms
from escnc.events.subscriptions import Subscriptions
from escnc.ns import ESC, NC_NOTIF_BASE, NC_NOTIFICATIONS, NOTIF
from escnc.services import Change
from escnc.settings import Settings

N = f"{{{NOTIF}}}"


class FakeSession:
    def __init__(self, sid: int = 7, stuck: bool = False) -> None:
        self.session_id = sid
        self.username = "admin"
        self.client_capabilities: frozenset[str] = frozenset()
        self.sent: list[etree._Element] = []
        self.closed = False
        self.stuck = stuck
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def send_notification(self, notification: etree._Element | bytes) -> None:
        el = etree.fromstring(notification) if isinstance(notification, bytes) else notification
        with self._lock:
            self.sent.append(el)

    def notification_backlog(self) -> int:
        return 10**9 if self.stuck else 0

    def close(self) -> None:
        self.closed = True
        for cb in self._callbacks:
            cb()

    def add_close_callback(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def bodies(self) -> list[etree._Element]:
        with self._lock:
            return [n[1] for n in self.sent]

    def names(self) -> list[str]:
        return [etree.QName(b).localname for b in self.bodies()]

    def wait(self, pred: Callable[[FakeSession], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not pred(self):
            assert time.monotonic() < deadline, f"timed out; got {self.names()}"
            time.sleep(0.005)


@pytest.fixture
def bus(tmp_path: Path) -> EventBus:
    b = EventBus(Settings(state_dir=tmp_path / "state"))
    yield b
    b.close()


def subscribe_xml(**kw: object) -> etree._Element:
    req = etree.Element(N + "create-subscription", nsmap={None: NOTIF})
    for name in ("stream", "startTime", "stopTime"):
        if name in kw:
            etree.SubElement(req, N + name).text = str(kw[name])
    if "filter" in kw:
        req.append(etree.fromstring(str(kw["filter"])))
    return req


def esc(dep: str, type_: str = "VM_ALIVE", host: str = "h1") -> etree._Element:
    return EscEvent(
        type=type_, depname=dep, tenant="t", vm_source=VmRef(vmname="v", hostname=host)
    ).to_xml()


def depnames(session: FakeSession) -> list[str]:
    return [b.findtext(f"{{{ESC}}}depname") or etree.QName(b).localname for b in session.bodies()]


# -- parameters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "tag", "bad"),
    [
        ({"stopTime": "2020-01-01T00:00:00Z"}, "missing-element", "startTime"),
        ({"startTime": "2999-01-01T00:00:00Z"}, "bad-element", "startTime"),
        (
            {"startTime": "2020-01-02T00:00:00Z", "stopTime": "2020-01-01T00:00:00Z"},
            "bad-element", "stopTime",
        ),
        ({"startTime": "yesterday"}, "bad-element", "startTime"),
        ({"stream": "nope"}, "invalid-value", "stream"),
        ({"filter": f'<filter xmlns="{NOTIF}" type="xpath" select="/a["/>'},
         "invalid-value", "filter"),
        ({"filter": f'<filter xmlns="{NOTIF}" type="regex"/>'}, "bad-attribute", "filter"),
    ],
)
def test_create_subscription_errors(bus: EventBus, kw: dict, tag: str, bad: str) -> None:
    subs = Subscriptions(bus, bus.settings)
    with pytest.raises(RpcError) as info:
        subs.create(FakeSession(), subscribe_xml(**kw))
    assert info.value.tag == tag
    assert info.value.info.get("bad-element") == bad


def test_one_subscription_per_session(bus: EventBus) -> None:
    subs = Subscriptions(bus, bus.settings)
    session = FakeSession()
    subs.create(session, subscribe_xml())
    with pytest.raises(RpcError) as info:
        subs.create(session, subscribe_xml())
    assert info.value.tag == "in-use"
    subs.create(FakeSession(sid=8), subscribe_xml())  # other sessions are fine
    session.close()
    assert 7 not in subs.active()


# -- filters ------------------------------------------------------------------------


def test_subtree_filter_semantics() -> None:
    body = esc("dep1", host="h2")
    match = compile_filter(etree.fromstring(
        f'<filter xmlns="{NOTIF}" type="subtree"><escEvent xmlns="{ESC}">'
        "<depname>dep1</depname><vm_source><hostname>h2</hostname></vm_source>"
        "</escEvent></filter>"
    ))
    miss = compile_filter(etree.fromstring(
        f'<filter xmlns="{NOTIF}"><escEvent xmlns="{ESC}"><depname>dep2</depname>'
        "</escEvent></filter>"
    ))
    other_ns = compile_filter(etree.fromstring(
        f'<filter xmlns="{NOTIF}"><escEvent xmlns="urn:other"/></filter>'
    ))
    select = compile_filter(etree.fromstring(
        f'<filter xmlns="{NOTIF}"><escEvent xmlns="{ESC}"><vm_target/></escEvent></filter>'
    ))
    assert match is not None and match(body)
    assert miss is not None and not miss(body)
    assert other_ns is not None and not other_ns(body)
    assert select is not None and not select(body)  # selects nothing: no vm_target
    # RFC 6241 6.2.5: matching sibling content nodes select the parent even when a
    # deeper containment branch selects nothing (use XPath to require both)
    both = compile_filter(etree.fromstring(
        f'<filter xmlns="{NOTIF}"><escEvent xmlns="{ESC}"><depname>dep1</depname>'
        "<event><type>VM_DEPLOYED</type></event></escEvent></filter>"
    ))
    assert both is not None and both(body)


def test_xpath_filter_semantics() -> None:
    f = compile_filter(etree.fromstring(
        f'<filter xmlns="{NOTIF}" xmlns:esc="{ESC}" type="xpath" '
        "select=\"/esc:escEvent[esc:depname='dep1' and esc:event/esc:type='VM_ALIVE']\"/>"
    ))
    assert f is not None
    assert f(esc("dep1"))
    assert not f(esc("dep2"))
    assert not f(esc("dep1", type_="VM_DEPLOYED"))


# -- delivery -----------------------------------------------------------------------


def test_streams_and_live_delivery_with_filter(bus: EventBus) -> None:
    subs = Subscriptions(bus, bus.settings)
    all_events, esc_only, filtered = FakeSession(1), FakeSession(2), FakeSession(3)
    subs.create(all_events, subscribe_xml())
    subs.create(esc_only, subscribe_xml(stream="escEvent"))
    subs.create(filtered, subscribe_xml(
        stream="escEvent",
        filter=f'<filter xmlns="{NOTIF}" type="subtree"><escEvent xmlns="{ESC}">'
        "<depname>b</depname></escEvent></filter>",
    ))
    bus.publish("escEvent", esc("a"))
    bus.publish("NETCONF", base.session_start(username="u", session_id=5, source_host="::1"))
    bus.publish("escEvent", esc("b"))
    all_events.wait(lambda s: len(s.sent) == 3)
    esc_only.wait(lambda s: len(s.sent) == 2)
    filtered.wait(lambda s: len(s.sent) == 1)
    assert depnames(all_events) == ["a", "netconf-session-start", "b"]
    assert depnames(esc_only) == ["a", "b"]
    assert depnames(filtered) == ["b"]


def test_replay_then_live_then_stop(bus: EventBus) -> None:
    subs = Subscriptions(bus, bus.settings)
    for dep in ("old1", "old2"):
        bus.publish("escEvent", esc(dep))
    start = format_event_time(now_ms() - 60_000)
    stop = format_event_time(now_ms() + 400)
    session = FakeSession()
    consumer = subs.create(session, subscribe_xml(stream="escEvent", startTime=start,
                                                  stopTime=stop))
    session.wait(lambda s: len(s.sent) >= 3)
    bus.publish("escEvent", esc("live"))
    session.wait(lambda s: "notificationComplete" in s.names())
    assert depnames(session) == ["old1", "old2", "replayComplete", "live", "notificationComplete"]
    assert session.bodies()[2].tag == f"{{{NC_NOTIFICATIONS}}}replayComplete"
    assert consumer.end_reason == "complete" and not session.closed
    assert 7 not in subs.active()
    # a new subscription on the same session is allowed after notificationComplete
    subs.create(session, subscribe_xml())


def test_replay_window_in_the_past(bus: EventBus) -> None:
    subs = Subscriptions(bus, bus.settings)
    bus.publish("escEvent", esc("before"))
    time.sleep(0.01)
    start = format_event_time(now_ms())
    bus.publish("escEvent", esc("in1"))
    bus.publish("escEvent", esc("in2"))
    time.sleep(0.01)
    stop = format_event_time(now_ms())
    time.sleep(0.01)
    bus.publish("escEvent", esc("after"))
    session = FakeSession()
    subs.create(session, subscribe_xml(stream="escEvent", startTime=start, stopTime=stop))
    session.wait(lambda s: "notificationComplete" in s.names())
    assert depnames(session) == ["in1", "in2", "replayComplete", "notificationComplete"]


def test_stuck_subscriber_is_closed_and_resumes_by_replay(bus: EventBus) -> None:
    bus.settings.subscriber_max_lag = 200
    subs = Subscriptions(bus, bus.settings)
    subs.terminate_grace = 0.1
    stuck, healthy = FakeSession(1), FakeSession(2)
    subs.create(stuck, subscribe_xml(stream="escEvent"))
    subs.create(healthy, subscribe_xml(stream="escEvent"))
    bus.publish("escEvent", esc("d0"))
    stuck.wait(lambda s: len(s.sent) == 1)
    stuck.stuck = True  # the client stops reading: its transport queue fills up
    total = 1000
    for i in range(1, total):
        bus.publish("escEvent", esc(f"d{i}"))
        if i % 100 == 0:
            # a healthy reader on a loaded machine stays within the lag limit (200):
            # only the one that stopped reading may be closed
            healthy.wait(lambda s, n=i: len(s.sent) >= n + 1)
    healthy.wait(lambda s: len(s.sent) == total)
    stuck.wait(lambda s: s.closed)
    assert stuck.names()[-1] == "subscription-terminated"
    received = stuck.sent[:-1]
    last_time = received[-1].findtext(f"{N}eventTime")
    resumed = FakeSession(3)
    subs.create(resumed, subscribe_xml(stream="escEvent", startTime=last_time))
    resumed.wait(lambda s: "replayComplete" in s.names())
    seen = {b.findtext(f"{{{ESC}}}depname") for b in stuck.bodies()[:-1] + resumed.bodies()}
    assert {f"d{i}" for i in range(total)} <= seen


# -- RFC 6470 bodies ----------------------------------------------------------------


def test_base_notification_bodies() -> None:
    b = f"{{{NC_NOTIF_BASE}}}"
    change = base.config_change(
        username="admin", session_id=3, source_host="127.0.0.1",
        edits=[Change("create", "/esc:esc_datamodel/esc:tenants/esc:tenant[esc:name='a']",
                      {"esc": ESC})],
    )
    assert change.findtext(f"{b}changed-by/{b}username") == "admin"
    assert change.findtext(f"{b}changed-by/{b}session-id") == "3"
    assert change.findtext(f"{b}changed-by/{b}source-host") == "127.0.0.1"
    assert change.findtext(f"{b}datastore") == "running"
    target = change.find(f"{b}edit/{b}target")
    assert target is not None and target.nsmap["esc"] == ESC
    assert change.findtext(f"{b}edit/{b}operation") == "create"
    system = base.config_change(username="escnc", session_id=0)
    assert system.find(f"{b}changed-by/{b}server") is not None
    end = base.session_end(username="u", session_id=4, source_host="::1",
                           termination_reason="killed", killed_by=2)
    assert end.findtext(f"{b}killed-by") == "2"
    assert end.findtext(f"{b}termination-reason") == "killed"
    timeout = base.confirmed_commit(confirm_event="timeout", username="u", session_id=4)
    assert timeout.find(f"{b}session-id") is None
    start = base.confirmed_commit(confirm_event="start", username="u", session_id=4, timeout=60)
    assert start.findtext(f"{b}timeout") == "60"
