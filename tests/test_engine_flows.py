"""Engine flows on the libvirt test driver, fed by in-test commits."""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest

from engine_support import Harness, config, deployment, monitored_deployment
from escnc.engine import states as st
from escnc.errors import RpcError, RpcErrors
from escnc.vim.domain_xml import META_NS


@pytest.fixture
def h(tmp_path: Path):  # type: ignore[no-untyped-def]
    harness = Harness(tmp_path).start()
    yield harness
    harness.stop()


def escnc_domains(h: Harness) -> list[libvirt.virDomain]:
    result = []
    for dom in h.conn().listAllDomains(0):
        try:
            dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, META_NS, 0)
        except libvirt.libvirtError:
            continue
        result.append(dom)
    return result


def test_deploy_events_state_and_libvirt_view(h: Harness, tmp_path: Path) -> None:
    h.ds.commit(config(tmp_path, deployment(min_active=2)))
    items = h.events.wait_for("SERVICE_ALIVE")
    types = [i[0] for i in items]
    assert types.count("VM_DEPLOYED") == 2 and types.count("VM_ALIVE") == 2
    assert types[-1] == "SERVICE_ALIVE" and items[-1][1] == "SUCCESS"
    for name in {i[2] for i in items if i[2]}:
        assert types.index("VM_DEPLOYED") < types.index("VM_ALIVE")
        assert name.startswith("dep1_g1_")
    dep = h.engine.store.deployment("t1", "dep1")
    assert dep is not None and dep.state == st.SERVICE_ACTIVE
    vms = h.engine.store.vms("t1", "dep1")
    assert [v.index for v in vms] == [0, 1]
    assert all(
        v.state == st.VM_ALIVE and v.monitoring and v.collector == "domain-state" for v in vms
    )
    assert [v.interfaces[0][2] for v in vms] == ["10.9.0.10", "10.9.0.11"]
    doms = escnc_domains(h)
    assert sorted(d.name() for d in doms) == sorted(v.generated_name for v in vms)
    for d in doms:
        assert d.isActive()
        _state, maxmem, _mem, vcpus, _cpu = d.info()
        assert vcpus == 2 and maxmem == 256 * 1024
        meta = d.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, META_NS, 0)
        assert "<tenant>t1</tenant>" in meta and "<deployment>dep1</deployment>" in meta
        assert "escnc-net1" in d.XMLDesc(0)
    # the test driver's own objects are never touched
    assert "escnc-net1" in [n.name() for n in h.conn().listAllNetworks()]
    op = h.engine.state()[0]
    text = __import__("lxml.etree").etree.tostring(op).decode()
    assert (
        "SERVICE_ACTIVE_STATE" in text and vms[0].generated_name in text and "cpu_time_ns" in text
    )
    assert "<state>active</state>" in text


def test_undeploy(h: Harness, tmp_path: Path) -> None:
    h.ds.commit(config(tmp_path, deployment(min_active=2)))
    h.events.wait_for("SERVICE_ALIVE")
    h.events.clear()
    h.ds.commit(config(tmp_path, ""))
    items = h.events.wait_for("SERVICE_UNDEPLOYED")
    assert [i[0] for i in items] == ["VM_UNDEPLOYED", "VM_UNDEPLOYED", "SERVICE_UNDEPLOYED"]
    assert escnc_domains(h) == []
    pool = h.conn().storagePoolLookupByName("escnc")
    assert [v.name() for v in pool.listAllVolumes(0) if "dep1" in v.name()] == []
    assert h.engine.store.deployments() == [] and h.engine.store.vms() == []


def test_update_scale_out_and_changed_group(h: Harness, tmp_path: Path) -> None:
    h.ds.commit(config(tmp_path, deployment(min_active=1, max_active=3)))
    h.events.wait_for("SERVICE_ALIVE")
    h.events.clear()
    h.ds.commit(config(tmp_path, deployment(min_active=2, max_active=3, bootup_time=31)))
    items = h.events.wait_for("SERVICE_UPDATED")
    types = [i[0] for i in items]
    assert types == [
        "VM_UPDATED",
        "VM_SCALE_OUT_INIT",
        "VM_SCALE_OUT_DEPLOYED",
        "VM_ALIVE",
        "VM_SCALE_OUT_COMPLETE",
        "SERVICE_UPDATED",
    ], items
    assert len(escnc_domains(h)) == 2
    # max_active below the number running is refused
    with pytest.raises((RpcError, RpcErrors)) as exc:
        h.ds.commit(config(tmp_path, deployment(min_active=1, max_active=1)))
    assert "below the 2 VMs running" in str(exc.value)


def test_validator_references(h: Harness, tmp_path: Path) -> None:
    bad = deployment().replace("<image>img</image>", "<image>nope</image>")
    with pytest.raises(RpcError) as exc:
        h.ds.commit(config(tmp_path, bad))
    assert exc.value.tag == "invalid-value" and "nope" in exc.value.message
    assert exc.value.path and exc.value.path.endswith("esc:image")


