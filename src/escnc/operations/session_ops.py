"""close-session and kill-session (RFC 6241 sections 7.8 and 7.9)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lxml import etree

from escnc.errors import RpcError
from escnc.ns import NC, qn
from escnc.operations._common import checked
from escnc.rpc.dispatch import RpcContext, RpcRegistry

if TYPE_CHECKING:
    from escnc.services import Services


def close_session(ctx: RpcContext, request: etree._Element) -> None:
    # The session ends right after this <ok/> is sent; release_session runs then.
    ctx.session.close()


def kill_session(ctx: RpcContext, request: etree._Element) -> None:
    sid_el = request.find(qn(NC, "session-id"))
    text = (sid_el.text or "").strip() if sid_el is not None else ""
    if not text:
        raise RpcError(
            "missing-element", "kill-session needs a session-id", type="protocol",
            info={"bad-element": "session-id"},
        )
    if not text.isdigit() or int(text) == 0 or len(text) > 10:
        raise RpcError(
            "invalid-value", f"invalid session-id {text!r}", type="protocol",
            info={"bad-element": "session-id"},
        )
    manager = ctx.services.sessions
    if manager is None:
        raise RpcError("operation-failed", "no session manager")
    manager.kill(int(text), ctx.session.session_id)


def register(registry: RpcRegistry, services: Services) -> None:
    registry.register(NC, "close-session", checked(close_session))
    registry.register(NC, "kill-session", checked(kill_session))
