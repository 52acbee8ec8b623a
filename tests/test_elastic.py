"""Elastic services end to end through NETCONF (ncclient) on the libvirt test driver:
script metric collectors, KPI evaluation, rules -> actions and elastic scale out/in.

Polling time is the engine's ManualClock (the reconcile tick runs on it too): a test
advances it and waits until opdata shows the samples taken, so nothing sleeps for
poll_frequency. The probe script prints what the test wrote into a file, per VM
(``value-<generated name>``) or for all (``value``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from conftest import add_user, connect, make_settings
from engine_support import (
    E,
    config,
    deployment,
    ev_type,
    ev_types,
    ev_vm,
    monitored_deployment,
    nc_edit,
    nc_events,
    nc_opdata,
    nc_quiet,
)
from escnc.app import Server
from escnc.engine.clock import ManualClock
from escnc.settings import ActionMapping, MetricScript

pytestmark = pytest.mark.timeout(180)

SCALE = ("VM_SCALE_OUT_INIT", "VM_SCALE_OUT_DEPLOYED", "VM_ALIVE", "VM_SCALE_OUT_COMPLETE")


class Probe:
    """A script collector whose output the test controls."""

    def __init__(self, tmp: Path, name: str = "probe") -> None:
        self.dir = tmp / f"{name}-values"
        self.dir.mkdir()
        self.path = tmp / f"{name}.sh"
        self.path.write_text(
            "#!/bin/sh\n"
            f'f="{self.dir}/value-$ESCNC_GENERATED_NAME"\n'
            f'[ -f "$f" ] || f="{self.dir}/value"\n'
            'exec cat "$f"\n'
        )
        self.path.chmod(0o755)

    def set(self, value: str, vm: str = "") -> None:
        (self.dir / (f"value-{vm}" if vm else "value")).write_text(value + "\n")


def kpi(event: str, collector: str, cond: str, value: int, true: int = 1, false: int = 1,
        continuous: bool = False) -> str:
    return (
        f"<kpi><event_name>{event}</event_name><metric_value>{value}</metric_value>"
        f"<metric_cond>{cond}</metric_cond><metric_type>UINT32</metric_type>"
        f"<metric_occurrences_true>{true}</metric_occurrences_true>"
        f"<metric_occurrences_false>{false}</metric_occurrences_false>"
        f"<metric_collector><type>{collector}</type><nicid>0</nicid>"
        "<poll_frequency>1</poll_frequency><polling_unit>seconds</polling_unit>"
        f"<continuous_alarm>{'true' if continuous else 'false'}</continuous_alarm>"
        "</metric_collector></kpi>"
    )


def rules(*rules: tuple[str, tuple[str, ...]]) -> str:
    body = "".join(
        f"<rule><event_name>{event}</event_name>"
        + "".join(f"<action>{a}</action>" for a in actions)
        + "</rule>"
        for event, actions in rules
    )
    return f"<rules><admin_rules>{body}</admin_rules></rules>"


def with_kpis(dep_xml: str, kpis: str, rule_xml: str) -> str:
    """``deployment()`` (its VM_ALIVE KPI kept) plus more KPIs and rules."""
    return dep_xml.replace("</kpi></kpi_data>", f"</kpi>{kpis}</kpi_data>{rule_xml}", 1)


ELASTIC_KPIS = kpi("VM_OVERLOADED", "LOAD", "GT", 70, true=2, false=4, continuous=True) + kpi(
    "VM_UNDERLOADED", "LOAD", "LT", 20, continuous=True
)
ELASTIC_RULES = rules(
    ("VM_OVERLOADED", ('"ALWAYS log"', '"TRUE servicescaleup.sh"')),
    ("VM_UNDERLOADED", ('"TRUE servicescaledown.sh"',)),
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def probe(tmp_path: Path) -> Probe:
    p = Probe(tmp_path)
    p.set("50")
    return p


@pytest.fixture
def start(
    tmp_path: Path, clock: ManualClock, probe: Probe
) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def factory(clk: ManualClock | None = None, **overrides: object) -> Server:
        state = tmp_path / "state"
        add_user(state)
        settings = make_settings(
            state,
            reconcile_interval=1.0,
            metrics={"LOAD": MetricScript((str(probe.path),), 5.0)},
            scale_cooldown=10.0,
        )
        for key, value in overrides.items():
            setattr(settings, key, value)
        srv = Server(settings, clock=clk or clock)
        srv.start()
        started.append(srv)
        return srv

    yield factory
    for srv in reversed(started):
        srv.stop()


# -- reading what a user sees ------------------------------------------------------------


def kpi_rows(m) -> dict[tuple[str, str], dict[str, str]]:  # type: ignore[no-untyped-def]
    """(generated name, event_name) -> the opdata kpi leaves."""
    rows = {}
    for v in nc_opdata(m).iter(f"{E}vm_instance"):
        name = v.findtext(f"{E}name") or ""
        for k in v.iterfind(f"{E}kpis/{E}kpi"):
            rows[(name, k.findtext(f"{E}event_name") or "")] = {
                etree.QName(c).localname: c.text or "" for c in k
            }
    return rows


def scaling(m, group: str = "g1") -> dict[str, str]:  # type: ignore[no-untyped-def]
    for g in nc_opdata(m).iter(f"{E}vm_group"):
        if g.findtext(f"{E}name") == group and g.find(f"{E}scaling") is not None:
            return {etree.QName(c).localname: c.text or "" for c in g.find(f"{E}scaling")}
    return {}


def vms(m) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(
        v.findtext(f"{E}name") or "" for v in nc_opdata(m).iter(f"{E}vm_instance")
    )


def wait_for(what: Callable[[], object], timeout: float = 20.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("condition not met")
        time.sleep(0.05)


def advance(m, clock: ManualClock, seconds: float = 1.0, event: str = "") -> None:  # type: ignore[no-untyped-def]
    """Move the clock; wait until every KPI sampled so far (of ``event``) is sampled again."""
    before = {k: int(r["samples"]) for k, r in kpi_rows(m).items() if k[1] != "VM_ALIVE"}
    if event:
        before = {k: n for k, n in before.items() if k[1] == event}
    clock.advance(seconds)

    def sampled() -> bool:
        now = kpi_rows(m)
        gone = {v for v, _e in before} - {v for v, _e in now}  # scaled in meanwhile
        return all(k[0] in gone or (k in now and int(now[k]["samples"]) > n)
                   for k, n in before.items())

    wait_for(sampled)


def first_samples(m, clock: ManualClock, count: int) -> None:  # type: ignore[no-untyped-def]
    """Advance until ``count`` (VM, KPI) pairs have been sampled at least once."""

    def enough() -> bool:
        return sum(1 for k in kpi_rows(m) if k[1] != "VM_ALIVE") >= count

    for _ in range(40):
        if enough():
            return
        clock.advance(1.0)
        time.sleep(0.15)
    raise AssertionError(f"fewer than {count} KPIs sampled: {kpi_rows(m)}")


# -- the whole loop: load -> scale out to max, back to min ------------------------------


def test_load_scales_out_to_max_and_back_in_to_min(
    start: Callable[..., Server], clock: ManualClock, probe: Probe, tmp_path: Path
) -> None:
    srv = start()
    dep = with_kpis(deployment(min_active=1, max_active=3), ELASTIC_KPIS, ELASTIC_RULES)
    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, config(tmp_path, dep))
        nc_events(m, "SERVICE_ALIVE")
        first = vms(m)[0]
        first_samples(m, clock, 2)
        assert scaling(m) == {
            "elastic": "true", "active_count": "1", "target_count": "1", "elastic_count": "0"
        }
        rows = kpi_rows(m)
        assert rows[(first, "VM_OVERLOADED")]["state"] in ("NONE", "FALSE")
        assert rows[(first, "VM_OVERLOADED")]["last_value"] == "50"

        probe.set("90")  # overloaded: metric_occurrences_true 2
        advance(m, clock, event="VM_OVERLOADED")
        assert kpi_rows(m)[(first, "VM_OVERLOADED")]["consecutive_true"] == "1"
        assert nc_quiet(m, 0.3) == []  # one true sample is not enough
        advance(m, clock, event="VM_OVERLOADED")
        evs = nc_events(m, "VM_SCALE_OUT_COMPLETE")
        assert ev_types(evs) == list(SCALE)
        assert all(e.findtext(f"{E}status") == "SUCCESS" for e in evs)
        second = ev_vm(evs[0])
        assert second != first and second in vms(m)
        assert "VM_OVERLOADED is TRUE" in (evs[0].findtext(f"{E}status_message") or "")
        row = kpi_rows(m)[(first, "VM_OVERLOADED")]
        assert row["state"] == "TRUE" and row["last_action"] == "TRUE servicescaleup.sh"
        assert "scale out of vm_group g1 queued" in row["last_action_outcome"]
        assert scaling(m)["active_count"] == "2" and scaling(m)["elastic_count"] == "1"
        assert scaling(m)["last_operation"] == "scale out"

        # still overloaded (continuous_alarm): both VMs fire at every sample, but the
        # group cools down for 10 s after a scaling operation
        first_samples(m, clock, 4)
        advance(m, clock, event="VM_OVERLOADED")
        advance(m, clock, event="VM_OVERLOADED")
        for vm in (first, second):
            wait_for(lambda vm=vm: "cools down" in kpi_rows(m)[(vm, "VM_OVERLOADED")].get(
                "last_action_outcome", ""))
        assert len(vms(m)) == 2
        advance(m, clock, 10.0)  # past the cool-down: one scale out (one at a time)
        evs = nc_events(m, "VM_SCALE_OUT_COMPLETE")
        assert ev_types(evs)[-4:] == list(SCALE)
        third = ev_vm(evs[-1])
        assert len(vms(m)) == 3

        assert not [e for e in nc_quiet(m, 0.3) if ev_type(e).startswith("VM_SCALE")]
        assert len(vms(m)) == 3
        # at max_active 3: the third VM's TRUE is refused and says so
        advance(m, clock, 10.0)
        advance(m, clock)
        advance(m, clock)
        wait_for(lambda: "max_active 3" in kpi_rows(m).get((third, "VM_OVERLOADED"), {}).get(
            "last_action_outcome", ""))
        assert not [e for e in nc_quiet(m, 0.3) if ev_type(e).startswith("VM_SCALE")]

        # underloaded (continuous_alarm): one scale in per cool-down, newest first
        probe.set("10")
        advance(m, clock, 10.0)
        evs = nc_events(m, "VM_SCALE_IN_COMPLETE")
        ins = [e for e in evs if ev_type(e).startswith("VM_SCALE_IN")]
        assert ev_types(ins) == ["VM_SCALE_IN_INIT", "VM_SCALE_IN_COMPLETE"]
        assert {ev_vm(e) for e in ins} == {third}
        assert sorted(vms(m)) == sorted([first, second])
        advance(m, clock, 10.0)
        evs = nc_events(m, "VM_SCALE_IN_COMPLETE")
        assert {ev_vm(e) for e in evs if ev_type(e).startswith("VM_SCALE_IN")} == {second}
        assert vms(m) == [first]
        advance(m, clock, 10.0)
        wait_for(lambda: "min_active 1" in kpi_rows(m)[(first, "VM_UNDERLOADED")].get(
            "last_action_outcome", ""))
        assert scaling(m)["active_count"] == "1" and scaling(m)["elastic_count"] == "0"
        assert not [e for e in nc_quiet(m, 0.3) if ev_type(e).startswith("VM_SCALE")]


def test_scaled_size_survives_update_reconcile_and_restart(
    start: Callable[..., Server], clock: ManualClock, probe: Probe, tmp_path: Path
) -> None:
    srv = start()
    dep = with_kpis(deployment(min_active=1, max_active=3), ELASTIC_KPIS, ELASTIC_RULES)
    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, config(tmp_path, dep))
        nc_events(m, "SERVICE_ALIVE")
        first_samples(m, clock, 2)
        probe.set("90")
        advance(m, clock, event="VM_OVERLOADED")
        advance(m, clock, event="VM_OVERLOADED")
        nc_events(m, "VM_SCALE_OUT_COMPLETE")
        probe.set("50")
        scaled = vms(m)
        assert len(scaled) == 2
        # reconcile ticks (on the same clock) leave the scaled group alone
        for _ in range(3):
            advance(m, clock)
        # an update of the deployment does not scale it back to min_active
        described = "<name>dep1</name><description>x</description>"
        nc_edit(m, config(tmp_path, dep.replace("<name>dep1</name>", described, 1)))
        evs = nc_events(m, "SERVICE_UPDATED")
        assert not [e for e in evs if ev_type(e).startswith("VM_SCALE")]
        assert vms(m) == scaled
    srv.stop()

    # a restart (the test driver's host comes back empty): both VMs come back
    srv2 = start(clk=ManualClock())
    with connect(srv2) as m:
        wait_for(lambda: vms(m) == scaled and all(
            v.findtext(f"{E}state") == "VM_ALIVE_STATE"
            for v in nc_opdata(m).iter(f"{E}vm_instance")), 30)
        assert scaling(m)["target_count"] == "2" and scaling(m)["elastic_count"] == "1"


def test_non_elastic_group_does_not_scale(
    start: Callable[..., Server], clock: ManualClock, probe: Probe, tmp_path: Path
) -> None:
    srv = start()
    dep = with_kpis(deployment(min_active=1, max_active=2), ELASTIC_KPIS, ELASTIC_RULES)
    dep = dep.replace("<elastic>true</elastic>", "<elastic>false</elastic>")
    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, config(tmp_path, dep))
        nc_events(m, "SERVICE_ALIVE")
        name = vms(m)[0]
        first_samples(m, clock, 2)
        probe.set("90")
        advance(m, clock, event="VM_OVERLOADED")
        advance(m, clock, event="VM_OVERLOADED")
        wait_for(lambda: "not elastic" in kpi_rows(m)[(name, "VM_OVERLOADED")].get(
            "last_action_outcome", ""))
        assert vms(m) == [name]


# -- collectors: unknown values, reported once ------------------------------------------


def test_unknown_values_are_reported_once_per_run(
    start: Callable[..., Server], clock: ManualClock, tmp_path: Path
) -> None:
    bad = Probe(tmp_path, "bad")
    bad.set("not a number")
    slow = tmp_path / "slow.sh"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    srv = start(metrics={
        "BAD": MetricScript((str(bad.path),), 5.0),
        "SLOW": MetricScript((str(slow),), 0.3),
    })
    kpis = kpi("K_BAD", "BAD", "GT", 1) + kpi("K_SLOW", "SLOW", "GT", 1) + kpi(
        "K_CPU", "CPU_LOAD", "GT", 50)
    dep = with_kpis(deployment(), kpis, "")
    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, config(tmp_path, dep))
        nc_events(m, "SERVICE_ALIVE")
        name = vms(m)[0]
        first_samples(m, clock, 3)
        for _ in range(3):
            advance(m, clock)
        evs = [e for e in nc_quiet(m, 0.5) if ev_type(e) == "VM_METRIC_UNKNOWN"]
        messages = sorted(e.findtext(f"{E}status_message") or "" for e in evs)
        assert len(messages) == 3, messages  # one per KPI, not one per sample
        assert all(e.findtext(f"{E}status") == "FAILURE" and ev_vm(e) == name for e in evs)
        assert "K_BAD" in messages[0] and "'not a number' is not a number" in messages[0]
        assert "K_CPU" in messages[1] and "test driver" in messages[1]
        assert "K_SLOW" in messages[2] and "no answer within 0.3 s" in messages[2]
        rows = kpi_rows(m)
        assert int(rows[(name, "K_BAD")]["samples"]) >= 4
        assert "not a number" in rows[(name, "K_BAD")]["last_sample_unknown"]
        assert "last_value" not in rows[(name, "K_BAD")]

        bad.set("5")  # known again: TRUE; a new run of unknowns is reported again
        advance(m, clock)
        assert kpi_rows(m)[(name, "K_BAD")]["last_value"] == "5"
        assert "last_sample_unknown" not in kpi_rows(m)[(name, "K_BAD")]
        bad.set("")
        advance(m, clock)
        advance(m, clock)
        evs = [e for e in nc_quiet(m, 0.5) if ev_type(e) == "VM_METRIC_UNKNOWN"]
        assert ["K_BAD" in (e.findtext(f"{E}status_message") or "") for e in evs] == [True]


def test_script_collector_gets_the_vm_environment_and_nothing_else(
    start: Callable[..., Server], clock: ManualClock, tmp_path: Path
) -> None:
    seen = tmp_path / "env.txt"
    script = tmp_path / "envprobe.sh"
    script.write_text(f"#!/bin/sh\nenv > {seen}.tmp && mv {seen}.tmp {seen}\necho 1\n")
    script.chmod(0o755)
    srv = start(metrics={"ENV": MetricScript((str(script),), 5.0)})
    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, config(tmp_path, with_kpis(deployment(), kpi("K", "ENV", "GT", 0), "")))
        nc_events(m, "SERVICE_ALIVE")
        name = vms(m)[0]
        first_samples(m, clock, 1)
        env = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
        env.pop("PWD", None)
        env.pop("SHLVL", None)
        env.pop("_", None)
        assert env == {
            "PATH": env["PATH"], "LANG": "C",
            "ESCNC_VM_NAME": name, "ESCNC_GENERATED_NAME": name, "ESCNC_DEPLOYMENT": "dep1",
            "ESCNC_TENANT": "t1", "ESCNC_VM_GROUP": "g1", "ESCNC_NIC0_IP": "10.9.0.10",
        }
        assert kpi_rows(m)[(name, "K")]["state"] == "TRUE"


# -- rules -> actions ----------------------------------------------------------------------


def test_seed_rule_set_runs_its_actions_and_unknown_action_is_reported_once(
    start: Callable[..., Server], clock: ManualClock, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The seeds' VM_ALIVE rules (quotes inside <action> as written there)."""
    caplog.set_level(logging.INFO, logger="escnc.engine.rules")
    srv = start()
    seed_rules = rules(("VM_ALIVE", (
        '"ALWAYS log"', '"TRUE servicebooted.sh"', '"FALSE recover autohealing"',
        '"TRUE no-such-action.sh"',
    )))
    dep = with_kpis(monitored_deployment(), "", seed_rules)
    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, config(tmp_path, dep))
        evs = nc_events(m, "SERVICE_ALIVE")
        if "VM_RULE_ACTION_UNKNOWN" not in ev_types(evs):  # it may come before or after
            evs += nc_events(m, "VM_RULE_ACTION_UNKNOWN")
        evs += nc_quiet(m, 0.5)
        name = vms(m)[0]
        unknown = [e for e in evs if ev_type(e) == "VM_RULE_ACTION_UNKNOWN"]
        assert len(unknown) == 1 and ev_vm(unknown[0]) == name
        assert "no-such-action.sh" in (unknown[0].findtext(f"{E}status_message") or "")
        row = wait_for(lambda: kpi_rows(m).get((name, "VM_ALIVE")))
        assert isinstance(row, dict) and row["state"] == "TRUE"
        assert row["last_action"] == "TRUE servicebooted.sh"
        assert row["last_action_outcome"] == "VM_ALIVE reported"

        # the guest stops answering: FALSE -> recover autohealing (the monitor recovers)
        conn = srv.services.vims.default.connection()  # type: ignore[union-attr]
        conn.lookupByName(name).suspend()
        nc_events(m, "VM_RECOVERY_COMPLETE", timeout=30)
        wait_for(lambda: kpi_rows(m)[(name, "VM_ALIVE")]["last_action"]
                 in ("FALSE recover autohealing", "TRUE servicebooted.sh"))
        assert conn.lookupByName(name).state()[0] == libvirt.VIR_DOMAIN_RUNNING
    logged = [r.getMessage() for r in caplog.records if r.name == "escnc.engine.rules"]
    assert any("VM_ALIVE TRUE" in t and "ALWAYS log (log): logged" in t for t in logged)
    assert any("TRUE servicebooted.sh (vm_alive): VM_ALIVE reported" in t for t in logged)
    assert any(
        "VM_ALIVE FALSE" in t and "FALSE recover autohealing (recover): recovery per "
        "recovery_policy" in t for t in logged
    ), logged
    assert sum("no-such-action.sh" in t for t in logged) == 1
    assert not any("no-such-action.sh" in t and "(" in t.split("no-such-action.sh")[1][:3]
                   for t in logged)  # never executed


