"""Deployment jobs: deploy (also resumes after a crash and recreates missing VMs),
update (settings, scale in/out, added/removed groups, flavor hook) and undeploy.

Each job ends with exactly one terminal event: SERVICE_ALIVE, SERVICE_UPDATED or
SERVICE_UNDEPLOYED (FAILURE with status 500 and the reason when something failed).

Update, in this order: VMs of removed groups are undeployed (VM_UNDEPLOYED); a lower
min_active scales in, highest index first (VM_SCALE_IN_INIT, VM_SCALE_IN_COMPLETE per
VM; its static IPs go back to the pool); VMs whose settings changed are redefined
(VM_UPDATED); a higher min_active scales out (VM_SCALE_OUT_INIT, VM_SCALE_OUT_DEPLOYED,
VM_ALIVE, VM_SCALE_OUT_COMPLETE per VM); VMs of added groups are deployed
(VM_DEPLOYED, VM_ALIVE); then SERVICE_UPDATED. A changed image is used by new VMs and
by the next redeployment (recovery, recreation by reconcile); existing VMs keep theirs
(ESC semantics), and opdata shows each VM's image.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from escnc.engine import actions, outbox, startup
from escnc.engine import states as st
from escnc.engine.elastic import Elastic
from escnc.engine.jobs import Job, waiting
from escnc.engine.kpi.collectors import CollectorEnv
from escnc.engine.model import DeploymentSpec, GroupSpec
from escnc.engine.placement import PlacementError, new_vm
from escnc.engine.scaling import ScaleOps, target_count
from escnc.engine.store import DeploymentRecord, VmRecord

if TYPE_CHECKING:
    from escnc.engine.context import ElasticView, JobView

log = logging.getLogger(__name__)


def _ensure_records(engine: JobView, spec: DeploymentSpec) -> list[VmRecord]:
    """VM rows for min_active VMs per group, written before any domain exists."""
    existing = engine.store.vms(spec.tenant, spec.name)
    dep = engine.store.deployment(spec.tenant, spec.name)
    for group in spec.groups.values():
        have = [v for v in existing if v.group == group.name]
        used = {v.index for v in have}
        index = 0
        while len(have) < target_count(dep, group):  # min_active + elastic scale-out
            while index in used:
                index += 1
            vm = new_vm(engine.vims, spec, group, index, existing, engine.capacity)
            engine.store.put_vm(vm)
            have.append(vm)
            existing.append(vm)
            used.add(index)
    return [v for v in existing if v.group in spec.groups]


def _create_vms(
    engine: JobView,
    job: Job,
    dep: DeploymentRecord,
    spec: DeploymentSpec,
    vms: list[VmRecord],
    deployed_event: Callable[[VmRecord], str] = lambda _vm: "VM_DEPLOYED",
) -> tuple[list[VmRecord], list[str]]:
    """Define and start every VM that has no running domain; returns (to watch, errors)."""
    watch: list[VmRecord] = []
    errors: list[str] = []
    for vm in vms:
        if job.cancel.is_set():
            break
        if vm.state in _SETTLED:
            continue  # reported before (a failure, monitoring off, day-2): left as it is
        group = spec.groups[vm.group]
        dom_exists = engine.ops.domain(vm) is not None
        stopped = vm.state == st.VM_STOPPED
        if dom_exists and (stopped or engine.ops.is_running(vm)):
            if vm.state in _UNFINISHED:
                watch.append(vm)
            continue
        try:
            if not dom_exists and vm.image != group.image:
                # a redeployment: the group's current image (stale disks go first)
                engine.ops.remove(vm)
                vm = engine.set_vm_state(vm.generated_name, vm.state, image=group.image)
            with waiting():  # the registration job needs a slot, this one does not
                engine.images.wait_active(group.image, engine.image_wait_seconds, job.cancel)
            engine.ops.create(vm, dep.deployment_id, group, engine.desired, start=not stopped)
        except Exception as exc:
            msg = f"VM {vm.generated_name} could not be deployed on host {vm.host}: {exc}"
            errors.append(msg)
            vm = engine.set_vm_state(vm.generated_name, st.VM_ERROR, status_message=msg)
            engine.publish(deployed_event(vm), dep, vm, message=msg, failure=True)
            continue
        if not vm.deployed_reported:
            # flagged, then sent under its key: exactly once across kill -9 (outbox.py)
            vm = engine.set_vm_state(vm.generated_name, vm.state, deployed_reported=True)
            engine.publish(
                deployed_event(vm), dep, vm, message="VIM Driver: VM successfully created",
                key=outbox.vm_key(dep, vm, outbox.DEPLOYED),
            )
        elif not stopped:
            # the domain vanished (host restarted, test driver, kill -9 of a host)
            engine.publish(
                "VM_RECOVERY_DEPLOYED",
                dep,
                vm,
                message=f"domain was missing on host {vm.host}: recreated by reconcile",
            )
        if not stopped:
            watch.append(vm)
    return watch, errors


# a VM in one of these states is not (re)created or waited for by a deploy that
# resumes: its outcome was reported, or an operator or day-2 operation holds it
_SETTLED = frozenset({st.VM_ERROR, st.VM_MONITOR_DISABLED, st.VM_UNDEPLOYING}) | st.HELD_BY_DAY2
# states of a VM whose start was under way (watched for VM_ALIVE)
_UNFINISHED = frozenset({st.VM_DEPLOYING, st.VM_INERT})


def deploy(engine: JobView, job: Job, spec: DeploymentSpec) -> None:
    dep = engine.store.deployment(spec.tenant, spec.name)
    if dep is None:
        dep = DeploymentRecord(
            spec.tenant,
            spec.name,
            str(uuid.uuid4()),
            st.SERVICE_DEPLOYING,
            applied=spec.fingerprint,
        )
        engine.store.put_deployment(dep)
    elif dep.applied != spec.fingerprint:
        dep = engine.store.update_deployment(dep.tenant, dep.name, applied=spec.fingerprint) or dep
    try:
        vms = _ensure_records(engine, spec)
    except PlacementError as exc:
        _finish(engine, dep, "SERVICE_ALIVE", [str(exc)], st.SERVICE_ERROR)
        return
    errors = start_in_order(engine, job, dep, spec, vms)  # policies/startup stages
    if job.cancel.is_set():
        _finish(engine, dep, "SERVICE_ALIVE", ["deployment interrupted by undeploy"], None)
        return
    final = (
        st.SERVICE_ERROR
        if errors
        else (st.SERVICE_STOPPED if dep.state == st.SERVICE_STOPPED else st.SERVICE_ACTIVE)
    )
    if dep.alive_reported and not errors:
        engine.store.update_deployment(dep.tenant, dep.name, state=final, status_message="")
        return  # already reported: a reconcile that only recreated VMs
    _finish(
        engine,
        dep,
        "SERVICE_ALIVE",
        errors,
        final,
        ok="Service group deployment completed successfully",
    )


def _recover(engine: JobView, job: Job) -> Callable[[VmRecord, str], bool]:
    """For a VM not alive within its bootup_time: its recovery_policy. AUTO recovers
    it now, in this job (VM_RECOVERY_INIT ... VM_RECOVERY_COMPLETE), and a recovered
    VM then gets its VM_ALIVE; MANUAL (or a failed recovery) leaves it to VM_ALIVE
    FAILURE. True when the VM is alive again."""

    def late(vm: VmRecord, why: str) -> bool:
        spec = engine.desired.deployments.get(vm.dep_key)
        group = spec.groups.get(vm.group) if spec else None
        if group is None or group.recovery_type.upper() != "AUTO":
            return False
        actions.run_recovery(engine, job, vm.generated_name, why)
        now = engine.store.vm(vm.generated_name)
        if now is None or now.state != st.VM_ALIVE:
            return False
        first = not now.alive_reported
        now = engine.set_vm_state(now.generated_name, st.VM_ALIVE, alive_reported=True)
        dep = engine.store.deployment(vm.tenant, vm.deployment)
        if dep is not None:
            key = outbox.vm_key(dep, now, outbox.ALIVE) if first else None
            engine.publish("VM_ALIVE", dep, now, message="VM is alive (after recovery)", key=key)
        return True

    return late


def start_in_order(
    engine: JobView, job: Job, dep: DeploymentRecord, spec: DeploymentSpec, vms: list[VmRecord]
) -> list[str]:
    """Create and wait for ``vms`` group stage by group stage (engine/startup.py)."""

    def refuse(vm: VmRecord, msg: str) -> None:
        vm = engine.set_vm_state(vm.generated_name, st.VM_ERROR, status_message=msg)
        engine.publish("VM_DEPLOYED", dep, vm, message=msg, failure=True)

    return startup.run_staged(
        list(spec.groups),
        spec.startup,
        vms,
        lambda batch: _create_vms(engine, job, dep, spec, batch),
        lambda watch: engine.wait_alive(job, dep, watch, event="VM_ALIVE",
                                        late=_recover(engine, job)),
        lambda vm: (engine.store.vm(vm.generated_name) or vm).state,
        refuse,
        job.cancel,
    )


def _refresh_facts(engine: JobView, vms: list[VmRecord]) -> None:
    """The hosts a deployment changed, in the engine's host snapshot before its
    outcome is published: a <get> after SERVICE_ALIVE shows the VMs' allocation."""
    for host in sorted({vm.host for vm in vms}):
        engine.host_facts.refresh(only=host)


