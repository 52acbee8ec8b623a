"""lock and unlock (RFC 6241 7.5/7.6)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lxml import etree

from escnc.ns import NC
from escnc.operations._common import checked, datastore_name

if TYPE_CHECKING:
    from escnc.rpc.dispatch import RpcContext, RpcRegistry
    from escnc.services import Services


def register(registry: RpcRegistry, services: Services) -> None:
    registry.register(NC, "lock", checked(lock))
    registry.register(NC, "unlock", checked(unlock))


def lock(ctx: RpcContext, request: etree._Element) -> None:
    name = datastore_name(request, "target")
    ctx.services.datastore.lock(name, ctx.session.session_id)


def unlock(ctx: RpcContext, request: etree._Element) -> None:
    name = datastore_name(request, "target")
    ctx.services.datastore.unlock(name, ctx.session.session_id)
