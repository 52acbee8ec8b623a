"""Capacity notifications POSTed to a subscription's notificationUrl (issue 17): the
seed's notification JSON, once per crossing, through the ESC callback outbox
(events/callbacks.py: durable across a restart, retried with backoff, listed at
/escnc/callbacks), the URL under the outbound URL policy at subscribe time."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ncclient.operations.rpc import RPCError

import capacity_seed as seed
from conftest import add_user, connect, make_settings
from escnc.app import Server
from http_helpers import CallbackReceiver, client
from test_capacity import CAPACITY_SETTINGS, NODE, rpc

pytestmark = pytest.mark.timeout(120)
ONE = {"numCpuCores": 1, "numVcInstances": 1, "virtualMemSize": 1}
NOTIFY_SETTINGS: dict[str, Any] = dict(
    CAPACITY_SETTINGS, http_listen="127.0.0.1:0", url_allow_loopback=True,
    callback_retry_base=0.05, callback_max_attempts=12,
)


@pytest.fixture
def vims(tmp_path: Path) -> dict[str, str]:
    d = tmp_path / "hosts"
    d.mkdir()
    out = {}
    for name in ("hostA", "hostB"):
        (d / f"{name}.xml").write_text(NODE)
        out[name] = f"test://{d / name}.xml"
    return out


@pytest.fixture
def srv(server_factory, vims):  # type: ignore[no-untyped-def]
    return server_factory(vims=vims, **NOTIFY_SETTINGS)


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    r = CallbackReceiver()
    yield r
    r.close()


def subscription(url: str) -> dict[str, Any]:
    """The seed's compute subscription on hostA (16 vcInstances), below 15 available."""
    sub = dict(seed.COMPUTE_SUBSCRIBE, zoneId="hostA", notificationUrl=url)
    sub["threshold"] = [{"capacity_info": "available", "condition": "lt", "value": 15}]
    return sub


def reserve(http: Any, n: int) -> None:
    for _ in range(n):
        r = http.post("/reservation/compute/create",
                      json={"zoneId": "hostA", "computePoolReservation": ONE})
        assert r.status_code == 201, r.text


def deliveries(http: Any, sid: str) -> list[dict[str, Any]]:
    r = http.get("/escnc/callbacks", params={"transaction": f"capacity:{sid}"})
    assert r.status_code == 200, r.text
    return list(r.json()["deliveries"])


