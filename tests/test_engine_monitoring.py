"""Monitoring after VM_ALIVE, recovery per recovery_policy, scaling and image changes,
end to end through NETCONF (ncclient), checked against events, opdata and libvirt.

On the test driver the domain state stands in for ICMPPing. A guest that "stops
answering" is a *paused* domain: libvirt sends no STOPPED/CRASHED event for it, so
only the poller can notice it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest
from lxml import etree
from ncclient.operations import RPCError

from conftest import connect
from engine_support import (
    config,
    deployment,
    ev_types,
    ev_vm,
    monitored_deployment,
    nc_edit,
    nc_events,
    nc_opdata,
    nc_quiet,
    nc_rpc,
    op_vms,
    with_second_image,
)
from escnc.app import Server

RECOVERY = ("VM_RECOVERY_INIT", "VM_RECOVERY_REBOOT", "VM_RECOVERY_UNDEPLOYED")


@pytest.fixture
def server(server_factory: Callable[..., Server]) -> Server:
    """The server with the periodic reconcile on every second, as in production."""
    return server_factory(reconcile_interval=1.0)


def conn(srv: Server) -> libvirt.virConnect:
    return srv.services.vims.default.connection()  # type: ignore[union-attr]


def only_vm(m) -> str:  # type: ignore[no-untyped-def]
    vms = op_vms(nc_opdata(m))
    assert len(vms) == 1, vms
    return next(iter(vms))


def root_backing(srv: Server, name: str) -> str:
    """Backing file of the VM's root disk, as libvirt reports it."""
    c = conn(srv)
    xml = etree.fromstring(c.lookupByName(name).XMLDesc(0).encode())
    path = xml.find("devices/disk[@device='disk']/source").get("file")  # type: ignore[union-attr]
    vol = etree.fromstring(c.storageVolLookupByPath(path).XMLDesc(0).encode())
    return vol.findtext("backingStore/path") or ""


def test_poller_detects_unresponsive_vm_and_auto_recovers(server: Server, tmp_path: Path) -> None:
    with connect(server) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, config(tmp_path, monitored_deployment()))
        nc_events(m, "SERVICE_ALIVE")
        name = only_vm(m)
        dom = conn(server).lookupByName(name)
        # monitoring goes on after VM_ALIVE: nothing happens while the guest answers
        assert nc_quiet(m, 2.5) == []
        assert server.services.engine.monitor.watching(name)  # type: ignore[union-attr]

        dom.suspend()  # the guest stops answering; libvirt reports no stop or crash
        t0 = time.monotonic()
        evs = nc_events(m, "VM_RECOVERY_COMPLETE", timeout=15)
        assert ev_types(evs) == ["VM_RECOVERY_INIT", "VM_RECOVERY_REBOOT", "VM_RECOVERY_COMPLETE"]
        assert time.monotonic() - t0 < 5  # poll_frequency 1 s, occurrences_false 1
        assert all(ev_vm(e) == name for e in evs)
        assert "not running" in (evs[0].findtext("{*}status_message") or "")
        assert evs[-1].findtext("{*}status") == "SUCCESS"
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING  # rebooted, same domain
        vm = op_vms(nc_opdata(m))[name]
        assert vm["state"] == "VM_ALIVE_STATE" and vm["monitoring"] == "true"

        # and it is watched again: a crash (libvirt event) is recovered as well
        dom.destroy()
        evs = nc_events(m, "VM_RECOVERY_COMPLETE", timeout=15)
        assert ev_types(evs) == ["VM_RECOVERY_INIT", "VM_RECOVERY_REBOOT", "VM_RECOVERY_COMPLETE"]
        assert "shut off" in (evs[0].findtext("{*}status_message") or "")
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING


def test_occurrences_false_delays_down(server: Server, tmp_path: Path) -> None:
    with connect(server) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, config(tmp_path, monitored_deployment(occurrences_false=4)))
        nc_events(m, "SERVICE_ALIVE")
        name = only_vm(m)
        conn(server).lookupByName(name).suspend()
        t0 = time.monotonic()
        evs = nc_events(m, "VM_RECOVERY_INIT", timeout=15)
        assert time.monotonic() - t0 >= 3.0  # four failed polls, one second apart
        assert "4 consecutive failed polls" in (evs[-1].findtext("{*}status_message") or "")
        nc_events(m, "VM_RECOVERY_COMPLETE")


