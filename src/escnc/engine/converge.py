"""The reconcile job: bring one deployment to its latest desired state.

Runs on the deployment's queue (``kind="reconcile"``, coalesced) and decides when it
runs, from the desired state and the records then, not from what the pass that
queued it saw (level-triggered):

* no record, or a deploy cut short: the deploy resumes (``lifecycle.deploy``);
* an update cut short, or a desired spec its last deploy/update did not act on:
  ``lifecycle.update``;
* otherwise a *repair*: a VM whose start was cut short is started and watched again;
  a monitored VM whose domain is missing is recreated (VM_RECOVERY_DEPLOYED) or,
  with recovery_type MANUAL, gets VM_MANUAL_RECOVERY_NEEDED. A monitored VM whose
  domain exists but is down is the monitor's (recovery per policy, or
  VM_MANUAL_RECOVERY_NEEDED).

Nothing else is touched: see ``engine/reconcile.py`` for what counts as settled.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from escnc.engine import lifecycle
from escnc.engine import states as st
from escnc.engine.errors import StateChanged
from escnc.engine.jobs import Job
from escnc.engine.model import DeploymentSpec
from escnc.engine.monitor import monitored
from escnc.engine.store import DeploymentRecord, VmRecord
from escnc.engine.vmops import VmOpError

if TYPE_CHECKING:
    from escnc.engine.context import JobView

log = logging.getLogger(__name__)

# a VM whose start was under way: no job waits for it any more
UNFINISHED = frozenset({st.VM_DEPLOYING, st.VM_INERT})


def changed(
    _engine: object, spec: DeploymentSpec, dep: DeploymentRecord, vms: list[VmRecord]
) -> bool:
    """The desired spec is one the last deploy/update did not act on."""
    if dep.applied:
        return dep.applied != spec.fingerprint
    # a record written before `applied` existed: compare the VMs' settings
    for vm in vms:
        group = spec.groups.get(vm.group)
        if group is None or group.fingerprint != vm.fingerprint:
            return True
    return False


def converge(engine: JobView, job: Job, key: tuple[str, str]) -> None:
    spec = engine.desired.deployments.get(key)
    if spec is None:
        return  # no longer desired: the undeploy job handles it
    dep = engine.store.deployment(*key)
    if dep is not None and dep.state == st.SERVICE_UNDEPLOYING:
        lifecycle.undeploy(engine, job, *key)  # finish it, then deploy afresh
        dep = None
    if dep is None or dep.state == st.SERVICE_DEPLOYING:
        lifecycle.deploy(engine, job, spec)
        return
    vms = engine.store.vms(*key)
    if dep.state == st.SERVICE_UPDATING or changed(engine, spec, dep, vms):
        lifecycle.update(engine, job, None, spec)
        return
    repair(engine, job, dep, spec)


def _host_connected(engine: JobView, vm: VmRecord) -> bool:
    try:
        return engine.ops.host(vm).connected
    except VmOpError:
        return False


def repair(engine: JobView, job: Job, dep: DeploymentRecord, spec: DeploymentSpec) -> None:
    if dep.state == st.SERVICE_STOPPED:
        return
    restart: list[VmRecord] = []
    for vm in engine.store.vms(*dep.key):
        group = spec.groups.get(vm.group)
        if group is None or not _host_connected(engine, vm):
            continue
        if vm.state in UNFINISHED:
            restart.append(vm)
            continue
        if not monitored(vm):
            continue  # stopped, monitoring disabled, in error, held by day-2: settled
        if engine.ops.domain(vm) is not None:
            continue  # whether it answers is the monitor's to judge
        reason = f"domain of VM {vm.generated_name} is missing on host {vm.host}"
        try:  # from the state it was read in (the lookup above is host I/O)
            if group.recovery_type.upper() == "MANUAL":
                engine.manual_recovery_needed(dep, vm.generated_name, reason,
                                              expected_state=vm.state)
            else:
                restart.append(engine.set_vm_state(vm.generated_name, st.VM_DEPLOYING,
                                                   expected_state=vm.state))
        except StateChanged as exc:  # changed meanwhile: the next pass looks again
            log.info("reconcile: %s", exc)
    if not restart or job.cancel.is_set():
        return
    errors = lifecycle.start_in_order(engine, job, dep, spec, restart)
    if errors and not job.cancel.is_set():
        engine.store.update_deployment(
            dep.tenant, dep.name, state=st.SERVICE_ERROR, status_message="; ".join(errors)
        )
