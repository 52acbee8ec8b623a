"""ESC REST callbacks are durable, retried and visible: kill -9 of escnc between a
request's accept and its completion loses no callback and sends none twice; a
receiver that fails gets the same delivery again later, in order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from lxml import etree

import conftest
from conftest import add_user
from engine_support import config, deployment
from escnc.ns import ESC
from http_helpers import CallbackReceiver, client

pytestmark = pytest.mark.timeout(300)

HERE = Path(__file__).parent
E = f"{{{ESC}}}"
V0 = "/ESCManager/v0"


def start(state: Path, uri: str, delay: float,
          database: str = "") -> tuple[subprocess.Popen[str], int]:
    """``database``: settings.database (the outbox and the engine state in PostgreSQL)."""
    env = dict(os.environ, PYTHONPATH=f"{HERE.parent / 'src'}:{HERE}")
    extra = [database] if database else []
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "http_server_proc.py"), str(state), uri, str(delay),
         *extra],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("PORTS "), line
    return proc, int(line.split()[2])


def database_of(backend: str, request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("pg_dsn")) if backend == "postgresql" else ""


def test_callbacks_survive_kill9_between_accept_and_completion(
        tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    database = database_of(backend, request)
    state = tmp_path / "state"
    add_user(state, database=database)
    uri = conftest.test_host_uri(tmp_path / "hosts")
    receiver = CallbackReceiver()
    body = config(tmp_path, deployment(name="dep1", min_active=3, max_active=3)).encode()
    proc, port = start(state, uri, delay=2.0, database=database)
    try:
        with client(port) as http:
            r = http.post(f"{V0}/deployments/dep1", content=body, headers={
                "Content-Type": "application/xml",
                "Callback": receiver.url("/callback"),
                "Callback-ESC-Events": receiver.url("/event"),
            })
        assert r.status_code == 201, r.text
        txn = r.headers["ESC-Transaction-Id"]
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # accepted, VMs still being created
        proc.wait(10)
    assert not [g for g in receiver.got if g.path == "/callback"]
    proc, port = start(state, uri, delay=0.0, database=database)
    try:
        (done,) = receiver.wait_for("/callback", txn, timeout=120)
        assert done.headers["esc-status-code"] == "200"
        assert etree.fromstring(done.body).findtext(f"{E}name") == "dep1"
        events = receiver.wait_for("/event", txn, event="SERVICE_ALIVE")
        kinds = [e.event_type for e in events]
        assert kinds.count("SERVICE_ALIVE") == 1
        assert kinds.count("VM_ALIVE") == 3
        assert len({e.body for e in events}) == len(events)  # nothing sent twice
        # visible: the delivery records
        with client(port) as http:
            for _ in range(600):  # the outcome may be received before it is recorded
                listed = http.get("/escnc/callbacks", params={"transaction": txn}).json()
                if {d["state"] for d in listed["deliveries"]} == {"delivered"}:
                    break
                receiver.wait_quiet(0.05)
        assert {d["state"] for d in listed["deliveries"]} == {"delivered"}
        assert sum(d["kind"] == "outcome" for d in listed["deliveries"]) == 1
    finally:
        proc.terminate()
        proc.wait(10)
        receiver.close()


def test_failed_delivery_is_retried_in_order_then_given_up(tmp_path: Path,
                                                            server_factory) -> None:  # type: ignore[no-untyped-def]
    srv = server_factory(http_listen="127.0.0.1:0", url_allow_loopback=True,
                         callback_retry_base=0.05, callback_max_attempts=3)
    receiver = CallbackReceiver()
    try:
        receiver.statuses = [500, 503]  # two failures, then accepted
        with client(srv.http_ports["http"]) as http:
            r = http.post(f"{V0}/tenants/ta", headers={"Callback": receiver.url("/callback")})
            assert r.status_code == 201, r.text
            (done,) = receiver.wait_for("/callback", r.headers["ESC-Transaction-Id"])
            # the receiver has it before escnc has recorded the answer: wait for that
            for _ in range(600):
                listed = http.get("/escnc/callbacks").json()["deliveries"]
                if listed[-1]["state"] != "pending":
                    break
                receiver.wait_quiet(0.05)
            assert listed[-1]["attempts"] == 3 and listed[-1]["state"] == "delivered"
            # a receiver that never accepts: given up after callback_max_attempts
            receiver.statuses = [500] * 3
            r = http.post(f"{V0}/tenants/tb", headers={"Callback": receiver.url("/callback")})
            txn = r.headers["ESC-Transaction-Id"]
            for _ in range(600):
                (last,) = http.get("/escnc/callbacks",
                                   params={"transaction": txn}).json()["deliveries"]
                if last["state"] != "pending":
                    break
                receiver.wait_quiet(0.05)
            assert last["state"] == "failed" and last["attempts"] == 3
            assert "HTTP status 500" in last["last_error"]
            metrics = http.get("/metrics").text
            assert 'escnc_callback_deliveries{state="failed"} 1.0' in metrics
        assert done.headers["esc-status-code"] == "200"
        assert not httpx.get(f"http://127.0.0.1:{srv.http_ports['http']}/escnc/callbacks"
                             ).is_success  # needs a login
    finally:
        receiver.close()


def test_queued_callback_survives_kill9_before_it_is_delivered(
        tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    """The outcome is queued, the receiver is down (503) when escnc is killed: after
    the restart the same delivery reaches it, once."""
    database = database_of(backend, request)
    state = tmp_path / "state"
    add_user(state, database=database)
    uri = conftest.test_host_uri(tmp_path / "hosts")
    receiver = CallbackReceiver()
    receiver.statuses = [503] * 10_000
    proc, port = start(state, uri, delay=0.0, database=database)
    try:
        with client(port) as http:
            r = http.post(f"{V0}/tenants/tk", headers={"Callback": receiver.url("/callback")})
            assert r.status_code == 201, r.text
            txn = r.headers["ESC-Transaction-Id"]
            for _ in range(1000):
                (d,) = http.get("/escnc/callbacks", params={"transaction": txn}
                                ).json()["deliveries"]
                if d["attempts"] >= 1:
                    break
                receiver.wait_quiet(0.05)
            assert d["state"] == "pending" and d["attempts"] >= 1
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    receiver.statuses = []
    proc, port = start(state, uri, delay=0.0, database=database)
    try:
        (done,) = receiver.wait_for("/callback", txn, timeout=120)
        assert done.headers["esc-status-code"] == "200"
        assert etree.fromstring(done.body).findtext(f"{E}event_type") == "CREATE_TENANT"
    finally:
        proc.terminate()
        proc.wait(10)
        receiver.close()


def test_transaction_without_terminal_event_gets_504(tmp_path: Path) -> None:
    from escnc.events.bus import EventBus
    from escnc.events.callbacks import CallbackStore, CallbackTracker, Transaction
    from escnc.settings import Settings

    sent: list[tuple[str, dict[str, str]]] = []
    bus = EventBus(Settings(state_dir=tmp_path))
    tracker = CallbackTracker(CallbackStore(tmp_path / "cb.sqlite3"), bus,
                              lambda url, headers, body: sent.append((url, headers)) or 200,
                              lambda url, resolve: None, transaction_timeout=60)
    txn = Transaction(vm="v1", terminal=("VM_STOPPED",), callback="http://x/cb",
                      created=0.0)
    tracker.begin(txn)
    tracker._expire()
    tracker._send_due()
    assert [(u, h["ESC-Status-Code"], h["ESC-Transaction-Id"]) for u, h in sent] == [
        ("http://x/cb", "504", txn.id)]
    assert tracker.store.open_transactions() == []
    bus.close()
