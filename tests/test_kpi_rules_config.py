"""KPI evaluation as ESC defines it, rule action lookup and the [metrics]/[actions]
server settings (pure functions: no server needed), plus the TOML loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from escnc.cli.server import CliError, load_config
from escnc.engine.kpi import evaluate
from escnc.engine.kpi.collectors import run_bounded
from escnc.engine.kpi.spec import KpiDef
from escnc.engine.rules import resolve
from escnc.settings import ActionMapping, MetricScript, Settings, parse_actions, parse_metrics


def run(kpi: KpiDef, values: list[float]) -> list[str | None]:
    st = evaluate.KpiState()
    return [evaluate.step(kpi, st, v, 0.0) for v in values]


@pytest.mark.parametrize(
    ("cond", "value", "expected"),
    [("GT", 71, True), ("GT", 70, False), ("GE", 70, True), ("LT", 69, True),
     ("LT", 70, False), ("LE", 70, True), ("EQ", 70, True), ("EQ", 70.5, False),
     ("NE", 70.5, True), ("NE", 70, False)],
)
def test_conditions(cond: str, value: float, expected: bool) -> None:
    assert evaluate.holds(KpiDef("K", cond=cond, value="70"), value) is expected


def test_occurrences_fire_once_on_change_without_continuous_alarm() -> None:
    kpi = KpiDef("VM_OVERLOADED", cond="GT", value="70", occurrences_true=2, occurrences_false=4)
    got = run(kpi, [90, 50, 90, 90, 90, 90, 50, 50, 50, 50, 50, 90, 90])
    assert got == [None, None, None, "TRUE", None, None, None, None, None, "FALSE", None,
                   None, "TRUE"]


def test_continuous_alarm_fires_at_every_sample_that_keeps_the_state() -> None:
    kpi = KpiDef("K", cond="GT", value="70", occurrences_true=2, continuous_alarm=True)
    assert run(kpi, [90, 90, 90, 90, 10, 90]) == [None, "TRUE", "TRUE", "TRUE", "FALSE", None]


def test_unknown_breaks_the_run_and_is_reported_once() -> None:
    kpi = KpiDef("K", cond="GT", value="70", occurrences_true=2)
    st = evaluate.KpiState()
    assert evaluate.step(kpi, st, 90, 1.0) is None
    assert evaluate.unknown(st, "timeout", 2.0) is True
    assert evaluate.unknown(st, "timeout", 3.0) is False
    assert evaluate.step(kpi, st, 90, 4.0) is None  # the run restarted
    assert evaluate.step(kpi, st, 90, 5.0) == "TRUE"
    assert evaluate.unknown(st, "quiet", 6.0, quiet=True) is False
    assert evaluate.unknown(st, "again", 7.0) is True
    assert st.samples == 7 and st.value == 90 and st.last_unknown == "again"


def test_string_metrics_compare_text() -> None:
    kpi = KpiDef("K", cond="EQ", value="1", metric_type="STRING")
    assert evaluate.holds(kpi, 1.0) and not evaluate.holds(kpi, 2.0)
    assert not evaluate.holds(KpiDef("K", cond="GT", value="1", metric_type="STRING"), 5.0)


def test_action_strings_resolve_with_quotes_and_blanks() -> None:
    mapping = {"TRUE my-scale-out": ActionMapping("scale_out")}
    assert resolve('"TRUE my-scale-out"', mapping) == ("TRUE", mapping["TRUE my-scale-out"])
    assert resolve("  'ALWAYS   log' ", {}) == ("ALWAYS", ActionMapping("log"))
    assert resolve('"FALSE recover autohealing"', {})[1] == ActionMapping("recover")
    assert resolve('"TRUE servicescaledown.sh"', {})[1] == ActionMapping("scale_in")
    assert resolve('"TRUE esc_vm_alive_notification"', {})[1] == ActionMapping("vm_alive")
    assert resolve('"TRUE unknown.sh"', {}) == ("TRUE", None)
    # the operator's mapping wins over a default
    over = {"TRUE servicescaleup.sh": ActionMapping("log")}
    assert resolve('"TRUE servicescaleup.sh"', over)[1] == ActionMapping("log")


def test_metric_and_action_tables_are_validated() -> None:
    assert parse_metrics({"LOAD": {"script": ["/bin/echo", "5"], "timeout": 2}}) == {
        "LOAD": MetricScript(("/bin/echo", "5"), 2.0)
    }
    for bad, why in [
        ({"LOAD": {"script": ["echo"]}}, "absolute path"),
        ({"LOAD": {"script": []}}, "non-empty list"),
        ({"LOAD": {"script": "/bin/echo"}}, "non-empty list"),
        ({"LOAD": {"script": ["/bin/echo"], "timeout": 0}}, "timeout"),
        ({"LOAD": {"script": ["/bin/echo"], "user": "root"}}, "unknown key"),
        ({"A B": {"script": ["/bin/echo"]}}, "no spaces"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_metrics(bad)
    assert parse_actions({'"TRUE n"': {"type": "script", "script": ["/x"]}}) == {
        "TRUE n": ActionMapping("script", ("/x",), 30.0)
    }
    for bad, why in [
        ({"TRUE n": {"type": "reboot"}}, "type must be one of"),
        ({"TRUE n": {"type": "script"}}, "non-empty list"),
        ({"TRUE n": {"type": "log", "script": ["/x"]}}, "only for type script"),
        ({"MAYBE n": {"type": "log"}}, "TRUE|FALSE|ALWAYS"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_actions(bad)


def test_toml_config_loads_metrics_and_actions(tmp_path: Path) -> None:
    cfg = tmp_path / "escnc.toml"
    cfg.write_text(
        'scale_cooldown = 5\n'
        '[metrics.LOAD]\nscript = ["/usr/local/libexec/load-probe", "--fast"]\ntimeout = 5\n'
        '[actions."TRUE my-scale-out"]\ntype = "scale_out"\n'
        '[actions."TRUE notify-noc"]\ntype = "script"\nscript = ["/usr/local/libexec/notify-noc"]\n'
    )
    s = load_config(cfg, Settings())
    assert s.scale_cooldown == 5.0
    assert s.metrics == {
        "LOAD": MetricScript(("/usr/local/libexec/load-probe", "--fast"), 5.0)
    }
    assert s.actions["TRUE my-scale-out"] == ActionMapping("scale_out")
    assert s.actions["TRUE notify-noc"].script == ("/usr/local/libexec/notify-noc",)
    cfg.write_text('[metrics.LOAD]\nscript = ["load-probe"]\n')
    with pytest.raises(CliError, match="absolute path"):
        load_config(cfg, Settings())


def test_bounded_run_limits_output_and_time(tmp_path: Path) -> None:
    assert run_bounded(("/bin/echo", "42"), {}, 5, 100) == (b"42\n", "")
    out, why = run_bounded(("/bin/sh", "-c", "yes"), {"PATH": "/bin:/usr/bin"}, 5, 1000)
    assert why == "more than 1000 bytes of output" and len(out) > 1000
    _out, why = run_bounded(("/bin/sh", "-c", "sleep 20"), {"PATH": "/bin:/usr/bin"}, 0.2, 100)
    assert why == "no answer within 0.2 s"
    assert run_bounded(("/bin/sh", "-c", "exit 3"), {}, 5, 100)[1] == "exit status 3"
    assert "cannot run" in run_bounded((str(tmp_path / "missing"),), {}, 5, 100)[1]
