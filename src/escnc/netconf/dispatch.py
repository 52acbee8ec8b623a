"""RPC dispatch by qualified name.

Every operation module exposes ``register(registry, services)`` and registers its
handlers here under ``(namespace, element-name)``. The session layer looks a request
up, validates the input when asked to, and turns the result into an ``<rpc-reply>``:

* handler returns ``None``            -> ``<ok/>``
* handler returns an element or a list -> those elements are the reply's children
* handler raises ``RpcError``/``RpcErrors`` -> ``<rpc-error>`` elements
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from lxml import etree

from escnc.errors import RpcError

if TYPE_CHECKING:
    from escnc.services import Services


class SessionHandle(Protocol):
    """What handlers may use of the session that sent the request."""

    session_id: int
    username: str
    # capabilities the client announced in its hello
    client_capabilities: frozenset[str]

    def send_notification(self, notification: etree._Element | bytes) -> None:
        """Queue a complete ``<notification>`` for this session (thread safe)."""

    def close(self) -> None:
        """End the session (after the current reply is sent)."""

    def add_close_callback(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once when the session ends, however it ends."""


@dataclass
class RpcContext:
    session: SessionHandle
    services: Services
    message_id: str | None
    # attributes of the <rpc> element, echoed in the reply
    rpc_attributes: dict[str, str] = field(default_factory=dict)


HandlerResult = etree._Element | Sequence[etree._Element] | None
RpcHandler = Callable[[RpcContext, etree._Element], HandlerResult]


@dataclass(frozen=True)
class Registration:
    handler: RpcHandler
    # validate the request element against the YANG rpc input before calling
    validate_input: bool


class RpcRegistry:
    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str], Registration] = {}

    def register(
        self, namespace: str, name: str, handler: RpcHandler, *, validate_input: bool = False
    ) -> None:
        key = (namespace, name)
        if key in self._handlers:
            raise ValueError(f"RPC {{{namespace}}}{name} registered twice")
        self._handlers[key] = Registration(handler, validate_input)

    def lookup(self, namespace: str | None, name: str) -> Registration:
        reg = self._handlers.get((namespace or "", name))
        if reg is None:
            raise RpcError(
                "operation-not-supported",
                f"unknown RPC {name!r} in namespace {namespace!r}",
                type="protocol",
                info={"bad-element": name},
            )
        return reg

    def names(self) -> list[tuple[str, str]]:
        return sorted(self._handlers)

    def __contains__(self, key: Any) -> bool:
        return key in self._handlers
