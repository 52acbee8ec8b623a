"""Semantic checks on a proposed configuration, beyond what YANG can say.

References (image, flavor, network, VIM/host) must exist, scaling bounds must hold
against what is running (max_active below the VMs running is rejected), and a
stopped service cannot be scaled out or in (ESC: start it first). Errors carry an error-path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import libvirt
from lxml import etree

from escnc.engine import states as st
from escnc.engine.model import parse_desired
from escnc.errors import RpcError, RpcErrors, invalid_value
from escnc.ns import ESC

if TYPE_CHECKING:
    from escnc.engine.engine import Engine

NSMAP = {"esc": ESC}


def group_path(tenant: str, dep: str, group: str, leaf: str = "") -> str:
    path = (
        f"/esc:esc_datamodel/esc:tenants/esc:tenant[esc:name='{tenant}']"
        f"/esc:deployments/esc:deployment[esc:name='{dep}']/esc:vm_group[esc:name='{group}']"
    )
    return f"{path}/esc:{leaf}" if leaf else path


def _host_network(engine: Engine, name: str) -> bool:
    for host in engine.vims.hosts():
        if not host.connected:
            continue
        try:
            host.connection().networkLookupByName(name)
            return True
        except libvirt.libvirtError:
            continue
    return False


def validate_config(engine: Engine, tree: etree._Element) -> None:
    desired = parse_desired(tree)
    errors: list[RpcError] = []

    def err(message: str, path: str) -> None:
        errors.append(invalid_value(message, path=path, path_nsmap=NSMAP))

    known_hosts = set(engine.vims.names()) | set(desired.vims)
    for (tenant, dname), spec in sorted(desired.deployments.items()):
        dep = engine.store.deployment(tenant, dname)
        vms = engine.store.vms(tenant, dname)
        for g in spec.groups.values():
            if g.image not in desired.images:
                err(
                    f"image {g.image!r} of vm_group {g.name} does not exist",
                    group_path(tenant, dname, g.name, "image"),
                )
            if g.flavor not in desired.flavors:
                err(
                    f"flavor {g.flavor!r} of vm_group {g.name} does not exist",
                    group_path(tenant, dname, g.name, "flavor"),
                )
            for itf in g.interfaces:
                if (
                    itf.network
                    and itf.network not in desired.networks
                    and not _host_network(engine, itf.network)
                ):
                    err(
                        f"network {itf.network!r} of vm_group {g.name} interface {itf.nicid} "
                        "does not exist",
                        group_path(tenant, dname, g.name, "interfaces")
                        + f"/esc:interface[esc:nicid='{itf.nicid}']/esc:network",
                    )
            for what, host in (("locator vim_id", g.vim_id), ("placement host", g.placement_host)):
                if host and host not in known_hosts:
                    err(
                        f"{what} {host!r} of vm_group {g.name} is not a configured VIM",
                        group_path(tenant, dname, g.name),
                    )
            if g.max_active < g.min_active:
                err(
                    f"vm_group {g.name}: max_active {g.max_active} is below "
                    f"min_active {g.min_active}",
                    group_path(tenant, dname, g.name, "scaling") + "/esc:max_active",
                )
            running = sum(1 for v in vms if v.group == g.name)
            if running > g.max_active:
                err(
                    f"vm_group {g.name}: max_active {g.max_active} is below "
                    f"the {running} VMs running",
                    group_path(tenant, dname, g.name, "scaling") + "/esc:max_active",
                )
            for network, pool in g.ip_pools:
                # ESC: more VMs of a static-IP deployment need more addresses in the pool
                fixed = {i.ip_address for i in g.interfaces if i.network == network}
                addresses = ({a for a in pool if a} | fixed) - {""}
                if len(addresses) < g.min_active:
                    err(
                        f"vm_group {g.name}: static_ip_address_pool of network {network} has "
                        f"{len(addresses)} address(es) for min_active {g.min_active} VMs: "
                        "add IP addresses to the pool",
                        group_path(tenant, dname, g.name, "scaling")
                        + f"/esc:static_ip_address_pool[esc:network='{network}']",
                    )
            if dep is not None and dep.state == st.SERVICE_STOPPED and g.min_active != running:
                way = "out" if g.min_active > running else "in"
                err(
                    f"deployment {dname} is stopped: it cannot be scaled {way} (start it first)",
                    group_path(tenant, dname, g.name, "scaling") + "/esc:min_active",
                )
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise RpcErrors(errors)
