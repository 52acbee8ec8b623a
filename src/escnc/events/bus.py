"""EventBus: publish = append to the durable log, then wake the consumers.

The publisher never waits for a consumer: it commits the event, keeps it in a small
in-memory window of recent events and notifies a condition. Every consumer
(NETCONF subscription, in-process listener, a future REST-callback transport) is a
:class:`~escnc.events.consumer.Consumer` with its own thread and its own cursor (a
sequence number): it reads the window, or the SQLite log when it has fallen behind
the window, at its own pace. Global sequence order is delivery order, so the order
of events of one deployment is preserved for every consumer.

Streams (RFC 5277): ``escEvent`` carries ESC events; ``NETCONF``, the default
stream, carries every event the server raises (escEvent and RFC 6470 alike).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from lxml import etree

from escnc.events.consumer import Consumer
from escnc.events.esc_event import ESC_STREAM, NETCONF_STREAM
from escnc.events.log import NOTIFY_CHANNEL, EventLog, StoredEvent, now_ms, parse_event_time
from escnc.storage import Storage, StorageError, open_storage

if TYPE_CHECKING:
    from escnc.settings import Settings

log = logging.getLogger(__name__)

STREAMS: dict[str, str] = {
    NETCONF_STREAM: "default NETCONF event stream: every notification the server sends",
    ESC_STREAM: "ESC lifecycle events (escEvent)",
}

TimeArg = int | float | str | datetime | None


def to_ms(value: TimeArg) -> int | None:
    """Epoch seconds (int/float), RFC 3339 text or an aware datetime -> epoch ms."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_event_time(value)
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return round(value * 1000)


def stream_filter(stream: str) -> tuple[str, ...] | None:
    """Log streams a subscription to ``stream`` receives (None = all)."""
    return None if stream == NETCONF_STREAM else (stream,)


