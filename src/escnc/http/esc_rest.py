"""ESC's REST API, ``/ESCManager/v0`` (docs/http.md), on the NETCONF operations.

Each route builds the operation a NETCONF client would send (``edit-config`` of
running, ``serviceAction``, ``vmAction``, ``vmMigrate``, ``vmBackupAction``,
``snapshotAction``, ``createVolumeFromSnapshot``, ``get``/``get-config``) and runs it
through ``escnc.rpc`` as the authenticated user: the same YANG validation and NACM.
GET answers synchronously; POST/PUT/DELETE answer at once with ``ESC-Transaction-Id``
and report through the ``Callback``/``Callback-ESC-Events`` URIs
(escnc.events.callbacks).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from lxml import etree
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from escnc.events.callbacks import Transaction
from escnc.http.auth import Unauthorized
from escnc.http.context import HttpContext, Timeout
from escnc.http.payload import (
    BadRequest,
    error_response,
    leaf,
    parse,
    read_body,
    render,
    to_json_value,
    wants_json,
)
from escnc.ns import ESC, NC, qn

log = logging.getLogger(__name__)

PREFIX = "/ESCManager/v0"
E = f"{{{ESC}}}"
_OP = f"{{{NC}}}operation"

SERVICE_TERMINAL = {"STOP": "SERVICE_STOPPED", "START": "SERVICE_STARTED",
                    "REBOOT": "SERVICE_REBOOTED"}
# the event that ends each vmAction (as escnc.engine.actions.VM_TERMINAL)
VM_OP_TERMINAL = {"STOP": "VM_STOPPED", "START": "VM_ALIVE", "REBOOT": "VM_ALIVE",
                  "CONFIRM_RESIZE": "VM_CONFIRM_RESIZE_COMPLETE",
                  "REVERT_RESIZE": "VM_REVERT_RESIZE_COMPLETE"}
# top-level configuration resources: URL segment -> (container, list element)
RESOURCES = {"images": ("images", "image"), "flavors": ("flavors", "flavor"),
             "tenants": ("tenants", "tenant")}

Handler = Callable[[Request, str], Awaitable[Response]]


def _el(tag: str, parent: etree._Element | None = None, text: str | None = None,
        ns: str = ESC) -> etree._Element:
    el = etree.Element(qn(ns, tag)) if parent is None else etree.SubElement(parent, qn(ns, tag))
    if text is not None:
        el.text = text
    return el


def _rpc(rpc_name: str, /, **leaves: str) -> etree._Element:
    op = etree.Element(qn(ESC, rpc_name), nsmap={None: ESC})  # type: ignore[dict-item]
    for key, value in leaves.items():
        if value:
            _el(key, op, value)
    return op


def _edit(config_root: etree._Element) -> etree._Element:
    op = etree.Element(qn(NC, "edit-config"), nsmap={None: NC})  # type: ignore[dict-item]
    _el("running", _el("target", op, ns=NC), ns=NC)
    _el("config", op, ns=NC).append(config_root)
    return op


def _root() -> etree._Element:
    return etree.Element(qn(ESC, "esc_datamodel"), nsmap={None: ESC, "nc": NC})  # type: ignore[dict-item]


def _get(filter_root: etree._Element, config_only: bool = True) -> etree._Element:
    op = etree.Element(qn(NC, "get-config" if config_only else "get"), nsmap={None: NC})  # type: ignore[dict-item]
    if config_only:
        _el("running", _el("source", op, ns=NC), ns=NC)
    flt = _el("filter", op, ns=NC)
    flt.set("type", "subtree")
    flt.append(filter_root)
    return op


class EscRest:
    def __init__(self, ctx: HttpContext) -> None:
        self.ctx = ctx
        self.settings = ctx.services.settings

    # -- plumbing -------------------------------------------------------------------

    def route(self, path: str, handler: Handler, methods: list[str]) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                user = await self.ctx.auth.username(request)
            except Unauthorized as exc:
                return error_response(request, str(exc), 401,
                                      {"WWW-Authenticate": 'Basic realm="escnc"'})
            try:
                return await handler(request, user)
            except BadRequest as exc:
                return error_response(request, exc.message, exc.status)
            except Timeout:
                return error_response(request, "the request did not end in time", 503)

        return Route(PREFIX + path, endpoint, methods=methods)

    async def _body(self, request: Request, root: str) -> etree._Element:
        data = await read_body(request, self.settings.http_max_body)
        return parse(data, request.headers.get("content-type", ""), root)

    def _callback_urls(self, request: Request) -> tuple[str, str]:
        urls = (request.headers.get("callback", "").strip(),
                request.headers.get("callback-esc-events", "").strip())
        tracker = self.ctx.callbacks
        for url in urls:
            if url and tracker is not None:
                try:
                    tracker.check_url(url, False)
                except ValueError as exc:
                    raise BadRequest(f"callback URI refused: {exc}") from None
        return urls

    async def _async(self, request: Request, user: str, ops: list[etree._Element],
                     txn: Transaction, status: int, resource: etree._Element | None = None,
                     ) -> Response:
        """Run an accepted-then-reported request: store its transaction first (so no
        event of it can be missed), run it, answer with the transaction id."""
        txn.callback, txn.events = self._callback_urls(request)
        if wants_json(request):
            txn.content_type = "application/json"
            if resource is not None:
                txn.resource = json.dumps({etree.QName(resource).localname:
                                           to_json_value(resource)})
        elif resource is not None:
            txn.resource = etree.tostring(resource, encoding="unicode")
        tracker = self.ctx.callbacks
        tracked = tracker is not None and bool(txn.callback or txn.events)
        if tracked:
            assert tracker is not None
            await _threaded(tracker.begin, txn)
        try:
            done = await self.ctx.run_many(user, ops)
        except BaseException:
            if tracked:
                assert tracker is not None
                await _threaded(tracker.abandon, txn)
            raise
        if done.errors:
            if tracked:
                assert tracker is not None
                await _threaded(tracker.abandon, txn)
            return error_response(request, done.errors,
                                  headers={"ESC-Transaction-Id": txn.id})
        if tracked and not txn.terminal:
            assert tracker is not None
            await _threaded(tracker.finish_now, txn, 200, "Request completed")
        return Response(status_code=status, headers={
            "ESC-Transaction-Id": txn.id, "ESC-Status-Code": str(status),
            "ESC-Status-Message": "Request accepted"})

    async def _read(self, user: str, op: etree._Element) -> etree._Element:
        done = await self.ctx.run(user, op)
        if done.errors:
            raise _Failed(done.errors)
        result = done.result
        if isinstance(result, etree._Element):
            return result
        items = list(result or [])
        return items[0] if items else etree.Element(qn(NC, "data"))

    # -- configuration resources ------------------------------------------------------

    def _resource_chain(self, kind: str, name: str) -> tuple[etree._Element, etree._Element]:
        container, item = RESOURCES[kind]
        root = _root()
        el = _el(item, _el(container, root))
        _el("name", el, name)
        return root, el

    async def get_resources(self, request: Request, user: str) -> Response:
        kind = request.url.path[len(PREFIX) + 1:].split("/", 1)[0]
        name = request.path_params.get("name")
        container, item = RESOURCES[kind]
        root = _root()
        holder = _el(container, root)
        if name is not None:
            _el("name", _el(item, holder), name)
        try:
            data = await self._read(user, _get(root))
        except _Failed as f:
            return error_response(request, f.errors)
        found = data.findall(f"{E}esc_datamodel/{E}{container}/{E}{item}")
        if name is not None:
            if not found:
                return error_response(request, f"{item} {name} not found", 404)
            return render(request, found[0])
        out = etree.Element(qn(ESC, container))
        for el in found:
            out.append(el)
        return render(request, out)

    async def write_resource(self, request: Request, user: str) -> Response:
        kind = request.url.path[len(PREFIX) + 1:].split("/", 1)[0]
        name = request.path_params["name"]
        item = RESOURCES[kind][1]
        root, el = self._resource_chain(kind, name)
        if request.method == "DELETE":
            el.set(_OP, "delete")
            event = f"DELETE_{item.upper()}"
        else:
            body = await self._body(request, item)
            if etree.QName(body).localname != item:
                raise BadRequest(f"expected a <{item}> body, got <{etree.QName(body).localname}>")
            body_name = leaf(body, "name")
            if body_name and body_name != name:
                raise BadRequest(f"the body names {item} {body_name}, the URL {name}")
            for child in body:
                if etree.QName(child).localname != "name":
                    el.append(child)
            el.set(_OP, "create" if request.method == "POST" else "replace")
            event = f"{'CREATE' if request.method == 'POST' else 'UPDATE'}_{item.upper()}"
        txn = Transaction(tenant=name if kind == "tenants" else "")
        resource = etree.Element(qn(ESC, item))
        _el("name", resource, name)
        _el("event_type", resource, event)
        return await self._async(request, user, [_edit(root)], txn,
                                 200 if request.method != "POST" else 201, resource)

    # -- networks and subnets (global in escnc; the tenant in the URL must exist) ----

    async def write_network(self, request: Request, user: str) -> Response:
        name = request.path_params["network"]
        subnet = request.path_params.get("subnet")
        root = _root()
        net = _el("network", _el("networks", root))
        _el("name", net, name)
        target = net
        if subnet is not None:
            target = _el("subnet", net)
            _el("name", target, subnet)
        item = "subnet" if subnet is not None else "network"
        if request.method == "DELETE":
            target.set(_OP, "delete")
        else:
            body = await self._body(request, item)
            for child in body:
                if etree.QName(child).localname not in ("name", "subnet"):
                    target.append(child)
            target.set(_OP, "create" if request.method == "POST" else "replace")
        resource = etree.Element(qn(ESC, item))
        _el("name", resource, subnet or name)
        _el("event_type", resource, f"{'DELETE' if request.method == 'DELETE' else 'CREATE'}"
                                    f"_{item.upper()}")
        return await self._async(request, user, [_edit(root)], Transaction(),
                                 201 if request.method == "POST" else 200, resource)

    async def get_networks(self, request: Request, user: str) -> Response:
        root = _root()
        nets = _el("networks", root)
        name = request.path_params.get("network")
        if name is not None:
            _el("name", _el("network", nets), name)
        try:
            data = await self._read(user, _get(root))
        except _Failed as f:
            return error_response(request, f.errors)
        found = data.findall(f"{E}esc_datamodel/{E}networks/{E}network")
        if name is not None:
            return render(request, found[0]) if found else error_response(
                request, f"network {name} not found", 404)
        out = etree.Element(qn(ESC, "networks"))
        out.extend(found)
        return render(request, out)

    # -- deployments ----------------------------------------------------------------

    async def _deployment_tenant(self, user: str, dep: str) -> str | None:
        root = _root()
        ten = _el("tenant", _el("tenants", root))
        _el("name", ten)
        _el("name", _el("deployment", _el("deployments", ten)), dep)
        data = await self._read(user, _get(root))
        for t in data.iterfind(f"{E}esc_datamodel/{E}tenants/{E}tenant"):
            if t.find(f"{E}deployments/{E}deployment") is not None:
                return leaf(t, "name")
        return None

    async def get_deployments(self, request: Request, user: str) -> Response:
        name = request.path_params.get("deployment")
        root = _root()
        dep = _el("deployment", _el("deployments", _el("tenant", _el("tenants", root))))
        if name is not None:
            _el("name", dep, name)
        try:
            data = await self._read(user, _get(root))
        except _Failed as f:
            return error_response(request, f.errors)
        found = data.findall(f"{E}esc_datamodel/{E}tenants/{E}tenant/{E}deployments/{E}deployment")
        if name is not None:
            return render(request, found[0]) if found else error_response(
                request, f"deployment {name} not found", 404)
        out = etree.Element(qn(ESC, "deployments"))
        out.extend(found)
        return render(request, out)

    async def write_deployment(self, request: Request, user: str) -> Response:
        name = request.path_params["deployment"]
        if request.method == "DELETE":
            try:
                tenant = await self._deployment_tenant(user, name)
            except _Failed as f:
                return error_response(request, f.errors)
            if tenant is None:
                return error_response(request, f"deployment {name} not found", 404)
            root = _root()
            ten = _el("tenant", _el("tenants", root))
            _el("name", ten, tenant)
            dep = _el("deployment", _el("deployments", ten))
            _el("name", dep, name)
            dep.set(_OP, "delete")
            terminal: tuple[str, ...] = ("SERVICE_UNDEPLOYED",)
            resource = etree.Element(qn(ESC, "deployment"))
            _el("name", resource, name)
        else:
            root = await self._body(request, "esc_datamodel")
            if etree.QName(root).localname != "esc_datamodel":
                raise BadRequest("expected an <esc_datamodel> body holding the deployment")
            found = [
                (leaf(t, "name"), d)
                for t in root.iterfind(f"{E}tenants/{E}tenant")
                for d in t.iterfind(f"{E}deployments/{E}deployment")
            ]
            if len(found) != 1 or leaf(found[0][1], "name") != name:
                raise BadRequest(f"the body must hold exactly one deployment, named {name}")
            tenant, dep = found[0]
            dep.set(_OP, "create" if request.method == "POST" else "replace")
            terminal = ("SERVICE_ALIVE",) if request.method == "POST" else ("SERVICE_UPDATED",)
            resource = dep
        txn = Transaction(tenant=tenant, deployment=name, terminal=terminal)
        status = 201 if request.method == "POST" else 200
        return await self._async(request, user, [_edit(root)], txn, status, resource)

    # -- operations -----------------------------------------------------------------

    async def service_op(self, request: Request, user: str) -> Response:
        tenant, dep = request.path_params["tenant"], request.path_params["deployment"]
        body = await self._body(request, "service_operation")
        action = leaf(body, "operation").upper()
        if action not in SERVICE_TERMINAL:
            raise BadRequest("operation must be start, stop or reboot")
        op = _rpc("serviceAction", actionType=action, tenantName=tenant, depName=dep)
        txn = Transaction(tenant=tenant, deployment=dep, terminal=(SERVICE_TERMINAL[action],))
        return await self._async(request, user, [op], txn, 202, body)

    async def vm_op(self, request: Request, user: str) -> Response:
        vm = request.path_params["vm"]
        body = await self._body(request, "vm_operation")
        action = leaf(body, "operation").upper()
        if action not in VM_OP_TERMINAL:
            raise BadRequest(f"unknown vm operation {action.lower()!r}")
        force = leaf(body, "force").lower()
        op = _rpc("vmAction", actionType=action, vmName=vm,
                  force=force if force in ("true", "false") else "")
        txn = Transaction(vm=vm, terminal=(VM_OP_TERMINAL[action],))
        return await self._async(request, user, [op], txn, 202, body)

    async def migrate_vm(self, request: Request, user: str) -> Response:
        vm = request.path_params["vm"]
        body = await self._body(request, "vm_migrate_operation")
        if leaf(body, "operation").lower() not in ("", "migrate"):
            raise BadRequest("operation must be migrate")
        kind = leaf(body, "migrationType").lower() or "live"
        op = _rpc("vmMigrate", vmName=vm, migrationType=kind, host=leaf(body, "host"),
                  blockMigration=leaf(body, "blockMigration").lower())
        txn = Transaction(vm=vm, terminal=("VM_MIGRATE_COMPLETE", "VM_VERIFY_RESIZE"))
        return await self._async(request, user, [op], txn, 202, body)

    async def snapshot_vm(self, request: Request, user: str) -> Response:
        vm = request.path_params["vm"]
        body = await self._body(request, "snapshot_operation")
        if leaf(body, "operation").lower() != "snapshot" or not leaf(body, "name"):
            raise BadRequest("the body must give operation snapshot and a name")
        op = _rpc("vmBackupAction", vmName=vm, backupName=leaf(body, "name"),
                  actionType="SNAPSHOT")
        txn = Transaction(vm=vm, terminal=("VM_BACKUP_COMPLETE",))
        return await self._async(request, user, [op], txn, 202, body)

    async def _snapshots(self, user: str) -> list[etree._Element]:
        root = _root()
        _el("snapshots", _el("opdata", root))
        data = await self._read(user, _get(root, config_only=False))
        return data.findall(f"{E}esc_datamodel/{E}opdata/{E}snapshots/{E}snapshot")

    async def list_snapshots(self, request: Request, user: str) -> Response:
        tenant = request.query_params.get("internalTenantId")
        vm = request.query_params.get("generatedVMName")
        try:
            snaps = await self._snapshots(user)
        except _Failed as f:
            return error_response(request, f.errors)
        out = etree.Element(qn(ESC, "snapshots"))
        for s in snaps:
            if tenant and leaf(s, "tenant") != tenant:
                continue
            if vm and leaf(s, "created_from_generated_vm_name") != vm:
                continue
            out.append(s)
        return render(request, out)

    async def _snapshot_ref(self, user: str, ref: str) -> etree._Element | None:
        snaps = await self._snapshots(user)
        by_id = next((s for s in snaps if leaf(s, "id") == ref), None)
        if by_id is not None:
            return by_id
        return next((s for s in snaps if leaf(s, "name") == ref), None)

    async def delete_snapshot(self, request: Request, user: str) -> Response:
        ref = request.path_params["snapshot"]
        try:
            snap = await self._snapshot_ref(user, ref)
        except _Failed as f:
            return error_response(request, f.errors)
        vm = leaf(snap, "created_from_generated_vm_name") if snap is not None else ""
        op = _rpc("snapshotAction", actionType="DELETE", snapshot=ref)
        txn = Transaction(vm=vm, terminal=("VM_SNAPSHOT_DELETED",))
        return await self._async(request, user, [op], txn, 200, snap)

    async def volume_from_snapshot(self, request: Request, user: str) -> Response:
        ref = request.path_params["snapshot"]
        body = await self._body(request, "volume")
        if not leaf(body, "name"):
            raise BadRequest("the body must give the volume's name")
        try:
            snap = await self._snapshot_ref(user, ref)
        except _Failed as f:
            return error_response(request, f.errors)
        vm = leaf(snap, "created_from_generated_vm_name") if snap is not None else ""
        leaves = {k: leaf(body, k) for k in ("volume_type", "multiattach", "bootable")}
        leaves = {k: (v.lower() if k != "volume_type" else v) for k, v in leaves.items()}
        op = _rpc("createVolumeFromSnapshot", snapshot=ref, name=leaf(body, "name"), **leaves)
        txn = Transaction(vm=vm, terminal=("VM_VOLUME_CREATED_EVENT",))
        return await self._async(request, user, [op], txn, 202, body)

    async def get_volumes(self, request: Request, user: str) -> Response:
        root = _root()
        _el("volumes", _el("opdata", root))
        try:
            data = await self._read(user, _get(root, config_only=False))
        except _Failed as f:
            return error_response(request, f.errors)
        out = etree.Element(qn(ESC, "volumes"))
        out.extend(data.findall(f"{E}esc_datamodel/{E}opdata/{E}volumes/{E}volume"))
        return render(request, out)

    def routes(self) -> list[BaseRoute]:
        r = self.route
        out: list[BaseRoute] = []
        for kind in RESOURCES:
            out += [r(f"/{kind}", self.get_resources, ["GET"]),
                    r(f"/{kind}/{{name}}", self.get_resources, ["GET"]),
                    r(f"/{kind}/{{name}}", self.write_resource, ["POST", "PUT", "DELETE"])]
        out += [
            r("/deployments", self.get_deployments, ["GET"]),
            r("/deployments/{deployment}", self.get_deployments, ["GET"]),
            r("/deployments/{deployment}", self.write_deployment, ["POST", "PUT", "DELETE"]),
            r("/{tenant}/deployments/service/{deployment}", self.service_op, ["POST"]),
            r("/{tenant}/deployments/vm/{vm}", self.vm_op, ["POST"]),
            r("/{tenant}/deployments/migrate-vm/{vm}", self.migrate_vm, ["POST"]),
            r("/{tenant}/deployments/snapshot-vm/{vm}", self.snapshot_vm, ["POST"]),
            r("/snapshots", self.list_snapshots, ["GET"]),
            r("/snapshots/{snapshot}", self.delete_snapshot, ["DELETE"]),
            r("/snapshots/{snapshot}/volumes", self.volume_from_snapshot, ["POST"]),
            r("/volumes", self.get_volumes, ["GET"]),
            r("/{tenant}/networks", self.get_networks, ["GET"]),
            r("/{tenant}/networks/{network}", self.get_networks, ["GET"]),
            r("/{tenant}/networks/{network}", self.write_network, ["POST", "PUT", "DELETE"]),
            r("/{tenant}/networks/{network}/subnets/{subnet}", self.write_network,
              ["POST", "PUT", "DELETE"]),
        ]
        return out


class _Failed(Exception):
    def __init__(self, errors: list[Any]) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = errors


async def _threaded(fn: Callable[..., Any], *args: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


def routes(ctx: HttpContext) -> list[BaseRoute]:
    return EscRest(ctx).routes()
