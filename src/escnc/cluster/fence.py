"""Fences: what every write path checks before it acts.

``check()`` is local and cheap (no I/O): it fails as soon as this node's lease term
ended -- demoted, or the renew deadline passed even if the renew call is still stuck.
``check_in(conn)`` is the storage-level fence: inside the caller's write transaction
it compares the lease row's token with ours (and share-locks the row on PostgreSQL),
so a write from a leader that was already replaced cannot commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from escnc.cluster.errors import NotLeader
from escnc.storage import Connection

if TYPE_CHECKING:
    from escnc.cluster.elector import LeaderElector


class FenceLike(Protocol):
    def check(self) -> int: ...

    def check_in(self, conn: Connection) -> int: ...


class Fence:
    """The fence of one node's elector (tokens come from the lease row)."""

    def __init__(self, elector: LeaderElector) -> None:
        self._elector = elector

    @property
    def token(self) -> int | None:
        """Our fencing token while we lead, else None."""
        return self._elector.valid_token()

    def check(self) -> int:
        """Our fencing token; raises NotLeader unless this node leads right now."""
        token = self._elector.valid_token()
        if token is None:
            raise NotLeader("this node is not the leader", self._elector.leader_address())
        return token

    def check_in(self, conn: Connection) -> int:
        """check(), then verify the token against the lease row inside ``conn``'s open
        write transaction (call it first thing in the transaction)."""
        token = self.check()
        current, _ = self._elector.store.current_token(conn)
        if current != token:
            raise NotLeader(f"fencing token {token} is stale (lease is at {current})",
                            self._elector.leader_address())
        return token


class SingleNodeFence:
    """No cluster (SQLite, one node): always the leader, token 0."""

    token = 0

    def check(self) -> int:
        return 0

    def check_in(self, conn: Connection) -> int:
        return 0


class FenceSlot:
    """A fence for what is built before the node joins the cluster (the datastore,
    the stores): it refuses every write until :meth:`bind` gives it the elector's
    fence -- a node that has not joined yet is not the leader -- and then delegates."""

    def __init__(self) -> None:
        self._target: FenceLike | None = None

    def bind(self, fence: FenceLike) -> None:
        self._target = fence

    @property
    def token(self) -> int | None:
        target = self._target
        return getattr(target, "token", None) if target is not None else None

    def check(self) -> int:
        if self._target is None:
            raise NotLeader("this node has not joined the cluster yet", "")
        return self._target.check()

    def check_in(self, conn: Connection) -> int:
        if self._target is None:
            raise NotLeader("this node has not joined the cluster yet", "")
        return self._target.check_in(conn)
