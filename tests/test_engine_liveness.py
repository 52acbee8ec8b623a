"""ICMPPing is ICMP, or says what it is instead.

A DHCP interface (no static address) is pinged on the address libvirt's lease gives
the guest (``interfaceAddresses``); where the guest cannot be pinged at all (a
test-driver host) VM_ALIVE says so and what decided instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from conftest import connect
from engine_support import Harness, config, deployment, ev_type, nc_edit, nc_events
from escnc.app import Server
from escnc.ns import ESC
from escnc.vim.driver import Domain

E = f"{{{ESC}}}"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path).start()
    yield harness
    harness.stop()


def test_the_guest_address_comes_from_libvirt() -> None:
    conn = libvirt.open("test:///default")  # its `test` domain has a NIC and a lease
    try:
        dom = Domain(conn.lookupByName("test"))
        assert dom.address("AA:BB:CC:DD:EE:FF") == "192.168.122.3"
        assert dom.address("52:54:00:00:00:01") == ""  # not its NIC: no address
    finally:
        conn.close()


def test_a_dhcp_interface_gets_its_lease_address(h: Harness, tmp_path: Path) -> None:
    """No static_ip_address_pool: the interface is DHCP; libvirt knows its address."""
    dep = deployment()
    start, end = dep.index("<static_ip_address_pool>"), dep.index("</static_ip_address_pool>")
    h.ds.commit(config(tmp_path, dep[:start] + dep[end + len("</static_ip_address_pool>") :]))
    h.events.wait_for("SERVICE_ALIVE")
    vm = h.engine.store.vms()[0]
    assert [ip for _n, _net, ip, _mac in vm.interfaces] == [""]  # no static address
    address = h.engine.ops.guest_address(vm, 0)
    assert address  # what libvirt says the guest has on nicid 0
    assert h.engine.ops.leases[(vm.generated_name, 0)] == address  # for the monitor


def test_vm_alive_says_when_icmpping_is_not_possible(server: Server, tmp_path: Path) -> None:
    with connect(server) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, config(tmp_path, deployment()))
        seen = nc_events(m, "SERVICE_ALIVE")
    (alive,) = [e for e in seen if ev_type(e) == "VM_ALIVE"]
    message = alive.findtext(f"{E}status_message") or ""
    assert "ICMPPing not possible" in message and "judged by domain state" in message
