"""One <rpc> in, one <rpc-reply> out (RFC 6241 section 4).

Kept free of I/O so the session layer stays a thin loop: :func:`process_message`
takes the bytes of one framed message and returns the serialized reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lxml import etree

from escnc.errors import RpcError
from escnc.ns import BASE_11, NC, qn
from escnc.rpc.dispatch import SessionHandle
from escnc.rpc.request import execute
from escnc.xmlutil import parse_untrusted

if TYPE_CHECKING:
    from escnc.services import Services

_RPC = qn(NC, "rpc")
_REPLY = qn(NC, "rpc-reply")
_OK = b"<ok/>"


@dataclass
class RpcOutcome:
    reply: bytes
    operation: str | None = None  # Clark name of the operation, when it got that far
    errors: list[RpcError] = field(default_factory=list)
    bad_rpc: bool = False  # counts as in-bad-rpcs (RFC 6022): not a correct <rpc>
    rpc: etree._Element | None = None  # the parsed request, when it parsed


def process_message(data: bytes, session: SessionHandle, services: Services) -> RpcOutcome:
    outcome = _process(data, session, services)
    if BASE_11 not in session.client_capabilities and any(
        e.tag == "malformed-message" for e in outcome.errors
    ):
        # RFC 6241 Appendix A: malformed-message is new in :base:1.1 and "MUST NOT be
        # sent to old clients"; a base:1.0 peer gets operation-failed (as libnetconf2).
        for e in outcome.errors:
            if e.tag == "malformed-message":
                e.tag = "operation-failed"
        outcome.reply = _reply(outcome.rpc, [e.to_xml() for e in outcome.errors])
    return outcome


def _process(data: bytes, session: SessionHandle, services: Services) -> RpcOutcome:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _failed(None, [_malformed(f"message is not valid UTF-8: {exc}")], bad=True)
    try:
        # Some base:1.0 clients put a newline after "]]>]]>"; it would land in front of
        # the next message's XML declaration.
        rpc = parse_untrusted(data.lstrip(b" \t\r\n"))
    except RpcError as exc:
        return _failed(None, [exc], bad=True)
    if rpc.tag != _RPC:
        return _failed(None, [_malformed(f"expected <rpc>, got {rpc.tag}")], bad=True)

    attrs: dict[str, str] = {str(k): str(v) for k, v in rpc.attrib.items()}
    message_id = attrs.get("message-id")
    if message_id is None:
        err = RpcError(
            "missing-attribute",
            "<rpc> has no message-id attribute",
            type="rpc",
            info={"bad-attribute": "message-id", "bad-element": "rpc"},
        )
        return _failed(rpc, [err], bad=True)

    ops = [child for child in rpc if isinstance(child.tag, str)]
    if len(ops) != 1:
        if not ops:
            err = RpcError(
                "missing-element", "<rpc> contains no operation", type="rpc",
                info={"bad-element": "rpc"},
            )
        else:
            err = RpcError(
                "unknown-element", "<rpc> contains more than one operation", type="rpc",
                info={"bad-element": etree.QName(ops[1]).localname},
            )
        return _failed(rpc, [err], bad=True)
    op = ops[0]
    done = execute(services, session, op, message_id=message_id, rpc_attributes=attrs)
    outcome = RpcOutcome(b"", operation=op.tag, rpc=rpc, errors=done.errors,
                         bad_rpc=done.unknown)
    result = done.result
    if outcome.errors:
        outcome.reply = _reply(rpc, [e.to_xml() for e in outcome.errors])
        return outcome
    if result is None:
        outcome.reply = _reply_bytes(rpc, _OK)
    elif isinstance(result, etree._Element):
        outcome.reply = _reply(rpc, [result])
    else:
        outcome.reply = _reply(rpc, list(result))
    return outcome


def _malformed(message: str) -> RpcError:
    return RpcError("malformed-message", message, type="rpc")


def _failed(rpc: etree._Element | None, errors: list[RpcError], *, bad: bool) -> RpcOutcome:
    return RpcOutcome(_reply(rpc, [e.to_xml() for e in errors]), errors=errors, bad_rpc=bad)


def _reply(rpc: etree._Element | None, children: list[etree._Element]) -> bytes:
    # Serialize children in place (never re-parent them: a handler may hand out a
    # cached tree) and splice them into the reply envelope.
    body = b"".join(etree.tostring(c, encoding="utf-8", with_tail=False) for c in children)
    return _reply_bytes(rpc, body)


def _reply_bytes(rpc: etree._Element | None, body: bytes) -> bytes:
    """``<rpc-reply>`` echoing every attribute of the request (RFC 6241 4.2)."""
    nsmap: dict[str | None, str] = {None: NC}
    if rpc is not None:
        nsmap.update((k, v) for k, v in rpc.nsmap.items() if k is not None and v != NC)
    env = etree.Element(_REPLY, nsmap=nsmap)  # type: ignore[arg-type]
    if rpc is not None:
        for name, value in rpc.attrib.items():
            env.set(name, value)
    head = etree.tostring(env, encoding="utf-8")
    assert head.endswith(b"/>")
    return head[:-2] + b">" + body + b"</rpc-reply>"
