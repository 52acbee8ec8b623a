"""Terminal events exactly once across kill -9: the ``*_reported`` flags as an outbox.

The engine's records and the event log are two databases, so "record that the event
is sent" and "send it" cannot be one transaction. The flag is written first and
means *owed or sent*; the event is then published under an idempotency key that the
event log stores in the event's own transaction (events/log.py ``append_keyed``).
At start, before reconcile, :func:`republish` publishes every flagged outcome whose
key the log does not hold: a kill -9 between the two steps costs a late event,
never a lost or a doubled one. Keys name the outcome (the flag), not the event
type, so a repeat under another type is a no-op too.

Flags covered: VmRecord.deployed_reported (VM_DEPLOYED or VM_SCALE_OUT_DEPLOYED),
VmRecord.alive_reported (the first VM_ALIVE), DeploymentRecord.alive_reported
(SERVICE_ALIVE). A deployment's keys are forgotten when it is undeployed (its
records are gone, so nothing is owed under them any more).

The first start on an event log without this instance's marker key (a log from
before keys, or a new instance) adopts every flagged outcome as published instead of
publishing it: they were sent by the escnc that flagged them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from escnc.engine import states as st

if TYPE_CHECKING:
    from escnc.engine.model import Desired
    from escnc.engine.notify import Notifier
    from escnc.engine.store import DeploymentRecord, EngineStore, VmRecord

log = logging.getLogger(__name__)

DEPLOYED = "deployed"
ALIVE = "alive"


def vm_key(dep: DeploymentRecord, vm: VmRecord, outcome: str) -> str | None:
    """The key of a VM's first ``outcome`` (DEPLOYED or ALIVE); None for a record
    without a deployment id (a stand-in record: nothing owed under it)."""
    if not dep.deployment_id:
        return None
    return f"{dep.deployment_id}/{vm.vm_id}/{outcome}"


def service_key(dep: DeploymentRecord) -> str | None:
    """The key of a deployment's SERVICE_ALIVE."""
    return f"{dep.deployment_id}/{ALIVE}" if dep.deployment_id else None


def forget(notifier: Notifier, dep: DeploymentRecord) -> None:
    """The deployment is undeployed: its keys are no longer needed."""
    if dep.deployment_id:
        notifier.forget(f"{dep.deployment_id}/")


class OutboxView(Protocol):
    store: EngineStore
    notifier: Notifier
    desired: Desired
    instance_id: str


def marker(owner: str, what: str) -> str:
    """The key saying that ``owner``'s ``what`` outcomes are published under keys."""
    return f"outbox/{owner}/{what}"


def owed_now(notifier: Notifier, keys: list[str], mark: str) -> set[str] | None:
    """Which of ``keys`` are to be published now: those the log lacks, or none when
    the log has no ``mark`` yet (then they are adopted and the mark set). None when
    the log cannot be read (the next start tries again)."""
    try:
        done = notifier.published([mark, *keys])
        if mark not in done:
            notifier.adopt([*keys, mark])  # one transaction
            return set()
    except Exception:
        log.exception("cannot read the event log's keys: owed events not republished")
        return None
    return set(keys) - done


def _deployed_type(engine: OutboxView, vm: VmRecord) -> str:
    """Which event a VM's deployed outcome was: a VM above its group's min_active was
    added by a scale-out (the record does not say; its index does)."""
    spec = engine.desired.deployments.get(vm.dep_key)
    group = spec.groups.get(vm.group) if spec else None
    if group is not None and vm.index >= group.min_active:
        return "VM_SCALE_OUT_DEPLOYED"
    return "VM_DEPLOYED"


def republish(engine: OutboxView) -> int:
    """Publish every flagged outcome the event log has no key for (at start, before
    reconcile: per deployment VM_DEPLOYED, then VM_ALIVE, then SERVICE_ALIVE, the
    order they were owed in). Returns how many were published."""
    owed: list[tuple[str, str, DeploymentRecord, VmRecord | None]] = []
    for dep in engine.store.deployments():
        vms = engine.store.vms(dep.tenant, dep.name)
        for outcome, flag in ((DEPLOYED, "deployed_reported"), (ALIVE, "alive_reported")):
            for record in vms:
                key = vm_key(dep, record, outcome)
                if key and getattr(record, flag):
                    owed.append((key, outcome, dep, record))
        key = service_key(dep)
        if key and dep.alive_reported and dep.state != st.SERVICE_UNDEPLOYING:
            owed.append((key, "service", dep, None))
    missing = owed_now(engine.notifier, [k for k, *_ in owed],
                       marker(engine.instance_id, "engine"))
    if not missing:
        return 0
    count = 0
    for key, outcome, dep, vm in owed:
        if key not in missing:
            continue
        log.warning("publishing an event owed since before a restart: %s", key)
        if vm is None:
            failure = dep.state == st.SERVICE_ERROR
            message = dep.status_message or "Service group deployment completed successfully"
            engine.notifier.publish("SERVICE_ALIVE", dep, message=message, failure=failure,
                                    key=key)
        elif outcome == DEPLOYED:
            engine.notifier.publish(_deployed_type(engine, vm), dep, vm,
                                    message="VIM Driver: VM successfully created", key=key)
        else:
            engine.notifier.publish("VM_ALIVE", dep, vm, message="VM is alive", key=key)
        count += 1
    return count
