"""Live and cold migration of a VM to another host.

live: VM_MIGRATE_INIT, VM_MIGRATED, VM_MIGRATE_COMPLETE; cold: VM_MIGRATE_INIT,
VM_MIGRATED, VM_VERIFY_RESIZE (then confirm/revert, engine/resize.py; revert moves
the VM back). Failure: VM_MIGRATE_COMPLETE with FAILURE, the VM where it was.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from escnc.engine import states
from escnc.engine.errors import Refused, Unavailable
from escnc.engine.maintenance_link import MaintenanceContext
from escnc.engine.maintenance_store import PendingResize
from escnc.engine.placement import allowed_hosts
from escnc.engine.store import VmRecord
from escnc.errors import RpcError
from escnc.vim import migrate as vim_migrate
from escnc.vim.domains import DomainOpError
from escnc.vim.driver import VimError, error_text


class Migrations:
    def __init__(self, ctx: MaintenanceContext) -> None:
        self.ctx = ctx
        self.link = ctx.link
        self.store = ctx.store
        self.driver = ctx.link.driver

    def migrate(self, vm_name: str, migration_type: str, block: bool, host: str | None) -> None:
        """vmMigrate: validate, choose the target, run the migration as a job."""
        vm = self.link.require_vm(vm_name)
        self.link.engine.check_vm_operation(vm, "vmMigrate")
        self.ctx.require_not_busy(vm)
        if vm.state not in (states.VM_ALIVE, states.VM_STOPPED, states.VM_MONITOR_DISABLED):
            raise Refused(f"VM [{vm_name}] cannot migrate in state {vm.state}")
        desired = self.link.desired()
        spec = desired.deployments.get((vm.tenant, vm.deployment))
        allowed, preferred = allowed_hosts(
            vm,
            spec,
            self.link.vms(vm.tenant, vm.deployment),
            self.link.host_names(),
            self.link.fitting_hosts,
        )
        if host:
            wanted = self.link.host(host)  # unknown host -> rpc-error
            if not wanted.connected and host != vm.host:
                # not a placement question: say what is wrong with the host
                raise Unavailable(
                    f"host [{host}] is not connected ({wanted.status_message}): "
                    f"VM [{vm_name}] cannot migrate to it now"
                )
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
            self.ctx.key(vm),
            f"migrate {vm_name}",
            lambda job: self._migrate(job, vm_name, target, live, block),
            on_cancel=lambda: self.ctx.cancelled("VM_MIGRATE_COMPLETE", vm),
        )

    def _pick(self, vm: VmRecord, candidates: list[str]) -> str | None:
        caps = {}
        for name in candidates:
            try:
                caps[name] = self.driver.capacity(name)
            except (VimError, KeyError):
                continue
        try:
            vcpus, mem = self.driver.current_size(vm.host, vm.generated_name)
        except (DomainOpError, VimError, KeyError):
            vcpus, mem = 1, 0
        return vim_migrate.pick_host(caps, vcpus, mem)

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
            self.driver.migrate(source, target, vm_name, live=live, block=block)
        except (DomainOpError, RpcError, VimError) as exc:
            vm = (
                self.link.update_vm(vm_name, state=previous, monitoring=previous == states.VM_ALIVE)
                or vm
            )
            self.link.publish(
                "VM_MIGRATE_COMPLETE",
                vm,
                target=target_ref,
                failure=True,
                message=f"Migration failed: {error_text(exc)}",
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

    def move_back(self, vm: VmRecord, pending: PendingResize) -> None:
        self.link.prepare_host(pending.source_host, vm, self.link.desired())
        self.driver.migrate(vm.host, pending.source_host, vm.generated_name, live=False)
        self.link.update_vm(vm.generated_name, host=pending.source_host)
        self._snapshots_follow(vm.generated_name, pending.source_host)

    def _snapshots_follow(self, vm_name: str, host: str) -> None:
        """Snapshot metadata moves with the domain: opdata names the new host."""
        hostname = self.link.host(host).hostname()
        for rec in self.store.snapshots():
            if rec.vm_name == vm_name:
                self.store.update_snapshot(rec.id, host=host, hostname=hostname)
