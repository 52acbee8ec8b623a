"""Reconcile: make every host match the desired state and the engine's records.

* A domain with escnc metadata that no VM record names is an orphan: removed, with
  VM_UNDEPLOYED (status message says so).
* A deployment in the desired state without a record is deployed; with a record it
  is converged (a deploy job that recreates missing domains, restarts domains that
  should run, resumes an interrupted deployment, and reports only what it did not
  report before); a changed one is updated first.
* A recorded deployment that is no longer desired is undeployed.

Everything is submitted as jobs on the deployment queues, so it interleaves safely
with client operations. Runs at start, after a host reconnects, and periodically.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import libvirt

from escnc.engine import lifecycle
from escnc.engine import states as st
from escnc.engine.jobs import Job
from escnc.engine.model import DeploymentSpec
from escnc.engine.store import DeploymentRecord, VmRecord
from escnc.engine.vmops import remove_domain
from escnc.vim.domain_xml import META_NS, VmMeta
from escnc.vim.hosts import Host
from escnc.vim.storage import delete_vm_volumes

if TYPE_CHECKING:
    from escnc.engine.engine import Engine

log = logging.getLogger(__name__)


def escnc_domains(host: Host, owner: str) -> list[tuple[str, VmMeta]]:
    """(domain name, metadata) of every domain on the host that this escnc instance
    (``owner``) created; other instances' domains on a shared host are left alone."""
    result = []
    for dom in host.connection().listAllDomains(0):
        try:
            meta = VmMeta.from_xml(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, META_NS, 0))
        except libvirt.libvirtError:
            continue  # no escnc metadata: not ours (e.g. the test driver's `test` domain)
        if meta is not None and meta.owner == owner:
            result.append((dom.name(), meta))
    return result


def reconcile(engine: Engine) -> None:
    desired = engine.desired
    known = {v.generated_name: v for v in engine.store.vms()}
    for host in engine.vims.hosts():
        if not host.connected:
            continue
        try:
            domains = escnc_domains(host, engine.instance_id)
        except libvirt.libvirtError as exc:
            log.warning("reconcile: cannot list domains of %s: %s", host.name, exc)
            continue
        present = {name for name, _ in domains}
        for rec in known.values():
            lost = rec.host == host.name and rec.generated_name not in present
            if lost and rec.state == st.VM_ALIVE:
                # the host lost it (restart, test driver): opdata must not keep saying alive
                engine.set_vm_state(rec.generated_name, st.VM_DEPLOYING)
        for name, meta in domains:
            vm = known.get(name)
            if vm is None or vm.host != host.name:
                engine.submit(
                    meta.tenant,
                    meta.deployment,
                    f"orphan {name}",
                    engine.bind(_remove_orphan, host, meta),
                )
    for key, spec in desired.deployments.items():
        dep = engine.store.deployment(*key)
        if dep is not None:
            vms = engine.store.vms(*key)
            if _needs_update(engine, spec, vms):
                engine.submit(*key, "update", engine.bind(lifecycle.update, None, spec))
        engine.submit(*key, "deploy", engine.bind(lifecycle.deploy, spec), interruptible=True)
    for dep in engine.store.deployments():
        if dep.key not in desired.deployments:
            engine.submit(
                *dep.key,
                "undeploy",
                engine.bind(lifecycle.undeploy, dep.tenant, dep.name),
            )


def _needs_update(engine: Engine, spec: DeploymentSpec, vms: list[VmRecord]) -> bool:
    day2 = engine.services.day2
    for vm in vms:
        group = spec.groups.get(vm.group)
        if group is None or group.fingerprint != vm.fingerprint:
            return True
        # a flavor rollout resizes one VM at a time: the others differ on purpose
        if group.flavor != vm.flavor and not (
            day2 is not None and day2.resize_in_progress(vm.generated_name)
        ):
            return True
    for group in spec.groups.values():  # an interrupted scale in
        if sum(1 for v in vms if v.group == group.name) > group.min_active:
            return True
    return False


def _remove_orphan(engine: Engine, job: Job, host: Host, meta: VmMeta) -> None:
    vm = engine.store.vm(meta.generated_name)
    if vm is not None and vm.host == host.name:
        return  # claimed meanwhile (a deploy job recorded it before defining it)
    remove_domain(host, meta.generated_name)
    delete_vm_volumes(host, engine.ops.pool(host), meta.generated_name)
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
