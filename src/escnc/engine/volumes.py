"""Volumes from snapshots: VM_VOLUME_ACCEPTED_EVENT, VM_VOLUME_CREATED_EVENT."""

from __future__ import annotations

import uuid

from escnc.engine.errors import Conflict
from escnc.engine.maintenance_link import MaintenanceContext
from escnc.engine.maintenance_store import SnapshotRecord, VolumeRecord
from escnc.engine.snapshots import Snapshots
from escnc.engine.store import VmRecord
from escnc.errors import RpcError
from escnc.vim.domains import DomainOpError, run_polled
from escnc.vim.driver import VimError, error_text


class Volumes:
    def __init__(self, ctx: MaintenanceContext, snapshots: Snapshots) -> None:
        self.ctx = ctx
        self.link = ctx.link
        self.store = ctx.store
        self.driver = ctx.link.driver
        self.snapshots = snapshots

    def create_volume(
        self, ref: str, name: str, volume_type: str, multiattach: bool, bootable: bool
    ) -> str:
        rec = self.snapshots.resolve_snapshot(ref)
        if rec.status != "active":
            raise Conflict(f"Snapshot [{rec.id}] is {rec.status}, not active")
        vm = self.link.vm(rec.vm_name)
        if vm is None:
            raise RpcError(
                "operation-failed", f"VM [{rec.vm_name}] of snapshot [{rec.id}] no longer exists"
            )
        vol_id = str(uuid.uuid4())
        self.store.put_volume(
            VolumeRecord(
                id=vol_id,
                name=name,
                snapshot=rec.id,
                host=vm.host,
                volume_type=volume_type,
                multiattach=multiattach,
                bootable=bootable,
                vol_name=f"volume-{vol_id}.qcow2",
            )
        )
        self.link.submit(
            self.ctx.key(vm),
            f"volume {vol_id}",
            lambda job: self._volume(vol_id, rec),
            on_cancel=lambda: self._volume_cancelled(vol_id, vm),
        )
        return vol_id

    def _volume_cancelled(self, vol_id: str, vm: VmRecord) -> None:
        self.store.update_volume(vol_id, status="error")
        self.ctx.cancelled("VM_VOLUME_CREATED_EVENT", vm)

    def _volume(self, vol_id: str, rec: SnapshotRecord) -> None:
        vm = self.link.vm(rec.vm_name)
        vol = next((v for v in self.store.volumes() if v.id == vol_id), None)
        if vm is None or vol is None:
            return
        self.link.publish(
            "VM_VOLUME_ACCEPTED_EVENT",
            vm,
            status_code=202,
            message=f"Create volume [{vol.name}] from snapshot [{rec.id}] accepted",
        )
        poll, timeout = self.ctx.poll("volume")
        drv, host = self.driver, vm.host
        try:
            self.link.host(host)  # not configured any more: an rpc-error naming it
            info = run_polled(
                lambda: drv.copy_disk_to_volume(
                    host, vm.generated_name, vol.vol_name, snapshot_id=rec.id
                ),
                poll_secs=poll,
                timeout_secs=timeout,
                what=f"volume {vol.name}",
                on_late_result=lambda i: drv.delete_volume(host, i.pool, i.name),
            )
        except (DomainOpError, RpcError, VimError) as exc:
            self.store.update_volume(vol_id, status="error")
            self.link.publish(
                "VM_VOLUME_CREATED_EVENT",
                vm,
                failure=True,
                message=f"Create volume [{vol.name}] failed: {error_text(exc)}",
            )
            return
        self.store.update_volume(
            vol_id,
            status="available",
            pool=info.pool,
            path=info.path,
            size_bytes=info.capacity_bytes,
        )
        self.link.publish(
            "VM_VOLUME_CREATED_EVENT",
            vm,
            status_code=201,
            message="Create volume snapshot request completed",
        )
