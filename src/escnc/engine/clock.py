"""The engine's clock for periodic work (the reconcile tick).

:class:`SystemClock` is real time. :class:`ManualClock` moves only when a test
calls :meth:`ManualClock.advance`, so a test runs N reconcile ticks without
sleeping N seconds.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def wait_until(self, deadline: float, stop: threading.Event) -> bool:
        """Block until ``now() >= deadline`` or ``stop`` is set; True when stopped."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def wait_until(self, deadline: float, stop: threading.Event) -> bool:
        return stop.wait(max(0.0, deadline - time.monotonic()))


class ManualClock:
    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._cond = threading.Condition()
        self._stops: list[threading.Event] = []

    def now(self) -> float:
        with self._cond:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._now += seconds
            self._cond.notify_all()

    def release(self) -> None:
        """Wake every waiter (a stopping engine)."""
        with self._cond:
            self._cond.notify_all()

    def wait_until(self, deadline: float, stop: threading.Event) -> bool:
        with self._cond:
            while self._now < deadline and not stop.is_set():
                self._cond.wait(0.1)
            return stop.is_set()
