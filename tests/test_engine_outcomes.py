"""Exactly one outcome per request, with the periodic reconcile running.

Regressions for issue 12: reconcile must not undo what an operator set, must not
re-attempt a reported failure, must not pile up jobs; requests the state forbids are
refused at once (``operation-not-allowed-in-state``); long waits hold no worker slot.
Reconcile ticks are driven by a manual clock (``engine/clock.py``): N ticks without
sleeping N seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from conftest import is_resource_event
from engine_support import E, Harness, config, deployment, monitored_deployment
from escnc.engine import states as st
from escnc.engine.clock import ManualClock
from escnc.engine.errors import Refused
from escnc.engine.jobs import Job, JobQueue, waiting
from escnc.engine.liveness import Probe, wait_alive
from escnc.engine.store import VmRecord
from escnc.ns import ESC
from test_day2_netconf import (  # noqa: F401  (fixtures: srv, nc, ev, image, hosts_dir)
    NC_BASE,
    Events,
    config_xml,
    edit,
    ev,
    hosts_dir,
    image,
    nc,
    refused,
    rpc,
    srv,
    status,
    types,
)

pytestmark = pytest.mark.timeout(120)

TICKS = 5


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def h(tmp_path: Path, clock: ManualClock) -> Iterator[Harness]:
    harness = Harness(tmp_path, clock=clock).start()
    yield harness
    harness.stop()


def ticks(h: Harness, clock: ManualClock, n: int = TICKS) -> None:
    """Run ``n`` periodic reconcile passes and let the jobs they queued finish."""
    for _ in range(n):
        target = h.engine.ticks + 1
        clock.advance(h.settings.reconcile_interval)
        assert h.engine.wait_ticks(target, 10)
        assert h.engine.wait_idle(20)


def failures(h: Harness, type_: str) -> int:
    return sum(1 for t, s, _vm, _msg in h.events.items if t == type_ and s == "FAILURE")


def count(h: Harness, type_: str) -> int:
    return sum(1 for t, *_ in h.events.items if t == type_)


# -- reconcile leaves operators' settings and reported outcomes alone ----------------------


def test_converged_deployment_gets_no_job(
    h: Harness, clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h.ds.commit(config(tmp_path, deployment(min_active=2)))
    h.events.wait_for("SERVICE_ALIVE")
    assert h.engine.wait_idle(10)
    queued: list[str] = []
    submit = h.engine.jobs.submit

    def counted(key, name, fn, **kw):  # type: ignore[no-untyped-def]
        queued.append(name)
        return submit(key, name, fn, **kw)

    monkeypatch.setattr(h.engine.jobs, "submit", counted)
    h.events.clear()
    ticks(h, clock)
    assert queued == []
    assert h.events.items == []


def test_disable_monitor_survives_reconcile(h: Harness, clock: ManualClock, tmp_path: Path) -> None:
    h.ds.commit(config(tmp_path, deployment()))
    h.events.wait_for("SERVICE_ALIVE")
    vm = h.engine.store.vms()[0]
    h.engine.vm_action(vm, "DISABLE_MONITOR", False).future.result(10)
    h.events.wait_for("VM_MONITOR_UNSET")
    h.events.clear()
    ticks(h, clock)
    now = h.engine.store.vm(vm.generated_name)
    assert now is not None
    assert (now.state, now.monitoring) == (st.VM_MONITOR_DISABLED, False)
    assert not h.engine.monitor.watching(vm.generated_name)
    assert h.events.items == []


def test_stopped_vm_and_error_vm_stay(h: Harness, clock: ManualClock, tmp_path: Path) -> None:
    h.ds.commit(config(tmp_path, deployment(min_active=2)))
    h.events.wait_for("SERVICE_ALIVE")
    a, b = h.engine.store.vms()
    h.engine.vm_action(a, "STOP", True).future.result(10)
    h.events.wait_for("VM_STOPPED")
    h.engine.set_vm_state(b.generated_name, st.VM_ERROR, monitoring=False)
    h.events.clear()
    ticks(h, clock)
    assert h.engine.store.vm(a.generated_name).state == st.VM_STOPPED  # type: ignore[union-attr]
    assert h.engine.store.vm(b.generated_name).state == st.VM_ERROR  # type: ignore[union-attr]
    assert not h.engine.ops.is_running(a)
    assert h.events.items == []


def test_failed_deploy_is_reported_once(
    h: Harness, clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_a: object, **_kw: object) -> None:
        raise libvirt.libvirtError("no room on the host")

    monkeypatch.setattr(h.engine.ops, "create", broken)
    h.ds.commit(config(tmp_path, deployment()))
    h.events.wait_for("SERVICE_ALIVE")
    monkeypatch.undo()  # the host would take it now: still no silent retry
    ticks(h, clock)
    assert [(t, s) for t, s, *_ in h.events.items] == [
        ("VM_DEPLOYED", "FAILURE"),
        ("SERVICE_ALIVE", "FAILURE"),
    ]
    assert h.engine.store.deployment("t1", "dep1").state == st.SERVICE_ERROR  # type: ignore[union-attr]
    assert h.engine.ops.domain(h.engine.store.vms()[0]) is None


def test_bootup_timeout_is_reported_once(
    h: Harness, clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(h.engine.ops, "is_running", lambda vm: False)
    h.ds.commit(config(tmp_path, monitored_deployment(recovery_type="MANUAL", bootup_time=1)))
    h.events.wait_for("SERVICE_ALIVE")
    ticks(h, clock)
    assert failures(h, "VM_ALIVE") == 1 and failures(h, "SERVICE_ALIVE") == 1
    assert len(h.events.items) == 3


def test_bootup_timeout_under_auto_recovery_recovers(
    h: Harness, clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Late at boot under an AUTO policy: recovery (reboot) instead of a plain FAILURE,
    then the VM's VM_ALIVE and the service's SERVICE_ALIVE, once each."""
    real_running, real_reboot = h.engine.ops.is_running, h.engine.ops.reboot
    rebooted = threading.Event()

    def reboot(vm: VmRecord, force: bool = False) -> None:
        real_reboot(vm, force=force)
        rebooted.set()

    monkeypatch.setattr(h.engine.ops, "reboot", reboot)
    monkeypatch.setattr(
        h.engine.ops, "is_running", lambda vm: rebooted.is_set() and real_running(vm)
    )
    h.ds.commit(config(tmp_path, monitored_deployment(bootup_time=1)))
    h.events.wait_for("SERVICE_ALIVE")
    ticks(h, clock)
    assert [(t, s) for t, s, *_ in h.events.items] == [
        ("VM_DEPLOYED", "SUCCESS"),
        ("VM_RECOVERY_INIT", "SUCCESS"),
        ("VM_RECOVERY_REBOOT", "SUCCESS"),
        ("VM_RECOVERY_COMPLETE", "SUCCESS"),
        ("VM_ALIVE", "SUCCESS"),
        ("SERVICE_ALIVE", "SUCCESS"),
    ]
    assert h.engine.store.deployment("t1", "dep1").state == st.SERVICE_ACTIVE  # type: ignore[union-attr]
    vm = h.engine.store.vms()[0]
    assert vm.state == st.VM_ALIVE and vm.monitoring