def test_operator_action_mapping_runs_a_script_with_the_outcome(
    start: Callable[..., Server], clock: ManualClock, probe: Probe, tmp_path: Path
) -> None:
    out = tmp_path / "noc.txt"
    notify = tmp_path / "notify.sh"
    notify.write_text(
        "#!/bin/sh\necho \"$ESCNC_EVENT $ESCNC_OUTCOME $ESCNC_GENERATED_NAME\" >> " f"{out}\n"
    )
    notify.chmod(0o755)
    srv = start(actions={"TRUE notify-noc": ActionMapping("script", (str(notify),), 5.0)})
    dep = with_kpis(deployment(), kpi("VM_HOT", "LOAD", "GT", 70),
                    rules(("VM_HOT", ("'TRUE   notify-noc'",))))
    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, config(tmp_path, dep))
        nc_events(m, "SERVICE_ALIVE")
        name = vms(m)[0]
        first_samples(m, clock, 1)
        assert not out.exists()  # 50: FALSE, and the rule has no FALSE action
        probe.set("80")
        advance(m, clock)
        wait_for(lambda: out.exists() and out.read_text())
        assert out.read_text() == f"VM_HOT TRUE {name}\n"
        wait_for(lambda: kpi_rows(m)[(name, "VM_HOT")].get("last_action_outcome", "")
                 .endswith("exit status 0"))
        advance(m, clock)  # no continuous_alarm: once
        assert out.read_text() == f"VM_HOT TRUE {name}\n"


def test_unknown_collector_is_refused_at_edit_time(
    start: Callable[..., Server], tmp_path: Path
) -> None:
    from ncclient.operations import RPCError

    srv = start()
    with connect(srv) as m:
        dep = with_kpis(deployment(), kpi("K", "NO_SUCH_METRIC", "GT", 1), "")
        with pytest.raises(RPCError) as exc:
            nc_edit(m, config(tmp_path, dep))
        assert "NO_SUCH_METRIC" in str(exc.value) and "LOAD" in str(exc.value)
        assert (exc.value.path or "").endswith(
            "esc:kpi[esc:event_name='K']/esc:metric_collector/esc:type")
        assert vms(m) == []
        # VM_ALIVE keeps its own collectors (ICMPPing, or domain-state on the test driver)
        nc_edit(m, config(tmp_path, deployment()))
