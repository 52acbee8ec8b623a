"""escnc rollback history: esc:get-rollback-history and esc:rollback{id}."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lxml import etree

from escnc.datastore.lxmltypes import make_element
from escnc.errors import RpcError
from escnc.ns import ESC, qn

if TYPE_CHECKING:
    from escnc.rpc.dispatch import RpcContext, RpcRegistry
    from escnc.services import Services


def register(registry: RpcRegistry, services: Services) -> None:
    registry.register(ESC, "rollback", rollback, validate_input=True)
    registry.register(ESC, "get-rollback-history", history)


def rollback(ctx: RpcContext, request: etree._Element) -> None:
    text = (request.findtext(qn(ESC, "id")) or "").strip()
    if not text.isdigit():
        raise RpcError("invalid-value", "id must be a commit number", info={"bad-element": "id"})
    ctx.services.datastore.rollback(int(text), ctx.session.session_id, ctx.session.username)


def history(ctx: RpcContext, request: etree._Element) -> list[etree._Element]:
    out = []
    for hid, time, user, sid, n in ctx.services.datastore.history():
        c = make_element(qn(ESC, "commit"), nsmap={None: ESC})
        for name, value in (
            ("id", hid),
            ("time", time),
            ("username", user),
            ("session-id", sid),
            ("changes", n),
        ):
            etree.SubElement(c, qn(ESC, name)).text = str(value)
        out.append(c)
    return out
