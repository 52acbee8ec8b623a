"""vNIC changes on a running VM through NETCONF: attached/detached live where the
hypervisor can, deferred to the next start where it cannot (the libvirt test driver
cannot attach devices), and the VM_UPDATED message says which."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from conftest import connect
from engine_support import E, config, deployment, ev_types, nc_edit, nc_events, nc_opdata
from escnc.app import Server

pytestmark = pytest.mark.timeout(120)

TWO_NICS = (
    "<interfaces><interface><nicid>0</nicid><network>net1</network></interface>"
    "<interface><nicid>1</nicid><network>net1</network></interface></interfaces>"
)
ONE_NIC = "<interfaces><interface><nicid>0</nicid><network>net1</network></interface></interfaces>"


@pytest.fixture
def server(server_factory: Callable[..., Server]) -> Server:
    return server_factory(reconcile_interval=1.0)


def macs(dom: libvirt.virDomain, flags: int = 0) -> list[str]:
    root = etree.fromstring(dom.XMLDesc(flags).encode())
    return [m.get("address") or "" for m in root.iterfind("devices/interface/mac")]


def test_added_nic_on_the_test_driver_is_deferred_and_says_so(
    server: Server, tmp_path: Path
) -> None:
    with connect(server) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, config(tmp_path, deployment()))
        nc_events(m, "SERVICE_ALIVE")
        name = nc_opdata(m).findtext(f".//{E}vm_instance/{E}name") or ""
        nc_edit(m, config(tmp_path, deployment().replace(ONE_NIC, TWO_NICS)))
        evs = nc_events(m, "SERVICE_UPDATED")
        assert ev_types(evs) == ["VM_UPDATED", "SERVICE_UPDATED"]
        msg = evs[0].findtext(f"{E}status_message") or ""
        assert "deferred to the next start" in msg and "(attach)" in msg, msg
        dom = server.services.vims.default.connection().lookupByName(name)  # type: ignore[union-attr]
        assert len(macs(dom)) == 1  # running: unchanged
        assert len(macs(dom, libvirt.VIR_DOMAIN_XML_INACTIVE)) == 2  # at the next start
        nics = [i.findtext(f"{E}nicid") for i in nc_opdata(m).iter(f"{E}interface")]
        assert nics == ["0", "1"]
