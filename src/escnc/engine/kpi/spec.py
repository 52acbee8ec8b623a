"""KPI and rule definitions of a vm_group, parsed from the committed configuration.

ESC's ``kpi_data/kpi`` (event_name, metric_value, metric_cond, metric_type,
metric_occurrences_true/false, metric_collector type/nicid/poll_frequency/
polling_unit/continuous_alarm) and ``rules/admin_rules/rule`` (event_name, action*),
correlated by event_name. Frozen values: part of the desired state.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from escnc.engine.xmltext import int_of as _int
from escnc.engine.xmltext import q as _q
from escnc.engine.xmltext import text as _text

ALIVE_EVENT = "VM_ALIVE"  # the liveness KPI: engine/monitor.py samples it
CONDITIONS = ("GT", "GE", "LT", "LE", "EQ", "NE")
DEFAULT_POLL = 3.0


@dataclass(frozen=True)
class KpiDef:
    event_name: str
    collector: str = "ICMPPing"
    nicid: int = 0
    poll_seconds: float = DEFAULT_POLL
    cond: str = "GT"
    value: str = "0"  # metric_value as written (compared as a number, or as text for STRING)
    metric_type: str = "UINT32"
    occurrences_true: int = 1
    occurrences_false: int = 1
    continuous_alarm: bool = False


@dataclass(frozen=True)
class RuleDef:
    event_name: str
    actions: tuple[str, ...] = ()  # as written (quotes and all); engine/rules.py reads them


def parse_kpis(group: etree._Element) -> tuple[KpiDef, ...]:
    out = []
    for k in group.iterfind(f"{_q('kpi_data')}/{_q('kpi')}"):
        coll = k.find(_q("metric_collector"))
        freq = float(_int(coll, "poll_frequency", int(DEFAULT_POLL)) or DEFAULT_POLL)
        if _text(coll, "polling_unit", "seconds").startswith("minute"):
            freq *= 60
        out.append(
            KpiDef(
                event_name=_text(k, "event_name"),
                collector=_text(coll, "type", "ICMPPing"),
                nicid=_int(coll, "nicid", 0),
                poll_seconds=freq,
                cond=_text(k, "metric_cond", "GT").upper(),
                value=_text(k, "metric_value", "0"),
                metric_type=_text(k, "metric_type", "UINT32").upper(),
                occurrences_true=max(1, _int(k, "metric_occurrences_true", 1)),
                occurrences_false=max(1, _int(k, "metric_occurrences_false", 1)),
                continuous_alarm=_text(coll, "continuous_alarm", "false").lower() == "true",
            )
        )
    return tuple(out)


def parse_rules(group: etree._Element) -> tuple[RuleDef, ...]:
    path = f"{_q('rules')}/{_q('admin_rules')}/{_q('rule')}"
    return tuple(
        RuleDef(
            _text(r, "event_name"),
            tuple((a.text or "").strip() for a in r.iterfind(_q("action"))),
        )
        for r in group.iterfind(path)
    )
