"""Elastic scale out and in of a vm_group on KPI outcomes (rules' scale_out /
scale_in actions), for groups with ``scaling/elastic`` true.

* scale out adds one VM, up to max_active: placement, capacity and a static IP from
  the group's pool as for any new VM (engine/placement.py); events
  VM_SCALE_OUT_INIT, VM_SCALE_OUT_DEPLOYED, VM_ALIVE, VM_SCALE_OUT_COMPLETE. A VM
  that cannot be deployed or is not alive within bootup_time is removed again and
  VM_SCALE_OUT_COMPLETE says why (FAILURE): the group keeps its size.
* scale in removes the newest VM (highest index), down to min_active: events
  VM_SCALE_IN_INIT, VM_SCALE_IN_COMPLETE; its static IPs go back to the pool. A
  newest VM held by another operation (resize, migration, not alive) is not
  interrupted: the scale in is refused and says so.

One scaling operation per group at a time; after one, the group's cool-down
(max of settings.scale_cooldown and the group's recovery_wait_time, on the engine's
clock) passes before the next. Each runs as a job on the deployment's queue, so it
waits for whatever that deployment is doing. The scaled size is durable: the
deployment record keeps each group's VMs beyond min_active (``elastic``), and deploy,
update and reconcile keep ``target_count`` VMs (engine/lifecycle.py), so neither a
restart nor a reconcile undoes a scale out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from escnc.engine import states as st
from escnc.engine.clock import Clock
from escnc.engine.jobs import Job
from escnc.engine.model import DeploymentSpec, Desired, GroupSpec
from escnc.engine.placement import PlacementError
from escnc.engine.store import DeploymentRecord, EngineStore, VmRecord

log = logging.getLogger(__name__)

GroupKey = tuple[str, str, str]  # tenant, deployment, vm_group
# states of a VM that another operation holds: scale in does not take it
_HELD = frozenset({st.VM_DEPLOYING, st.VM_INERT, st.VM_UNDEPLOYING}) | st.HELD_BY_DAY2


def target_count(dep: DeploymentRecord | None, group: GroupSpec) -> int:
    """VMs the group runs: min_active, plus what elastic scaling added (within max)."""
    if not group.elastic or dep is None:
        return group.min_active
    extra = int(dep.elastic.get(group.name, 0))
    return max(group.min_active, min(group.max_active, group.min_active + extra))


@dataclass(frozen=True)
class ScaleOps:
    """What scaling needs from the engine (built by lifecycle.scale_ops)."""

    store: EngineStore
    clock: Clock
    cooldown: Callable[[], float]  # settings.scale_cooldown (read at each operation)
    desired: Callable[[], Desired]
    # (deployment key, job name, body, on_cancel: run instead when undeploy drops it)
    submit: Callable[[tuple[str, str], str, Callable[[Job], Any], Callable[[], None]], Any]
    publish: Callable[..., None]  # (type, dep, vm, message=, failure=)
    # (job, dep, spec, vms, deployed event) -> (VMs to watch, errors)
    create: Callable[..., tuple[list[VmRecord], list[str]]]
    wait_alive: Callable[[Job, DeploymentRecord, list[VmRecord]], list[str]]
    new_vm: Callable[[DeploymentSpec, GroupSpec, int, list[VmRecord]], VmRecord]
    remove: Callable[[VmRecord], None]  # the VM's domain and disks


@dataclass
class GroupScaling:
    """Opdata: the last scaling operation of a group."""

    last: str = ""  # "scale out" / "scale in"
    outcome: str = ""
    at: float = 0.0  # engine clock
    operations: int = 0


class Scaler:
    def __init__(self, ops: ScaleOps) -> None:
        self._ops = ops
        self._lock = threading.Lock()
        self._busy: set[GroupKey] = set()
        self._quiet_until: dict[GroupKey, float] = {}
        self._info: dict[GroupKey, GroupScaling] = {}

    def info(self, key: GroupKey) -> GroupScaling | None:
        with self._lock:
            return self._info.get(key)

    def request(self, vm: VmRecord, direction: str, reason: str) -> str:
        """Ask for one scale out or in of ``vm``'s group; the outcome as text (queued,
        or why not). Never blocks: the work is a job on the deployment's queue."""
        ops = self._ops
        key = (vm.tenant, vm.deployment, vm.group)
        spec = ops.desired().deployments.get(vm.dep_key)
        group = spec.groups.get(vm.group) if spec else None
        dep = ops.store.deployment(vm.tenant, vm.deployment)
        if spec is None or group is None or dep is None:
            return "not done: the deployment is no longer desired"
        if not group.elastic:
            return f"not done: vm_group {group.name} is not elastic"
        if dep.state != st.SERVICE_ACTIVE:
            return f"not done: deployment {dep.name} is in {dep.state}"
        count = len([v for v in ops.store.vms(*vm.dep_key) if v.group == group.name])
        if direction == "out" and count >= group.max_active:
            return f"not done: vm_group {group.name} runs max_active {group.max_active} VMs"
        if direction == "in" and count <= group.min_active:
            return f"not done: vm_group {group.name} runs min_active {group.min_active} VMs"
        now = ops.clock.now()
        with self._lock:
            if key in self._busy:
                return f"not done: a scaling operation of vm_group {group.name} is under way"
            quiet = self._quiet_until.get(key, 0.0)
            if now < quiet:
                return f"not done: vm_group {group.name} cools down for {quiet - now:.0f} s"
            self._busy.add(key)
        body = self._scale_out if direction == "out" else self._scale_in

        def dropped() -> None:  # undeploy dropped the queued job: nothing was done
            with self._lock:
                self._busy.discard(key)

        try:
            ops.submit(vm.dep_key, f"scale {direction} of {group.name}",
                       lambda job: body(job, key, reason), dropped)
        except Exception:
            with self._lock:
                self._busy.discard(key)
            raise
        return f"scale {direction} of vm_group {group.name} queued ({count} VMs now)"

    def _finished(self, key: GroupKey, what: str, outcome: str) -> None:
        ops = self._ops
        spec = ops.desired().deployments.get((key[0], key[1]))
        group = spec.groups.get(key[2]) if spec else None
        wait = max(ops.cooldown(), float(group.recovery_wait_time if group else 0))
        now = ops.clock.now()
        with self._lock:
            self._busy.discard(key)
            self._quiet_until[key] = now + wait
            info = self._info.setdefault(key, GroupScaling())
            info.last, info.outcome, info.at = what, outcome, now
            info.operations += 1
        log.info("%s of %s/%s/%s: %s", what, *key, outcome)

    def _current(
        self, key: GroupKey
    ) -> tuple[DeploymentSpec, GroupSpec, DeploymentRecord, list[VmRecord]] | str:
        ops = self._ops
        spec = ops.desired().deployments.get((key[0], key[1]))
        group = spec.groups.get(key[2]) if spec else None
        dep = ops.store.deployment(key[0], key[1])
        if spec is None or group is None or dep is None or not group.elastic:
            return "not done: the vm_group is no longer desired or elastic"
        if dep.state != st.SERVICE_ACTIVE:
            return f"not done: deployment {dep.name} is in {dep.state}"
        vms = [v for v in ops.store.vms(key[0], key[1]) if v.group == group.name]
        return spec, group, dep, vms

    def _set_extra(self, dep: DeploymentRecord, group: GroupSpec, count: int) -> None:
        extra = dict((self._ops.store.deployment(dep.tenant, dep.name) or dep).elastic)
        extra[group.name] = max(0, count - group.min_active)
        self._ops.store.update_deployment(dep.tenant, dep.name, elastic=extra)

    def _scale_out(self, job: Job, key: GroupKey, reason: str) -> None:
        outcome = "failed"
        try:
            outcome = self._do_scale_out(job, key, reason)
        finally:
            self._finished(key, "scale out", outcome)

    def _do_scale_out(self, job: Job, key: GroupKey, reason: str) -> str:
        ops = self._ops
        current = self._current(key)
        if isinstance(current, str):
            return current
        spec, group, dep, vms = current
        if len(vms) >= group.max_active:
            return f"not done: vm_group {group.name} runs max_active {group.max_active} VMs"
        used = {v.index for v in vms}
        index = next(i for i in range(len(used) + 1) if i not in used)
        everyone = ops.store.vms(key[0], key[1])
        try:
            vm = ops.new_vm(spec, group, index, everyone)
        except PlacementError as exc:
            msg = f"scale out of vm_group {group.name} failed: {exc}"
            ops.publish("VM_SCALE_OUT_COMPLETE", dep, None, message=msg, failure=True)
            return msg
        # durable before any domain exists: a restart resumes the larger group
        ops.store.put_vm(vm)
        self._set_extra(dep, group, len(vms) + 1)
        ops.publish(
            "VM_SCALE_OUT_INIT",
            dep,
            vm,
            message=f"scale out of vm_group {group.name} to {len(vms) + 1} VMs: {reason}",
        )
        watch, errors = ops.create(job, dep, spec, [vm], lambda _v: "VM_SCALE_OUT_DEPLOYED")
        errors += ops.wait_alive(job, dep, watch)
        now = ops.store.vm(vm.generated_name) or vm
        if not errors and now.state == st.VM_ALIVE:
            msg = f"VM scale out completed: vm_group {group.name} runs {len(vms) + 1} VMs"
            ops.publish("VM_SCALE_OUT_COMPLETE", dep, now, message=msg)
            return msg
        # the group keeps its size: the VM that did not come up goes again
        why = "; ".join(errors) or now.status_message or now.state
        ops.store.update_vm(vm.generated_name, state=st.VM_UNDEPLOYING, monitoring=False)
        try:
            ops.remove(now)
        except Exception as exc:  # left for reconcile's orphan removal
            log.warning("scale out: cannot remove %s: %s", vm.generated_name, exc)
        ops.store.delete_vm(vm.generated_name)
        self._set_extra(dep, group, len(vms))
        msg = f"scale out of vm_group {group.name} failed: {why}"
        ops.publish("VM_SCALE_OUT_COMPLETE", dep, now, message=msg, failure=True)
        return msg

    def _scale_in(self, job: Job, key: GroupKey, reason: str) -> None:
        outcome = "failed"
        try:
            outcome = self._do_scale_in(key, reason)
        finally:
            self._finished(key, "scale in", outcome)

    def _do_scale_in(self, key: GroupKey, reason: str) -> str:
        ops = self._ops
        current = self._current(key)
        if isinstance(current, str):
            return current
        _spec, group, dep, vms = current
        if len(vms) <= group.min_active:
            return f"not done: vm_group {group.name} runs min_active {group.min_active} VMs"
        vm = max(vms, key=lambda v: v.index)
        if vm.state in _HELD:
            # never interrupt what holds it (a start, a resize, a migration, a removal)
            return f"not done: newest VM {vm.generated_name} is in {vm.state}"
        ops.publish(
            "VM_SCALE_IN_INIT",
            dep,
            vm,
            message=f"scale in of vm_group {group.name} to {len(vms) - 1} VMs: {reason}",
        )
        self._set_extra(dep, group, len(vms) - 1)
        ops.store.update_vm(vm.generated_name, state=st.VM_UNDEPLOYING, monitoring=False)
        try:
            ops.remove(vm)
        except Exception as exc:
            msg = f"VM {vm.generated_name} could not be removed: {exc}"
            vm = ops.store.update_vm(vm.generated_name, state=st.VM_ERROR,
                                     status_message=msg) or vm
            ops.publish("VM_SCALE_IN_COMPLETE", dep, vm, message=msg, failure=True)
            return msg
        ops.store.delete_vm(vm.generated_name)
        msg = f"VM scale in completed: vm_group {group.name} runs {len(vms) - 1} VMs"
        ops.publish("VM_SCALE_IN_COMPLETE", dep, vm, message=msg)
        return msg
