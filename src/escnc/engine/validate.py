"""Semantic checks on a proposed configuration, beyond what YANG can say.

References (image, flavor, network, VIM/host) must exist, scaling bounds must hold
against what is running (max_active below the VMs running is rejected), and a
stopped service cannot be scaled out or in (ESC: start it first), a static IP pool
must hold an address for every VM, and a persistent image backs one VM only.
VMs to be created must fit outside capacity held by reservations, or in the
reservation their vm_group names (engine/capacity.py).
Errors carry an error-path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lxml import etree

from escnc.engine import states as st
from escnc.engine.kpi.checks import kpi_errors
from escnc.engine.model import Desired, parse_desired
from escnc.engine.scaling import target_count
from escnc.engine.sources import source_errors
from escnc.errors import RpcError, RpcErrors, invalid_value
from escnc.ns import ESC

if TYPE_CHECKING:
    from escnc.engine.context import ValidationView

NSMAP = {"esc": ESC}


def group_path(tenant: str, dep: str, group: str, leaf: str = "") -> str:
    path = (
        f"/esc:esc_datamodel/esc:tenants/esc:tenant[esc:name='{tenant}']"
        f"/esc:deployments/esc:deployment[esc:name='{dep}']/esc:vm_group[esc:name='{group}']"
    )
    return f"{path}/esc:{leaf}" if leaf else path


def validate_config(engine: ValidationView, tree: etree._Element) -> None:
    desired = parse_desired(tree)
    errors: list[RpcError] = []

    def err(message: str, path: str) -> None:
        errors.append(invalid_value(message, path=path, path_nsmap=NSMAP))

    known_hosts = set(engine.vims.names()) | set(desired.vims)
    # VIMs found to be another VIM's libvirtd when they connected (vim/hosts.py)
    twins = {h.name: h.twin for h in engine.vims.hosts() if h.twin}
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
                    # from the engine's host snapshot: no remote call under the lock
                    and not engine.host_facts.has_network(itf.network)
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
                elif host and twins.get(host):
                    err(
                        f"{what} {host!r} of vm_group {g.name} is not usable: "
                        f"it is the same libvirtd as VIM {twins[host]} (use that one)",
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
            wanted = target_count(dep, g)  # min_active plus elastic scale-out
            if dep is not None and dep.state == st.SERVICE_STOPPED and wanted != running:
                way = "out" if wanted > running else "in"
                err(
                    f"deployment {dname} is stopped: it cannot be scaled {way} (start it first)",
                    group_path(tenant, dname, g.name, "scaling") + "/esc:min_active",
                )
    kpi_errors(desired, engine.elastic.collectors.names(), err, group_path)
    _persistent_images(engine, desired, err)
    engine.capacity.check_desired(desired, err, group_path)
    errors += source_errors(engine.settings, desired)  # VIM URIs, image URLs, day-0 files
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise RpcErrors(errors)


def _persistent_images(
    engine: ValidationView, desired: Desired, err: Callable[[str, str], None]
) -> None:
    """A persistent image is used by one and only one VM (OpenNebula semantics:
    non-persistent images are cloned per VM, a persistent one is the VM's disk).

    Deployments in the (pruned) tree count with the VMs they will have; deployments
    the commit did not touch count with their VMs in the engine's store."""
    persistent = {name for name, img in desired.images.items() if img.persistent}
    if not persistent:
        return
    users: dict[str, int] = dict.fromkeys(persistent, 0)
    for (tenant, dname), spec in desired.deployments.items():
        vms = engine.store.vms(tenant, dname)
        for g in spec.groups.values():
            if g.image in users:
                running = sum(1 for v in vms if v.group == g.name)
                users[g.image] += max(g.min_active, running)
    for vm in engine.store.vms():
        if vm.image in users and (vm.tenant, vm.deployment) not in desired.deployments:
            users[vm.image] += 1
    for name, count in sorted(users.items()):
        if count > 1:
            err(
                f"image {name} is persistent: it can back one VM only, not {count} "
                "(use a non-persistent image, cloned per VM)",
                f"/esc:esc_datamodel/esc:images/esc:image[esc:name='{name}']/esc:persistent",
            )