def _finish(
    engine: JobView,
    dep: DeploymentRecord,
    event: str,
    errors: list[str],
    state: str | None,
    ok: str = "",
) -> None:
    _refresh_facts(engine, engine.store.vms(dep.tenant, dep.name))
    message = "; ".join(errors) if errors else ok
    changes: dict[str, object] = {"status_message": message}
    if state is not None:
        changes["state"] = state
    key = None
    if event == "SERVICE_ALIVE":
        # the first SERVICE_ALIVE is flagged, then sent under its key (outbox.py)
        key = None if dep.alive_reported else outbox.service_key(dep)
        changes["alive_reported"] = True
    dep = engine.store.update_deployment(dep.tenant, dep.name, **changes) or dep
    engine.publish(event, dep, message=message, failure=bool(errors), key=key)


def undeploy(engine: JobView, job: Job, tenant: str, name: str) -> None:
    dep = engine.store.update_deployment(tenant, name, state=st.SERVICE_UNDEPLOYING)
    if dep is None:
        return
    errors = []
    vms = engine.store.vms(tenant, name)
    for vm in vms:
        engine.set_vm_state(vm.generated_name, st.VM_UNDEPLOYING, monitoring=False)
        try:
            engine.ops.remove(vm)
        except Exception as exc:
            errors.append(f"VM {vm.generated_name}: {exc}")
            engine.publish("VM_UNDEPLOYED", dep, vm, message=str(exc), failure=True)
            continue
        engine.store.delete_vm(vm.generated_name)
        engine.publish("VM_UNDEPLOYED", dep, vm, message="VM has been undeployed")
    engine.store.delete_deployment(tenant, name)
    _refresh_facts(engine, vms)
    message = "; ".join(errors) if errors else "Service successfully undeployed"
    engine.publish("SERVICE_UNDEPLOYED", dep, message=message, failure=bool(errors))
    engine.forget_reported(dep)


