"""Capacity and reservations after ETSI NFV IFA 005 / OPNFV Promise (seed 003):
compute, network and storage capacity per zone, reservations, subscriptions.

* ``model.py``: amounts, resource types and their units, figures;
* ``zones.py``: zones (operator configuration) and host usage from the snapshot;
* ``records.py``: reservations, subscriptions and their store;
* ``admission.py``: does a VM, a resize or a reservation fit (overcommit ratios,
  reservations);
* ``validation.py``: the validator's checks of a commit;
* ``subscriptions.py``, ``events.py``: thresholds and notifications;
* ``manager.py``: the host snapshot, reservation lifecycle and placement hooks.

The RPC faces are ``operations/capacity_api.py`` (the seed's JSON shapes),
``operations/esc_capacity.py`` (NETCONF) and ``operations/capacity_rest.py``.
"""

from escnc.engine.capacity.manager import CapacityManager

__all__ = ["CapacityManager"]
