"""edit-config, copy-config, delete-config (:writable-running, :rollback-on-error, :startup)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lxml import etree

from escnc.datastore.edit import EditOptions
from escnc.errors import RpcError
from escnc.ns import NC, qn
from escnc.operations._common import checked, child, datastore_name, enum_param, source_config

if TYPE_CHECKING:
    from escnc.rpc.dispatch import RpcContext, RpcRegistry
    from escnc.services import Services

CAPABILITIES = [
    "urn:ietf:params:netconf:capability:writable-running:1.0",
    "urn:ietf:params:netconf:capability:rollback-on-error:1.0",
    "urn:ietf:params:netconf:capability:startup:1.0",
]


def register(registry: RpcRegistry, services: Services) -> None:
    registry.register(NC, "edit-config", checked(edit_config))
    registry.register(NC, "copy-config", checked(copy_config))
    registry.register(NC, "delete-config", checked(delete_config))
    for cap in CAPABILITIES:
        if cap not in services.capabilities:
            services.capabilities.append(cap)


def edit_config(ctx: RpcContext, request: etree._Element) -> None:
    target = datastore_name(request, "target", ("running", "candidate", "startup"))
    options = EditOptions(
        default_operation=enum_param(
            request, "default-operation", ("merge", "replace", "none"), "merge"
        ),
        error_option=enum_param(
            request,
            "error-option",
            ("stop-on-error", "continue-on-error", "rollback-on-error"),
            "stop-on-error",
        ),
    )
    test_option = enum_param(
        request, "test-option", ("test-then-set", "set", "test-only"), "test-then-set"
    )
    if child(request, "url") is not None:
        raise RpcError(
            "operation-not-supported",
            "the :url capability is not supported",
            type="protocol",
            info={"bad-element": "url"},
        )
    config = child(request, "config")
    if config is None:
        raise RpcError(
            "missing-element",
            "<config> is required",
            type="protocol",
            info={"bad-element": "config"},
        )
    ctx.services.datastore.edit(
        target,
        config,
        options,
        session_id=ctx.session.session_id,
        username=ctx.session.username,
        test_option=test_option,
    )


def copy_config(ctx: RpcContext, request: etree._Element) -> None:
    target = datastore_name(request, "target")
    source = source_config(request)
    store = ctx.services.datastore
    if isinstance(source, str):
        if source == target:
            raise RpcError(
                "invalid-value", "source and target are the same datastore", type="protocol"
            )
        with store.reading(source) as tree:
            tree_copy = etree.fromstring(etree.tostring(tree))
    else:
        tree_copy = etree.Element(qn(NC, "data"))
        for el in source:
            if isinstance(el.tag, str):
                tree_copy.append(etree.fromstring(etree.tostring(el)))
    store.copy_config(target, tree_copy, ctx.session.session_id, ctx.session.username, owned=True)


def delete_config(ctx: RpcContext, request: etree._Element) -> None:
    target = datastore_name(request, "target")
    ctx.services.datastore.delete_config(target, ctx.session.session_id, ctx.session.username)
