"""Which logged events a caller may receive, for any northbound's event stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from escnc.operations.notifications import event_authorizer

if TYPE_CHECKING:
    from escnc.events.log import StoredEvent
    from escnc.rpc.dispatch import SessionHandle
    from escnc.services import Services


def event_filter(
    services: Services, session: SessionHandle
) -> Callable[[StoredEvent], bool] | None:
    """NACM's per-event read decision (RFC 8341 3.4.6) for ``session`` (None: all)."""
    return event_authorizer(services)(session)
