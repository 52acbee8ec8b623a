"""Resize with confirm/revert (DESIGN.md's order).

(SERVICE_UPDATED by the engine) VM_VERIFY_RESIZE; CONFIRM_RESIZE ->
VM_CONFIRM_RESIZE_INIT, VM_CONFIRM_RESIZE_COMPLETE, VM_ALIVE; REVERT_RESIZE ->
VM_REVERT_RESIZE_INIT, VM_REVERT_RESIZE_COMPLETE, VM_ALIVE. A multi-VM group is
resized one VM at a time: confirming one resizes the next. A cold migration awaits
the same confirm/revert (revert moves the VM back: engine/migration.py).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from lxml import etree

from escnc.engine import states
from escnc.engine.maintenance_link import MaintenanceContext
from escnc.engine.maintenance_store import PendingResize
from escnc.engine.migration import Migrations
from escnc.errors import RpcError
from escnc.ns import ESC, NC, qn
from escnc.vim import resize as vim_resize
from escnc.vim.domains import DomainOpError
from escnc.vim.driver import VimError, error_text

if TYPE_CHECKING:
    from escnc.engine.model import FlavorSpec
    from escnc.engine.store import VmRecord

log = logging.getLogger(__name__)


class Resizes:
    def __init__(self, ctx: MaintenanceContext, migrations: Migrations) -> None:
        self.ctx = ctx
        self.link = ctx.link
        self.store = ctx.store
        self.driver = ctx.link.driver
        self.migrations = migrations  # a cold migration's revert moves the VM back

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
            record = self.driver.resize(vm.host, vm_name, flavor.vcpus, flavor.memory_mb)
        except (DomainOpError, RpcError, VimError) as exc:
            vm = self.link.update_vm(vm_name, monitoring=previous == states.VM_ALIVE) or vm
            self.link.publish(
                "VM_VERIFY_RESIZE", vm, failure=True, message=f"VM Resize failed: {error_text(exc)}"
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
                self.migrations.move_back(vm, pending)
            else:
                self._unresize(vm.host, pending)
        except (DomainOpError, RpcError, VimError) as exc:
            self.link.publish(
                "VM_REVERT_RESIZE_COMPLETE",
                vm,
                failure=True,
                message=f"Revert resize failed: {error_text(exc)}",
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
        record = vim_resize.ResizeRecord(**pending.resize)  # type: ignore[arg-type]
        self.driver.revert_resize(host, record)
        self.link.update_vm(pending.vm_name, flavor=pending.old_flavor)

    def _resize_back_confirmed(self, job: Any, name: str, pending: PendingResize) -> None:
        vm = self.link.vm(name)
        flavor = self.link.desired().flavors.get(pending.old_flavor)
        if vm is None or flavor is None:
            return
        self.link.publish("VM_REVERT_RESIZE_INIT", vm, message="Revert resize of the group")
        try:
            self.driver.resize(vm.host, name, flavor.vcpus, flavor.memory_mb)
        except (DomainOpError, RpcError) as exc:
            self.link.publish(
                "VM_REVERT_RESIZE_COMPLETE", vm, failure=True, message=error_text(exc)
            )
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
            self.ctx.services.datastore.system_edit(config)
        except Exception:  # the VM is reverted; a config write failure is logged
            log.exception(
                "cannot put flavor %s back into the configuration of %s", flavor, vm.generated_name
            )
