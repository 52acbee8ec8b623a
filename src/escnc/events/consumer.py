"""One reader of the event log, with its own thread and cursor.

A consumer delivers events in sequence order, skipping those of other streams or
rejected by its content filter. It never holds up the publisher: if it is slow it
simply falls behind and reads older events from SQLite. Optional pieces:

* ``replay_until`` / ``on_replay_complete``: RFC 5277 replayComplete once every
  event up to that sequence number has been handled;
* ``stop_ms`` / ``on_end("complete")``: RFC 5277 stopTime;
* ``backlog`` / ``max_backlog``: transport-side queue depth; delivery pauses while
  it is above ``max_backlog`` (a client that stops reading) ...
* ``max_lag`` / ``on_end("lagging")``: ... and the consumer gives up once more than
  ``max_lag`` events published after it started are still unhandled (a replay that
  starts far back is not "lagging"). Nothing is lost: the client resumes with a
  replay from the last eventTime it received.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from escnc.events.log import StoredEvent, now_ms

if TYPE_CHECKING:
    from escnc.events.bus import EventBus

log = logging.getLogger(__name__)

BATCH = 256
IDLE_WAIT = 1.0  # seconds between lag/stop checks when nothing happens


class Consumer:
    def __init__(
        self,
        bus: EventBus,
        deliver: Callable[[StoredEvent], None],
        *,
        streams: Sequence[str] | None = None,
        after: int = 0,
        accept: Callable[[StoredEvent], bool] | None = None,
        stop_ms: int | None = None,
        replay_until: int | None = None,
        on_replay_complete: Callable[[], None] | None = None,
        on_end: Callable[[str], None] | None = None,
        max_lag: int | None = None,
        backlog: Callable[[], int] | None = None,
        max_backlog: int = 256,
        name: str = "event-consumer",
    ) -> None:
        self.bus = bus
        self.deliver = deliver
        self.streams = frozenset(streams) if streams else None
        self.seq = after  # last sequence number handled
        # a replaying consumer starts far behind on purpose: lag counts from here
        self.lag_base = bus.head
        self.accept = accept
        self.stop_ms = stop_ms
        self.replay_until = replay_until
        self.on_replay_complete = on_replay_complete
        self.on_end = on_end
        self.max_lag = max_lag
        self.backlog = backlog
        self.max_backlog = max_backlog
        self.delivered = 0
        self.last_event_time: str | None = None
        self.end_reason: str | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def lag(self) -> int:
        """Events published since this consumer started that it has not handled."""
        return self.bus.head - max(self.seq, self.lag_base)

    def close(self, wait: bool = False) -> None:
        self._closed.set()
        with self.bus._cond:  # wake the thread if it is waiting for events
            self.bus._cond.notify_all()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    # -- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:
            log.exception("event consumer %s failed", self._thread.name)
            self._end("error")
        finally:
            self.bus._forget(self)

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._check_replay_complete()
            batch = self.bus.events_after(self.seq, BATCH)
            if not batch:
                if self._stop_time_passed():
                    self._end("complete")
                    return
                self.bus.wait_for_new(self.seq, self._wait_timeout())
                continue
            for event in batch:
                if self._closed.is_set():
                    return
                if self.stop_ms is not None and event.ts_ms > self.stop_ms:
                    self.seq = event.seq - 1
                    self._check_replay_complete(force=True)
                    self._end("complete")
                    return
                if not self._wait_for_transport():
                    return
                self.seq = event.seq
                if self._wants(event):
                    self._deliver(event)
                self._check_replay_complete()

    def _wants(self, event: StoredEvent) -> bool:
        if self.streams is not None and event.stream not in self.streams:
            return False
        if self.accept is None:
            return True
        try:
            return self.accept(event)
        except Exception:
            log.exception("event filter failed on event %d", event.seq)
            return False

    def _deliver(self, event: StoredEvent) -> None:
        try:
            self.deliver(event)
        except Exception:
            # an in-process listener's bug must not stop the stream for it
            log.exception("event delivery failed for event %d", event.seq)
            return
        self.delivered += 1
        self.last_event_time = event.event_time

    def _wait_for_transport(self) -> bool:
        """Pause while the transport queue is full; give up when too far behind."""
        while True:
            if self._closed.is_set():
                return False
            if self.max_lag is not None and self.lag > self.max_lag:
                self._end("lagging")
                return False
            if self.backlog is None or self.backlog() <= self.max_backlog:
                return True
            time.sleep(0.002)

    def _check_replay_complete(self, force: bool = False) -> None:
        if self.replay_until is None:
            return
        if force or self.seq >= self.replay_until:
            self.replay_until = None
            if self.on_replay_complete is not None:
                self.on_replay_complete()

    def _stop_time_passed(self) -> bool:
        if self.stop_ms is None or now_ms() <= self.stop_ms:
            return False
        # an event stamped before stopTime may still be committing: wait for it
        with self.bus._publish_lock:
            pass
        return self.bus.head <= self.seq

    def _wait_timeout(self) -> float:
        if self.stop_ms is None:
            return IDLE_WAIT
        return max(0.001, min(IDLE_WAIT, (self.stop_ms - now_ms()) / 1000 + 0.002))

    def _end(self, reason: str) -> None:
        if self.end_reason is not None:
            return
        self.end_reason = reason
        self._closed.set()
        if self.on_end is not None:
            try:
                self.on_end(reason)
            except Exception:
                log.exception("event consumer end callback failed")