def update(engine: JobView, job: Job, old: DeploymentSpec | None, spec: DeploymentSpec) -> None:
    dep = engine.store.deployment(spec.tenant, spec.name)
    if dep is None:
        deploy(engine, job, spec)
        return
    previous_state = dep.state
    if previous_state == st.SERVICE_UPDATING:  # resumed after a restart
        previous_state = st.SERVICE_ACTIVE
    dep = (
        engine.store.update_deployment(
            dep.tenant, dep.name, state=st.SERVICE_UPDATING, applied=spec.fingerprint
        )
        or dep
    )
    errors: list[str] = []
    resizes: list[tuple[VmRecord, str, str]] = []
    existing = engine.store.vms(spec.tenant, spec.name)
    scaled_groups = {v.group for v in existing if v.group in spec.groups}
    for vm in existing:
        if vm.group not in spec.groups:  # group removed from the deployment
            engine.set_vm_state(vm.generated_name, st.VM_UNDEPLOYING, monitoring=False)
            engine.ops.remove(vm)
            engine.store.delete_vm(vm.generated_name)
            engine.publish("VM_UNDEPLOYED", dep, vm, message="vm_group removed by update")
    errors += _scale_in(engine, dep, spec)
    for vm in engine.store.vms(spec.tenant, spec.name):
        errors += _update_vm(engine, dep, vm, spec.groups[vm.group], resizes)
    new_vms = []
    try:
        before = {v.generated_name for v in engine.store.vms(spec.tenant, spec.name)}
        for vm in _ensure_records(engine, spec):
            if vm.generated_name not in before:
                new_vms.append(vm)
    except PlacementError as exc:
        errors.append(str(exc))
    scale_out = [v for v in new_vms if v.group in scaled_groups]
    out_names = {v.generated_name for v in scale_out}
    for vm in scale_out:
        engine.publish(
            "VM_SCALE_OUT_INIT",
            dep,
            vm,
            message=f"scale out of vm_group {vm.group} to min_active "
            f"{spec.groups[vm.group].min_active}",
        )
    watch, errs = _create_vms(
        engine,
        job,
        dep,
        spec,
        new_vms,
        lambda v: "VM_SCALE_OUT_DEPLOYED" if v.generated_name in out_names else "VM_DEPLOYED",
    )
    errors += errs
    errors += engine.wait_alive(job, dep, watch, event="VM_ALIVE", late=_recover(engine, job))
    for vm in scale_out:
        current = engine.store.vm(vm.generated_name) or vm
        ok = current.state == st.VM_ALIVE
        engine.publish(
            "VM_SCALE_OUT_COMPLETE",
            dep,
            current,
            message="VM scale out completed"
            if ok
            else f"scale out failed: {current.status_message}",
            failure=not ok,
        )
    final = (
        st.SERVICE_ERROR
        if errors
        else (previous_state if previous_state == st.SERVICE_STOPPED else st.SERVICE_ACTIVE)
    )
    _finish(
        engine,
        dep,
        "SERVICE_UPDATED",
        errors,
        final,
        ok="Service group update completed successfully",
    )
    hook = engine.hooks.resize
    for vm, old_flavor, new_flavor in resizes:
        if hook is not None:
            hook(
                engine,
                job,
                vm,
                engine.desired.flavors[old_flavor],
                engine.desired.flavors[new_flavor],
            )


