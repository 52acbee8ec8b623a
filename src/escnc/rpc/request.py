"""Run one operation for one caller, whatever transport it came on.

The transports parse their own envelopes (NETCONF ``<rpc>``, an HTTP request) into one
operation element and hand it here; errors come back as :class:`RpcError` objects,
which each transport renders its own way (``<rpc-error>``, an HTTP status and body).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lxml import etree

from escnc.errors import RpcError, RpcErrors
from escnc.rpc.dispatch import HandlerResult, RpcContext, SessionHandle
from escnc.rpc.standby import check_write

if TYPE_CHECKING:
    from escnc.services import Services

log = logging.getLogger(__name__)


@dataclass
class Executed:
    operation: str  # Clark name
    result: HandlerResult = None
    errors: list[RpcError] = field(default_factory=list)
    # the operation is not known (counts as a bad rpc for RFC 6022)
    unknown: bool = False


def execute(
    services: Services,
    session: SessionHandle,
    op: etree._Element,
    *,
    message_id: str | None = None,
    rpc_attributes: dict[str, str] | None = None,
) -> Executed:
    """Look ``op`` up and run it through the registry (guard, validation, handler)."""
    started = time.perf_counter()
    done = _execute(services, session, op, message_id, rpc_attributes)
    if services.rpc_observers:
        outcome = done.errors[0].tag if done.errors else "ok"
        elapsed = time.perf_counter() - started
        for observe in services.rpc_observers:
            try:
                observe(op.tag, outcome, elapsed)
            except Exception:
                log.exception("rpc observer failed")
    return done


def _execute(
    services: Services,
    session: SessionHandle,
    op: etree._Element,
    message_id: str | None,
    rpc_attributes: dict[str, str] | None,
) -> Executed:
    qname = etree.QName(op)
    done = Executed(op.tag)
    try:
        registration = services.registry.lookup(qname.namespace, qname.localname)
    except RpcError as exc:
        done.errors, done.unknown = [exc], True
        return done
    ctx = RpcContext(
        session=session, services=services, message_id=message_id,
        rpc_attributes=dict(rpc_attributes or {}),
    )
    try:
        # a standby refuses every write here, before the handler (rpc/standby.py)
        check_write(services.fence, qname.namespace, qname.localname)
        validate = services.schema.validate_rpc_input if services.schema is not None else None
        done.result = services.registry.invoke(registration, ctx, op, validate)
    except RpcError as exc:
        done.errors = [exc]
    except RpcErrors as exc:
        done.errors = list(exc.errors) or [RpcError("operation-failed", str(exc))]
    except Exception as exc:  # a bug in a handler must not end the session
        log.exception(
            "session %s user %s: %s failed unexpectedly",
            session.session_id, session.username, qname.localname,
        )
        done.errors = [RpcError("operation-failed", f"internal error: {exc}")]
    return done


class SessionIds:
    """Allocates session ids for callers that have no long-lived session."""

    def __init__(self, allocate: Callable[[], int] | None = None) -> None:
        self._counter = itertools.count(1_000_000)
        self._lock = threading.Lock()
        self._allocate = allocate

    def next(self) -> int:
        if self._allocate is not None:
            return self._allocate()
        with self._lock:
            return next(self._counter)


class RequestSession:
    """A session that lasts one request (an HTTP call): what handlers see of it.

    It cannot receive notifications (HTTP clients use callbacks or SSE instead);
    close callbacks run, and the datastore's per-session state (locks) is released,
    when the request ends."""

    def __init__(self, services: Services, session_id: int, username: str) -> None:
        self.services = services
        self.session_id = session_id
        self.username = username
        self.client_capabilities: frozenset[str] = frozenset()
        self._close_callbacks: list[Callable[[], None]] = []
        self._ended = False

    def send_notification(self, notification: etree._Element | bytes) -> None:
        return None  # nowhere to send it: one request, one answer

    def close(self) -> None:
        return None

    def add_close_callback(self, callback: Callable[[], None]) -> None:
        if self._ended:
            callback()
        else:
            self._close_callbacks.append(callback)

    def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        release = getattr(self.services.datastore, "release_session", None)
        if release is not None:
            try:
                release(self.session_id)
            except Exception:
                log.exception("session %d: releasing datastore state failed", self.session_id)
        for cb in self._close_callbacks:
            try:
                cb()
            except Exception:
                log.exception("session %d: close callback failed", self.session_id)
