"""Reconcile, level-triggered: find what is really unfinished and queue one job for it.

A pass (at start, after a host reconnects, every ``settings.reconcile_interval``)
observes every connected host (the domains this escnc instance created, running or
not) and compares, per deployment, the desired state, the engine's records and what
it observed. A deployment gets a job only when something is unfinished:

* desired without a record, or its record says a deploy or update was under way
  (escnc stopped in the middle): the deploy or update resumes, reporting only
  what it had not reported;
* its desired spec differs from the one its last deploy/update acted on (the
  configuration changed while escnc was down): an update;
* a VM whose start was under way, or a monitored VM whose domain is missing: it is
  repaired (``engine/converge.py``) -- a MANUAL recovery VM gets
  VM_MANUAL_RECOVERY_NEEDED instead. (A domain that exists but does not answer is
  the monitor's to judge, after metric_occurrences_false polls.)

What an operator or a reported outcome settled is left alone: VM_MONITOR_DISABLED,
VM_STOPPED, VM_ERROR (a failed deploy is not re-attempted: a retry is a new request),
a stopped service, a failed update or scale-out, day-2 states. A busy deployment is
skipped (its jobs act on the latest state; the next pass looks again), and the job
is coalesced (``kind="reconcile"``): at most one is ever pending per deployment.
A domain with escnc metadata that no VM record names is an orphan: removed, with
VM_UNDEPLOYED. A recorded deployment that is no longer desired is undeployed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from escnc.engine import converge, lifecycle
from escnc.engine import states as st
from escnc.engine.jobs import Job
from escnc.engine.model import DeploymentSpec
from escnc.engine.monitor import monitored
from escnc.engine.store import DeploymentRecord, VmRecord
from escnc.vim.domain_xml import VmMeta
from escnc.vim.driver import VimDriver, VimError
from escnc.vim.hosts import Host

if TYPE_CHECKING:
    from escnc.engine.context import ReconcileView

log = logging.getLogger(__name__)


@dataclass
class Observed:
    """What one pass saw: the domains on each host it could list."""

    domains: dict[str, set[str]] = field(default_factory=dict)  # host -> domain names

    def seen(self, vm: VmRecord) -> bool:
        return vm.host in self.domains

    def present(self, vm: VmRecord) -> bool:
        return vm.generated_name in self.domains.get(vm.host, ())


def scan(
    driver: VimDriver, host: Host, owner: str, known: dict[str, VmRecord]
) -> tuple[set[str], list[VmMeta]]:
    """(names of every domain on the host, metadata of this instance's orphans).

    A domain a VM record places on this host is ours by name; the metadata of any
    other domain is read: one that this escnc instance (``owner``) created is an
    orphan, other instances' domains on a shared host are left alone."""
    names: set[str] = set()
    orphans = []
    for dom in driver.domains(host):
        name = dom.name
        names.add(name)
        vm = known.get(name)
        if vm is not None and vm.host == host.name:
            continue
        # no escnc metadata (None): not ours (e.g. the test driver's `test` domain)
        meta = dom.escnc_meta()
        if meta is not None and meta.owner == owner:
            orphans.append(meta)
    return names, orphans


def reconcile(engine: ReconcileView) -> None:
    engine.host_facts.refresh()  # what validators and <get> read (engine/hostfacts.py)
    desired = engine.desired
    observed = Observed()
    orphans: list[tuple[Host, VmMeta]] = []
    known = {v.generated_name: v for v in engine.store.vms()}
    for host in engine.vims.hosts():
        if not host.connected:
            continue
        try:
            names, strays = scan(engine.driver, host, engine.instance_id, known)
        except VimError as exc:
            log.warning("reconcile: cannot list domains of %s: %s", host.name, exc)
            continue
        observed.domains[host.name] = names
        orphans += [(host, meta) for meta in strays]
    by_deployment: dict[tuple[str, str], list[VmRecord]] = {}
    for vm in known.values():
        by_deployment.setdefault(vm.dep_key, []).append(vm)
    for key, spec in desired.deployments.items():
        if engine.jobs.busy(key):
            continue  # its jobs act on the latest state; the next pass looks again
        dep = engine.store.deployment(*key)
        why = unfinished(engine, spec, dep, by_deployment.get(key, []), observed)
        if why:
            log.info("reconcile %s/%s: %s", key[0], key[1], why)
            engine.jobs.submit(
                key,
                f"reconcile ({why})",
                engine.bind(converge.converge, key),
                kind="reconcile",
                interruptible=True,
            )
    for dep in engine.store.deployments():
        if dep.key not in desired.deployments and not engine.jobs.busy(dep.key):
            engine.jobs.submit(
                dep.key,
                "undeploy",
                engine.bind(lifecycle.undeploy, dep.tenant, dep.name),
                kind="undeploy",
            )
    for host, meta in orphans:
        engine.jobs.submit(
            (meta.tenant, meta.deployment),
            f"orphan {meta.generated_name}",
            engine.bind(_remove_orphan, host, meta),
            kind=f"orphan {host.name} {meta.generated_name}",
        )


def unfinished(
    engine: ReconcileView,
    spec: DeploymentSpec,
    dep: DeploymentRecord | None,
    vms: list[VmRecord],
    observed: Observed,
) -> str | None:
    """Why the deployment needs a job now, or None when it is converged."""
    if dep is None:
        return "not deployed"
    if dep.state in (st.SERVICE_DEPLOYING, st.SERVICE_UPDATING, st.SERVICE_UNDEPLOYING):
        return f"interrupted in {dep.state}"
    if converge.changed(engine, spec, dep, vms):
        return "configuration changed"
    if dep.state == st.SERVICE_STOPPED:
        return None
    for vm in vms:
        if not observed.seen(vm) or vm.group not in spec.groups:
            continue
        if vm.state in converge.UNFINISHED:  # no job waits for it: the start was cut short
            return f"VM {vm.generated_name} was being started"
        elif monitored(vm) and not observed.present(vm):
            # (a domain that exists but does not answer is the monitor's to judge,
            # with the group's metric_occurrences_false)
            return f"VM {vm.generated_name} has no domain on host {vm.host}"
    return None


def _remove_orphan(engine: ReconcileView, job: Job, host: Host, meta: VmMeta) -> None:
    vm = engine.store.vm(meta.generated_name)
    if vm is not None and vm.host == host.name:
        return  # claimed meanwhile (a deploy job recorded it before defining it)
    engine.driver.remove(host, meta.generated_name)
    engine.driver.delete_vm_volumes(host, engine.ops.pool(host), meta.generated_name)
    dep = engine.store.deployment(meta.tenant, meta.deployment) or DeploymentRecord(
        meta.tenant, meta.deployment, meta.deployment_id, ""
    )
    orphan = VmRecord(
        meta.generated_name,
        meta.vm_id,
        meta.tenant,
        meta.deployment,
        meta.group,
        meta.index,
        host.name,
        "",
    )
    engine.publish(
        "VM_UNDEPLOYED",
        dep,
        orphan,
        message=f"orphan domain {meta.generated_name} removed from host {host.name}",
    )
