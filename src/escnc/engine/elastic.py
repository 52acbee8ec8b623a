"""Elastic services, wired together: metric collectors, the KPI poller, rules and
scaling (engine/kpi/, engine/rules.py, engine/scaling.py). The engine builds one
(lifecycle.elastic_for), starts it after its own start and stops it first."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from escnc.engine.kpi.collectors import CollectorEnv, Collectors
from escnc.engine.kpi.runtime import KpiContext, KpiRuntime
from escnc.engine.kpi.spec import ALIVE_EVENT
from escnc.engine.model import GroupSpec
from escnc.engine.rules import RuleContext, Rules
from escnc.engine.scaling import ScaleOps, Scaler, target_count
from escnc.engine.store import DeploymentRecord, VmRecord
from escnc.ns import ESC
from escnc.settings import Settings

log = logging.getLogger(__name__)


class Elastic:
    def __init__(
        self,
        settings: Settings,
        scale_ops: ScaleOps,
        collector_env: CollectorEnv,
        group_of: Callable[[VmRecord], GroupSpec | None],
        publish_vm: Callable[[str, VmRecord, str, bool], None],
        recover: Callable[[VmRecord, str], str],
    ) -> None:
        self.pool = ThreadPoolExecutor(
            max_workers=max(1, settings.kpi_workers), thread_name_prefix="kpi"
        )
        self._ops = scale_ops
        self.scaler = Scaler(scale_ops)
        self.collectors = Collectors(
            collector_env, settings.metrics, settings.metric_output_max_bytes
        )
        self.rules = Rules(
            settings.actions, RuleContext(publish_vm, recover, self.scaler.request, self.pool)
        )
        self.kpis = KpiRuntime(
            KpiContext(
                scale_ops.store,
                scale_ops.clock,
                group_of,
                publish_vm,
                self.collectors,
                self.rules,
                self.pool,
            )
        )

    def start(self, events: Any) -> None:
        self.kpis.start(events)

    def stop(self) -> None:
        self.kpis.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- opdata (engine/opdata.py) -------------------------------------------------------

    def group_opdata(self, parent: etree._Element, dep: DeploymentRecord, name: str) -> None:
        spec = self._ops.desired().deployments.get(dep.key)
        group = spec.groups.get(name) if spec else None
        if group is None:
            return
        s = etree.SubElement(parent, _q("scaling"))
        count = sum(1 for v in self._ops.store.vms(*dep.key) if v.group == name)
        _leaf(s, "elastic", "true" if group.elastic else "false")
        _leaf(s, "active_count", count)
        _leaf(s, "target_count", target_count(dep, group))
        _leaf(s, "elastic_count", int(dep.elastic.get(name, 0)))
        info = self.scaler.info((dep.tenant, dep.name, name))
        if info is not None:
            _leaf(s, "last_operation", info.last)
            _leaf(s, "last_outcome", info.outcome)

    def vm_opdata(self, parent: etree._Element, vm: VmRecord) -> None:
        states = self.kpis.states(vm.generated_name)
        if not states:
            return
        group = self._ops.desired().deployments.get(vm.dep_key)
        kpis = {k.event_name: k for k in group.groups[vm.group].kpis} if (
            group and vm.group in group.groups
        ) else {}
        out = etree.SubElement(parent, _q("kpis"))
        for event, st in sorted(states.items()):
            k = etree.SubElement(out, _q("kpi"))
            _leaf(k, "event_name", event)
            if event == ALIVE_EVENT and vm.collector:
                _leaf(k, "collector", vm.collector)  # what decided liveness (monitor.py)
            elif event in kpis:
                _leaf(k, "collector", kpis[event].collector)
            _leaf(k, "state", st.state)
            if st.value is not None:
                _leaf(k, "last_value", f"{st.value:g}")
            if st.sampled_at:
                when = datetime.fromtimestamp(st.sampled_at, UTC)
                _leaf(k, "last_sample_time", when.isoformat(timespec="milliseconds"))
            _leaf(k, "last_sample_unknown", st.last_unknown)
            _leaf(k, "samples", st.samples)
            _leaf(k, "consecutive_true", st.trues)
            _leaf(k, "consecutive_false", st.falses)
            _leaf(k, "last_action", st.last_action)
            _leaf(k, "last_action_outcome", st.last_outcome)


def _q(name: str) -> str:
    return f"{{{ESC}}}{name}"


def _leaf(parent: etree._Element, name: str, value: object) -> None:
    if value == "" or value is None:
        return
    etree.SubElement(parent, _q(name)).text = str(value)
