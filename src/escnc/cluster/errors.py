"""Errors of the cluster layer (operations/ turns NotLeader into a not-leader rpc-error)."""

from __future__ import annotations


class ClusterError(Exception):
    """A cluster operation failed."""


class NotLeader(ClusterError):
    """This node is not (or no longer) the leader; ``leader`` is the leader's address
    as far as this node knows (None: unknown, e.g. during a failover)."""

    def __init__(self, message: str, leader: str | None = None) -> None:
        super().__init__(message)
        self.leader = leader
