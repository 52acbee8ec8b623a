"""VM maintenance (ESC's "day-2" operations on deployed VMs), one module per concept,
behind one facade for operations/.

* engine/resize.py: resize with confirm/revert (and a cold migration's confirm/revert)
* engine/migration.py: live and cold migration
* engine/snapshots.py: backup (SNAPSHOT/EXPORT), snapshot delete, in-place restore
* engine/volumes.py: volume from a snapshot

Each operation is validated synchronously (an RPC refused with rpc-error never emits
events), then runs as a job on the engine's per-deployment queue, so it never
overlaps another job of the same deployment. Every concept gets a
:class:`~escnc.engine.maintenance_link.MaintenanceContext` (the engine link, the
maintenance store, the settings) and talks to its VIMs through the engine's driver (vim/driver.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lxml import etree

from escnc.engine.maintenance_link import EngineLink, MaintenanceContext
from escnc.engine.maintenance_store import Day2Store, SnapshotRecord
from escnc.engine.migration import Migrations
from escnc.engine.resize import Resizes
from escnc.engine.snapshots import Snapshots
from escnc.engine.volumes import Volumes
from escnc.ns import ESC, qn

if TYPE_CHECKING:
    from escnc.engine.model import FlavorSpec
    from escnc.engine.store import VmRecord
    from escnc.services import Services


class Maintenance:
    def __init__(self, services: Services) -> None:
        self.settings = services.settings
        self.link = EngineLink(services)
        self.store = Day2Store(services.settings.state_dir / "day2.sqlite3",
                               database=services.settings.database)
        ctx = MaintenanceContext(self.link, self.store, services.settings)
        self.migrations = Migrations(ctx)
        self.resizes = Resizes(ctx, self.migrations)
        self.snapshots = Snapshots(ctx)
        self.volumes = Volumes(ctx, self.snapshots)

    def close(self) -> None:
        self.store.close()

    def state(self) -> list[etree._Element]:
        root = etree.Element(qn(ESC, "esc_datamodel"), nsmap={None: ESC})  # type: ignore[dict-item]
        root.append(self.store.opdata())
        return [root]

    # -- resize (engine hooks) -----------------------------------------------------------

    def resize_in_progress(self, vm_name: str) -> bool:
        return self.resizes.resize_in_progress(vm_name)

    def resize_hook(self, job: Any, vm: VmRecord, old: FlavorSpec, new: FlavorSpec) -> None:
        self.resizes.resize_hook(job, vm, old, new)

    def confirm_hook(self, job: Any, vm: VmRecord) -> None:
        self.resizes.confirm_hook(job, vm)

    def revert_hook(self, job: Any, vm: VmRecord) -> None:
        self.resizes.revert_hook(job, vm)

    # -- RPCs ----------------------------------------------------------------------------

    def migrate(self, vm_name: str, migration_type: str, block: bool, host: str | None) -> None:
        self.migrations.migrate(vm_name, migration_type, block, host)

    def backup(self, vm_name: str, name: str, action: str) -> str:
        return self.snapshots.backup(vm_name, name, action)

    def resolve_snapshot(self, ref: str) -> SnapshotRecord:
        return self.snapshots.resolve_snapshot(ref)

    def delete_snapshot(self, ref: str) -> None:
        self.snapshots.delete_snapshot(ref)

    def revert_to_snapshot(self, vm_name: str, ref: str) -> None:
        self.snapshots.revert_to_snapshot(vm_name, ref)

    def create_volume(
        self, ref: str, name: str, volume_type: str, multiattach: bool, bootable: bool
    ) -> str:
        return self.volumes.create_volume(ref, name, volume_type, multiattach, bootable)
