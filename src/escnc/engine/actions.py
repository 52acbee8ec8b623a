"""VM and service operations (vmAction, serviceAction, recoveryVmAction) as jobs.

The engine checks each request against the current state when it is made
(``check_*``, raising :class:`~escnc.engine.errors.Refused`, which ``operations/``
answers with an rpc-error): a stopped service accepts only serviceAction START (and
undeploy); while a service or VM START/REBOOT (or a service STOP) is queued or
running, only undeploy is accepted for it. The job re-checks when it runs and then
ends with exactly one terminal event; a job dropped by undeploy before it ran
reports its terminal event as FAILURE ("cancelled by undeploy").
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from escnc.engine import states as st
from escnc.engine.errors import Refused
from escnc.engine.jobs import Job
from escnc.engine.store import DeploymentRecord, VmRecord

if TYPE_CHECKING:
    from escnc.engine.context import JobView

log = logging.getLogger(__name__)

VM_ACTIONS = ("START", "STOP", "REBOOT", "ENABLE_MONITOR", "DISABLE_MONITOR")
RESIZE_ACTIONS = ("CONFIRM_RESIZE", "REVERT_RESIZE")
SERVICE_ACTIONS = ("START", "STOP", "REBOOT", "ENABLE_MONITOR", "DISABLE_MONITOR")
SERVICE_MONITOR_ACTIONS = ("ENABLE_MONITOR", "DISABLE_MONITOR")
# the event that ends each VM action
VM_TERMINAL = {
    "STOP": "VM_STOPPED",
    "START": "VM_ALIVE",
    "REBOOT": "VM_ALIVE",
    "ENABLE_MONITOR": "VM_MONITOR_SET",
    "DISABLE_MONITOR": "VM_MONITOR_UNSET",
}


def vm_refusal(engine: JobView, vm: VmRecord, action: str) -> str | None:
    """Why ``action`` is not allowed on ``vm`` now, or None."""
    dep = engine.store.deployment(vm.tenant, vm.deployment)
    if dep is None or dep.state == st.SERVICE_UNDEPLOYING:
        return f"deployment {vm.deployment} is being undeployed"
    if action in RESIZE_ACTIONS:
        if vm.state != st.VM_VERIFY_RESIZE:
            return f"VM {vm.generated_name} is in {vm.state}, not in {st.VM_VERIFY_RESIZE}"
        return None
    if vm.state in (st.VM_DEPLOYING, st.VM_UNDEPLOYING, st.VM_MIGRATING, st.VM_VERIFY_RESIZE):
        return f"VM {vm.generated_name} is in {vm.state}"
    if action == "STOP" and vm.state == st.VM_STOPPED:
        return f"VM {vm.generated_name} is already stopped"
    if action == "START" and vm.state != st.VM_STOPPED and engine.ops.is_running(vm):
        return f"VM {vm.generated_name} is already running ({vm.state})"
    if action == "ENABLE_MONITOR":
        if vm.monitoring:
            return f"VM {vm.generated_name} is already monitored"
        if vm.state == st.VM_STOPPED:
            return f"VM {vm.generated_name} is stopped: start it to monitor it"
    if action == "DISABLE_MONITOR" and not vm.monitoring:
        return f"monitoring of VM {vm.generated_name} is already disabled"
    return None


def service_refusal(engine: JobView, dep: DeploymentRecord, action: str) -> str | None:
    if dep.state in (st.SERVICE_UNDEPLOYING, st.SERVICE_DEPLOYING):
        return f"deployment {dep.name} is in {dep.state}"
    if action == "STOP" and dep.state == st.SERVICE_STOPPED:
        return f"deployment {dep.name} is already stopped"
    if action == "START" and dep.state == st.SERVICE_ACTIVE:
        vms = engine.store.vms(dep.tenant, dep.name)
        if all(v.state == st.VM_ALIVE for v in vms):
            return f"deployment {dep.name} is already active"
    if action in SERVICE_MONITOR_ACTIONS:
        if dep.state == st.SERVICE_STOPPED:
            return f"deployment {dep.name} is stopped: start it to monitor it"
        vms = engine.store.vms(dep.tenant, dep.name)
        busy = [v for v in vms if v.state in _BUSY]
        if busy:
            return f"VM {busy[0].generated_name} is in {busy[0].state}"
        if action == "ENABLE_MONITOR" and not _to_monitor(vms):
            # ESC: "You can't start monitoring a VNF which is already running."
            return f"deployment {dep.name} is already running and monitored"
        if action == "DISABLE_MONITOR" and not any(v.monitoring for v in vms):
            return f"monitoring of deployment {dep.name} is already disabled"
    return None


_BUSY = (st.VM_DEPLOYING, st.VM_UNDEPLOYING, st.VM_MIGRATING, st.VM_VERIFY_RESIZE)


def _to_monitor(vms: list[VmRecord]) -> list[VmRecord]:
    """VMs a service ENABLE_MONITOR acts on: not monitored and not stopped."""
    return [v for v in vms if not v.monitoring and v.state != st.VM_STOPPED]


def busy_reason(engine: JobView, key: tuple[str, str], vm_name: str | None) -> str | None:
    """Why a request must wait for an operation that holds the deployment (service
    START/REBOOT/STOP) or, for a VM request, that VM (vmAction START/REBOOT)."""
    for job in engine.jobs.jobs(key):
        if job.scope is None or job.future.done():
            continue
        if job.scope == "" or vm_name is None or job.scope == vm_name:
            return f"{job.name} is in progress (only undeploy can interrupt it)"
    return None


def check_vm_action(engine: JobView, vm: VmRecord, action: str) -> None:
    """Raise :class:`Refused` unless vmAction ``action`` is allowed on ``vm`` now."""
    vm = engine.store.vm(vm.generated_name) or vm
    dep = engine.store.deployment(vm.tenant, vm.deployment)
    if dep is not None and dep.state == st.SERVICE_STOPPED:
        raise Refused(
            f"vmAction {action} refused: deployment {dep.name} is stopped "
            "(it accepts only serviceAction START and undeploy)"
        )
    reason = busy_reason(engine, vm.dep_key, vm.generated_name) or vm_refusal(engine, vm, action)
    if reason:
        raise Refused(f"vmAction {action} refused: {reason}")


def check_service_action(engine: JobView, dep: DeploymentRecord, action: str) -> None:
    dep = engine.store.deployment(dep.tenant, dep.name) or dep
    if dep.state == st.SERVICE_STOPPED and action != "START":
        raise Refused(
            f"serviceAction {action} refused: deployment {dep.name} is stopped "
            "(it accepts only serviceAction START and undeploy)"
        )
    reason = busy_reason(engine, dep.key, None) or service_refusal(engine, dep, action)
    if reason:
        raise Refused(f"serviceAction {action} refused: {reason}")


def check_recovery(engine: JobView, vm: VmRecord) -> None:
    vm = engine.store.vm(vm.generated_name) or vm
    dep = engine.store.deployment(vm.tenant, vm.deployment)
    name = vm.generated_name
    if dep is None or dep.state in (st.SERVICE_UNDEPLOYING, st.SERVICE_DEPLOYING):
        raise Refused(f"recoveryVmAction refused: deployment {vm.deployment} is not deployed")
    if dep.state == st.SERVICE_STOPPED:
        raise Refused(f"recoveryVmAction refused: deployment {vm.deployment} is stopped")
    if vm.state in _BUSY:
        raise Refused(f"recoveryVmAction refused: VM {name} is in {vm.state}")
    reason = busy_reason(engine, vm.dep_key, name)
    if reason:
        raise Refused(f"recoveryVmAction refused: {reason}")


def check_vm_operation(engine: JobView, vm: VmRecord, what: str) -> None:
    """A day-2 request on ``vm`` (migrate, backup, snapshot restore, ...)."""
    dep = engine.store.deployment(vm.tenant, vm.deployment)
    if dep is None or dep.state == st.SERVICE_UNDEPLOYING:
        raise Refused(f"{what} refused: deployment {vm.deployment} is being undeployed")
    if dep.state == st.SERVICE_STOPPED:
        raise Refused(
            f"{what} refused: deployment {dep.name} is stopped "
            "(it accepts only serviceAction START and undeploy)"
        )
    reason = busy_reason(engine, vm.dep_key, vm.generated_name)
    if reason:
        raise Refused(f"{what} refused: {reason}")


def run_vm_action(engine: JobView, job: Job, name: str, action: str, force: bool) -> None:
    vm = engine.store.vm(name)
    if vm is None:
        log.info("vmAction %s: VM %s is gone", action, name)
        return
    dep = engine.store.deployment(vm.tenant, vm.deployment)
    if dep is None:
        return
    if action in RESIZE_ACTIONS:
        handler = engine.hooks.vm_actions.get(action)
        if handler is None:
            engine.publish(
                f"VM_{action}_COMPLETE", dep, vm, message=f"{action} is not available", failure=True
            )
            return
        handler(engine, job, vm)
        return
    terminal = VM_TERMINAL[action]
    reason = vm_refusal(engine, vm, action)
    if reason:
        engine.publish(terminal, dep, vm, message=reason, failure=True)
        return
    try:
        if action == "STOP":
            engine.set_vm_state(name, vm.state, monitoring=False)
            engine.ops.stop(vm, force=force)
            vm = engine.set_vm_state(name, st.VM_STOPPED, monitoring=False)
            engine.publish("VM_STOPPED", dep, vm, message="VM successfully stopped")
        elif action in ("START", "REBOOT"):
            if action == "START":
                engine.ops.start(vm)
                vm = engine.set_vm_state(name, st.VM_INERT, monitoring=False)
                engine.publish("VM_STARTED", dep, vm, message="VM successfully started")
            else:
                engine.set_vm_state(name, vm.state, monitoring=False)
                engine.ops.reboot(vm, force=force)
                vm = engine.set_vm_state(name, st.VM_INERT, monitoring=False)
                engine.publish("VM_REBOOTED", dep, vm, message="VM successfully rebooted")
            engine.wait_alive(job, dep, [vm], event="VM_ALIVE", always=True)
        elif action == "ENABLE_MONITOR":
            state = st.VM_ALIVE if engine.ops.is_running(vm) else vm.state
            vm = engine.set_vm_state(name, state, monitoring=True)
            engine.publish("VM_MONITOR_SET", dep, vm, message="VM monitoring enabled")
        elif action == "DISABLE_MONITOR":
            vm = engine.set_vm_state(name, st.VM_MONITOR_DISABLED, monitoring=False)
            engine.publish("VM_MONITOR_UNSET", dep, vm, message="VM monitoring disabled")
    except Exception as exc:
        vm = engine.store.vm(name) or vm
        engine.publish(
            terminal, dep, vm, message=f"{action} of VM {name} failed: {exc}", failure=True
        )


def run_service_action(engine: JobView, job: Job, tenant: str, name: str, action: str) -> None:
    dep = engine.store.deployment(tenant, name)
    if dep is None:
        return
    if action in SERVICE_MONITOR_ACTIONS:
        _run_service_monitor(engine, dep, action)
        return
    terminal = {
        "STOP": "SERVICE_STOPPED",
        "START": "SERVICE_STARTED",
        "REBOOT": "SERVICE_REBOOTED",
    }[action]
    reason = service_refusal(engine, dep, action)
    if reason:
        engine.publish(terminal, dep, message=reason, failure=True)
        return
    errors: list[str] = []
    watch: list[VmRecord] = []
    for vm in engine.store.vms(tenant, name):
        try:
            if action == "STOP":
                if vm.state == st.VM_STOPPED:
                    continue
                engine.set_vm_state(vm.generated_name, vm.state, monitoring=False)
                engine.ops.stop(vm)
                vm = engine.set_vm_state(vm.generated_name, st.VM_STOPPED, monitoring=False)
                engine.publish("VM_STOPPED", dep, vm, message="VM successfully stopped")
            elif action == "START":
                if vm.state == st.VM_ALIVE and engine.ops.is_running(vm):
                    continue
                engine.ops.start(vm)
                vm = engine.set_vm_state(vm.generated_name, st.VM_INERT, monitoring=False)
                engine.publish("VM_STARTED", dep, vm, message="VM successfully started")
                watch.append(vm)
            else:
                engine.set_vm_state(vm.generated_name, vm.state, monitoring=False)
                engine.ops.reboot(vm)
                vm = engine.set_vm_state(vm.generated_name, st.VM_INERT, monitoring=False)
                engine.publish("VM_REBOOTED", dep, vm, message="VM successfully rebooted")
                watch.append(vm)
        except Exception as exc:
            msg = f"{action} of VM {vm.generated_name} failed: {exc}"
            errors.append(msg)
            event = {"STOP": "VM_STOPPED", "START": "VM_STARTED", "REBOOT": "VM_REBOOTED"}[action]
            engine.publish(event, dep, vm, message=msg, failure=True)
    errors += engine.wait_alive(job, dep, watch, event="VM_ALIVE", always=True)
    if job.cancel.is_set():
        errors.append(f"{action} interrupted by undeploy")
    state = st.SERVICE_STOPPED if action == "STOP" else st.SERVICE_ACTIVE
    if errors:
        state = st.SERVICE_ERROR
    message = "; ".join(errors) if errors else f"Service {action.lower()} completed successfully"
    dep = engine.store.update_deployment(tenant, name, state=state, status_message=message) or dep
    engine.publish(terminal, dep, message=message, failure=bool(errors))


def _run_service_monitor(engine: JobView, dep: DeploymentRecord, action: str) -> None:
    """serviceAction ENABLE_MONITOR / DISABLE_MONITOR: the VM action on every VM it
    applies to, each reported with its VM_MONITOR_SET / VM_MONITOR_UNSET."""
    event = VM_TERMINAL[action]
    reason = service_refusal(engine, dep, action)
    if reason:
        engine.publish(event, dep, message=reason, failure=True)
        return
    vms = engine.store.vms(dep.tenant, dep.name)
    if action == "ENABLE_MONITOR":
        for vm in _to_monitor(vms):
            state = st.VM_ALIVE if engine.ops.is_running(vm) else vm.state
            vm = engine.set_vm_state(vm.generated_name, state, monitoring=True)
            engine.publish(event, dep, vm, message="VM monitoring enabled")
    else:
        for vm in vms:
            if not vm.monitoring:
                continue
            vm = engine.set_vm_state(vm.generated_name, st.VM_MONITOR_DISABLED, monitoring=False)
            engine.publish(event, dep, vm, message="VM monitoring disabled")


def run_recovery(engine: JobView, job: Job, name: str, reason: str) -> None:
    """Recovery per the group's recovery_policy.

    VM_RECOVERY_INIT; after recovery_wait_time, REBOOT_ONLY / REBOOT_THEN_REDEPLOY
    reboot (VM_RECOVERY_REBOOT) and wait for the VM to be alive; REDEPLOY_ONLY and a
    failed reboot of REBOOT_THEN_REDEPLOY redeploy it (VM_RECOVERY_UNDEPLOYED,
    VM_RECOVERY_DEPLOYED) -- with the group's *current* image and flavor, as a
    redeployment does -- up to max_retries times; VM_RECOVERY_COMPLETE ends it
    (FAILURE, VM and deployment in error, when nothing brought the VM back).
    """
    vm = engine.store.vm(name)
    if vm is None:
        return
    dep = engine.store.deployment(vm.tenant, vm.deployment)
    spec = engine.desired.deployments.get((vm.tenant, vm.deployment))
    group = spec.groups.get(vm.group) if spec else None
    if dep is None or group is None:
        return
    if dep.state == st.SERVICE_STOPPED:
        engine.publish("VM_RECOVERY_COMPLETE", dep, vm, message="service is stopped", failure=True)
        return
    vm = engine.set_vm_state(name, st.VM_ERROR, monitoring=False, status_message=reason)
    engine.publish("VM_RECOVERY_INIT", dep, vm, message=f"recovery started: {reason}")
    if group.recovery_wait_time > 0 and job.wait(group.recovery_wait_time):
        return
    policy = group.action_on_recovery.upper()
    if policy in ("REBOOT_ONLY", "REBOOT_THEN_REDEPLOY"):
        try:
            engine.ops.reboot(vm, force=True)
            vm = engine.set_vm_state(name, st.VM_INERT, monitoring=False)
            engine.publish("VM_RECOVERY_REBOOT", dep, vm, message="VM rebooted for recovery")
            if not engine.wait_alive(job, dep, [vm], event=None):
                _recovered(engine, dep, name, "VM recovered by reboot")
                return
        except Exception as exc:
            engine.publish(
                "VM_RECOVERY_REBOOT", dep, vm, message=f"reboot failed: {exc}", failure=True
            )
        if policy == "REBOOT_ONLY":
            _unrecovered(engine, dep, name, "VM not alive after reboot")
            return
    why = "VM not alive after redeploy"
    for attempt in range(max(1, group.max_retries)):
        if job.cancel.is_set():
            return
        try:
            engine.ops.remove(vm)
            engine.publish("VM_RECOVERY_UNDEPLOYED", dep, vm, message="VM undeployed for recovery")
            vm = engine.set_vm_state(
                name,
                st.VM_DEPLOYING,
                monitoring=False,
                image=group.image,
                flavor=group.flavor,
                fingerprint=group.fingerprint,
            )
            engine.ops.create(vm, dep.deployment_id, group, engine.desired)
            vm = engine.set_vm_state(name, st.VM_INERT)
            engine.publish(
                "VM_RECOVERY_DEPLOYED",
                dep,
                vm,
                message=f"VM redeployed with image {group.image} (attempt {attempt + 1})",
            )
        except Exception as exc:
            why = f"redeploy failed: {exc}"
            log.warning("redeploy of %s failed: %s", name, exc)
            engine.publish("VM_RECOVERY_DEPLOYED", dep, vm, message=why, failure=True)
            if job.wait(0.5):
                return
            continue
        if not engine.wait_alive(job, dep, [vm], event=None):
            _recovered(engine, dep, name, "VM recovered by redeploy")
            return
    _unrecovered(engine, dep, name, why)


def _recovered(engine: JobView, dep: DeploymentRecord, name: str, message: str) -> None:
    vm = engine.set_vm_state(name, st.VM_ALIVE, monitoring=True, status_message="")
    engine.publish("VM_RECOVERY_COMPLETE", dep, vm, message=message)
    current = engine.store.deployment(dep.tenant, dep.name)
    if current is not None and current.state == st.SERVICE_ERROR:
        vms = engine.store.vms(dep.tenant, dep.name)
        if all(v.state == st.VM_ALIVE for v in vms):
            # back in service: said so, as the failure was
            msg = f"Service is active again: VM {name} recovered"
            current = (
                engine.store.update_deployment(
                    dep.tenant, dep.name, state=st.SERVICE_ACTIVE, status_message=""
                )
                or current
            )
            engine.publish("SERVICE_ALIVE", current, message=msg)


def _unrecovered(engine: JobView, dep: DeploymentRecord, name: str, why: str) -> None:
    vm = engine.set_vm_state(name, st.VM_ERROR, monitoring=False, status_message=why)
    engine.store.update_deployment(
        dep.tenant, dep.name, state=st.SERVICE_ERROR, status_message=f"{name}: {why}"
    )
    engine.publish("VM_RECOVERY_COMPLETE", dep, vm, message=f"recovery failed: {why}", failure=True)
