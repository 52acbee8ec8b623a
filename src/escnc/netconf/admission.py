"""Who may connect and log in, and how fast: fairness between clients.

* :class:`StartupGate` - connections that have not authenticated yet. Like OpenSSH's
  ``MaxStartups begin:rate:full``: below ``begin`` every connection is accepted, from
  ``begin`` on a new one is dropped with probability ``rate`` % rising linearly to 100 %
  at ``full``; and at most ``per_source`` of them from one address, so a flood of silent
  connections from one host neither fills the table nor locks out other hosts.
* :class:`AuthPenalty` - failed password logins per source address (in escnc.rpc.auth:
  HTTP Basic shares it).
* :func:`session_refusal` - session slots: per user, and some kept for the recovery user
  so one account cannot take every slot.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from escnc.rpc.auth import AuthPenalty

__all__ = ["AuthPenalty", "StartupGate", "session_refusal"]


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
