"""The libvirt network of an escnc network: gateway and DHCP range from the subnet's
bounds (first host, second host to last host), for small and /16 subnets."""

from __future__ import annotations

import pytest
from lxml import etree

from escnc.vim.networks import NetworkSpec, SubnetSpec, network_xml


@pytest.mark.parametrize(("address", "netmask", "gateway", "dhcp_range"), [
    ("10.9.0.0", "255.255.0.0", "10.9.0.1", ("10.9.0.2", "10.9.255.254")),
    ("192.168.4.0", "255.255.255.248", "192.168.4.1", ("192.168.4.2", "192.168.4.6")),
    ("192.168.4.0", "255.255.255.252", "192.168.4.1", None),  # two hosts: no range
])
def test_gateway_and_dhcp_range(address: str, netmask: str, gateway: str,
                                dhcp_range: tuple[str, str] | None) -> None:
    spec = NetworkSpec("n", (SubnetSpec("s", address, netmask, "", True),))
    root = etree.fromstring(network_xml(spec))
    ip = root.find("ip")
    assert ip is not None and ip.get("address") == gateway
    rng = ip.find("dhcp/range")
    if dhcp_range is None:
        assert rng is None and root.find("dns") is not None
    else:
        assert rng is not None and (rng.get("start"), rng.get("end")) == dhcp_range
