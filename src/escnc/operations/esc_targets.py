"""The data nodes ESC's RPCs act on, for access control (operations/authorize.py).

An RPC on a VM, a deployment or a snapshot needs, besides exec access to the RPC,
update access to the deployment it acts on (RFC 8341 data rules such as
``/esc:esc_datamodel/esc:tenants/esc:tenant[esc:name='T']`` then scope it to a
tenant). A VM is found through the engine's opdata, a snapshot through the day-2
records; an unknown name resolves to nothing (the handler then reports it missing).
Capacity and reservation RPCs name no deployment: exec access alone decides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lxml import etree

from escnc.errors import EscncError
from escnc.ns import ESC
from escnc.operations.authorize import deployment_chain

if TYPE_CHECKING:
    from escnc.rpc.dispatch import RpcContext, RpcRegistry
    from escnc.services import Services

Chains = list[list[etree._Element]]


def _leaf(request: etree._Element, name: str) -> str:
    return (request.findtext(f"{{{ESC}}}{name}") or "").strip()


def vm_deployment(services: Services, vm_name: str) -> tuple[str, str] | None:
    """(tenant, deployment) of a VM by its generated name, from the engine's records."""
    engine = services.engine
    store = getattr(engine, "store", None)
    vm = store.vm(vm_name) if store is not None and vm_name else None
    return None if vm is None else (vm.tenant, vm.deployment)


def snapshot_deployment(services: Services, ref: str) -> tuple[str, str] | None:
    day2 = services.day2
    if day2 is None or not ref:
        return None
    try:
        rec = day2.resolve_snapshot(ref)
    except EscncError:
        return None
    return (rec.tenant, rec.deployment) if rec.tenant else None


def _by_vm(ctx: RpcContext, request: etree._Element) -> Chains:
    found = vm_deployment(ctx.services, _leaf(request, "vmName"))
    return [deployment_chain(*found)] if found else []


def _by_snapshot(ctx: RpcContext, request: etree._Element) -> Chains:
    found = snapshot_deployment(ctx.services, _leaf(request, "snapshot"))
    return [deployment_chain(*found)] if found else []


def _by_deployment(ctx: RpcContext, request: etree._Element) -> Chains:
    tenant, dep = _leaf(request, "tenantName"), _leaf(request, "depName")
    if not dep:
        return []
    if tenant:
        return [deployment_chain(tenant, dep)]
    # no tenant named: every deployment of that name (the handler asks for one)
    store = getattr(ctx.services.engine, "store", None)
    deps = store.deployments() if store is not None else []
    return [deployment_chain(d.tenant, d.name) for d in deps if d.name == dep]


RESOLVERS: dict[str, Callable[[RpcContext, etree._Element], Chains]] = {
    "vmAction": _by_vm,
    "vmMigrate": _by_vm,
    "vmBackupAction": _by_vm,
    "recoveryVmAction": _by_vm,
    "vmRevertSnapshot": _by_vm,
    "serviceAction": _by_deployment,
    "snapshotAction": _by_snapshot,
    "createVolumeFromSnapshot": _by_snapshot,
}


def register(registry: RpcRegistry, services: Services) -> None:
    for name, resolver in RESOLVERS.items():
        registry.register_target(ESC, name, resolver)