def test_redeploy_only_uses_the_groups_new_image(server: Server, tmp_path: Path) -> None:
    """An image change applies to new VMs and at the next redeployment (recovery)."""
    with connect(server) as m:
        m.create_subscription(stream_name="escEvent")
        dep = monitored_deployment(action="REDEPLOY_ONLY", max_active=2)
        nc_edit(m, with_second_image(config(tmp_path, dep), tmp_path))
        nc_events(m, "SERVICE_ALIVE")
        old = only_vm(m)
        assert "image-img." in root_backing(server, old)

        # image img -> img2 and one more VM
        dep2 = monitored_deployment(action="REDEPLOY_ONLY", image="img2", min_active=2)
        nc_edit(m, with_second_image(config(tmp_path, dep2), tmp_path))
        evs = nc_events(m, "SERVICE_UPDATED")
        # no VM_UPDATED: the running VM is not touched by an image change
        assert ev_types(evs) == [
            "VM_SCALE_OUT_INIT",
            "VM_SCALE_OUT_DEPLOYED",
            "VM_ALIVE",
            "VM_SCALE_OUT_COMPLETE",
            "SERVICE_UPDATED",
        ]
        new = ev_vm(evs[0])
        vms = op_vms(nc_opdata(m))
        assert vms[old]["image"] == "img" and vms[new]["image"] == "img2"
        assert "image-img." in root_backing(server, old)
        assert "image-img2." in root_backing(server, new)

        # the old VM goes down: REDEPLOY_ONLY redeploys it with the new image
        conn(server).lookupByName(old).suspend()
        evs = nc_events(m, "VM_RECOVERY_COMPLETE", timeout=15)
        assert ev_types(evs) == [
            "VM_RECOVERY_INIT",
            "VM_RECOVERY_UNDEPLOYED",
            "VM_RECOVERY_DEPLOYED",
            "VM_RECOVERY_COMPLETE",
        ]
        assert all(ev_vm(e) == old for e in evs)  # same generated name
        assert evs[-1].findtext("{*}status") == "SUCCESS"
        vms = op_vms(nc_opdata(m))
        assert vms[old]["image"] == "img2" and vms[old]["state"] == "VM_ALIVE_STATE"
        assert "image-img2." in root_backing(server, old)
        assert conn(server).lookupByName(old).state()[0] == libvirt.VIR_DOMAIN_RUNNING


def test_manual_recovery_waits_for_recovery_vm_action(server: Server, tmp_path: Path) -> None:
    with connect(server) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, config(tmp_path, monitored_deployment(recovery_type="MANUAL")))
        nc_events(m, "SERVICE_ALIVE")
        name = only_vm(m)
        dom = conn(server).lookupByName(name)
        dom.suspend()
        evs = nc_events(m, "VM_MANUAL_RECOVERY_NEEDED", timeout=15)
        assert ev_types(evs) == ["VM_MANUAL_RECOVERY_NEEDED"]
        vm = op_vms(nc_opdata(m))[name]
        assert vm["state"] == "VM_ERROR_STATE" and vm["monitoring"] == "false"
        # nothing recovers it on its own
        assert nc_quiet(m, 2.5) == []
        assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED

        nc_rpc(m, "recoveryVmAction", actionType="DO", vmName=name)
        evs = nc_events(m, "VM_RECOVERY_COMPLETE")
        assert ev_types(evs) == ["VM_RECOVERY_INIT", "VM_RECOVERY_REBOOT", "VM_RECOVERY_COMPLETE"]
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        vm = op_vms(nc_opdata(m))[name]
        assert vm["state"] == "VM_ALIVE_STATE" and vm["monitoring"] == "true"


