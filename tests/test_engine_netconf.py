"""Engine flows end to end: NETCONF edit-config / RPCs / get over ncclient."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest
from lxml import etree
from ncclient.operations import RPCError

from conftest import connect, is_resource_event
from engine_support import config, deployment
from escnc.app import Server
from escnc.ns import ESC
from escnc.vim.domain_xml import META_NS

E = f"{{{ESC}}}"


def edit(m, xml: str) -> None:  # type: ignore[no-untyped-def]
    m.edit_config(
        target="running",
        config=f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">{xml}</config>',
    )


def wait_events(m, want: str, count: int = 1, timeout: float = 20) -> list[etree._Element]:  # type: ignore[no-untyped-def]
    seen: list[etree._Element] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = m.take_notification(block=True, timeout=0.5)
        if n is None:
            continue
        el = etree.fromstring(n.notification_xml.encode())
        ev = el.find(f".//{E}escEvent")
        if ev is None or is_resource_event(ev):
            continue
        seen.append(ev)
        if sum(1 for e in seen if e.findtext(f"{E}event/{E}type") == want) >= count:
            return seen
    raise AssertionError(f"no {want}: {[e.findtext(f'{E}event/{E}type') for e in seen]}")


def types(events: list[etree._Element]) -> list[str]:
    return [e.findtext(f"{E}event/{E}type") or "" for e in events]


def rpc(m, name: str, **leaves: str):  # type: ignore[no-untyped-def]
    body = "".join(f"<{k}>{v}</{k}>" for k, v in leaves.items())
    return m.dispatch(etree.fromstring(f'<{name} xmlns="{ESC}">{body}</{name}>'))


def opdata(m) -> etree._Element:  # type: ignore[no-untyped-def]
    flt = f'<esc_datamodel xmlns="{ESC}"><opdata/></esc_datamodel>'
    return etree.fromstring(m.get(filter=("subtree", flt)).data_xml.encode())


@pytest.fixture
def server(server_factory: Callable[..., Server]) -> Server:
    """The server with the periodic reconcile on every second, as in production."""
    return server_factory(reconcile_interval=1.0)


@pytest.fixture
def srv(server: Server) -> Server:
    return server


def test_deploy_actions_undeploy_over_netconf(srv: Server, tmp_path: Path) -> None:
    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent")
        edit(m, config(tmp_path, deployment(min_active=2)))
        evs = wait_events(m, "SERVICE_ALIVE")
        assert types(evs) == ["VM_DEPLOYED", "VM_DEPLOYED", "VM_ALIVE", "VM_ALIVE", "SERVICE_ALIVE"]
        last = evs[-1]
        assert last.findtext(f"{E}status") == "SUCCESS" and last.findtext(f"{E}depname") == "dep1"
        assert (
            evs[0].findtext(f"{E}vm_source/{E}interfaces/{E}interface/{E}ip_address") == "10.9.0.10"
        )

        op = opdata(m)
        dep = op.find(f".//{E}deployment")
        assert dep is not None and dep.findtext(f"{E}state") == "SERVICE_ACTIVE_STATE"
        vms = op.findall(f".//{E}vm_instance")
        assert len(vms) == 2 and all(v.findtext(f"{E}state") == "VM_ALIVE_STATE" for v in vms)
        assert vms[0].findtext(f"{E}collector") == "domain-state"
        assert vms[0].findtext(f"{E}stats/{E}vcpus") == "2"
        name = vms[0].findtext(f"{E}name") or ""

        # libvirt's own view, through the server's one connection to its host
        conn = srv.services.vims.default.connection()  # type: ignore[union-attr]
        dom = conn.lookupByName(name)
        assert dom.info()[3] == 2 and "<deployment>dep1</deployment>" in dom.metadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT, META_NS, 0
        )

        rpc(m, "vmAction", actionType="STOP", vmName=name)
        assert types(wait_events(m, "VM_STOPPED")) == ["VM_STOPPED"]
        assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
        with pytest.raises(RPCError) as exc:
            rpc(m, "vmAction", actionType="STOP", vmName=name)
        assert "already stopped" in str(exc.value)
        rpc(m, "vmAction", actionType="START", vmName=name)
        assert types(wait_events(m, "VM_ALIVE")) == ["VM_STARTED", "VM_ALIVE"]
        rpc(m, "vmAction", actionType="REBOOT", vmName=name)
        assert types(wait_events(m, "VM_ALIVE")) == ["VM_REBOOTED", "VM_ALIVE"]
        with pytest.raises(RPCError) as exc:
            rpc(m, "vmAction", actionType="ENABLE_MONITOR", vmName=name)
        assert "already monitored" in str(exc.value)
        with pytest.raises(RPCError) as exc:
            rpc(m, "vmAction", actionType="CONFIRM_RESIZE", vmName=name)
        assert "VM_VERIFY_RESIZE_STATE" in str(exc.value) or "not available" in str(exc.value)
        with pytest.raises(RPCError) as exc:
            rpc(m, "vmAction", actionType="STOP", vmName="no-such-vm")
        assert exc.value.tag == "data-missing" and "no-such-vm" in str(exc.value)

        rpc(m, "serviceAction", actionType="STOP", tenantName="t1", depName="dep1")
        assert types(wait_events(m, "SERVICE_STOPPED")) == [
            "VM_STOPPED",
            "VM_STOPPED",
            "SERVICE_STOPPED",
        ]
        with pytest.raises(RPCError) as exc:
            rpc(m, "recoveryVmAction", actionType="DO", vmName=name)
        assert "stopped" in str(exc.value)
        rpc(m, "serviceAction", actionType="START", tenantName="t1", depName="dep1")
        assert types(wait_events(m, "SERVICE_STARTED"))[-1] == "SERVICE_STARTED"

        m.edit_config(
            target="running",
            config=f"""<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"
              xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"><esc_datamodel xmlns="{ESC}">
              <tenants><tenant><name>t1</name><deployments>
              <deployment nc:operation="delete"><name>dep1</name></deployment>
              </deployments></tenant></tenants></esc_datamodel></config>""",
        )
        evs = wait_events(m, "SERVICE_UNDEPLOYED")
        assert types(evs) == ["VM_UNDEPLOYED", "VM_UNDEPLOYED", "SERVICE_UNDEPLOYED"]
        with pytest.raises(libvirt.libvirtError):
            conn.lookupByName(name)


def test_validator_rejects_over_netconf(srv: Server, tmp_path: Path) -> None:
    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent")
        edit(m, config(tmp_path, deployment(min_active=2, max_active=3)))
        wait_events(m, "SERVICE_ALIVE")
        with pytest.raises(RPCError) as exc:
            edit(m, config(tmp_path, deployment(min_active=1, max_active=1)))
        assert "below the 2 VMs running" in str(exc.value)
        assert exc.value.path is not None and exc.value.path.endswith("esc:max_active")


def test_restart_recreates_vms_without_duplicates(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    state = tmp_path / "st"
    s1 = server_factory(state_dir=state, reconcile_interval=1.0)
    with connect(s1) as m:
        m.create_subscription(stream_name="escEvent")
        edit(m, config(tmp_path, deployment(min_active=2)))
        wait_events(m, "SERVICE_ALIVE")
        names = sorted(v.findtext(f"{E}name") or "" for v in opdata(m).iter(f"{E}vm_instance"))
    s1.stop()
    s2 = server_factory(state_dir=state, reconcile_interval=1.0)
    with connect(s2) as m:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            vms = list(opdata(m).iter(f"{E}vm_instance"))
            if len(vms) == 2 and all(v.findtext(f"{E}state") == "VM_ALIVE_STATE" for v in vms):
                break
            time.sleep(0.1)
        assert sorted(v.findtext(f"{E}name") or "" for v in vms) == names
    conn = s2.services.vims.default.connection()  # type: ignore[union-attr]
    assert sorted(d.name() for d in conn.listAllDomains(0)) == names


def test_edit_of_one_deployment_leaves_the_others_alone(srv: Server, tmp_path: Path) -> None:
    """Commit events carry only the touched deployments; the rest must keep running."""
    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent")
        edit(m, config(tmp_path, deployment(name="dep1")))
        wait_events(m, "SERVICE_ALIVE")
        second = deployment(name="dep2", group="g2").replace("10.9.0.", "10.9.1.")
        edit(
            m,
            f'<esc_datamodel xmlns="{ESC}"><tenants><tenant><name>t1</name>'
            f"<deployments>{second}</deployments></tenant></tenants></esc_datamodel>",
        )
        wait_events(m, "SERVICE_ALIVE")
        # an update of dep1 only
        edit(m, config(tmp_path, deployment(name="dep1", bootup_time=45)))
        evs = wait_events(m, "SERVICE_UPDATED")
        assert "VM_UNDEPLOYED" not in types(evs) and "SERVICE_UNDEPLOYED" not in types(evs)
        time.sleep(0.5)
        deps = opdata(m).findall(f".//{E}deployment")
        assert sorted(d.findtext(f"{E}name") or "" for d in deps) == ["dep1", "dep2"]
        # deleting the tenant undeploys both
        m.edit_config(
            target="running",
            config=f"""<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"
              xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"><esc_datamodel xmlns="{ESC}">
              <tenants><tenant nc:operation="delete"><name>t1</name></tenant></tenants>
              </esc_datamodel></config>""",
        )
        evs = wait_events(m, "SERVICE_UNDEPLOYED", count=2)
        assert types(evs).count("VM_UNDEPLOYED") == 2
