"""RFC 5277 subscriptions of NETCONF sessions, each a Consumer of the event log.

One subscription per session (RFC 5277 2.1.1). Delivery goes through
``SessionHandle.send_notification`` (thread safe, never blocks), so the session keeps
answering RPCs meanwhile (:interleave). When the session exposes
``pending_output`` (messages queued but not yet written), the
consumer stops feeding a client that stopped reading, and closes it once it is more
than ``settings.subscriber_max_lag`` events behind; the client resumes with a replay
from the last eventTime it received.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lxml import etree

from escnc.errors import RpcError
from escnc.events import base
from escnc.events.consumer import Consumer
from escnc.events.esc_event import NETCONF_STREAM
from escnc.events.filtering import BodyPredicate, compile_filter
from escnc.events.log import StoredEvent, now_ms, parse_event_time
from escnc.ns import NC, NOTIF

if TYPE_CHECKING:
    from escnc.events.bus import EventBus
    from escnc.rpc.dispatch import SessionHandle
    from escnc.settings import Settings

log = logging.getLogger(__name__)

# Per session: a predicate an event must pass before delivery and on replay
# (access control, RFC 8341 3.4.6), or None when every event may be delivered.
EventAuthorizer = Callable[["SessionHandle"], "Callable[[StoredEvent], bool] | None"]

# notifications a session may have queued before delivery pauses
MAX_SESSION_BACKLOG = 512


@dataclass
class SubscriptionRequest:
    stream: str = NETCONF_STREAM
    predicate: BodyPredicate | None = None
    start_ms: int | None = None
    stop_ms: int | None = None


def _bad(tag: str, element: str, message: str) -> RpcError:
    return RpcError(tag, message, type="protocol", info={"bad-element": element})


def _time(el: etree._Element, name: str) -> int:
    try:
        return parse_event_time(el.text or "")
    except (ValueError, IndexError) as exc:
        raise _bad("bad-element", name, f"{name} is not an RFC 3339 date-and-time") from exc


def parse_request(request: etree._Element, streams: dict[str, str]) -> SubscriptionRequest:
    """Check a <create-subscription> against RFC 5277 2.1.1."""
    req = SubscriptionRequest()
    for child in request:
        if not isinstance(child.tag, str):
            continue
        qname = etree.QName(child)
        # ncclient puts <filter> in the base namespace; accept it there too
        if qname.namespace == NC and qname.localname == "filter":
            req.predicate = compile_filter(child)
            continue
        if qname.namespace != NOTIF:
            raise _bad("unknown-element", qname.localname, f"unexpected element {child.tag}")
        name = qname.localname
        if name == "stream":
            req.stream = (child.text or "").strip()
            if req.stream not in streams:
                raise RpcError(
                    "invalid-value", f"no event stream named {req.stream!r}",
                    info={"bad-element": "stream"},
                )
        elif name == "filter":
            req.predicate = compile_filter(child)
        elif name == "startTime":
            req.start_ms = _time(child, name)
        elif name == "stopTime":
            req.stop_ms = _time(child, name)
        else:
            raise _bad("unknown-element", name, f"unexpected element {name!r}")
    if req.stop_ms is not None and req.start_ms is None:
        raise RpcError(
            "missing-element", "stopTime requires startTime", type="protocol",
            info={"bad-element": "startTime"},
        )
    if req.start_ms is not None and req.start_ms > now_ms():
        raise _bad("bad-element", "startTime", "startTime is in the future")
    if req.stop_ms is not None and req.start_ms is not None and req.stop_ms < req.start_ms:
        raise _bad("bad-element", "stopTime", "stopTime is earlier than startTime")
    return req


def _backlog_probe(session: SessionHandle) -> Callable[[], int] | None:
    """How many messages the session has queued but not written, if it can tell."""
    method = getattr(session, "notification_backlog", None)
    if callable(method):
        return method  # type: ignore[no-any-return]
    if hasattr(type(session), "pending_output"):  # NetconfSession property
        return lambda: int(session.pending_output)  # type: ignore[attr-defined]
    return None


class Subscriptions:
    """Active NETCONF subscriptions by session id."""

    def __init__(
        self, bus: EventBus, settings: Settings, authorize: EventAuthorizer | None = None
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.authorize = authorize
        self.terminate_grace = float(settings.subscriber_terminate_grace)
        self._lock = threading.Lock()
        self._active: dict[int, Consumer] = {}

    def active(self) -> dict[int, Consumer]:
        with self._lock:
            return dict(self._active)

    def create(self, session: SessionHandle, request: etree._Element) -> Consumer:
        req = parse_request(request, self.bus.streams)
        sid = session.session_id
        with self._lock:
            current = self._active.get(sid)
            if current is not None and not current.closed:
                raise RpcError(
                    "in-use", "this session already has an active subscription",
                    type="protocol", info={"bad-element": "create-subscription"},
                )
            consumer = self._make_consumer(session, req)
            self._active[sid] = consumer
        session.add_close_callback(lambda: self._drop(sid, consumer))
        start = getattr(session, "after_reply", None)
        # replayed notifications must follow the <ok/> of create-subscription
        if callable(start):
            start(consumer.start)
        else:
            consumer.start()
        return consumer

    def _make_consumer(self, session: SessionHandle, req: SubscriptionRequest) -> Consumer:
        sid = session.session_id
        replay = req.start_ms is not None
        head = self.bus.head
        start_seq = (
            self.bus.log.first_seq_at_or_after(req.start_ms)
            if req.start_ms is not None else head + 1
        )
        predicate = req.predicate
        allowed = self.authorize(session) if self.authorize is not None else None

        def accept(event: StoredEvent) -> bool:
            if allowed is not None and not allowed(event):
                return False
            return predicate is None or predicate(event.body_element())

        def deliver(event: StoredEvent) -> None:
            session.send_notification(event.notification)

        def on_end(reason: str) -> None:
            self._ended(session, consumer, reason)

        backlog = _backlog_probe(session)
        consumer = self.bus.make_consumer(
            deliver,
            stream=req.stream,
            start_seq=start_seq,
            accept=accept if predicate is not None or allowed is not None else None,
            stop_ms=req.stop_ms,
            replay_until=head if replay else None,
            on_replay_complete=(lambda: session.send_notification(base.replay_complete()))
            if replay else None,
            on_end=on_end,
            max_lag=self.settings.subscriber_max_lag or None,
            backlog=backlog,
            max_backlog=MAX_SESSION_BACKLOG,
            name=f"subscription-{sid}",
        )
        return consumer

    def _ended(self, session: SessionHandle, consumer: Consumer, reason: str) -> None:
        self._drop(session.session_id, consumer)
        if reason == "complete":
            session.send_notification(base.notification_complete())
            return
        log.warning(
            "closing session %d: subscription ended (%s) at event %d, %d behind",
            session.session_id, reason, consumer.seq, consumer.lag,
        )
        session.send_notification(
            base.subscription_terminated(session.session_id, consumer.last_event_time)
        )
        # give a client that reads again the chance to see why it is closed; close()
        # from this thread then writes what is still queued or in flight (bounded)
        backlog = consumer.backlog
        deadline = time.monotonic() + self.terminate_grace
        while backlog is not None and backlog() > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        session.close()

    def _drop(self, sid: int, consumer: Consumer) -> None:
        with self._lock:
            if self._active.get(sid) is consumer:
                del self._active[sid]
        consumer.close()

    def close(self) -> None:
        with self._lock:
            consumers = list(self._active.values())
            self._active.clear()
        for consumer in consumers:
            consumer.close(wait=True)
