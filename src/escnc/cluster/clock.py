"""The cluster's clock: monotonic seconds for lease deadlines (injectable in tests).

Only durations measured on one node are compared (never two nodes' clocks): a lease is
taken over when its version has not changed for the lease duration as *this* node saw
it. Same shape as escnc.engine.clock, so its ManualClock fits.
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


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    def wait_until(self, deadline: float, stop: threading.Event) -> bool:
        return stop.wait(max(0.0, deadline - time.monotonic()))