def test_no_monitoring_when_stopped_or_disabled(server: Server, tmp_path: Path) -> None:
    with connect(server) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, config(tmp_path, monitored_deployment(min_active=2)))
        nc_events(m, "SERVICE_ALIVE")
        a, b = sorted(op_vms(nc_opdata(m)))
        monitor = server.services.engine.monitor  # type: ignore[union-attr]

        # monitoring disabled: a guest that stops answering is left alone
        nc_rpc(m, "vmAction", actionType="DISABLE_MONITOR", vmName=a)
        assert ev_types(nc_events(m, "VM_MONITOR_UNSET")) == ["VM_MONITOR_UNSET"]
        assert not monitor.watching(a) and monitor.watching(b)
        conn(server).lookupByName(a).suspend()
        # a stopped VM is not monitored either
        nc_rpc(m, "vmAction", actionType="STOP", vmName=b)
        assert ev_types(nc_events(m, "VM_STOPPED")) == ["VM_STOPPED"]
        assert not monitor.watching(b)
        assert nc_quiet(m, 2.5) == []
        vms = op_vms(nc_opdata(m))
        assert vms[a]["state"] == "VM_MONITOR_DISABLED_STATE" and vms[a]["monitoring"] == "false"
        assert vms[b]["state"] == "VM_STOPPED_STATE"

        # monitoring back on (guest answering again), then it stops answering: recovered
        conn(server).lookupByName(a).resume()
        nc_rpc(m, "vmAction", actionType="ENABLE_MONITOR", vmName=a)
        assert ev_types(nc_events(m, "VM_MONITOR_SET")) == ["VM_MONITOR_SET"]
        assert monitor.watching(a)
        conn(server).lookupByName(a).suspend()
        evs = nc_events(m, "VM_RECOVERY_COMPLETE", timeout=15)
        assert ev_types(evs)[0] == "VM_RECOVERY_INIT" and {ev_vm(e) for e in evs} == {a}

        # a stopped service: no monitoring, no recovery
        nc_rpc(m, "serviceAction", actionType="STOP", tenantName="t1", depName="dep1")
        nc_events(m, "SERVICE_STOPPED")
        assert monitor.count() == 0
        assert not any(t in RECOVERY for t in ev_types(nc_quiet(m, 2.0)))


def test_scale_out_scale_in_and_ip_pool(server: Server, tmp_path: Path) -> None:
    with connect(server) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, config(tmp_path, deployment(min_active=1, max_active=3)))
        nc_events(m, "SERVICE_ALIVE")
        first = only_vm(m)

        nc_edit(m, config(tmp_path, deployment(min_active=3, max_active=3)))
        evs = nc_events(m, "SERVICE_UPDATED")
        assert ev_types(evs) == [
            "VM_SCALE_OUT_INIT",
            "VM_SCALE_OUT_INIT",
            "VM_SCALE_OUT_DEPLOYED",
            "VM_SCALE_OUT_DEPLOYED",
            "VM_ALIVE",
            "VM_ALIVE",
            "VM_SCALE_OUT_COMPLETE",
            "VM_SCALE_OUT_COMPLETE",
            "SERVICE_UPDATED",
        ]
        assert all(e.findtext("{*}status") == "SUCCESS" for e in evs)
        vms = op_vms(nc_opdata(m))
        by_index = {v["index"]: (n, v) for n, v in vms.items()}
        assert sorted(by_index) == ["0", "1", "2"]
        assert [by_index[i][1]["ip"] for i in "012"] == ["10.9.0.10", "10.9.0.11", "10.9.0.12"]
        assert all(v["state"] == "VM_ALIVE_STATE" for v in vms.values())
        assert sorted(d.name() for d in conn(server).listAllDomains(0)) == sorted(vms)

        # scale in to 1: highest index first
        nc_edit(m, config(tmp_path, deployment(min_active=1, max_active=3)))
        evs = nc_events(m, "SERVICE_UPDATED")
        assert ev_types(evs) == [
            "VM_SCALE_IN_INIT",
            "VM_SCALE_IN_COMPLETE",
            "VM_SCALE_IN_INIT",
            "VM_SCALE_IN_COMPLETE",
            "SERVICE_UPDATED",
        ]
        assert [ev_vm(e) for e in evs[:4:2]] == [by_index["2"][0], by_index["1"][0]]
        assert list(op_vms(nc_opdata(m))) == [first]
        names = {d.name() for d in conn(server).listAllDomains(0)}
        assert names == {first}
        dep = nc_opdata(m).find(".//{*}deployment")
        assert dep is not None and dep.findtext("{*}state") == "SERVICE_ACTIVE_STATE"

        # scale out again: index 1 and its address come back from the pool
        nc_edit(m, config(tmp_path, deployment(min_active=2, max_active=3)))
        evs = nc_events(m, "SERVICE_UPDATED")
        assert ev_types(evs)[0] == "VM_SCALE_OUT_INIT"
        again = op_vms(nc_opdata(m))[ev_vm(evs[0])]
        assert again["index"] == "1" and again["ip"] == "10.9.0.11"

        # a stopped service is neither scaled out nor in
        nc_rpc(m, "serviceAction", actionType="STOP", tenantName="t1", depName="dep1")
        nc_events(m, "SERVICE_STOPPED")
        for n, way in ((3, "out"), (1, "in")):
            with pytest.raises(RPCError) as exc:
                nc_edit(m, config(tmp_path, deployment(min_active=n, max_active=3)))
            assert f"cannot be scaled {way}" in str(exc.value)
        assert len(op_vms(nc_opdata(m))) == 2


