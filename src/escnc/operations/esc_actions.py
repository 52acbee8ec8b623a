"""ESC's operation RPCs: vmAction, serviceAction, recoveryVmAction.

The request is checked against the engine's current state (unknown VM or
deployment, an action the state forbids) and refused with an rpc-error; otherwise
the work is queued on the deployment's job queue and the reply is <ok/> at once
(ESC semantics: accept, then report through escEvent notifications).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lxml import etree

from escnc.engine import actions
from escnc.engine.errors import Conflict, EngineError, NotFound, Refused
from escnc.engine.store import VmRecord
from escnc.errors import RpcError, data_missing, invalid_value, operation_failed
from escnc.ns import ESC
from escnc.rpc.dispatch import RpcContext

if TYPE_CHECKING:
    from escnc.engine.engine import Engine
    from escnc.rpc.dispatch import RpcRegistry
    from escnc.services import Services

NSMAP = {"esc": ESC}


def _leaf(request: etree._Element, name: str) -> str:
    return (request.findtext(f"{{{ESC}}}{name}") or "").strip()


def _required(request: etree._Element, name: str) -> str:
    value = _leaf(request, name)
    if not value:
        rpc = etree.QName(request).localname
        raise RpcError(
            "missing-element",
            f"{rpc}: {name} is required",
            type="protocol",
            info={"bad-element": name},
        )
    return value


def engine_rpc_error(exc: EngineError) -> RpcError:
    """The rpc-error for an engine error (RFC 6241 Appendix A)."""
    if isinstance(exc, (Refused, Conflict)):
        return operation_failed(exc.message, app_tag="operation-not-allowed-in-state")
    if isinstance(exc, NotFound):
        return data_missing(exc.message)
    return invalid_value(exc.message)


def _lookup_vm(engine: Engine, name: str, path: str) -> VmRecord:
    vm = engine.store.vm(name)
    if vm is None:
        raise data_missing(f"VM {name} does not exist", path=path, path_nsmap=NSMAP)
    return vm


def _engine(ctx: RpcContext) -> Engine:
    engine = ctx.services.engine
    if engine is None:
        raise RpcError("operation-failed", "the engine is not running")
    return engine  # type: ignore[no-any-return]


def vm_action(ctx: RpcContext, request: etree._Element) -> None:
    engine = _engine(ctx)
    action = _required(request, "actionType").upper()
    name = _required(request, "vmName")
    force = _leaf(request, "force").lower() == "true"
    if action not in actions.VM_ACTIONS + actions.RESIZE_ACTIONS:
        raise invalid_value(
            f"vmAction: unknown actionType {action}",
            path="/esc:vmAction/esc:actionType",
            path_nsmap=NSMAP,
        )
    vm = _lookup_vm(engine, name, "/esc:vmAction/esc:vmName")
    if action in actions.RESIZE_ACTIONS and action not in engine.hooks.vm_actions:
        raise RpcError("operation-not-supported", f"vmAction {action} is not available")
    try:
        engine.vm_action(vm, action, force)
    except EngineError as exc:
        raise engine_rpc_error(exc) from None


def service_action(ctx: RpcContext, request: etree._Element) -> None:
    engine = _engine(ctx)
    action = _required(request, "actionType").upper()
    dep_name = _required(request, "depName")
    tenant = _leaf(request, "tenantName")
    if action not in actions.SERVICE_ACTIONS:
        raise invalid_value(
            f"serviceAction: unknown actionType {action}",
            path="/esc:serviceAction/esc:actionType",
            path_nsmap=NSMAP,
        )
    deps = [
        d
        for d in engine.store.deployments()
        if d.name == dep_name and (not tenant or d.tenant == tenant)
    ]
    if not deps:
        raise data_missing(
            f"deployment {dep_name} does not exist" + (f" in tenant {tenant}" if tenant else ""),
            path="/esc:serviceAction/esc:depName",
            path_nsmap=NSMAP,
        )
    if len(deps) > 1:
        raise invalid_value(
            f"deployment {dep_name} exists in several tenants: give tenantName",
            path="/esc:serviceAction/esc:tenantName",
            path_nsmap=NSMAP,
        )
    try:
        engine.service_action(deps[0], action)
    except EngineError as exc:
        raise engine_rpc_error(exc) from None


def recovery_vm_action(ctx: RpcContext, request: etree._Element) -> None:
    engine = _engine(ctx)
    action = _required(request, "actionType").upper()
    name = _required(request, "vmName")
    if action != "DO":
        raise invalid_value(
            f"recoveryVmAction: unknown actionType {action}",
            path="/esc:recoveryVmAction/esc:actionType",
            path_nsmap=NSMAP,
        )
    vm = _lookup_vm(engine, name, "/esc:recoveryVmAction/esc:vmName")
    try:
        engine.recover(vm, "manual recovery requested")
    except EngineError as exc:
        raise engine_rpc_error(exc) from None


def register(registry: RpcRegistry, services: Services) -> None:
    registry.register(ESC, "vmAction", vm_action, validate_input=True)
    registry.register(ESC, "serviceAction", service_action, validate_input=True)
    registry.register(ESC, "recoveryVmAction", recovery_vm_action, validate_input=True)