def _scale_in(engine: JobView, dep: DeploymentRecord, spec: DeploymentSpec) -> list[str]:
    """Remove VMs above min_active, highest index first; their addresses are freed
    (placement picks static IPs not held by a sibling record)."""
    errors: list[str] = []
    for group in spec.groups.values():
        have = [v for v in engine.store.vms(spec.tenant, spec.name) if v.group == group.name]
        excess = len(have) - target_count(dep, group)  # elastic scale-out stays
        if excess <= 0:
            continue
        for vm in sorted(have, key=lambda v: v.index, reverse=True)[:excess]:
            engine.publish(
                "VM_SCALE_IN_INIT",
                dep,
                vm,
                message=f"scale in of vm_group {group.name} to min_active {group.min_active}",
            )
            engine.set_vm_state(vm.generated_name, st.VM_UNDEPLOYING, monitoring=False)
            try:
                engine.ops.remove(vm)
            except Exception as exc:
                msg = f"VM {vm.generated_name} could not be removed: {exc}"
                errors.append(msg)
                vm = engine.set_vm_state(vm.generated_name, st.VM_ERROR, status_message=msg)
                engine.publish("VM_SCALE_IN_COMPLETE", dep, vm, message=msg, failure=True)
                continue
            engine.store.delete_vm(vm.generated_name)
            engine.publish("VM_SCALE_IN_COMPLETE", dep, vm, message="VM scale in completed")
    # elastic extras within the (maybe lowered) bounds: a later max_active raise adds none
    extras = {
        g.name: min(dep.elastic[g.name], max(0, g.max_active - g.min_active))
        for g in spec.groups.values()
        if dep.elastic.get(g.name)
    }
    if extras != dep.elastic:
        engine.store.update_deployment(dep.tenant, dep.name, elastic=extras)
    return errors


