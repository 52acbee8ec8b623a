"""Active/standby: one leader among the escnc nodes sharing a database (issue 18).

:class:`~escnc.cluster.elector.LeaderElector` holds a lease row with a fencing token
(:mod:`escnc.cluster.lease`), renews it on its own thread and demotes itself before
the lease can expire anywhere else; :class:`~escnc.cluster.fence.Fence` is what write
paths check. See docs/ha.md. Imports only escnc.storage.
"""

from escnc.cluster.clock import Clock, MonotonicClock
from escnc.cluster.elector import ElectionTimings, LeaderElector
from escnc.cluster.errors import ClusterError, NotLeader
from escnc.cluster.fence import Fence, FenceSlot, SingleNodeFence

__all__ = [
    "Clock",
    "ClusterError",
    "ElectionTimings",
    "Fence",
    "FenceSlot",
    "LeaderElector",
    "MonotonicClock",
    "NotLeader",
    "SingleNodeFence",
]