class EventBus:
    # events kept in memory for consumers that keep up; slower ones read SQLite
    WINDOW = 8192
    # ... and at most this many bytes of them (the newest is always kept): one
    # config-change of a 10,000-entry edit is ~3 MB, and 8192 of those are no window
    WINDOW_BYTES = 4 * 1024 * 1024
    PRUNE_INTERVAL = 60.0

    def __init__(self, settings: Settings, storage: Storage | None = None) -> None:
        """``storage``: where the log lives; by default ``settings.database`` (a
        PostgreSQL URL) or the SQLite file events.sqlite3 in the state directory."""
        self.settings = settings
        # escnc.events.subscriptions.Subscriptions, set by operations.notifications
        self.subscriptions: Any = None
        if storage is None:
            storage = open_storage(settings.database, settings.state_dir / "events.sqlite3")
        self.log = EventLog(storage=storage, max_bytes=settings.event_retention_bytes)
        log.info("event log on %s", storage.describe())
        self.streams = dict(STREAMS)
        self._publish_lock = threading.Lock()
        self._cond = threading.Condition(threading.Lock())
        self._recent: dict[int, StoredEvent] = {}
        self._recent_order: deque[int] = deque()  # eviction order (seqs may be sparse)
        self._recent_bytes = 0
        self._head = self.log.last_seq()
        self._last_ms = 0
        self._consumers: set[Consumer] = set()
        self._consumers_lock = threading.Lock()
        self._closed = threading.Event()
        self.prune()
        self._pruner = threading.Thread(target=self._prune_loop, name="event-pruner", daemon=True)
        self._pruner.start()
        # a shared database (PostgreSQL): other nodes append too; follow their head
        self._follower: threading.Thread | None = None
        listen = getattr(storage, "listen", None)
        if listen is not None:
            self._follower = threading.Thread(
                target=listen, args=(NOTIFY_CHANNEL, self._closed, self._follow),
                name="event-follower", daemon=True)
            self._follower.start()

    # -- publishing ---------------------------------------------------------------

    def publish(self, stream: str, body: etree._Element | bytes, key: str | None = None) -> int:
        """Append ``body`` to ``stream`` durably, then wake consumers. Returns the seq.

        ``key``: an idempotency key (EventLog.append_keyed): when an event with this
        key was logged before, nothing is published and 0 is returned."""
        if stream not in self.streams:
            raise ValueError(f"unknown event stream {stream!r}")
        data = body if isinstance(body, bytes) else etree.tostring(body, encoding="utf-8")
        if data.startswith(b"<?xml"):
            data = data[data.index(b"?>") + 2 :].lstrip()
        with self._publish_lock:
            if self._closed.is_set():
                raise RuntimeError("event bus is closed")
            # eventTime never goes backwards, so time order == sequence order
            ts = max(now_ms(), self._last_ms)
            if key is None:
                event = self.log.append_event(stream, ts, data)
            else:
                keyed = self.log.append_keyed(stream, ts, data, key)
                if keyed is None:
                    return 0  # published before (a publisher catching up after a crash)
                event = keyed
            self._last_ms = event.ts_ms
            seq = event.seq
            with self._cond:
                self._recent[seq] = event
                self._recent_order.append(seq)
                self._recent_bytes += _size(event)
                while len(self._recent_order) > 1 and (
                    len(self._recent_order) > self.WINDOW
                    or self._recent_bytes > self.WINDOW_BYTES
                ):
                    old = self._recent.pop(self._recent_order.popleft(), None)
                    if old is not None:
                        self._recent_bytes -= _size(old)
                # another node's later event may already have moved the head on
                self._head = max(self._head, seq)
                self._cond.notify_all()
        return seq

    def logged_keys(self, keys: list[str]) -> set[str]:
        """Which of ``keys`` were published (``publish(key=...)``)."""
        return self.log.logged_keys(keys) if keys else set()

    def adopt_keys(self, keys: list[str]) -> None:
        """Log ``keys`` as published, publishing nothing (EventLog.adopt_keys)."""
        self.log.adopt_keys(keys)

    def forget_keys(self, prefix: str) -> int:
        """Drop the idempotency keys under ``prefix``: nothing publishes under them again."""
        return self.log.forget_keys(prefix)

    def _follow(self, payload: str | None) -> None:
        """A NOTIFY from the shared log (payload: its seq) or a periodic re-read (None).
        Every seq up to the notified one is committed (sequence order = commit order),
        so consumers may read up to it; those not in the window come from the log."""
        if self._closed.is_set():
            return
        try:
            seq = self.log.last_seq() if payload is None else int(payload)
        except (StorageError, ValueError):
            return  # the next notification or poll tries again
        with self._cond:
            if seq > self._head:
                self._head = seq
                self._cond.notify_all()

    # -- reading (used by consumers) ----------------------------------------------

    @property
    def head(self) -> int:
        return self._head

    def events_after(self, seq: int, limit: int = 256) -> list[StoredEvent]:
        """Up to ``limit`` events with sequence number > ``seq``, oldest first."""
        head = self._head
        if seq >= head:
            return []
        first = self._recent.get(seq + 1)
        if first is None:
            # behind the in-memory window (or retention dropped it): read the log
            return self.log.read_after(seq, limit)
        out = [first]
        for s in range(seq + 2, min(head, seq + limit) + 1):
            event = self._recent.get(s)
            if event is None:
                break
            out.append(event)
        return out

    def wait_for_new(self, seq: int, timeout: float | None) -> bool:
        """Block until an event newer than ``seq`` exists (or timeout / close)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._head > seq or self._closed.is_set(), timeout
            ) and not self._closed.is_set()

    def replay(
        self, stream: str | None, start: TimeArg = None, stop: TimeArg = None
    ) -> Iterator[StoredEvent]:
        """Logged events of ``stream`` (None = all) with start <= eventTime <= stop."""
        streams = stream_filter(stream) if stream else None
        return self.log.replay(streams, to_ms(start), to_ms(stop))

    def first_seq_at_or_after(self, start: TimeArg) -> int:
        """Sequence number of the first logged event at or after ``start``."""
        ms = to_ms(start)
        return self.log.first_seq() if ms is None else self.log.first_seq_at_or_after(ms)

    @property
    def log_creation_time(self) -> str:
        return self.log.created

    # -- consumers -----------------------------------------------------------------

    def add_listener(
        self, listener: Callable[[StoredEvent], None], stream: str = NETCONF_STREAM
    ) -> Consumer:
        """Call ``listener`` for every event published from now on, in order, from a
        dedicated thread (a slow listener delays nobody). ``Consumer.close()`` stops it."""
        return self.consume(listener, stream=stream)

    def consume(
        self,
        deliver: Callable[[StoredEvent], None],
        *,
        stream: str = NETCONF_STREAM,
        start_seq: int | None = None,
        **options: Any,
    ) -> Consumer:
        """Start a consumer at ``start_seq`` (first event to deliver; default: the next
        one published). See :class:`Consumer` for the options."""
        consumer = self.make_consumer(deliver, stream=stream, start_seq=start_seq, **options)
        consumer.start()
        return consumer

    def make_consumer(
        self,
        deliver: Callable[[StoredEvent], None],
        *,
        stream: str = NETCONF_STREAM,
        start_seq: int | None = None,
        **options: Any,
    ) -> Consumer:
        """Like :meth:`consume` but not started yet (call ``start()``)."""
        after = self._head if start_seq is None else start_seq - 1
        consumer = Consumer(self, deliver, streams=stream_filter(stream), after=after, **options)
        with self._consumers_lock:
            self._consumers.add(consumer)
        return consumer

    def _forget(self, consumer: Consumer) -> None:
        with self._consumers_lock:
            self._consumers.discard(consumer)

    def consumers(self) -> list[Consumer]:
        with self._consumers_lock:
            return list(self._consumers)

    # -- retention -----------------------------------------------------------------

    def prune(self) -> int:
        days = self.settings.event_retention_days
        count = self.settings.event_retention_count
        removed = self.log.prune(
            days * 86_400 if days and days > 0 else None,
            count if count and count > 0 else None,
        )
        if removed:
            log.info("event log retention removed %d events", removed)
        return removed

    def _prune_loop(self) -> None:
        while not self._closed.wait(self.PRUNE_INTERVAL):
            try:
                self.prune()
            except Exception:  # keep pruning on the next tick; never kill the bus
                log.exception("event log pruning failed")

    def close(self) -> None:
        if self._closed.is_set():
            return
        with self._publish_lock:
            self._closed.set()
        with self._cond:
            self._cond.notify_all()
        for consumer in self.consumers():
            consumer.close(wait=True)
        self._pruner.join(timeout=5)
        if self._follower is not None:
            self._follower.join(timeout=5)
        self.log.close()


def _size(event: StoredEvent) -> int:
    return len(event.body) + len(event.notification)