def _update_vm(
    engine: JobView,
    dep: DeploymentRecord,
    vm: VmRecord,
    group: GroupSpec,
    resizes: list[tuple[VmRecord, str, str]],
) -> list[str]:
    changed = vm.fingerprint != group.fingerprint  # the image is not part of it
    flavor_changed = vm.flavor != group.flavor
    if not changed and not flavor_changed:
        return []
    if flavor_changed and engine.hooks.resize is not None and not changed:
        # day-2 resize: the handler updates the record and publishes VM_VERIFY_RESIZE
        resizes.append((vm, vm.flavor, group.flavor))
        return []
    from escnc.engine.placement import interfaces_for

    siblings = [
        v
        for v in engine.store.vms(vm.tenant, vm.deployment)
        if v.generated_name != vm.generated_name
    ]
    interfaces = vm.interfaces
    if [(i.nicid, i.network) for i in group.interfaces] != [
        (n, net) for n, net, _ip, _m in vm.interfaces
    ]:
        interfaces = interfaces_for(group, vm.generated_name, siblings)
    new = (
        engine.store.update_vm(
            vm.generated_name,
            fingerprint=group.fingerprint,
            flavor=group.flavor if engine.hooks.resize is None else vm.flavor,
            interfaces=interfaces,
        )
        or vm
    )
    if flavor_changed and engine.hooks.resize is not None:
        resizes.append((new, vm.flavor, group.flavor))
    try:
        engine.ops.redefine(new, dep.deployment_id, group, engine.desired)
    except Exception as exc:
        msg = f"VM {vm.generated_name} could not be updated: {exc}"
        engine.publish("VM_UPDATED", dep, new, message=msg, failure=True)
        return [msg]
    message = "VM has been updated (applies at next start)"
    nics_changed = [(n, net) for n, net, _ip, _m in new.interfaces] != [
        (n, net) for n, net, _ip, _m in vm.interfaces
    ]
    dom = engine.ops.domain(new) if nics_changed else None
    if dom is not None:  # vNICs of a running VM: attached/detached live where possible
        nics = dom.sync_live_nics().summary()
        if nics:
            message = f"VM has been updated (other changes apply at next start); interfaces {nics}"
    engine.publish("VM_UPDATED", dep, new, message=message)
    return []


def elastic_for(engine: ElasticView) -> Elastic:
    """The engine's KPI poller, rules and scaler (engine/elastic.py), wired to it."""

    def publish_vm(type_: str, vm: VmRecord, message: str, failure: bool) -> None:
        dep = engine.deployment_of(vm) or DeploymentRecord(vm.tenant, vm.deployment, "", "")
        engine.publish(type_, dep, vm, message=message, failure=failure)

    def recover(vm: VmRecord, reason: str) -> str:
        try:
            engine.recover(vm, reason)
        except Exception as exc:  # engine.errors.Refused: the state forbids it now
            return f"not done: {exc}"
        return "recovery per recovery_policy queued"

    def is_test(vm: VmRecord) -> bool:
        return engine.ops.host(vm).is_test

    ops = ScaleOps(
        store=engine.store,
        clock=engine.clock,
        cooldown=lambda: engine.settings.scale_cooldown,
        desired=lambda: engine.desired,
        submit=lambda key, name, fn, dropped: engine.jobs.submit(key, name, fn, on_cancel=dropped),
        publish=engine.publish,
        create=lambda job, dep, spec, vms, ev: _create_vms(engine, job, dep, spec, vms, ev),
        wait_alive=lambda job, dep, vms: engine.wait_alive(job, dep, vms, event="VM_ALIVE"),
        new_vm=lambda spec, group, index, existing: new_vm(
            engine.vims, spec, group, index, existing, engine.capacity
        ),
        remove=engine.ops.remove,
    )
    return Elastic(
        engine.settings,
        ops,
        CollectorEnv(engine.ops.domain, is_test),
        engine.group_of,
        publish_vm,
        recover,
    )