def test_vm_actions(h: Harness, tmp_path: Path) -> None:
    h.ds.commit(config(tmp_path, deployment()))
    h.events.wait_for("SERVICE_ALIVE")
    vm = h.engine.store.vms()[0]
    h.events.clear()
    h.engine.vm_action(vm, "STOP", False).future.result(10)
    h.events.wait_for("VM_STOPPED")
    assert h.events.types() == ["VM_STOPPED"]
    assert not h.engine.ops.is_running(vm)
    assert h.engine.store.vm(vm.generated_name).state == st.VM_STOPPED  # type: ignore[union-attr]
    h.engine.vm_action(vm, "START", False).future.result(10)
    h.events.wait_for("VM_ALIVE")
    assert h.events.types() == ["VM_STOPPED", "VM_STARTED", "VM_ALIVE"]
    h.engine.vm_action(vm, "REBOOT", True).future.result(10)
    h.events.wait_for("VM_ALIVE", 2)
    assert h.events.types()[-2:] == ["VM_REBOOTED", "VM_ALIVE"]
    h.engine.vm_action(vm, "DISABLE_MONITOR", False).future.result(10)
    h.engine.vm_action(vm, "ENABLE_MONITOR", False).future.result(10)
    h.events.wait_for("VM_MONITOR_SET")
    assert h.events.types()[-2:] == ["VM_MONITOR_UNSET", "VM_MONITOR_SET"]
    from escnc.engine.actions import vm_refusal

    assert "already monitored" in (
        vm_refusal(h.engine, h.engine.store.vm(vm.generated_name), "ENABLE_MONITOR") or ""
    )  # type: ignore[arg-type]


def test_service_actions(h: Harness, tmp_path: Path) -> None:
    h.ds.commit(config(tmp_path, deployment(min_active=2)))
    h.events.wait_for("SERVICE_ALIVE")
    dep = h.engine.store.deployment("t1", "dep1")
    h.events.clear()
    h.engine.service_action(dep, "STOP").future.result(10)  # type: ignore[arg-type]
    h.events.wait_for("SERVICE_STOPPED")
    assert h.events.types() == ["VM_STOPPED", "VM_STOPPED", "SERVICE_STOPPED"]
    assert h.engine.store.deployment("t1", "dep1").state == st.SERVICE_STOPPED  # type: ignore[union-attr]
    # a stopped service cannot be scaled out
    with pytest.raises(RpcError) as exc:
        h.ds.commit(config(tmp_path, deployment(min_active=3)))
    assert "stopped" in exc.value.message
    h.events.clear()
    h.engine.service_action(h.engine.store.deployment("t1", "dep1"), "START").future.result(10)  # type: ignore[arg-type]
    h.events.wait_for("SERVICE_STARTED")
    types = h.events.types()
    assert (
        types.count("VM_STARTED") == 2
        and types.count("VM_ALIVE") == 2
        and types[-1] == "SERVICE_STARTED"
    )
    h.events.clear()
    h.engine.service_action(h.engine.store.deployment("t1", "dep1"), "REBOOT").future.result(10)  # type: ignore[arg-type]
    h.events.wait_for("SERVICE_REBOOTED")
    assert h.events.types()[-1] == "SERVICE_REBOOTED" and h.events.types().count("VM_REBOOTED") == 2


