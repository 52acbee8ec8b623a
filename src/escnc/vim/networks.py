"""escnc networks as libvirt networks: an isolated bridge per network and host.

The libvirt network for escnc network ``N`` is ``escnc-N``. With a subnet, the
bridge gets the subnet's gateway address (or its first host address) so the host
can reach the guests (ICMPPing); with ``dhcp`` true libvirt's dnsmasq serves the
subnet, otherwise DNS is off and no dnsmasq runs. A network name that escnc does
not configure but the host has (``default``) is used as it is.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

import libvirt
from lxml import etree

from escnc.vim.hosts import Host

log = logging.getLogger(__name__)

PREFIX = "escnc-"


@dataclass(frozen=True)
class SubnetSpec:
    name: str
    address: str = ""
    netmask: str = ""
    gateway: str = ""
    dhcp: bool = False


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    subnets: tuple[SubnetSpec, ...] = field(default_factory=tuple)


def libvirt_name(name: str) -> str:
    return PREFIX + name


def _host_range(
    net: ipaddress.IPv4Network,
) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address, ipaddress.IPv4Address, int] | None:
    """First, second and last of ``net.hosts()`` and their count (None when there are
    none or, as before, the network is over 65,536 addresses)."""
    if net.num_addresses > 65536:
        return None
    if net.prefixlen >= 31:  # /31 and /32: every address is a host
        hosts = list(net.hosts())
        return (hosts[0], hosts[min(1, len(hosts) - 1)], hosts[-1], len(hosts))
    first = net.network_address + 1
    return (first, first + 1, net.broadcast_address - 1, net.num_addresses - 2)


def network_xml(spec: NetworkSpec) -> str:
    root = etree.Element("network")
    etree.SubElement(root, "name").text = libvirt_name(spec.name)
    etree.SubElement(root, "bridge", stp="off")
    dhcp_any = False
    for sub in spec.subnets:
        if not sub.address or not sub.netmask:
            continue
        try:
            net = ipaddress.IPv4Network(f"{sub.address}/{sub.netmask}", strict=False)
        except ValueError:
            continue
        hosts = _host_range(net)  # (first, second, last, count): no list of a /16's hosts
        gateway = sub.gateway or (str(hosts[0]) if hosts else "")
        if not gateway:
            continue
        ip = etree.SubElement(root, "ip", address=gateway, netmask=str(net.netmask))
        if sub.dhcp and hosts and hosts[3] > 2:
            dhcp_any = True
            dhcp = etree.SubElement(ip, "dhcp")
            etree.SubElement(dhcp, "range", start=str(hosts[1]), end=str(hosts[2]))
    if not dhcp_any:
        etree.SubElement(root, "dns", enable="no")
    return etree.tostring(root, encoding="unicode")


def ensure_network(host: Host, spec: NetworkSpec | None, name: str) -> str:
    """Make sure the network exists and is active on the host; return its libvirt name."""
    conn = host.connection()
    target = libvirt_name(name) if spec is not None else name
    with host.lock:
        try:
            net = conn.networkLookupByName(target)
        except libvirt.libvirtError:
            if spec is None:
                raise
            net = conn.networkDefineXML(network_xml(spec))
            log.info("host %s: defined network %s", host.name, target)
        if not net.isActive():
            net.create()
    return target


def remove_network(host: Host, name: str) -> None:
    """Remove the libvirt network of escnc network ``name`` if it exists."""
    try:
        net = host.connection().networkLookupByName(libvirt_name(name))
    except libvirt.libvirtError:
        return
    with host.lock:
        try:
            if net.isActive():
                net.destroy()
            net.undefine()
        except libvirt.libvirtError as exc:
            log.warning("host %s: cannot remove network %s: %s", host.name, name, exc)
