"""A standby serves reads only (issue 18, docs/ha.md): the one check, for every
request of every northbound (NETCONF and HTTP reach it through rpc/request.py).

What a standby may run is an allow-list of read operations, so an RPC added later is
refused on a standby until someone decides it only reads. ``validate`` is not on it:
the engine's semantic checks (images, flavors, VIM connectors) are the leader's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from lxml import etree

from escnc.cluster import NotLeader
from escnc.errors import RpcError
from escnc.ns import ESC, MONITORING, NC, NOTIF
from escnc.rpc.errors import NOT_LEADER

NMDA = "urn:ietf:params:xml:ns:yang:ietf-netconf-nmda"

READS: frozenset[tuple[str, str]] = frozenset(
    {
        (NC, "get"),
        (NC, "get-config"),
        (NC, "close-session"),
        (NC, "kill-session"),  # sessions are this node's own
        (NC, "unlock"),  # releasing a lock taken before a failover changes nothing
        (NMDA, "get-data"),
        (MONITORING, "get-schema"),
        (NOTIF, "create-subscription"),  # the event log is shared
        (ESC, "get-rollback-history"),
        *((ESC, f"query{k}{what}") for k in ("Compute", "Network", "Storage")
          for what in ("Capacity", "Reservation")),
    }
)


class FenceCheck(Protocol):
    def check(self) -> int: ...


def is_read(namespace: str | None, name: str) -> bool:
    return (namespace or "", name) in READS


def not_leader_error(exc: NotLeader) -> RpcError:
    """The rpc-error a write gets on a node that does not lead: operation-failed,
    app-tag not-leader, the leader's address (when known) in error-info."""
    leader = exc.leader or ""
    where = f"; the leader is {leader}" if leader else "; no leader is known right now"
    info: list[etree._Element] = []
    if leader:
        el = etree.Element(f"{{{ESC}}}leader", nsmap={"esc": ESC})
        el.text = leader
        info.append(el)
    return RpcError("operation-failed", f"this escnc node is a standby{where}",
                    app_tag=NOT_LEADER, info_elements=info)


def check_write(fence: FenceCheck | None, namespace: str | None, name: str) -> None:
    """Raise the not-leader RpcError unless ``name`` only reads or this node leads."""
    if fence is None or is_read(namespace, name):
        return
    try:
        fence.check()
    except NotLeader as exc:
        raise not_leader_error(exc) from None


def commit_fence(fence: FenceCheck) -> Callable[[etree._Element], None]:
    """A datastore validator checking the fence just before a commit is accepted
    (engine writes included): a term that ended since the request was admitted does
    not commit."""

    def check(_tree: etree._Element) -> None:
        try:
            fence.check()
        except NotLeader as exc:
            raise not_leader_error(exc) from None

    return check
