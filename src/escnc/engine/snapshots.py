"""Snapshots: backup (vmBackupAction SNAPSHOT/EXPORT), snapshot delete, in-place restore.

* backup: VM_BACKUP_INIT, VM_BACKUP_CREATED, VM_BACKUP_COMPLETE (an EXPORT also
  registers the exported disk as an image, in place).
* snapshot delete: VM_SNAPSHOT_DELETING, VM_SNAPSHOT_DELETED.
* in-place restore (escnc extension): VM_SNAPSHOT_REVERT_INIT, VM_SNAPSHOT_REVERTED,
  then VM_ALIVE when the restored VM runs.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from lxml import etree

from escnc.engine import states
from escnc.engine.errors import Conflict, Refused
from escnc.engine.maintenance_link import MaintenanceContext
from escnc.engine.maintenance_store import SnapshotRecord, now_iso
from escnc.engine.store import VmRecord
from escnc.errors import RpcError, RpcErrors
from escnc.ns import ESC, NC, qn
from escnc.vim import snapshots as vim_snapshots
from escnc.vim import volumes as vim_volumes
from escnc.vim.domains import DomainOpError, run_polled
from escnc.vim.driver import VimError, error_text

BACKUP_STATES = (states.VM_ALIVE, states.VM_STOPPED)
IMAGE_NAME = re.compile(r"[^/\s]+")  # the YANG name-type of images/image/name


class Snapshots:
    def __init__(self, ctx: MaintenanceContext) -> None:
        self.ctx = ctx
        self.link = ctx.link
        self.store = ctx.store
        self.driver = ctx.link.driver

    def backup(self, vm_name: str, name: str, action: str) -> str:
        """vmBackupAction SNAPSHOT|EXPORT; returns the generated snapshot id."""
        vm = self.link.require_vm(vm_name)
        self.link.engine.check_vm_operation(vm, f"vmBackupAction {action}")
        if vm.state not in BACKUP_STATES:
            raise Refused(
                f"VM [{vm_name}] is in {vm.state}: a backup needs VM_ALIVE_STATE "
                "or VM_STOPPED_STATE"
            )
        if len(name) > vim_snapshots.MAX_NAME_LEN:
            raise RpcError(
                "invalid-value",
                "Snapshot names must be at most 255 characters",
                info={"bad-element": "backupName"},
            )
        if action == "EXPORT":
            self._check_image_name(name)
        snap_id = str(uuid.uuid4())
        host = self.link.host(vm.host)
        self.store.put_snapshot(
            SnapshotRecord(
                id=snap_id,
                name=name,
                vm_name=vm_name,
                host=vm.host,
                hostname=host.hostname(),
                tenant=vm.tenant,
                deployment=vm.deployment,
                kind=action,
                creation_start_date=now_iso(),
                status="creating",
                status_message=f"Snapshot image for [{vm_name}] is being created.",
            )
        )
        self.link.submit(
            self.ctx.key(vm),
            f"backup {vm_name}",
            lambda job: self._backup(snap_id),
            on_cancel=lambda: self._backup_cancelled(snap_id, vm),
        )
        return snap_id

    def _backup_cancelled(self, snap_id: str, vm: VmRecord) -> None:
        """An undeploy dropped the queued backup: the request ends as a failure."""
        message = "cancelled by undeploy"
        self.store.update_snapshot(
            snap_id, status="error", status_message=message, creation_end_date=now_iso()
        )
        self.link.publish("VM_BACKUP_COMPLETE", vm, failure=True, message=message)

    def _check_image_name(self, name: str) -> None:
        """An EXPORT registers an image named after the backup: the name must be a
        valid image name that no image (nor another EXPORT under way) has."""
        if not IMAGE_NAME.fullmatch(name):
            raise RpcError(
                "invalid-value",
                f"backupName [{name}] is not a valid image name (an EXPORT registers "
                "an image of that name): no whitespace and no slash",
                info={"bad-element": "backupName"},
            )
        exporting = any(
            r.kind == "EXPORT" and r.name == name and r.status == "creating"
            for r in self.store.snapshots()
        )
        if exporting or name in self.link.image_names():
            raise RpcError(
                "data-exists",
                f"Image [{name}] already exists: an EXPORT registers an image named "
                "after backupName; choose another name",
                info={"bad-element": "backupName"},
            )

    def _register_export(self, name: str, vol: vim_volumes.VolumeInfo, fmt: str) -> str:
        """Add the exported volume as image ``name`` to the configuration and wait
        for the engine to register it (in place, no copy); its registration message."""
        config = etree.fromstring(
            f"""<config xmlns="{NC}"><esc_datamodel xmlns="{ESC}"><images><image>
            <name></name><src></src><disk_format></disk_format>
            <persistent>false</persistent></image></images></esc_datamodel></config>"""
        )
        for leaf, value in (("name", name), ("src", vol.path), ("disk_format", fmt)):
            next(config.iter(qn(ESC, leaf))).text = value
        try:
            self.ctx.services.datastore.system_edit(config)
        except (RpcError, RpcErrors) as exc:
            raise RpcError(
                "operation-failed", f"image {name} not added to the configuration: {exc}"
            ) from exc
        return self.link.wait_image(name, self.ctx.poll("snapshot")[1])

    def _backup(self, snap_id: str) -> None:
        rec = self.store.snapshot(snap_id)
        vm = self.link.vm(rec.vm_name) if rec else None
        if rec is None or vm is None:
            return
        self.link.publish("VM_BACKUP_INIT", vm, message=f"Snapshot [{rec.name}] requested")
        poll, timeout = self.ctx.poll("snapshot")
        drv, host = self.driver, vm.host
        try:
            run_polled(
                lambda: drv.create_snapshot(host, vm.generated_name, snap_id, rec.name),
                poll_secs=poll,
                timeout_secs=timeout,
                what=f"snapshot {rec.name}",
                on_late_result=lambda _i: drv.delete_snapshot(host, vm.generated_name, snap_id),
            )
            self.store.update_snapshot(snap_id, volume_snapshot_id=f"{snap_id}/vda")
            self.link.publish(
                "VM_BACKUP_CREATED", vm, status_code=202, message="Snapshot is now active."
            )
            message = f"Snapshot image for [{vm.generated_name}] is active."
            if rec.kind == "EXPORT":
                vol = run_polled(
                    lambda: drv.copy_disk_to_volume(
                        host,
                        vm.generated_name,
                        f"image-{rec.name}-{snap_id[:8]}.qcow2",
                        snapshot_id=snap_id,
                    ),
                    poll_secs=poll,
                    timeout_secs=timeout,
                    what=f"export {rec.name}",
                )
                self.store.update_snapshot(snap_id, image_volume=f"{vol.pool}/{vol.name}")
                message += f" Exported to volume {vol.pool}/{vol.name} ({vol.path})."
                fmt = drv.volume_format(host, vol) or "qcow2"
                registered = self._register_export(rec.name, vol, fmt)
                message += f" Registered as image [{rec.name}]: {registered}."
        except (DomainOpError, RpcError, VimError) as exc:
            self.store.update_snapshot(
                snap_id, status="error", status_message=error_text(exc), creation_end_date=now_iso()
            )
            self.link.publish(
                "VM_BACKUP_COMPLETE",
                vm,
                failure=True,
                message=f"Snapshot [{rec.name}] failed: {error_text(exc)}",
            )
            return
        self.store.update_snapshot(
            snap_id, status="active", status_message=message, creation_end_date=now_iso()
        )
        self.link.publish("VM_BACKUP_COMPLETE", vm, message=message)

    def resolve_snapshot(self, ref: str) -> SnapshotRecord:
        """A snapshot by id, else by name (which must then be unique)."""
        rec = self.store.snapshot(ref)
        if rec is not None:
            return rec
        named = [r for r in self.store.snapshots() if r.name == ref]
        if not named:
            raise RpcError(
                "data-missing",
                f"Snapshot image [{ref}] not found.",
                app_tag="404",
                info={"bad-element": "snapshot"},
            )
        if len(named) > 1:
            ids = ", ".join(r.id for r in named)
            raise RpcError(
                "invalid-value",
                f"Snapshot name [{ref}] is not unique ({len(named)} snapshots: "
                f"{ids}); give the snapshot id instead",
                info={"bad-element": "snapshot"},
            )
        return named[0]

    def delete_snapshot(self, ref: str) -> None:
        rec = self.resolve_snapshot(ref)
        if rec.status in ("creating", "deleting"):
            raise Conflict(f"Snapshot [{rec.id}] is {rec.status}")
        self.store.update_snapshot(rec.id, status="deleting")
        vm = self.link.vm(rec.vm_name)
        key = self.ctx.key(vm) if vm else ("snapshot", rec.id)
        self.link.submit(
            key,
            f"delete snapshot {rec.id}",
            lambda job: self._delete(rec),
            # dropped by an undeploy: the delete still runs, on its own queue
            on_cancel=lambda: self.link.submit(
                ("snapshot", rec.id), f"delete snapshot {rec.id}", lambda job: self._delete(rec)
            ),
        )

    def _snapshot_vm(self, rec: SnapshotRecord) -> VmRecord:
        vm = self.link.vm(rec.vm_name)
        if vm is not None:
            return vm
        from escnc.engine.store import VmRecord as Record

        # the VM is gone (undeployed): events still name it as it was
        return Record(rec.vm_name, "", rec.tenant, rec.deployment, "", 0, rec.host, "")

    def _delete(self, rec: SnapshotRecord) -> None:
        vm = self._snapshot_vm(rec)
        self.link.publish(
            "VM_SNAPSHOT_DELETING", vm, message=f"Snapshot image [{rec.id}] is being deleted."
        )
        poll, timeout = self.ctx.poll("snapshot")
        try:
            drv, host = self.driver, vm.host
            self.link.host(host)  # not configured any more: an rpc-error naming it
            if drv.has_snapshot(host, vm.generated_name, rec.id):
                run_polled(
                    lambda: drv.delete_snapshot(host, vm.generated_name, rec.id),
                    poll_secs=poll,
                    timeout_secs=timeout,
                    what=f"delete of {rec.id}",
                )
            if rec.image_volume:
                pool, _, vol = rec.image_volume.partition("/")
                if drv.volume_exists(host, pool, vol):
                    drv.delete_volume(host, pool, vol)
        except (DomainOpError, RpcError, VimError) as exc:
            self.store.update_snapshot(rec.id, status="error", status_message=error_text(exc))
            self.link.publish(
                "VM_SNAPSHOT_DELETED",
                vm,
                failure=True,
                message=f"Snapshot image [{rec.id}] delete failed: {error_text(exc)}",
            )
            return
        self.store.delete_snapshot(rec.id)
        self.link.publish(
            "VM_SNAPSHOT_DELETED", vm, message=f"Snapshot image [{rec.id}] has been deleted."
        )

    def revert_to_snapshot(self, vm_name: str, ref: str) -> None:
        vm = self.link.require_vm(vm_name)
        self.link.engine.check_vm_operation(vm, "vmRevertSnapshot")
        rec = self.resolve_snapshot(ref)
        if rec.vm_name != vm_name:
            raise RpcError(
                "invalid-value",
                f"Snapshot [{rec.id}] was taken from [{rec.vm_name}], not [{vm_name}]",
                info={"bad-element": "snapshot"},
            )
        if rec.status != "active":
            raise Conflict(f"Snapshot [{rec.id}] is {rec.status}")
        self.ctx.require_not_busy(vm)
        self.link.submit(
            self.ctx.key(vm),
            f"restore {vm_name}",
            lambda job: self._restore(job, vm_name, rec),
            on_cancel=lambda: self.ctx.cancelled("VM_SNAPSHOT_REVERTED", vm),
        )

    def _restore(self, job: Any, vm_name: str, rec: SnapshotRecord) -> None:
        vm = self.link.vm(vm_name)
        if vm is None:
            return
        self.link.publish(
            "VM_SNAPSHOT_REVERT_INIT", vm, message=f"Revert to snapshot [{rec.id}] started"
        )
        self.link.update_vm(vm_name, monitoring=False)
        try:
            self.link.host(vm.host)  # not configured: an rpc-error naming it
            self.driver.revert_snapshot(vm.host, vm_name, rec.id)
        except (DomainOpError, RpcError, VimError) as exc:
            self.link.update_vm(vm_name, monitoring=vm.monitoring)
            self.link.publish(
                "VM_SNAPSHOT_REVERTED",
                vm,
                failure=True,
                message=f"Revert to snapshot [{rec.id}] failed: {error_text(exc)}",
            )
            return
        self.link.publish(
            "VM_SNAPSHOT_REVERTED", vm, message=f"VM reverted to snapshot [{rec.id}] ({rec.name})"
        )
        self.link.settle(job, vm)
