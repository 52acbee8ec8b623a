"""Password logins, the same for every northbound (SSH, HTTP Basic).

:class:`AuthPenalty` - failed password logins per source address: each recent failure
doubles the delay before a failed attempt is answered (up to a cap), so guessing from
one address slows down however many connections it opens. Success is never delayed.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class AuthPenalty:
    """Failed password attempts per source address within ``window`` seconds."""

    def __init__(self, base: float, cap: float, window: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base = max(0.0, base)
        self.cap = max(self.base, cap)
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, host: str, now: float) -> deque[float]:
        q = self._failures.get(host)
        if q is None:
            return deque()
        while q and now - q[0] > self.window:
            q.popleft()
        if not q:
            del self._failures[host]
        return q

    def delay(self, host: str) -> float:
        """How long the next failed attempt from ``host`` is held back."""
        with self._lock:
            n = len(self._recent(host, self._clock()))
        return min(self.cap, self.base * (2 ** min(n, 32)))

    def failed(self, host: str) -> None:
        with self._lock:
            now = self._clock()
            self._recent(host, now)
            q = self._failures.setdefault(host, deque())
            q.append(now)
            if len(q) > 64:  # enough to reach the cap; bounded memory per host
                q.popleft()
            if len(self._failures) > 10_000:  # bounded memory across hosts
                self._failures.pop(next(iter(self._failures)))