def wait_attempted(http: Any, sid: str, state: str = "") -> dict[str, Any]:
    """The subscription's delivery once one attempt of it was made (and, with
    ``state``, it reached that state): a poll, not a timing."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = deliveries(http, sid)
        if rows and rows[0]["attempts"] >= 1 and state in ("", rows[0]["state"]):
            return rows[0]
        time.sleep(0.02)
    raise AssertionError(f"no attempt: {deliveries(http, sid)}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_body(got: bytes) -> dict[str, Any]:
    body = json.loads(got)
    assert seed.same_shape(seed.COMPUTE_NOTIFICATION, body) == [], body
    assert body["zoneId"] == "hostA"
    assert body["resourceDescriptor"] == {"computeResourceTypeId": "vcInstances"}
    assert body["capacityInformation"] == {
        "available": 14, "reserved": 2, "total": 16, "allocated": 0}
    return body


def test_http_subscriber_gets_one_post_with_the_seed_notification(srv, receiver) -> None:  # type: ignore[no-untyped-def]
    with client(srv.http_ports["http"]) as http:
        r = http.post("/capacity/compute/subscribe", json=subscription(receiver.url("/cap")))
        assert r.status_code == 201, r.text
        sid = r.json()["capacityChangeSubscriptionId"]
        reserve(http, 1)  # 15 available: not below 15
        reserve(http, 1)  # 14: crossed
        [got] = receiver.wait_for("/cap", "")
        assert got.headers["content-type"] == "application/json"
        check_body(got.body)
        reserve(http, 1)  # still below: no second notification
        receiver.wait_quiet(0.5)
        assert len(receiver.got) == 1, receiver.got
        [row] = deliveries(http, sid)
        assert (row["kind"], row["state"], row["attempts"], row["url"]) == (
            "notification", "delivered", 1, receiver.url("/cap"))


def test_netconf_subscriber_that_is_down_at_first_gets_it_when_up(srv) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    url = f"http://127.0.0.1:{port}/down"
    with connect(srv) as m, client(srv.http_ports["http"]) as http:
        sid = rpc(m, "subscribeComputeCapacity", subscription(url))[
            "capacityChangeSubscriptionId"]
        reserve(http, 2)
        row = wait_attempted(http, sid)  # refused: nobody listens yet
        assert row["state"] == "pending" and row["last_error"], row
        up = CallbackReceiver(port)
        try:
            [got] = up.wait_for("/down", "")
            check_body(got.body)
            # the receiver has it before escnc has recorded the answer: wait for that
            row = wait_attempted(http, sid, state="delivered")
            assert row["attempts"] >= 2 and len(deliveries(http, sid)) == 1, row
        finally:
            up.close()


def test_without_an_http_listener_netconf_subscribers_get_it_too(
        server_factory, vims, receiver) -> None:  # type: ignore[no-untyped-def]
    srv = server_factory(vims=vims, **dict(NOTIFY_SETTINGS, http_listen=""))
    assert srv.http_ports == {}
    with connect(srv) as m:
        rpc(m, "subscribeComputeCapacity", subscription(receiver.url("/nc")))
        for _ in range(2):
            rpc(m, "createComputeReservation", {"zoneId": "hostA", "computePoolReservation": ONE})
        [got] = receiver.wait_for("/nc", "")
        check_body(got.body)


def test_a_queued_notification_survives_a_restart(tmp_path: Path, vims) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "state"
    add_user(state)
    port = free_port()
    url = f"http://127.0.0.1:{port}/later"
    first = Server(make_settings(state, vims=vims, **NOTIFY_SETTINGS))
    first.start()
    try:
        with client(first.http_ports["http"]) as http:
            r = http.post("/capacity/compute/subscribe", json=subscription(url))
            assert r.status_code == 201, r.text
            sid = r.json()["capacityChangeSubscriptionId"]
            reserve(http, 2)
            wait_attempted(http, sid)
    finally:
        first.stop()
    up = CallbackReceiver(port)
    second = Server(make_settings(state, vims=vims, **NOTIFY_SETTINGS))
    second.start()
    try:
        [got] = up.wait_for("/later", "")
        check_body(got.body)
        up.wait_quiet(0.5)
        assert len(up.got) == 1, up.got  # not sent twice after it succeeded
        with client(second.http_ports["http"]) as http:
            wait_attempted(http, sid, state="delivered")
            assert len(deliveries(http, sid)) == 1
    finally:
        second.stop()
        up.close()


def test_a_refused_notification_url_is_refused_at_subscribe(server_factory, vims) -> None:  # type: ignore[no-untyped-def]
    srv = server_factory(vims=vims, **dict(NOTIFY_SETTINGS, url_allow_loopback=False))
    with client(srv.http_ports["http"]) as http, connect(srv) as m:
        for url, why in (("file:///etc/passwd", "file"),
                         ("http://127.0.0.1:9/x", "loopback")):
            r = http.post("/capacity/compute/subscribe", json=subscription(url))
            assert r.status_code == 400, r.text
            assert "notificationUrl" in r.text and why in r.text, r.text
            with pytest.raises(RPCError) as exc:
                rpc(m, "subscribeComputeCapacity", subscription(url))
            assert exc.value.tag == "invalid-value"
            assert why in str(exc.value)
        assert srv.services.engine.capacity.subs.all() == []  # no change


class _Notifier:
    """Routes every capacityChangeNotification to one URL (the tracker's contract)."""

    def active(self) -> bool:
        return True

    def target(self, ev: Any) -> tuple[str, str, dict[str, str], bytes] | None:
        if not str(ev.tag).endswith("capacityChangeNotification"):
            return None
        sid = ev.findtext("{*}capacityChangeSubscriptionId") or ""
        return f"capacity:{sid}", "http://x/n", {}, sid.encode()


def test_a_notification_published_while_the_tracker_is_down_is_queued_once(
        tmp_path: Path) -> None:
    from escnc.engine.capacity.events import capacity_notification
    from escnc.events.bus import EventBus
    from escnc.events.callbacks import CallbackStore, CallbackTracker
    from escnc.settings import Settings

    sent: list[bytes] = []
    bus = EventBus(Settings(state_dir=tmp_path))
    info = {"available": 1, "reserved": 0, "total": 2, "allocated": 1}

    def tracker() -> CallbackTracker:
        return CallbackTracker(CallbackStore(tmp_path / "cb.sqlite3"), bus,
                               lambda url, headers, body: sent.append(body) or 200,
                               lambda url, resolve: None, notifier=_Notifier())

    t = tracker()
    t.start()
    t.stop()
    t.store.close()
    # published while no tracker runs (escnc killed after the engine published it)
    bus.publish("escEvent", capacity_notification("s1", "compute", "", "vcpus", info, 0.0))
    for _run in range(2):  # the second run finds it delivered: not queued again
        t = tracker()
        t.start()
        deadline = time.monotonic() + 30
        while not t.store.counts().get("delivered") and time.monotonic() < deadline:
            time.sleep(0.02)
        t.stop()
        assert [d.state for d in t.store.deliveries()] == ["delivered"]
        t.store.close()
    assert sent == [b"s1"]
    bus.close()
