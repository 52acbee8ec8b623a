"""Extension points for VM maintenance (resize, migration, snapshots, volumes).

The maintenance modules (engine/maintenance.py) fill these at import/registration time::

    engine.hooks.vm_actions["CONFIRM_RESIZE"] = handler   # handler(engine, job, vm)
    engine.hooks.resize = handler   # handler(engine, job, vm, old_flavor, new_flavor)

``vm_actions`` handlers run as jobs on the VM's deployment queue after vmAction has
checked the VM exists (and, for CONFIRM_RESIZE/REVERT_RESIZE, that it is in
VM_VERIFY_RESIZE_STATE). ``resize`` runs inside an update job, after
SERVICE_UPDATED, for each VM whose group's flavor changed; without a resize handler
the new flavor is written to the domain definition and applies at the next start.
Handlers publish their own events (``engine.publish``) and must end with exactly
one terminal event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from escnc.engine.jobs import Job
    from escnc.engine.model import FlavorSpec
    from escnc.engine.store import VmRecord

VmActionHandler = Callable[[Any, "Job", "VmRecord"], None]
ResizeHandler = Callable[[Any, "Job", "VmRecord", "FlavorSpec", "FlavorSpec"], None]


@dataclass
class MaintenanceHooks:
    vm_actions: dict[str, VmActionHandler] = field(default_factory=dict)
    resize: ResizeHandler | None = None
