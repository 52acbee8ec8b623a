"""commit, discard-changes, cancel-commit (:candidate, :confirmed-commit:1.1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lxml import etree

from escnc.errors import RpcError
from escnc.ns import NC
from escnc.operations._common import checked, child

if TYPE_CHECKING:
    from escnc.rpc.dispatch import RpcContext, RpcRegistry
    from escnc.services import Services

CAPABILITIES = [
    "urn:ietf:params:netconf:capability:candidate:1.0",
    "urn:ietf:params:netconf:capability:confirmed-commit:1.1",
]


def register(registry: RpcRegistry, services: Services) -> None:
    registry.register(NC, "commit", checked(commit))
    registry.register(NC, "discard-changes", checked(discard_changes))
    registry.register(NC, "cancel-commit", checked(cancel_commit))
    for cap in CAPABILITIES:
        if cap not in services.capabilities:
            services.capabilities.append(cap)


# ietf-netconf: confirm-timeout is uint32 { range "1..max"; }
MAX_CONFIRM_TIMEOUT = 2**32 - 1


def _text(request: etree._Element, name: str) -> str | None:
    el = child(request, name)
    return None if el is None else (el.text or "").strip()


def commit(ctx: RpcContext, request: etree._Element) -> None:
    confirmed = child(request, "confirmed") is not None
    timeout_text = _text(request, "confirm-timeout")
    timeout = None
    if timeout_text is not None:
        if (not timeout_text.isascii() or not timeout_text.isdigit()
                or not 1 <= int(timeout_text) <= MAX_CONFIRM_TIMEOUT):
            raise RpcError(
                "invalid-value",
                f"confirm-timeout must be an integer from 1 to {MAX_CONFIRM_TIMEOUT} "
                "(seconds, YANG uint32)",
                type="protocol",
                info={"bad-element": "confirm-timeout"},
            )
        timeout = int(timeout_text)
    elif confirmed:
        timeout = ctx.services.settings.confirmed_commit_default_timeout
    ctx.services.datastore.commit(
        ctx.session.session_id,
        ctx.session.username,
        confirmed=confirmed,
        timeout=timeout,
        persist=_text(request, "persist"),
        persist_id=_text(request, "persist-id"),
    )


def discard_changes(ctx: RpcContext, request: etree._Element) -> None:
    ctx.services.datastore.discard_changes(ctx.session.session_id)


def cancel_commit(ctx: RpcContext, request: etree._Element) -> None:
    ctx.services.datastore.cancel_commit(
        ctx.session.session_id, ctx.session.username, _text(request, "persist-id")
    )
