"""ESC's start-up policy for composite VNFs: ``policies/startup`` -- the VMs of
``target_vm_group_ref`` start only after those of each ``depends_on/vm_group_ref``
are alive (``kpi_event_ref``; VM_ALIVE is the event escnc knows to wait for).

Groups are started in stages (a topological order: a stage's groups depend only on
earlier stages); within a stage, in parallel as before. A group whose dependency did
not come up is not started: its VMs go to VM_ERROR_STATE and their VM_DEPLOYED is a
FAILURE naming the dependency. Deploy and the restart repair follow the stages.
A dependency cycle, an unknown vm_group or another kpi_event_ref is refused at
validation (``startup_errors``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from lxml import etree

from escnc.engine import states as st
from escnc.engine.store import VmRecord
from escnc.ns import ESC

SUPPORTED_EVENTS = ("VM_ALIVE",)


def _q(name: str) -> str:
    return f"{{{ESC}}}{name}"


@dataclass(frozen=True)
class StartupDep:
    target: str  # target_vm_group_ref
    depends_on: str  # depends_on/vm_group_ref
    kpi_event: str = "VM_ALIVE"  # depends_on/kpi_event_ref


def parse_startup(deployment: etree._Element) -> tuple[StartupDep, ...]:
    out = []
    for s in deployment.iterfind(f"{_q('policies')}/{_q('startup')}"):
        target = (s.findtext(_q("target_vm_group_ref")) or "").strip()
        for d in s.iterfind(_q("depends_on")):
            out.append(
                StartupDep(
                    target,
                    (d.findtext(_q("vm_group_ref")) or "").strip(),
                    (d.findtext(_q("kpi_event_ref")) or "VM_ALIVE").strip(),
                )
            )
    return tuple(out)


def stages(groups: list[str], deps: tuple[StartupDep, ...]) -> list[list[str]] | None:
    """Group names per stage, in order; None when the dependencies have a cycle."""
    needs = {g: {d.depends_on for d in deps if d.target == g and d.depends_on in groups}
             for g in groups}
    done: set[str] = set()
    out = []
    while len(done) < len(groups):
        stage = sorted(g for g in groups if g not in done and needs[g] <= done)
        if not stage:
            return None
        out.append(stage)
        done.update(stage)
    return out


def startup_errors(groups: list[str], deps: tuple[StartupDep, ...]) -> list[str]:
    errors = []
    for d in deps:
        for name in (d.target, d.depends_on):
            if name not in groups:
                errors.append(f"startup policy names vm_group {name}, not in the deployment")
        if d.kpi_event not in SUPPORTED_EVENTS:
            errors.append(
                f"startup policy of vm_group {d.target}: kpi_event_ref {d.kpi_event} is not "
                f"supported (only {', '.join(SUPPORTED_EVENTS)})"
            )
        if d.target == d.depends_on:
            errors.append(f"startup policy: vm_group {d.target} depends on itself")
    if not errors and stages(groups, deps) is None:
        chain = sorted({d.target for d in deps})
        errors.append(f"startup policy has a dependency cycle among vm_groups {', '.join(chain)}")
    return errors


def run_staged(
    groups: list[str],
    deps: tuple[StartupDep, ...],
    vms: list[VmRecord],
    create: Callable[[list[VmRecord]], tuple[list[VmRecord], list[str]]],
    wait: Callable[[list[VmRecord]], list[str]],
    state_of: Callable[[VmRecord], str],
    refuse: Callable[[VmRecord, str], None],
    cancel: threading.Event,
) -> list[str]:
    """Create and wait for ``vms`` stage by stage; returns the errors."""
    order = stages(groups, deps) or [groups]
    errors: list[str] = []
    alive_groups: set[str] = set()
    for stage in order:
        if cancel.is_set():
            break
        batch = [v for v in vms if v.group in stage]
        blocked = {}
        for g in stage:
            missing = [d.depends_on for d in deps if d.target == g
                       and d.depends_on not in alive_groups]
            if missing:
                blocked[g] = missing
        for vm in [v for v in batch if v.group in blocked]:
            msg = (f"VM {vm.generated_name} not started: vm_group {vm.group} depends on "
                   f"{', '.join(blocked[vm.group])}, which is not alive")
            errors.append(msg)
            refuse(vm, msg)
        watch, errs = create([v for v in batch if v.group not in blocked])
        errors += errs
        if cancel.is_set():
            break
        errors += wait(watch)
        for g in stage:
            mine = [v for v in vms if v.group == g]
            if g not in blocked and all(state_of(v) == st.VM_ALIVE for v in mine):
                alive_groups.add(g)
    return errors
