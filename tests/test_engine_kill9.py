"""kill -9 of escnc in the middle of a 20-VM deployment, then restart.

The test-driver hypervisor dies with the process (restart = empty host), so this
proves the engine side: every VM reaches VM_ALIVE exactly once, VM_DEPLOYED once,
SERVICE_ALIVE once, generated names are reused, and the host ends with exactly the
recorded domains (no duplicates, no orphans).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from lxml import etree
from ncclient import manager

import conftest
from conftest import PASSWORD, USER, add_user, is_resource_event
from engine_support import config, deployment
from escnc.engine.store import EngineStore
from escnc.ns import ESC

E = f"{{{ESC}}}"
HERE = Path(__file__).parent


def start(
    state: Path, uri: str, delay: float, kill_at: str = "", database: str = ""
) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ, PYTHONPATH=f"{HERE.parent / 'src'}:{HERE}")
    env.pop("ESCNC_TEST_KILL_AT", None)
    if kill_at:  # engine_server_proc.install_kill_point
        env["ESCNC_TEST_KILL_AT"] = kill_at
    extra = [database] if database else []
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "engine_server_proc.py"), str(state), uri, str(delay),
         *extra],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("PORT "), line
    return proc, int(line.split()[1])


def connect(port: int):  # type: ignore[no-untyped-def]
    return manager.connect(
        host="127.0.0.1",
        port=port,
        username=USER,
        password=PASSWORD,
        hostkey_verify=False,
        allow_agent=False,
        look_for_keys=False,
        timeout=30,
    )


def collect(m, until: str, timeout: float) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    out: list[tuple[str, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = m.take_notification(block=True, timeout=0.5)
        if n is None:
            continue
        ev = etree.fromstring(n.notification_xml.encode()).find(f".//{E}escEvent")
        if ev is None or is_resource_event(ev):
            continue
        out.append(
            (
                ev.findtext(f"{E}event/{E}type") or "",
                ev.findtext(f"{E}vm_source/{E}generated_vmname") or "",
            )
        )
        if out[-1][0] == until:
            return out
    raise AssertionError(f"no {until} in {out}")


def test_kill9_mid_deploy(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    """Both backends: on PostgreSQL (settings.database) the engine state, the event log
    and the callbacks are in the database, and the restart finds them there."""
    database = request.getfixturevalue("pg_dsn") if backend == "postgresql" else ""
    state = tmp_path / "state"
    add_user(state, database=database)
    uri = conftest.test_host_uri(tmp_path / "hosts")
    proc, port = start(state, uri, delay=0.1, database=database)
    try:
        with connect(port) as m:
            m.create_subscription(stream_name="escEvent")
            m.edit_config(
                target="running",
                config=f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">'
                f"{config(tmp_path, deployment(min_active=20, max_active=20))}</config>",
            )
            seen = 0
            while seen < 6:
                n = m.take_notification(block=True, timeout=10)
                assert n is not None
                seen += "VM_DEPLOYED" in n.notification_xml
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    proc, port = start(state, uri, delay=0.0, database=database)
    try:
        with connect(port) as m:
            m.create_subscription(stream_name="escEvent", start_time="1970-01-01T00:00:00Z")
            events = collect(m, "SERVICE_ALIVE", timeout=60)
    finally:
        proc.terminate()
        proc.wait(10)
    count = Counter(events)
    alive = {vm for t, vm in events if t == "VM_ALIVE"}
    deployed = {vm for t, vm in events if t == "VM_DEPLOYED"}
    assert len(alive) == 20 and len(deployed) == 20
    assert all(count[("VM_ALIVE", vm)] == 1 and count[("VM_DEPLOYED", vm)] == 1 for vm in alive)
    assert [t for t, _ in events].count("SERVICE_ALIVE") == 1
    # the engine's records name exactly these VMs (no duplicates)
    store = EngineStore(state / "engine.sqlite3", database=database)
    names = [vm.generated_name for vm in store.vms()]
    store.close()
    assert sorted(names) == sorted(alive)


def logged(state: Path) -> Counter[tuple[str, str]]:
    """(event type, generated VM name) -> how many the event log holds."""
    db = sqlite3.connect(state / "events.sqlite3")
    try:
        bodies = [bytes(r[0]) for r in db.execute("SELECT body FROM events ORDER BY seq")]
    finally:
        db.close()
    out: Counter[tuple[str, str]] = Counter()
    for body in bodies:
        ev = etree.fromstring(body)
        if ev.tag != f"{E}escEvent" or is_resource_event(ev):
            continue
        out[(ev.findtext(f"{E}event/{E}type") or "",
             ev.findtext(f"{E}vm_source/{E}generated_vmname") or "")] += 1
    return out


@pytest.mark.parametrize(
    "kill_at",
    [
        "VM_ALIVE:2:before",  # recorded as reported, not yet in the log: sent after restart
        "VM_ALIVE:2:after",  # in the log: not sent again
        "VM_DEPLOYED:2:before",
        "SERVICE_ALIVE:1:before",
        "SERVICE_ALIVE:1:after",
    ],
)
def test_kill9_between_report_and_publish(tmp_path: Path, kill_at: str) -> None:
    """kill -9 right between the engine flagging an outcome as reported and its event
    reaching the event log (or right after): after a restart the log holds it exactly
    once (engine/outbox.py: the flag is an outbox, the event's key makes a repeat a
    no-op)."""
    state = tmp_path / "state"
    add_user(state)
    uri = conftest.test_host_uri(tmp_path / "hosts")
    proc, port = start(state, uri, delay=0.0, kill_at=kill_at)
    try:
        m = connect(port)
        try:
            m.edit_config(
                target="running",
                config=f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">'
                f"{config(tmp_path, deployment(min_active=4, max_active=4))}</config>",
            )
        except Exception:  # the kill point may come before the reply
            pass
        assert proc.wait(60) == -signal.SIGKILL  # the kill point was reached
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    proc, port = start(state, uri, delay=0.0)
    try:
        with connect(port) as m:
            m.create_subscription(stream_name="escEvent", start_time="1970-01-01T00:00:00Z")
            collect(m, "SERVICE_ALIVE", timeout=60)
    finally:
        proc.terminate()
        proc.wait(10)
    count = logged(state)
    store = EngineStore(state / "engine.sqlite3")
    names = {vm.generated_name for vm in store.vms()}
    store.close()
    assert len(names) == 4
    for vm in names:
        assert count[("VM_ALIVE", vm)] == 1, (vm, count)
        assert count[("VM_DEPLOYED", vm)] == 1, (vm, count)
    assert count[("SERVICE_ALIVE", "")] == 1, count


def test_a_log_from_before_event_keys_repeats_nothing(tmp_path: Path) -> None:
    """Outcomes flagged by an escnc whose log had no keys were sent by it: the first
    start on such a log adopts them (engine/outbox.py) instead of publishing them."""
    from engine_support import Harness

    h1 = Harness(tmp_path).start()
    h1.ds.commit(config(tmp_path, deployment(min_active=2)))
    h1.events.wait_for("SERVICE_ALIVE")
    running = h1.ds.running
    names = sorted(v.generated_name for v in h1.engine.store.vms())
    h1.stop()
    state = h1.settings.state_dir
    db = sqlite3.connect(state / "events.sqlite3")
    with db:
        db.execute("DELETE FROM event_keys")  # the log of an escnc from before keys
    db.close()
    h2 = Harness(tmp_path)
    h2.ds.running = running
    h2.start()
    assert h2.engine.wait_idle(20)
    h2.stop()
    counted = logged(state)
    assert all(counted[("VM_ALIVE", vm)] == 1 for vm in names), counted
    assert counted[("SERVICE_ALIVE", "")] == 1
