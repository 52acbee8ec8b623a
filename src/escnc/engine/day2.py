"""Day-2 jobs: resize with confirm/revert, live and cold migration, snapshots (backup),
snapshot delete, volume from snapshot, and in-place restore.

Each operation is validated synchronously (an RPC refused with rpc-error never emits
events), then runs as a job on the engine's per-deployment queue, so it never
overlaps another job of the same deployment. Notification order is DESIGN.md's:

* resize:  (SERVICE_UPDATED by the engine) VM_VERIFY_RESIZE; CONFIRM_RESIZE ->
  VM_CONFIRM_RESIZE_INIT, VM_CONFIRM_RESIZE_COMPLETE, VM_ALIVE; REVERT_RESIZE ->
  VM_REVERT_RESIZE_INIT, VM_REVERT_RESIZE_COMPLETE, VM_ALIVE.
  A multi-VM group is resized one VM at a time: confirming one resizes the next.
* live migrate: VM_MIGRATE_INIT, VM_MIGRATED, VM_MIGRATE_COMPLETE;
  cold: VM_MIGRATE_INIT, VM_MIGRATED, VM_VERIFY_RESIZE (then confirm/revert; revert
  moves the VM back). Failure: VM_MIGRATE_COMPLETE with FAILURE, VM where it was.
* backup: VM_BACKUP_INIT, VM_BACKUP_CREATED, VM_BACKUP_COMPLETE.
* snapshot delete: VM_SNAPSHOT_DELETING, VM_SNAPSHOT_DELETED.
* volume from snapshot: VM_VOLUME_ACCEPTED_EVENT, VM_VOLUME_CREATED_EVENT.
* in-place restore (escnc extension): VM_SNAPSHOT_REVERT_INIT, VM_SNAPSHOT_REVERTED,
  then VM_ALIVE when the restored VM runs.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import libvirt
from lxml import etree

from escnc.engine import states
from escnc.engine.day2_link import EngineLink
from escnc.engine.day2_placement import allowed_hosts
from escnc.engine.day2_store import (
    Day2Store,
    PendingResize,
    SnapshotRecord,
    VolumeRecord,
    now_iso,
)
from escnc.engine.errors import Conflict, Refused
from escnc.errors import RpcError, RpcErrors
from escnc.ns import ESC, NC, qn
from escnc.vim import day2_migrate, day2_resize, day2_snapshots, day2_volumes
from escnc.vim.day2_common import Day2Error, libvirt_message, run_polled

if TYPE_CHECKING:
    from escnc.engine.model import FlavorSpec
    from escnc.engine.store import VmRecord
    from escnc.services import Services

log = logging.getLogger(__name__)

BACKUP_STATES = (states.VM_ALIVE, states.VM_STOPPED)
BUSY_STATES = (states.VM_VERIFY_RESIZE, states.VM_MIGRATING)
IMAGE_NAME = re.compile(r"[^/\s]+")  # the YANG name-type of images/image/name


def _err(exc: BaseException) -> str:
    return libvirt_message(exc) if isinstance(exc, libvirt.libvirtError) else str(exc)


class Day2Manager:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings
        self.link = EngineLink(services)
        self.store = Day2Store(services.settings.state_dir / "day2.sqlite3")

    def close(self) -> None:
        self.store.close()

    # -- opdata ----------------------------------------------------------------------

    def state(self) -> list[etree._Element]:
        root = etree.Element(qn(ESC, "esc_datamodel"), nsmap={None: ESC})  # type: ignore[dict-item]
        root.append(self.store.opdata())
        return [root]

    # -- helpers ---------------------------------------------------------------------

    def _key(self, vm: VmRecord) -> tuple[str, str]:
        return (vm.tenant, vm.deployment)

    def _poll(self, kind: str) -> tuple[float, float]:
        s = self.settings
        if kind == "volume":
            return s.volume_poll_secs, s.volume_timeout_mins * 60
        return s.snapshot_poll_secs, s.snapshot_timeout_mins * 60

    def _require_not_busy(self, vm: VmRecord) -> None:
        if vm.state in BUSY_STATES or self.store.pending(vm.generated_name):
            raise Conflict(f"VM [{vm.generated_name}] is in {vm.state}: confirm or revert first")

    # -- resize (engine hooks) -------------------------------------------------------

    def resize_in_progress(self, vm_name: str) -> bool:
        """True while ``vm_name`` awaits confirmation or waits its turn in a rollout."""
        return any(
            p.kind == "resize" and (p.vm_name == vm_name or vm_name in p.queue)
            for p in self.store.all_pending()
        )

    def resize_hook(self, job: Any, vm: VmRecord, old: FlavorSpec, new: FlavorSpec) -> None:
        """``engine.hooks.resize``: runs in the update job after SERVICE_UPDATED, once per
        VM of a group whose flavor changed. The first VM of the group is resized now;
        the others wait in its pending record and are resized one at a time, each
        after the previous one is confirmed."""
        for pending in self.store.all_pending():
            other = self.link.vm(pending.vm_name)
            if (
                pending.kind == "resize"
                and other is not None
                and (other.tenant, other.deployment, other.group)
                == (vm.tenant, vm.deployment, vm.group)
            ):
                if vm.generated_name not in pending.queue:
                    pending.queue.append(vm.generated_name)
                    pending.new_flavor = new.name
                    self.store.put_pending(pending)
                return
        self._resize_one(vm.generated_name, old.name, new.name, [], [])

    def _resize_one(
        self, vm_name: str, old_flavor: str, new_flavor: str, queue: list[str], done: list[str]
    ) -> None:
        vm = self.link.vm(vm_name)
        if vm is None:
            return
        flavor = self.link.desired().flavors.get(new_flavor)
        if flavor is None:
            self.link.publish(
                "VM_VERIFY_RESIZE",
                vm,
                failure=True,
                message=f"VM Resize failed: flavor {new_flavor} does not exist",
            )
            return
        previous = vm.state
        self.link.update_vm(vm_name, monitoring=False)
        try:
            record = day2_resize.resize_domain(
                self.link.conn(vm.host), vm_name, flavor.vcpus, flavor.memory_mb
            )
        except (Day2Error, RpcError, libvirt.libvirtError) as exc:
            vm = self.link.update_vm(vm_name, monitoring=previous == states.VM_ALIVE) or vm
            self.link.publish(
                "VM_VERIFY_RESIZE", vm, failure=True, message=f"VM Resize failed: {_err(exc)}"
            )
            return
        self.store.put_pending(
            PendingResize(
                vm_name=vm_name,
                kind="resize",
                host=vm.host,
                old_flavor=vm.flavor or old_flavor,
                new_flavor=new_flavor,
                resize=asdict(record),
                previous_state=previous,
                queue=queue,
                done=done,
            )
        )
        vm = (
            self.link.update_vm(
                vm_name, state=states.VM_VERIFY_RESIZE, flavor=new_flavor, monitoring=False
            )
            or vm
        )
        self.link.publish("VM_VERIFY_RESIZE", vm, message="VM Resize request processed")

    def confirm_hook(self, job: Any, vm: VmRecord) -> None:
        """``engine.hooks.vm_actions["CONFIRM_RESIZE"]`` (a job; state already checked)."""
        pending = self._pending_or_fail(vm, "VM_CONFIRM_RESIZE_COMPLETE", "confirm")
        if pending is None:
            return
        self.link.publish("VM_CONFIRM_RESIZE_INIT", vm, message="Confirm resize accepted")
        self.store.delete_pending(vm.generated_name)
        self.link.publish("VM_CONFIRM_RESIZE_COMPLETE", vm, message="VM resize confirmed")
        self.link.settle(job, vm)
        if pending.queue:  # next VM of a multi-VM group
            self._resize_one(
                pending.queue[0],
                pending.old_flavor,
                pending.new_flavor,
                pending.queue[1:],
                [*pending.done, vm.generated_name],
            )

    def revert_hook(self, job: Any, vm: VmRecord) -> None:
        """``engine.hooks.vm_actions["REVERT_RESIZE"]`` (a job; state already checked)."""
        pending = self._pending_or_fail(vm, "VM_REVERT_RESIZE_COMPLETE", "revert")
        if pending is None:
            return
        self.link.publish("VM_REVERT_RESIZE_INIT", vm, message="Revert resize accepted")
        try:
            if pending.kind == "migrate":
                self._move_back(vm, pending)
            else:
                self._unresize(vm.host, pending)
        except (Day2Error, RpcError, libvirt.libvirtError) as exc:
            self.link.publish(
                "VM_REVERT_RESIZE_COMPLETE",
                vm,
                failure=True,
                message=f"Revert resize failed: {_err(exc)}",
            )
            return
        self.store.delete_pending(vm.generated_name)
        vm = self.link.vm(vm.generated_name) or vm
        self.link.publish("VM_REVERT_RESIZE_COMPLETE", vm, message="VM resize reverted")
        self.link.settle(job, vm)
        if pending.kind == "resize":
            # VMs confirmed earlier in this group's rollout go back too, and the
            # configuration gets the old flavor again
            for name in pending.done:
                self._resize_back_confirmed(job, name, pending)
            self._restore_flavor_config(vm, pending.old_flavor)

    def _pending_or_fail(self, vm: VmRecord, event: str, verb: str) -> PendingResize | None:
        """The VM's pending resize/migration, or a FAILURE ``event`` saying there is none."""
        pending = self.store.pending(vm.generated_name)
        if pending is None:
            self.link.publish(
                event, vm, failure=True, message=f"VM {vm.generated_name} has no resize to {verb}"
            )
        return pending

    def _unresize(self, host: str, pending: PendingResize) -> None:
        assert pending.resize is not None
        record = day2_resize.ResizeRecord(**pending.resize)  # type: ignore[arg-type]
        day2_resize.revert_resize(self.link.conn(host), record)
        self.link.update_vm(pending.vm_name, flavor=pending.old_flavor)

    def _resize_back_confirmed(self, job: Any, name: str, pending: PendingResize) -> None:
        vm = self.link.vm(name)
        flavor = self.link.desired().flavors.get(pending.old_flavor)
        if vm is None or flavor is None:
            return
        self.link.publish("VM_REVERT_RESIZE_INIT", vm, message="Revert resize of the group")
        try:
            day2_resize.resize_domain(self.link.conn(vm.host), name, flavor.vcpus, flavor.memory_mb)
        except (Day2Error, RpcError) as exc:
            self.link.publish("VM_REVERT_RESIZE_COMPLETE", vm, failure=True, message=_err(exc))
            return
        vm = self.link.update_vm(name, flavor=pending.old_flavor) or vm
        self.link.publish("VM_REVERT_RESIZE_COMPLETE", vm, message="VM resize reverted")
        self.link.settle(job, vm)

    def _restore_flavor_config(self, vm: VmRecord, flavor: str) -> None:
        config = etree.fromstring(
            f"""<config xmlns="{NC}"><esc_datamodel xmlns="{ESC}"><tenants><tenant>
            <name></name><deployments><deployment><name></name><vm_group><name></name>
            <flavor></flavor></vm_group></deployment></deployments></tenant></tenants>
            </esc_datamodel></config>"""
        )
        names = config.iter(qn(ESC, "name"))
        for value in (vm.tenant, vm.deployment, vm.group):
            next(names).text = value
        next(config.iter(qn(ESC, "flavor"))).text = flavor
        try:
            self.services.datastore.system_edit(config)
        except Exception:  # the VM is reverted; a config write failure is logged
            log.exception(
                "cannot put flavor %s back into the configuration of %s", flavor, vm.generated_name
            )

    # -- migration -------------------------------------------------------------------

    def migrate(self, vm_name: str, migration_type: str, block: bool, host: str | None) -> None:
        """vmMigrate: validate, choose the target, run the migration as a job."""
        vm = self.link.require_vm(vm_name)
        self.link.engine.check_vm_operation(vm, "vmMigrate")
        self._require_not_busy(vm)
        if vm.state not in (states.VM_ALIVE, states.VM_STOPPED, states.VM_MONITOR_DISABLED):
            raise Refused(f"VM [{vm_name}] cannot migrate in state {vm.state}")
        desired = self.link.desired()
        spec = desired.deployments.get((vm.tenant, vm.deployment))
        allowed, preferred = allowed_hosts(
            vm, spec, self.link.vms(vm.tenant, vm.deployment), self.link.host_names()
        )
        if host:
            self.link.host(host)  # unknown host -> rpc-error
            if host == vm.host:
                raise RpcError(
                    "invalid-value",
                    f"VM [{vm_name}] already runs on host [{host}]",
                    info={"bad-element": "host"},
                )
            if host not in allowed:
                raise RpcError(
                    "invalid-value",
                    f"host [{host}] is not allowed by the placement rules of "
                    f"{vm.deployment}/{vm.group}",
                    info={"bad-element": "host"},
                )
            target = host
        else:
            target = self._pick(vm, preferred) or self._pick(vm, allowed) or ""
            if not target:
                raise RpcError(
                    "operation-failed",
                    f"no host can take VM [{vm_name}] (placement rules and free capacity)",
                )
        live = migration_type == "live"
        self.link.submit(
            self._key(vm),
            f"migrate {vm_name}",
            lambda job: self._migrate(job, vm_name, target, live, block),
            on_cancel=lambda: self._cancelled("VM_MIGRATE_COMPLETE", vm),
        )

    def _pick(self, vm: VmRecord, candidates: list[str]) -> str | None:
        caps = {}
        for name in candidates:
            try:
                caps[name] = day2_migrate.host_capacity(self.link.conn(name))
            except (libvirt.libvirtError, RpcError):
                continue
        try:
            vcpus, mem = day2_resize.current_size(self.link.conn(vm.host), vm.generated_name)
        except (Day2Error, RpcError):
            vcpus, mem = 1, 0
        return day2_migrate.pick_host(caps, vcpus, mem)

    def _migrate(self, job: Any, vm_name: str, target: str, live: bool, block: bool) -> None:
        vm = self.link.vm(vm_name)
        if vm is None:
            return
        source, previous = vm.host, vm.state
        target_ref = replace(vm, host=target)
        self.link.publish(
            "VM_MIGRATE_INIT",
            vm,
            target=target_ref,
            message=f"{'Live' if live else 'Cold'} migration to host {target} started",
        )
        self.link.update_vm(vm_name, state=states.VM_MIGRATING, monitoring=False)
        try:
            self.link.prepare_host(target, vm, self.link.desired())
            day2_migrate.migrate_domain(
                self.link.conn(source),
                self.link.conn(target),
                vm_name,
                live=live,
                block=block,
                dst_uri=self.link.host(target).uri,
            )
        except (Day2Error, RpcError, libvirt.libvirtError) as exc:
            vm = (
                self.link.update_vm(vm_name, state=previous, monitoring=previous == states.VM_ALIVE)
                or vm
            )
            self.link.publish(
                "VM_MIGRATE_COMPLETE",
                vm,
                target=target_ref,
                failure=True,
                message=f"Migration failed: {_err(exc)}",
            )
            return
        vm = self.link.update_vm(vm_name, host=target) or vm
        self._snapshots_follow(vm_name, target)
        source_ref = replace(vm, host=source)
        self.link.publish(
            "VM_MIGRATED",
            source_ref,
            target=vm,
            message=f"VM migrated from host {source} to host {target}",
        )
        if live:
            self.link.publish(
                "VM_MIGRATE_COMPLETE", source_ref, target=vm, message="Migration completed"
            )
            # the guest never stopped: VM_MIGRATE_COMPLETE is the last word (ESC)
            self.link.settle(job, vm, announce=False)
            return
        self.store.put_pending(
            PendingResize(
                vm_name=vm_name,
                kind="migrate",
                host=target,
                source_host=source,
                previous_state=previous,
            )
        )
        vm = self.link.update_vm(vm_name, state=states.VM_VERIFY_RESIZE) or vm
        self.link.publish(
            "VM_VERIFY_RESIZE", vm, target=vm, message="VM cold migration awaiting confirmation"
        )

    def _move_back(self, vm: VmRecord, pending: PendingResize) -> None:
        self.link.prepare_host(pending.source_host, vm, self.link.desired())
        day2_migrate.migrate_domain(
            self.link.conn(vm.host),
            self.link.conn(pending.source_host),
            vm.generated_name,
            live=False,
            dst_uri=self.link.host(pending.source_host).uri,
        )
        self.link.update_vm(vm.generated_name, host=pending.source_host)
        self._snapshots_follow(vm.generated_name, pending.source_host)

    def _snapshots_follow(self, vm_name: str, host: str) -> None:
        """Snapshot metadata moves with the domain: opdata names the new host."""
        hostname = self.link.host(host).hostname()
        for rec in self.store.snapshots():
            if rec.vm_name == vm_name:
                self.store.update_snapshot(rec.id, host=host, hostname=hostname)

    # -- snapshots -------------------------------------------------------------------

    def backup(self, vm_name: str, name: str, action: str) -> str:
        """vmBackupAction SNAPSHOT|EXPORT; returns the generated snapshot id."""
        vm = self.link.require_vm(vm_name)
        self.link.engine.check_vm_operation(vm, f"vmBackupAction {action}")
        if vm.state not in BACKUP_STATES:
            raise Refused(
                f"VM [{vm_name}] is in {vm.state}: a backup needs VM_ALIVE_STATE "
                "or VM_STOPPED_STATE"
            )
        if len(name) > day2_snapshots.MAX_NAME_LEN:
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
            self._key(vm),
            f"backup {vm_name}",
            lambda job: self._backup(snap_id),
            on_cancel=lambda: self._backup_cancelled(snap_id, vm),
        )
        return snap_id

    def _cancelled(self, event: str, vm: VmRecord) -> None:
        """An undeploy dropped the queued request: its terminal event, as a failure."""
        self.link.publish(event, vm, failure=True, message="cancelled by undeploy")

    def _volume_cancelled(self, vol_id: str, vm: VmRecord) -> None:
        self.store.update_volume(vol_id, status="error")
        self._cancelled("VM_VOLUME_CREATED_EVENT", vm)

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

    def _register_export(self, name: str, vol: day2_volumes.VolumeInfo, fmt: str) -> str:
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
            self.services.datastore.system_edit(config)
        except (RpcError, RpcErrors) as exc:
            raise RpcError(
                "operation-failed", f"image {name} not added to the configuration: {exc}"
            ) from exc
        return self.link.wait_image(name, self._poll("snapshot")[1])

    def _backup(self, snap_id: str) -> None:
        rec = self.store.snapshot(snap_id)
        vm = self.link.vm(rec.vm_name) if rec else None
        if rec is None or vm is None:
            return
        self.link.publish("VM_BACKUP_INIT", vm, message=f"Snapshot [{rec.name}] requested")
        poll, timeout = self._poll("snapshot")
        conn = self.link.conn(vm.host)
        try:
            run_polled(
                lambda: day2_snapshots.create_snapshot(conn, vm.generated_name, snap_id, rec.name),
                poll_secs=poll,
                timeout_secs=timeout,
                what=f"snapshot {rec.name}",
                on_late_result=lambda _i: day2_snapshots.delete_snapshot(
                    conn, vm.generated_name, snap_id
                ),
            )
            self.store.update_snapshot(snap_id, volume_snapshot_id=f"{snap_id}/vda")
            self.link.publish(
                "VM_BACKUP_CREATED", vm, status_code=202, message="Snapshot is now active."
            )
            message = f"Snapshot image for [{vm.generated_name}] is active."
            if rec.kind == "EXPORT":
                vol = run_polled(
                    lambda: day2_volumes.copy_disk_to_volume(
                        conn,
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
                fmt = day2_volumes.volume_format(conn, vol) or "qcow2"
                registered = self._register_export(rec.name, vol, fmt)
                message += f" Registered as image [{rec.name}]: {registered}."
        except (Day2Error, RpcError, libvirt.libvirtError) as exc:
            self.store.update_snapshot(
                snap_id, status="error", status_message=_err(exc), creation_end_date=now_iso()
            )
            self.link.publish(
                "VM_BACKUP_COMPLETE",
                vm,
                failure=True,
                message=f"Snapshot [{rec.name}] failed: {_err(exc)}",
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
        key = self._key(vm) if vm else ("snapshot", rec.id)
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
        poll, timeout = self._poll("snapshot")
        try:
            conn = self.link.conn(vm.host)
            if day2_snapshots.has_snapshot(conn, vm.generated_name, rec.id):
                run_polled(
                    lambda: day2_snapshots.delete_snapshot(conn, vm.generated_name, rec.id),
                    poll_secs=poll,
                    timeout_secs=timeout,
                    what=f"delete of {rec.id}",
                )
            if rec.image_volume:
                pool, _, vol = rec.image_volume.partition("/")
                if day2_volumes.volume_exists(conn, pool, vol):
                    day2_volumes.delete_volume(conn, pool, vol)
        except (Day2Error, RpcError, libvirt.libvirtError) as exc:
            self.store.update_snapshot(rec.id, status="error", status_message=_err(exc))
            self.link.publish(
                "VM_SNAPSHOT_DELETED",
                vm,
                failure=True,
                message=f"Snapshot image [{rec.id}] delete failed: {_err(exc)}",
            )
            return
        self.store.delete_snapshot(rec.id)
        self.link.publish(
            "VM_SNAPSHOT_DELETED", vm, message=f"Snapshot image [{rec.id}] has been deleted."
        )

    # -- volumes ---------------------------------------------------------------------

    def create_volume(
        self, ref: str, name: str, volume_type: str, multiattach: bool, bootable: bool
    ) -> str:
        rec = self.resolve_snapshot(ref)
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
            self._key(vm),
            f"volume {vol_id}",
            lambda job: self._volume(vol_id, rec),
            on_cancel=lambda: self._volume_cancelled(vol_id, vm),
        )
        return vol_id

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
        poll, timeout = self._poll("volume")
        conn = self.link.conn(vm.host)
        try:
            info = run_polled(
                lambda: day2_volumes.copy_disk_to_volume(
                    conn, vm.generated_name, vol.vol_name, snapshot_id=rec.id
                ),
                poll_secs=poll,
                timeout_secs=timeout,
                what=f"volume {vol.name}",
                on_late_result=lambda i: day2_volumes.delete_volume(conn, i.pool, i.name),
            )
        except (Day2Error, RpcError, libvirt.libvirtError) as exc:
            self.store.update_volume(vol_id, status="error")
            self.link.publish(
                "VM_VOLUME_CREATED_EVENT",
                vm,
                failure=True,
                message=f"Create volume [{vol.name}] failed: {_err(exc)}",
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

    # -- in-place restore ------------------------------------------------------------

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
        self._require_not_busy(vm)
        self.link.submit(
            self._key(vm),
            f"restore {vm_name}",
            lambda job: self._restore(job, vm_name, rec),
            on_cancel=lambda: self._cancelled("VM_SNAPSHOT_REVERTED", vm),
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
            day2_snapshots.revert_snapshot(self.link.conn(vm.host), vm_name, rec.id)
        except (Day2Error, RpcError, libvirt.libvirtError) as exc:
            self.link.update_vm(vm_name, monitoring=vm.monitoring)
            self.link.publish(
                "VM_SNAPSHOT_REVERTED",
                vm,
                failure=True,
                message=f"Revert to snapshot [{rec.id}] failed: {_err(exc)}",
            )
            return
        self.link.publish(
            "VM_SNAPSHOT_REVERTED", vm, message=f"VM reverted to snapshot [{rec.id}] ({rec.name})"
        )
        self.link.settle(job, vm)