def test_bootup_timeout_under_auto_recovery_that_fails_ends_once(
    h: Harness, clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(h.engine.ops, "is_running", lambda vm: False)
    h.ds.commit(config(tmp_path, monitored_deployment(bootup_time=1, max_retries=1)))
    h.events.wait_for("SERVICE_ALIVE")
    ticks(h, clock)
    assert [(t, s) for t, s, *_ in h.events.items] == [
        ("VM_DEPLOYED", "SUCCESS"),
        ("VM_RECOVERY_INIT", "SUCCESS"),
        ("VM_RECOVERY_REBOOT", "SUCCESS"),
        ("VM_RECOVERY_UNDEPLOYED", "SUCCESS"),
        ("VM_RECOVERY_DEPLOYED", "SUCCESS"),
        ("VM_RECOVERY_COMPLETE", "FAILURE"),
        ("VM_ALIVE", "FAILURE"),
        ("SERVICE_ALIVE", "FAILURE"),
    ]
    assert h.engine.store.deployment("t1", "dep1").state == st.SERVICE_ERROR  # type: ignore[union-attr]


def test_failed_scale_out_is_not_completed_by_reconcile(
    h: Harness, clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h.ds.commit(config(tmp_path, deployment(min_active=1, max_active=2)))
    h.events.wait_for("SERVICE_ALIVE")
    original = h.engine.ops.create

    def broken(*_a: object, **_kw: object) -> None:
        raise libvirt.libvirtError("no room on the host")

    monkeypatch.setattr(h.engine.ops, "create", broken)
    h.events.clear()
    h.ds.commit(config(tmp_path, deployment(min_active=2, max_active=2)))
    h.events.wait_for("SERVICE_UPDATED")
    assert failures(h, "SERVICE_UPDATED") == 1
    monkeypatch.setattr(h.engine.ops, "create", original)
    h.events.clear()
    ticks(h, clock)
    assert h.events.items == []
    assert h.engine.store.deployment("t1", "dep1").state == st.SERVICE_ERROR  # type: ignore[union-attr]
    assert sum(1 for v in h.engine.store.vms() if h.engine.ops.domain(v) is not None) == 1


def test_manual_recovery_vm_lost_while_down(tmp_path: Path) -> None:
    h1 = Harness(tmp_path).start()
    h1.ds.commit(config(tmp_path, monitored_deployment(recovery_type="MANUAL")))
    h1.events.wait_for("SERVICE_ALIVE")
    (name,) = [v.generated_name for v in h1.engine.store.vms()]
    running = h1.ds.running
    h1.stop()
    # restart: the test-driver host lost the domain while escnc was down
    clock = ManualClock()
    h2 = Harness(tmp_path, clock=clock)
    h2.ds.running = running
    h2.start()
    try:
        h2.events.wait_for("VM_MANUAL_RECOVERY_NEEDED")
        ticks(h2, clock)
        assert [t for t, *_ in h2.events.items] == ["VM_MANUAL_RECOVERY_NEEDED"]
        vm = h2.engine.store.vm(name)
        assert vm is not None and (vm.state, vm.monitoring) == (st.VM_ERROR, False)
        assert h2.engine.ops.domain(vm) is None  # not redeployed behind the operator
    finally:
        h2.stop()


# -- one outcome per request ------------------------------------------------------------


def hold(h: Harness) -> threading.Event:
    """Keep dep1's queue busy until the returned event is set."""
    gate, running = threading.Event(), threading.Event()

    def job(_job: object) -> None:
        running.set()
        gate.wait(20)

    h.engine.submit("t1", "dep1", "hold", job)
    # running, not queued: what is submitted next queues behind it
    assert running.wait(20)
    return gate


def test_reconciles_while_busy_coalesce(h: Harness, tmp_path: Path) -> None:
    h.ds.commit(config(tmp_path, deployment()))
    h.events.wait_for("SERVICE_ALIVE")
    vm = h.engine.store.vms()[0]
    h.engine.ops.domain(vm).destroy()  # type: ignore[union-attr]  # something to repair
    h.engine.set_vm_state(vm.generated_name, st.VM_INERT, monitoring=False)
    gate = hold(h)
    for _ in range(10):
        h.engine.reconcile()
    assert h.engine.jobs.pending(("t1", "dep1")) <= 1
    gate.set()
    assert h.engine.wait_idle(20)
    h.engine.reconcile()
    assert h.engine.wait_idle(20)
    assert h.engine.store.vm(vm.generated_name).state == st.VM_ALIVE  # type: ignore[union-attr]


def test_undeploy_cancels_queued_jobs(h: Harness, tmp_path: Path) -> None:
    h.ds.commit(config(tmp_path, deployment(min_active=2)))
    h.events.wait_for("SERVICE_ALIVE")
    a = h.engine.store.vms()[0]
    gate = hold(h)
    h.engine.vm_action(a, "DISABLE_MONITOR", False)  # accepted, queued behind `hold`
    for _ in range(5):
        h.engine.reconcile()
    h.events.clear()
    h.ds.commit(_no_deployments(tmp_path))
    gate.set()
    h.events.wait_for("SERVICE_UNDEPLOYED")
    assert h.engine.wait_idle(20)
    got = [(t, s, vm) for t, s, vm, _ in h.events.items]
    # the queued request ends once, as cancelled; the undeploy reports each VM once
    assert got[0] == ("VM_MONITOR_UNSET", "FAILURE", a.generated_name)
    assert [t for t, *_ in got[1:]] == ["VM_UNDEPLOYED", "VM_UNDEPLOYED", "SERVICE_UNDEPLOYED"]
    assert all(s == "SUCCESS" for _t, s, _vm in got[1:])
    assert h.engine.store.vms() == [] and h.engine.store.deployments() == []


def _no_deployments(tmp_path: Path) -> str:
    return config(tmp_path, "").replace("<deployments></deployments>", "")


def test_interrupted_reboot_ends_once(
    h: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h.ds.commit(config(tmp_path, deployment()))
    h.events.wait_for("SERVICE_ALIVE")
    monkeypatch.setattr(h.engine.ops, "is_running", lambda vm: False)  # never comes back
    h.events.clear()
    dep = h.engine.store.deployment("t1", "dep1")
    assert dep is not None
    h.engine.service_action(dep, "REBOOT")
    h.events.wait_for("VM_REBOOTED")
    h.ds.commit(_no_deployments(tmp_path))
    h.events.wait_for("SERVICE_UNDEPLOYED")
    assert h.engine.wait_idle(20)
    assert count(h, "SERVICE_REBOOTED") == 1 and failures(h, "SERVICE_REBOOTED") == 1
    assert count(h, "SERVICE_UNDEPLOYED") == 1 and count(h, "VM_UNDEPLOYED") == 1
    assert count(h, "SERVICE_ALIVE") == 0


# -- refused at once ----------------------------------------------------------------------


def test_only_undeploy_during_service_reboot(
    h: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h.ds.commit(config(tmp_path, deployment()))
    h.events.wait_for("SERVICE_ALIVE")
    up = threading.Event()
    real = h.engine.ops.is_running
    monkeypatch.setattr(h.engine.ops, "is_running", lambda vm: up.is_set() and real(vm))
    dep = h.engine.store.deployment("t1", "dep1")
    vm = h.engine.store.vms()[0]
    assert dep is not None
    job = h.engine.service_action(dep, "REBOOT")
    for action in ("STOP", "REBOOT", "ENABLE_MONITOR", "DISABLE_MONITOR"):
        with pytest.raises(Refused, match="serviceAction REBOOT is in progress"):
            h.engine.service_action(dep, action)
    for action in ("STOP", "REBOOT", "DISABLE_MONITOR"):
        with pytest.raises(Refused, match="in progress"):
            h.engine.vm_action(vm, action, False)
    with pytest.raises(Refused):
        h.engine.check_vm_operation(vm, "vmBackupAction SNAPSHOT")
    up.set()
    job.future.result(20)
    h.events.wait_for("SERVICE_REBOOTED")
    h.engine.vm_action(vm, "DISABLE_MONITOR", False).future.result(10)  # accepted again


def test_stopped_service_accepts_only_start(h: Harness, tmp_path: Path) -> None:
    h.ds.commit(config(tmp_path, deployment()))
    h.events.wait_for("SERVICE_ALIVE")
    dep = h.engine.store.deployment("t1", "dep1")
    assert dep is not None
    h.engine.service_action(dep, "STOP").future.result(20)
    vm = h.engine.store.vms()[0]
    for action in ("START", "REBOOT", "STOP", "ENABLE_MONITOR", "DISABLE_MONITOR"):
        with pytest.raises(Refused, match="stopped"):
            h.engine.vm_action(vm, action, False)
    for action in ("REBOOT", "STOP", "ENABLE_MONITOR", "DISABLE_MONITOR"):
        with pytest.raises(Refused, match="stopped"):
            h.engine.service_action(dep, action)
    with pytest.raises(Refused, match="stopped"):
        h.engine.check_vm_operation(vm, "vmMigrate")
    h.engine.service_action(dep, "START").future.result(20)
    assert h.engine.store.deployment("t1", "dep1").state == st.SERVICE_ACTIVE  # type: ignore[union-attr]


# -- over NETCONF: the rpc-error, and day-2 (resize) with the tick on -----------------------


def test_refusals_over_netconf(srv, nc, ev, image, monkeypatch) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    edit(nc, config_xml("small", 1, image))
    assert status(ev.until("SERVICE_ALIVE")[-1]) == "SUCCESS"
    (vm,) = [v.generated_name for v in srv.services.engine.store.vms()]
    engine = srv.services.engine
    up = threading.Event()
    real = engine.ops.is_running
    monkeypatch.setattr(engine.ops, "is_running", lambda v: up.is_set() and real(v))
    service(nc, "REBOOT")
    for request in (
        rpc("serviceAction", actionType="STOP", tenantName="t1", depName="d1"),
        rpc("serviceAction", actionType="REBOOT", tenantName="t1", depName="d1"),
        rpc("vmAction", actionType="STOP", vmName=vm),
        rpc("vmBackupAction", vmName=vm, backupName="b1"),
    ):
        err = refused(nc, request)
        assert (err.tag, err.app_tag) == ("operation-failed", "operation-not-allowed-in-state")
        assert "in progress" in str(err), request
    up.set()
    ev.until("SERVICE_REBOOTED")
    service(nc, "STOP")
    ev.until("SERVICE_STOPPED")
    for request in (
        rpc("vmAction", actionType="START", vmName=vm),
        rpc("vmAction", actionType="REBOOT", vmName=vm),
        rpc("vmMigrate", vmName=vm, migrationType="cold"),
        rpc("serviceAction", actionType="REBOOT", tenantName="t1", depName="d1"),
    ):
        err = refused(nc, request)
        assert err.app_tag == "operation-not-allowed-in-state", request
        assert "stopped" in str(err), request
    service(nc, "START")
    assert status(ev.until("SERVICE_STARTED")[-1]) == "SUCCESS"


def test_one_flavor_change_one_service_updated(srv, nc, ev: Events, image) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    edit(nc, config_xml("small", 2, image))
    ev.until("SERVICE_ALIVE")
    engine = srv.services.engine
    resize = engine.hooks.resize

    def tick_then_resize(*args):  # type: ignore[no-untyped-def]
        engine.reconcile()  # a tick between SERVICE_UPDATED and the resize starting
        resize(*args)

    engine.hooks.resize = tick_then_resize
    edit(nc, config_xml("large", 2, image))
    got = ev.until("VM_VERIFY_RESIZE")
    for _ in range(TICKS):  # what the periodic pass does, at once
        engine.reconcile()
        assert engine.wait_idle(20)
    time.sleep(2.5)  # and two real 1 s ticks
    got += _drain(ev)
    assert types(got).count("SERVICE_UPDATED") == 1, types(got)
    assert types(got).count("VM_VERIFY_RESIZE") == 1, types(got)


def service(session, action: str) -> None:  # type: ignore[no-untyped-def]
    request = rpc("serviceAction", actionType=action, tenantName="t1", depName="d1")
    session.dispatch(etree.fromstring(request))


def _drain(events: Events) -> list[etree._Element]:
    seen = []
    while (n := events.m.take_notification(block=False)) is not None:
        found = etree.fromstring(n.notification_xml.encode()).find(f".//{E}escEvent")
        if found is not None and not is_resource_event(found):
            seen.append(found)
    return seen


# -- waits hold no worker slot --------------------------------------------------------------


def test_waiting_jobs_do_not_starve_others() -> None:
    """Two deployments waiting for guests that do not boot, on a 2-slot queue: an
    image registration still runs at once (the waits hold no slot)."""
    queue = JobQueue(workers=2)
    release = threading.Event()
    started = threading.Barrier(3)

    def boot_wait(job: Job) -> None:  # what a deploy does while a guest boots
        started.wait(5)
        probe = Probe(_vm(str(job.key)), release.is_set, time.monotonic() + 30, 0.05)
        wait_alive([probe], job.cancel, lambda vm: None)

    try:
        queue.submit("a", "deploy a", boot_wait, interruptible=True)
        queue.submit("b", "deploy b", boot_wait, interruptible=True)
        started.wait(5)
        done = queue.submit("c", "image registration", lambda job: "registered")
        assert done.future.result(3) == "registered"
    finally:
        release.set()
        queue.shutdown()


def _vm(name: str) -> VmRecord:
    return VmRecord(name, "id", "t1", "dep", "g1", 0, "host", st.VM_INERT)


def test_queued_job_of_the_same_kind_is_replaced() -> None:
    queue = JobQueue()
    gate = threading.Event()
    ran: list[int] = []
    try:
        queue.submit("k", "hold", lambda job: gate.wait(10))
        jobs = [
            queue.submit("k", f"reconcile {i}", _record(ran, i), kind="reconcile")
            for i in range(10)
        ]
        assert queue.pending("k") == 1 and all(j is jobs[0] for j in jobs)
        gate.set()
        assert queue.wait_idle(10)
        assert ran == [9]  # the latest body, once
    finally:
        queue.shutdown()


def _record(ran: list[int], i: int) -> Callable[[Job], None]:
    return lambda job: ran.append(i)


def test_jobs_waiting_for_a_registration_leave_it_a_slot() -> None:
    """Deploys waiting for their image (lifecycle wraps the wait in jobs.waiting) do
    not keep the image registration job from running on a full queue."""
    queue = JobQueue(workers=2)
    registered = threading.Event()

    def deploy(job: Job) -> bool:
        with waiting():
            return registered.wait(10)

    try:
        deploys = [queue.submit(k, "deploy", deploy) for k in ("a", "b", "c")]
        queue.submit(("image", "img"), "register image", lambda job: registered.set())
        assert all(d.future.result(5) for d in deploys)
    finally:
        registered.set()
        queue.shutdown()


def test_undeploy_with_queued_backup_over_netconf(srv, nc, ev: Events, image) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    edit(nc, config_xml("small", 1, image))
    ev.until("SERVICE_ALIVE")
    engine = srv.services.engine
    (vm,) = [v.generated_name for v in engine.store.vms()]
    gate = threading.Event()
    engine.submit("t1", "d1", "hold", lambda job: gate.wait(20))
    nc.dispatch(etree.fromstring(rpc("vmBackupAction", vmName=vm, backupName="b1")))
    for _ in range(TICKS):
        engine.reconcile()
    edit(
        nc,
        f'<config xmlns="{NC_BASE}" xmlns:nc="{NC_BASE}"><esc_datamodel xmlns="{ESC}">'
        "<tenants><tenant><name>t1</name><deployments>"
        '<deployment nc:operation="delete"><name>d1</name></deployment>'
        "</deployments></tenant></tenants></esc_datamodel></config>",
    )
    gate.set()
    got = ev.until("SERVICE_UNDEPLOYED")
    assert engine.wait_idle(20)
    got += _drain(ev)
    assert [(types([e])[0], status(e)) for e in got] == [
        ("VM_BACKUP_COMPLETE", "FAILURE"),
        ("VM_UNDEPLOYED", "SUCCESS"),
        ("SERVICE_UNDEPLOYED", "SUCCESS"),
    ]
    assert "cancelled by undeploy" in etree.tostring(got[0]).decode()
    assert [d.name() for d in conn_of(srv).listAllDomains() if d.name() == vm] == []


def conn_of(server):  # type: ignore[no-untyped-def]
    return server.services.vims.get("hostA").connection()


def test_retry_of_a_failed_deploy_is_a_new_reported_attempt(
    h: Harness, clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_a: object, **_kw: object) -> None:
        raise libvirt.libvirtError("no room on the host")

    monkeypatch.setattr(h.engine.ops, "create", broken)
    h.ds.commit(config(tmp_path, deployment()))
    h.events.wait_for("SERVICE_ALIVE")
    monkeypatch.undo()
    vm = h.engine.store.vms()[0]
    h.events.clear()
    h.engine.recover(vm, "operator retry").future.result(20)  # recoveryVmAction DO
    h.events.wait_for("SERVICE_ALIVE")
    got = [(t, s) for t, s, *_ in h.events.items]
    assert got[0] == ("VM_RECOVERY_INIT", "SUCCESS")
    assert got[-2:] == [("VM_RECOVERY_COMPLETE", "SUCCESS"), ("SERVICE_ALIVE", "SUCCESS")]
    assert h.engine.store.deployment("t1", "dep1").state == st.SERVICE_ACTIVE  # type: ignore[union-attr]
    h.events.clear()
    ticks(h, clock)
    assert h.events.items == []