def test_bootup_timeout_failure(
    h: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the guest never comes up: the domain-state collector never sees it running; with
    # MANUAL recovery nothing is tried (AUTO: test_engine_outcomes.py recovers it)
    monkeypatch.setattr(h.engine.ops, "is_running", lambda vm: False)
    h.ds.commit(config(tmp_path, monitored_deployment(recovery_type="MANUAL", bootup_time=1)))
    items = h.events.wait_for("SERVICE_ALIVE")
    assert [i[0] for i in items] == ["VM_DEPLOYED", "VM_ALIVE", "SERVICE_ALIVE"]
    assert items[1][1] == "FAILURE" and "bootup_time 1 s" in items[1][3]
    assert items[2][1] == "FAILURE" and "not alive within bootup_time" in items[2][3]
    assert h.engine.store.deployment("t1", "dep1").state == st.SERVICE_ERROR  # type: ignore[union-attr]
    assert h.engine.store.vms()[0].state == st.VM_ERROR


def test_vm_down_triggers_auto_recovery(h: Harness, tmp_path: Path) -> None:
    h.ds.commit(config(tmp_path, deployment(bootup_time=1)))
    h.events.wait_for("SERVICE_ALIVE")
    vm = h.engine.store.vms()[0]
    h.engine.ops.domain(vm).destroy()  # type: ignore[union-attr]
    h.events.clear()
    # monitored VM went down -> auto recovery (REBOOT_THEN_REDEPLOY) brings it back
    h.events.wait_for("VM_RECOVERY_COMPLETE")
    assert h.events.types()[:2] == ["VM_RECOVERY_INIT", "VM_RECOVERY_REBOOT"]


@pytest.mark.postgresql
def test_a_node_on_the_same_database_takes_over_the_engine_state(
        tmp_path: Path, pg_dsn: str) -> None:
    """Another node (its own state directory) on the first one's database: it finds the
    VM records there, recovers them, and removes an unwanted domain tagged with the
    cluster's id (the first node's domains are its own), not another instance's."""
    h1 = Harness(tmp_path, state="node1", database=pg_dsn).start()
    h1.ds.commit(config(tmp_path, deployment(min_active=2)))
    h1.events.wait_for("SERVICE_ALIVE")
    names = sorted(v.generated_name for v in h1.engine.store.vms())
    running = h1.ds.running
    h1.stop()
    h2 = Harness(tmp_path, state="node2", database=pg_dsn)
    h2.ds.running = running  # the datastore is not shared yet (issue 18): hand it over
    assert h2.engine.instance_id == h1.engine.instance_id
    assert not (tmp_path / "node2" / "instance-id").exists()
    h2.conn().defineXML(_tagged("dep9_g_0_x", h1.engine.instance_id))
    h2.conn().defineXML(_tagged("dep9_g_0_y", "another-escnc-instance"))
    h2.start()
    assert h2.engine.wait_idle(20)
    h2.events.wait_for("VM_UNDEPLOYED")
    h2.events.wait_for("VM_RECOVERY_DEPLOYED", 2)
    types = h2.events.types()
    assert types.count("VM_RECOVERY_DEPLOYED") == 2 and "VM_DEPLOYED" not in types
    assert sorted(v.generated_name for v in h2.engine.store.vms()) == names
    assert sorted(d.name() for d in escnc_domains(h2)) == sorted([*names, "dep9_g_0_y"])
    h2.stop()


def _tagged(name: str, owner: str) -> str:
    """A domain with escnc's metadata, owned by ``owner`` (an instance id)."""
    return (
        f"<domain type='test'><name>{name}</name><memory>1024</memory>"
        f"<os><type>hvm</type></os><metadata><e:vm xmlns:e='{META_NS}'>"
        "<e:tenant>t1</e:tenant><e:deployment>dep9</e:deployment>"
        "<e:deployment_id>x</e:deployment_id><e:group>g</e:group><e:index>0</e:index>"
        f"<e:vm_id>x</e:vm_id><e:generated_name>{name}</e:generated_name>"
        f"<e:owner>{owner}</e:owner></e:vm></metadata></domain>"
    )


def test_reconcile_after_restart_recreates_and_removes_orphans(tmp_path: Path) -> None:
    h1 = Harness(tmp_path).start()
    h1.ds.commit(config(tmp_path, deployment(min_active=2)))
    h1.events.wait_for("SERVICE_ALIVE")
    names = sorted(v.generated_name for v in h1.engine.store.vms())
    running = h1.ds.running
    h1.stop()
    # restart: the test driver host is empty again; define an orphan with escnc metadata
    h2 = Harness(tmp_path)
    h2.ds.running = running
    def tagged(name: str, owner: str) -> str:
        return (
            f"<domain type='test'><name>{name}</name><memory>1024</memory>"
            f"<os><type>hvm</type></os><metadata><e:vm xmlns:e='{META_NS}'>"
            "<e:tenant>t1</e:tenant><e:deployment>dep9</e:deployment>"
            "<e:deployment_id>x</e:deployment_id><e:group>g</e:group><e:index>0</e:index>"
            f"<e:vm_id>x</e:vm_id><e:generated_name>{name}</e:generated_name>"
            f"<e:owner>{owner}</e:owner></e:vm></metadata></domain>"
        )

    # ours (same state directory, so the same instance id) but wanted by nobody
    h2.conn().defineXML(tagged("dep9_g_0_x", h1.engine.instance_id))
    # another escnc instance's VM on the same host: not ours to remove
    h2.conn().defineXML(tagged("dep9_g_0_y", "another-escnc-instance"))
    h2.start()
    assert h2.engine.wait_idle(20)
    h2.events.wait_for("VM_UNDEPLOYED")
    h2.events.wait_for("VM_RECOVERY_DEPLOYED", 2)
    types = h2.events.types()
    assert types.count("VM_RECOVERY_DEPLOYED") == 2
    assert "VM_ALIVE" not in types and "SERVICE_ALIVE" not in types and "VM_DEPLOYED" not in types
    assert types.count("VM_UNDEPLOYED") == 1
    assert h2.engine.instance_id == h1.engine.instance_id
    assert sorted(d.name() for d in escnc_domains(h2)) == sorted([*names, "dep9_g_0_y"])
    h2.stop()
