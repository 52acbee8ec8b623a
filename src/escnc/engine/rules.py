"""Rules -> actions: what a KPI outcome does (ESC's ``rules/admin_rules/rule``).

A rule names a KPI's event_name and lists action strings ``"CONDITION name"``:
CONDITION is TRUE, FALSE or ALWAYS (both outcomes). The whole string (surrounding
quotes and extra blanks ignored, settings.normalize_action) is looked up in the
operator's mapping (``[actions."TRUE my-scale-out"] type = ...`` in the server's
TOML config) and then in the built-in defaults for ESC's well-known strings:

    ALWAYS log                      -> log
    TRUE esc_vm_alive_notification  -> vm_alive
    TRUE servicebooted.sh           -> vm_alive
    FALSE recover autohealing       -> recover (per recovery_policy)
    TRUE servicescaleup.sh          -> scale_out
    TRUE servicescaledown.sh        -> scale_in

Types: ``log`` writes the outcome to the log; ``vm_alive`` reports the VM alive
(for VM_ALIVE the engine already sent VM_ALIVE; the action records it);
``recover`` recovers the VM per its recovery_policy (for VM_ALIVE's FALSE the
monitor has started it); ``scale_out`` / ``scale_in`` ask engine/scaling.py;
``script`` runs the mapping's fixed argv with the VM's environment plus
``ESCNC_EVENT`` and ``ESCNC_OUTCOME``. An action string found in neither is
reported once per deployment, vm_group and rule (VM_RULE_ACTION_UNKNOWN, FAILURE,
and a warning) and never executed. Every executed action is logged with its outcome.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from escnc.engine.kpi.collectors import run_bounded, vm_environment
from escnc.engine.model import GroupSpec
from escnc.engine.store import VmRecord
from escnc.settings import ActionMapping, normalize_action

log = logging.getLogger(__name__)

BUILTIN_ACTIONS = {
    "ALWAYS log": ActionMapping("log"),
    "TRUE esc_vm_alive_notification": ActionMapping("vm_alive"),
    "TRUE servicebooted.sh": ActionMapping("vm_alive"),
    "FALSE recover autohealing": ActionMapping("recover"),
    "TRUE servicescaleup.sh": ActionMapping("scale_out"),
    "TRUE servicescaledown.sh": ActionMapping("scale_in"),
}
UNKNOWN_EVENT = "VM_RULE_ACTION_UNKNOWN"
SCRIPT_OUTPUT_MAX = 4096

# (action string as written, outcome): what happened, for opdata and tests
Outcome = Callable[[str, str], None]


@dataclass(frozen=True)
class RuleContext:
    """What actions need from the engine."""

    publish: Callable[[str, VmRecord, str, bool], None]  # (type, vm, message, failure)
    recover: Callable[[VmRecord, str], str]  # -> outcome text
    scale: Callable[[VmRecord, str, str], str]  # (vm, "out" | "in", reason) -> outcome
    pool: Executor  # script actions run here, never on the caller's thread


def resolve(text: str, mapping: dict[str, ActionMapping]) -> tuple[str, ActionMapping | None]:
    """(condition, mapping or None) of an action string."""
    name = normalize_action(text)
    condition = name.split(" ", 1)[0]
    return condition, mapping.get(name) or BUILTIN_ACTIONS.get(name)


class Rules:
    def __init__(self, mapping: dict[str, ActionMapping], ctx: RuleContext) -> None:
        self._mapping = mapping
        self._ctx = ctx
        self._reported: set[tuple[str, str, str, str, str]] = set()
        self._lock = threading.Lock()
        self.executed = 0  # actions run (benchmarks, tests)

    def fire(
        self,
        vm: VmRecord,
        group: GroupSpec,
        event_name: str,
        outcome: str,
        on_outcome: Outcome,
        *,
        by_monitor: bool = False,
    ) -> None:
        """Run the actions of ``group``'s rules for ``event_name`` matching ``outcome``
        (TRUE or FALSE). ``by_monitor``: VM_ALIVE, whose work the engine already did."""
        for rule in group.rules:
            if rule.event_name != event_name:
                continue
            for text in rule.actions:
                condition, action = resolve(text, self._mapping)
                if condition not in ("ALWAYS", outcome):
                    continue
                if action is None:
                    self._unknown(vm, event_name, text)
                    continue
                self._run(vm, event_name, outcome, text, action, on_outcome, by_monitor)

    def _unknown(self, vm: VmRecord, event_name: str, text: str) -> None:
        key = (vm.tenant, vm.deployment, vm.group, event_name, normalize_action(text))
        with self._lock:
            if key in self._reported:
                return
            self._reported.add(key)
        msg = (
            f"rule {event_name} of vm_group {vm.group}: action {text} is not known "
            "(no [actions] mapping in the server configuration, not an ESC default): "
            "not executed"
        )
        log.warning("%s", msg, extra=_tags(vm))
        self._ctx.publish(UNKNOWN_EVENT, vm, msg, True)

    def _run(
        self,
        vm: VmRecord,
        event_name: str,
        outcome: str,
        text: str,
        action: ActionMapping,
        on_outcome: Outcome,
        by_monitor: bool,
    ) -> None:
        reason = f"KPI {event_name} is {outcome} for VM {vm.generated_name}"
        if action.type == "script":
            try:
                self._ctx.pool.submit(self._script, vm, event_name, outcome, text, action,
                                      on_outcome)
            except RuntimeError:  # shutting down
                pass
            return
        if action.type == "log":
            result = "logged"
            log.info("rule: %s", reason, extra=_tags(vm))
        elif action.type == "vm_alive":
            result = "VM_ALIVE reported" if by_monitor else "VM is alive (no event: not VM_ALIVE)"
        elif action.type == "recover":
            if by_monitor:
                result = "recovery per recovery_policy, started by the monitor"
            else:
                result = self._ctx.recover(vm, reason)
        elif action.type in ("scale_out", "scale_in"):
            result = self._ctx.scale(vm, action.type[6:], reason)
        else:
            result = f"action type {action.type} is not supported"
        self._done(vm, event_name, outcome, text, action, result, on_outcome)

    def _script(
        self,
        vm: VmRecord,
        event_name: str,
        outcome: str,
        text: str,
        action: ActionMapping,
        on_outcome: Outcome,
    ) -> None:
        env = vm_environment(vm)
        env["ESCNC_EVENT"] = event_name
        env["ESCNC_OUTCOME"] = outcome
        _out, why = run_bounded(action.script, env, action.timeout, SCRIPT_OUTPUT_MAX)
        result = f"script {action.script[0]}: " + (why or "exit status 0")
        self._done(vm, event_name, outcome, text, action, result, on_outcome)

    def _done(
        self,
        vm: VmRecord,
        event_name: str,
        outcome: str,
        text: str,
        action: ActionMapping,
        result: str,
        on_outcome: Outcome,
    ) -> None:
        with self._lock:
            self.executed += 1
        log.info(
            "rule %s %s for VM %s: action %s (%s): %s",
            event_name,
            outcome,
            vm.generated_name,
            normalize_action(text),
            action.type,
            result,
            extra=_tags(vm),
        )
        on_outcome(normalize_action(text), result)


def _tags(vm: VmRecord) -> dict[str, str]:
    return {"tenant": vm.tenant, "deployment": vm.deployment, "vm": vm.generated_name}
