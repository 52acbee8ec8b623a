"""Which logged events a caller may receive, for any northbound's event stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lxml import etree

from escnc.events.filtering import BodyPredicate, compile_filter
from escnc.ns import NC, qn
from escnc.operations.notifications import event_authorizer

if TYPE_CHECKING:
    from escnc.events.log import StoredEvent
    from escnc.rpc.dispatch import SessionHandle
    from escnc.services import Services

MAX_XPATH = 4096  # characters of a content filter's expression


def event_filter(
    services: Services, session: SessionHandle, content: BodyPredicate | None = None
) -> Callable[[StoredEvent], bool] | None:
    """NACM's per-event read decision (RFC 8341 3.4.6) for ``session``, and the
    ``content`` filter on the notification's body when given (None: all)."""
    allowed = event_authorizer(services)(session)
    if content is None:
        return allowed

    def accept(event: StoredEvent) -> bool:
        return (allowed is None or allowed(event)) and content(event.body_element())

    return accept


def xpath_filter(select: str, prefixes: dict[str, str]) -> BodyPredicate:
    """An XPath content filter, compiled as create-subscription's ``<filter
    type="xpath">`` (escnc.events.filtering); raises RpcError invalid-value."""
    from escnc.errors import RpcError

    if len(select) > MAX_XPATH:
        raise RpcError("invalid-value", f"the XPath filter is longer than {MAX_XPATH}")
    flt = etree.Element(qn(NC, "filter"), nsmap=prefixes)  # type: ignore[arg-type]
    flt.set("type", "xpath")
    flt.set("select", select)
    predicate = compile_filter(flt)
    assert predicate is not None
    return predicate
