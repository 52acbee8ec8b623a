"""KPI evaluation as ESC defines it, for one KPI of one VM (no I/O, no locks).

Each sample is compared with ``metric_value`` by ``metric_cond`` (GT, GE, LT, LE,
EQ, NE; numbers for UINT32/INT32/FLOAT/DOUBLE, text for STRING): a TRUE or a
FALSE sample. ``metric_occurrences_true`` consecutive TRUE samples put the KPI in
state TRUE and fire the TRUE outcome, ``metric_occurrences_false`` consecutive FALSE
samples state FALSE and the FALSE outcome. Without ``continuous_alarm`` an outcome
fires once, when the state changes; with it, again at every further sample that
keeps the state. An unknown sample breaks the run of consecutive samples (both
counts restart) and leaves the state as it was.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from escnc.engine.kpi.spec import KpiDef

TRUE = "TRUE"
FALSE = "FALSE"
NONE = "NONE"  # no outcome yet
UNKNOWN = "UNKNOWN"  # the last sample was unknown

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "GT": operator.gt,
    "GE": operator.ge,
    "LT": operator.lt,
    "LE": operator.le,
    "EQ": operator.eq,
    "NE": operator.ne,
}


@dataclass
class KpiState:
    state: str = NONE
    trues: int = 0  # consecutive TRUE samples
    falses: int = 0  # consecutive FALSE samples
    samples: int = 0  # all samples taken, unknown ones too
    value: float | None = None  # last known value
    sampled_at: float = 0.0  # wall time (epoch seconds) of the last sample
    last_unknown: str = ""  # why the last sample was unknown ("" when it was not)
    unknown_reported: bool = False  # this run of unknown samples was reported
    fired: int = 0  # outcomes fired
    last_action: str = ""
    last_outcome: str = ""


def holds(kpi: KpiDef, value: float) -> bool:
    """Is the condition TRUE for ``value``? (False for a condition escnc does not know.)"""
    op = _OPS.get(kpi.cond)
    if op is None:
        return False
    if kpi.metric_type == "STRING":
        text = f"{value:g}"
        return bool(op(text, kpi.value)) if kpi.cond in ("EQ", "NE") else False
    try:
        threshold = float(kpi.value)
    except ValueError:
        return False
    return bool(op(value, threshold))


def step(kpi: KpiDef, st: KpiState, value: float, at: float) -> str | None:
    """Take one known sample; the outcome that fires now (TRUE/FALSE), or None."""
    st.samples += 1
    st.value = value
    st.sampled_at = at
    st.last_unknown = ""
    st.unknown_reported = False
    if holds(kpi, value):
        st.trues += 1
        st.falses = 0
        if st.trues >= kpi.occurrences_true and (st.state != TRUE or kpi.continuous_alarm):
            st.state = TRUE
            st.fired += 1
            return TRUE
    else:
        st.falses += 1
        st.trues = 0
        if st.falses >= kpi.occurrences_false and (st.state != FALSE or kpi.continuous_alarm):
            st.state = FALSE
            st.fired += 1
            return FALSE
    return None


def unknown(st: KpiState, reason: str, at: float, quiet: bool = False) -> bool:
    """Take one unknown sample; True when it is to be reported (once per run; never
    for a ``quiet`` one, e.g. the first sample of a rate)."""
    st.samples += 1
    st.sampled_at = at
    st.trues = st.falses = 0
    st.last_unknown = reason
    if st.unknown_reported or quiet:
        return False
    st.unknown_reported = True
    return True
