"""RPC dispatch by qualified name.

Every operation module exposes ``register(registry, services)`` and registers its
handlers here under ``(namespace, element-name)``. The session layer looks a request
up, validates the input when asked to, and turns the result into an ``<rpc-reply>``:

* handler returns ``None``            -> ``<ok/>``
* handler returns an element or a list -> those elements are the reply's children
* handler raises ``RpcError``/``RpcErrors`` -> ``<rpc-error>`` elements

Every handler runs through :meth:`RpcRegistry.invoke`, so a guard installed with
:meth:`RpcRegistry.set_guard` (access control: operations/authorize.py) sees every
request of every session, before input validation and the handler, and every
result after it. ``<data>`` elements a handler returns are its own (copies), so the
guard may prune them in place. Operation modules may also name, per RPC, the data
nodes a request acts on (:meth:`RpcRegistry.register_target`) for the guard to
authorise.
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
# guard(ctx, request, proceed): authorise, then ``proceed(request)`` (input validation
# and the handler; the guard may pass a rewritten request) and post-process the result
RpcGuard = Callable[
    [RpcContext, etree._Element, Callable[[etree._Element], HandlerResult]], HandlerResult
]
# The data nodes an RPC request acts on, each as the chain of elements from the top
# (tag and key leaves are what counts), e.g. the deployment a vmAction's VM is in.
TargetResolver = Callable[[RpcContext, etree._Element], list[list[etree._Element]]]


@dataclass(frozen=True)
class Registration:
    handler: RpcHandler
    # validate the request element against the YANG rpc input before calling
    validate_input: bool


class RpcRegistry:
    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str], Registration] = {}
        self._guard: RpcGuard | None = None
        self._targets: dict[tuple[str, str], TargetResolver] = {}

    def set_guard(self, guard: RpcGuard | None) -> None:
        self._guard = guard

    def register_target(self, namespace: str, name: str, resolver: TargetResolver) -> None:
        self._targets[(namespace, name)] = resolver

    def targets(
        self, ctx: RpcContext, request: etree._Element
    ) -> list[list[etree._Element]]:
        """The data nodes ``request`` acts on (empty when nobody registered any)."""
        q = etree.QName(request)
        resolver = self._targets.get((q.namespace or "", q.localname))
        return resolver(ctx, request) if resolver is not None else []

    def invoke(
        self,
        registration: Registration,
        ctx: RpcContext,
        request: etree._Element,
        validate: Callable[[etree._Element], None] | None = None,
    ) -> HandlerResult:
        """Run one request: the guard, input validation (when registered so), the
        handler. The one place every RPC of every session passes."""

        def proceed(req: etree._Element) -> HandlerResult:
            if registration.validate_input and validate is not None:
                validate(req)
            return registration.handler(ctx, req)

        guard = self._guard
        return proceed(request) if guard is None else guard(ctx, request, proceed)

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