def test_pinger_many_in_flight() -> None:
    from escnc.engine.icmp import shared_pinger

    pinger = shared_pinger()
    if pinger is None:
        pytest.skip("no raw ICMP socket (needs root or CAP_NET_RAW)")
    results: dict[str, list[bool]] = {"up": [], "down": []}
    done = threading.Event()

    def cb(kind: str) -> Callable[[bool], None]:
        def record(ok: bool) -> None:
            results[kind].append(ok)
            if len(results["up"]) + len(results["down"]) == 300:
                done.set()

        return record

    t0 = time.monotonic()
    for _ in range(200):
        pinger.ping("127.0.0.1", cb("up"), 2.0)
    for i in range(100):  # TEST-NET-2: never answers
        pinger.ping(f"198.51.100.{i + 1}", cb("down"), 0.5)
    assert done.wait(10)
    # dead addresses time out together, not one after the other
    assert time.monotonic() - t0 < 3
    assert results["up"] == [True] * 200 and results["down"] == [False] * 100


def test_icmp_monitoring_over_netconf(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ICMPPing collector: the VM's address is pinged; when it stops answering, the VM
    is recovered. (Test-driver guests have no network: the VM's static address is
    127.0.0.1 and the collector is forced to ICMPPing.)"""
    from escnc.engine import engine as engine_mod
    from escnc.engine import monitor as monitor_mod
    from escnc.engine.icmp import shared_pinger

    pinger = shared_pinger()
    if pinger is None:
        pytest.skip("no raw ICMP socket (needs root or CAP_NET_RAW)")
    monkeypatch.setattr(engine_mod, "collector_for", lambda vm, group, is_test: "ICMPPing")
    dep = monitored_deployment(occurrences_false=2).replace(
        "<network>net1</network></interface>",
        "<network>net1</network><ip_address>127.0.0.1</ip_address></interface>",
        1,
    )
    with connect(server) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, config(tmp_path, dep))
        nc_events(m, "SERVICE_ALIVE")
        name = only_vm(m)
        vm = op_vms(nc_opdata(m))[name]
        assert vm["ip"] == "127.0.0.1" and vm["state"] == "VM_ALIVE_STATE"
        assert nc_opdata(m).findtext(".//{*}vm_instance/{*}collector") == "ICMPPing"
        sent = pinger.sent
        assert nc_quiet(m, 2.5) == []  # answered pings: nothing to report
        assert pinger.sent - sent >= 2

        # the guest stops answering (its address goes dark): two failed polls, recovery
        real = monitor_mod.Monitor._ping_address
        monkeypatch.setattr(
            monitor_mod.Monitor,
            "_ping_address",
            lambda self, vm: "198.51.100.1" if real(self, vm) else "",
        )
        monkeypatch.setattr(
            monitor_mod.Monitor,
            "probe",
            lambda self, vm: (lambda: False, f"VM {vm.generated_name} does not answer"),
        )
        evs = nc_events(m, "VM_RECOVERY_REBOOT", timeout=15)
        assert ev_types(evs) == ["VM_RECOVERY_INIT", "VM_RECOVERY_REBOOT"]
        assert "2 consecutive failed polls" in (evs[0].findtext("{*}status_message") or "")
        monkeypatch.undo()  # the rebooted guest answers on 127.0.0.1 again
        evs = nc_events(m, "VM_RECOVERY_COMPLETE", timeout=15)
        assert evs[-1].findtext("{*}status") == "SUCCESS"
