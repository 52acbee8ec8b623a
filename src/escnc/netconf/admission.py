"""Who may connect and log in, and how fast: fairness between clients.

* :class:`StartupGate` - connections that have not authenticated yet. Like OpenSSH's
  ``MaxStartups begin:rate:full``: below ``begin`` every connection is accepted, from
  ``begin`` on a new one is dropped with probability ``rate`` % rising linearly to 100 %
  at ``full``; and at most ``per_source`` of them from one address, so a flood of silent
  connections from one host neither fills the table nor locks out other hosts.
* :class:`AuthPenalty` - failed password logins per source address: each recent failure
  doubles the delay before a failed attempt is answered (up to a cap), so guessing from
  one address slows down however many connections it opens. Success is never delayed.
* :func:`session_refusal` - session slots: per user, and some kept for the recovery user
  so one account cannot take every slot.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class StartupGate:
    begin: int
    rate: int  # percent, at ``begin``
    full: int
    per_source: int  # 0: no per-source limit
    rand: Callable[[], float] = random.random
    _total: int = 0
    _by_host: dict[str, int] = field(default_factory=dict)

    def refusal(self, host: str) -> str | None:
        """Why a new connection from ``host`` is refused, or None (then it is counted:
        call :meth:`release` when it authenticates or ends)."""
        full = max(1, self.full)
        begin = min(max(1, self.begin), full)
        if self._total >= full:
            return f"{self._total} connections not yet authenticated (max-startups)"
        if self.per_source > 0 and self._by_host.get(host, 0) >= self.per_source:
            return (f"{self._by_host[host]} connections from it not yet authenticated "
                    "(max-startups-per-source)")
        if self._total >= begin:
            # linear from rate% at begin to 100% at full
            span = max(1, full - begin)
            p = self.rate / 100 + (1 - self.rate / 100) * (self._total - begin) / span
            if self.rand() < p:
                return (f"{self._total} connections not yet authenticated: random early "
                        f"drop ({p:.0%}, max-startups {begin}:{self.rate}:{full})")
        self._total += 1
        self._by_host[host] = self._by_host.get(host, 0) + 1
        return None

    def release(self, host: str) -> None:
        self._total -= 1
        left = self._by_host.get(host, 0) - 1
        if left > 0:
            self._by_host[host] = left
        else:
            self._by_host.pop(host, None)

    @property
    def total(self) -> int:
        return self._total


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


def session_refusal(user: str, sessions_by_user: dict[str, int], *, max_sessions: int,
                    per_user: int, reserved: int, recovery_user: str) -> str | None:
    """Why ``user`` may not open one more session, or None."""
    total = sum(sessions_by_user.values())
    if total >= max_sessions:
        return f"{total} sessions (max-sessions)"
    mine = sessions_by_user.get(user, 0)
    if per_user > 0 and mine >= per_user and user != recovery_user:
        return f"user already has {mine} sessions (max-sessions-per-user)"
    if user != recovery_user and total >= max_sessions - max(0, reserved):
        return (f"{total} sessions; the last {reserved} are kept for the recovery user "
                f"{recovery_user!r} (reserved-sessions)")
    return None
