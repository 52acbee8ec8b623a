"""Checks of KPIs and start-up policies in a proposed configuration (engine/validate.py
calls them): a KPI other than VM_ALIVE must name a collector escnc has (built-in or a
``[metrics.NAME]`` script of the server configuration), and a start-up policy must name
the deployment's groups, wait for VM_ALIVE and have no cycle."""

from __future__ import annotations

from collections.abc import Callable

from escnc.engine.kpi.spec import ALIVE_EVENT
from escnc.engine.model import Desired
from escnc.engine.startup import startup_errors


def kpi_errors(
    desired: Desired,
    collectors: list[str],
    err: Callable[[str, str], None],
    group_path: Callable[..., str],
) -> None:
    known = {c.upper() for c in collectors}
    for (tenant, dname), spec in sorted(desired.deployments.items()):
        for g in spec.groups.values():
            for k in g.kpis:
                if k.event_name != ALIVE_EVENT and k.collector.upper() not in known:
                    err(
                        f"vm_group {g.name}: KPI {k.event_name} names metric_collector type "
                        f"{k.collector!r}, which is no collector of this server (built-in or "
                        f"[metrics] in its configuration: {', '.join(sorted(collectors))})",
                        group_path(tenant, dname, g.name, "kpi_data")
                        + f"/esc:kpi[esc:event_name='{k.event_name}']"
                        "/esc:metric_collector/esc:type",
                    )
        path = (
            f"/esc:esc_datamodel/esc:tenants/esc:tenant[esc:name='{tenant}']"
            f"/esc:deployments/esc:deployment[esc:name='{dname}']/esc:policies"
        )
        for message in startup_errors(list(spec.groups), spec.startup):
            err(message, path)
