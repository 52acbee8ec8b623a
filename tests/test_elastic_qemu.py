"""Elastic scaling on a real libvirtd + QEMU (TCG) with the tiny test guest, through
NETCONF only: the libvirt CPU_LOAD collector, ESC's VM_OVERLOADED / VM_UNDERLOADED
KPIs and their scale rules take a group from 1 VM to 3 while the guests burn CPU and
back to 1 when they stop, with ESC's events and opdata at each step.

The guests are told what to do by the test: their day-0 data (config_data
``escnc/run``, run by the guest's /init once the network is up) is a busybox shell
loop that asks the test's small HTTP server on the network's gateway address, every
second, whether to burn CPU, and reports the guest's interfaces (MACs) with each
request. So the load starts and stops when the test says, on every VM: the first
one burns its vCPU, the ones scaling adds burn 3 s in 4 (a VM that idled while
another burns would be VM_UNDERLOADED and ask for a scale in while the other asks for
a scale out). When the third VM is up the test stops the burners: the cool-down after
that scale out covers the burners' last seconds, so the group then only scales in. A
guest that cannot reach the server idles.

CPU_LOAD is per vCPU over the poll interval (cpu_time deltas), i.e. the CPU time the
vCPU got: a burning 1-vCPU guest is near 100 % when it gets a core, an idle one (this
program polling) about 5 %. On a host whose other work leaves the guests less than
about 1.5 cores, the burners stay below 70 % and the scale outs wait (the test then
fails at its bounded waits, printing the KPIs' values every 10 s); the CI machine
runs the tests alone on 2 cores.

Skipped unless ESCNC_QEMU_URI is set (see tests/test_qemu_lifecycle.py).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import pytest
from lxml import etree

from conftest import connect
from escnc.app import Server
from test_qemu_lifecycle import (
    BOOT_TIMEOUT,
    ESC,
    NC,
    URI,
    E,
    Env,
    Events,
    cleanup_config_xml,
    guest_disk,  # noqa: F401  (fixture)
    hypervisor,
    our_domains,
    undeploy_xml,
)
from test_qemu_lifecycle import env as qemu_env  # noqa: F401  (fixture)

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not URI, reason="ESCNC_QEMU_URI is not set (see test_qemu_lifecycle)"),
]

POLL = 2  # seconds between KPI samples
COOLDOWN = 10.0  # settings.scale_cooldown
SCALE_TIMEOUT = BOOT_TIMEOUT + 60.0  # load seen + a VM booted under that load


# --- the test's control server: the guests ask it what to do ---------------------------


@dataclass
class Control:
    burn: bool = False
    macs: dict[str, list[str]] = field(default_factory=dict)  # guest name -> its MACs
    polls: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def command(self, vm: str) -> str:
        """The first VM (index 0) burns its vCPU; the ones scaling added burn 3 s of
        every 4: never underloaded (they would ask for a scale in) and, on two cores,
        leaving the first one the most of its core, which keeps it overloaded."""
        if not self.burn:
            return "idle\n"
        return "burn 2 0\n" if "_g_0_" in vm else "burn 3 1\n"

    def seen(self, vm: str) -> int:
        with self.lock:
            return self.polls.get(vm, 0)

    def guest_macs(self, vm: str) -> list[str]:
        with self.lock:
            return list(self.macs.get(vm, []))


@pytest.fixture
def control() -> Iterator[tuple[Control, int]]:
    ctl = Control()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            vm = query.get("vm", [""])[0][:200]
            macs = [m for m in query.get("macs", [""])[0].split(",") if m][:16]
            with ctl.lock:
                ctl.polls[vm] = ctl.polls.get(vm, 0) + 1
                ctl.macs[vm] = macs
                body = ctl.command(vm).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    # every address of the test's network namespace: the guests reach the gateway's
    httpd = ThreadingHTTPServer(("0.0.0.0", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield ctl, httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


# ESC substitutes $VM_NAME; every other $ is the shell's. "burn B S": busy for B
# seconds of /proc/uptime (no fork), then sleep S; a stop takes effect within ~3 s.
DAY0_PROGRAM = """#!/bin/sh
url=http://{gateway}:{port}/poll
while :; do
    macs=$(cat /sys/class/net/*/address 2>/dev/null | grep -v '^00:00:00:00:00:00$' | tr '\\n' ,)
    cmd=$(timeout 3 wget -q -O - "$url?vm=$VM_NAME&macs=$macs" 2>/dev/null)
    set -- $cmd
    case "$1" in
        burn)
            read up _ </proc/uptime
            end=$(( ${{up%.*}} + $2 ))
            while :; do
                read up _ </proc/uptime
                [ "${{up%.*}}" -lt "$end" ] || break
            done
            [ "$3" -gt 0 ] && sleep "$3" ;;
        *) sleep 1 ;;
    esac
done
"""


def kpi(event: str, cond: str, value: int, true: int) -> str:
    return (
        f"<kpi><event_name>{event}</event_name><metric_value>{value}</metric_value>"
        f"<metric_cond>{cond}</metric_cond><metric_type>UINT32</metric_type>"
        f"<metric_occurrences_true>{true}</metric_occurrences_true>"
        "<metric_occurrences_false>1</metric_occurrences_false>"
        f"<metric_collector><type>CPU_LOAD</type><nicid>0</nicid>"
        f"<poll_frequency>{POLL}</poll_frequency><polling_unit>seconds</polling_unit>"
        "<continuous_alarm>true</continuous_alarm></metric_collector></kpi>"
    )


def elastic_config_xml(env: Env, disk: Path, port: int, nics: int = 1) -> str:
    imported = env.state / "import" / disk.name
    if not imported.exists():
        imported.parent.mkdir(exist_ok=True)
        imported.write_bytes(disk.read_bytes())
    interfaces = "".join(
        f"<interface><nicid>{n}</nicid><network>{env.network}</network></interface>"
        for n in range(nics)
    )
    ips = "".join(f"<ip_address>{env.ip(i)}</ip_address>" for i in range(3))
    program = escape(DAY0_PROGRAM.format(gateway=env.gateway, port=port))
    return f"""<config xmlns="{NC}"><esc_datamodel xmlns="{ESC}">
  <images><image><name>tiny-{env.tag}</name><src>{imported}</src><disk_format>raw</disk_format>
  </image></images>
  <flavors><flavor><name>tiny-{env.tag}</name><vcpus>1</vcpus><memory_mb>192</memory_mb>
    <root_disk_mb>64</root_disk_mb></flavor></flavors>
  <networks><network><name>{env.network}</name><subnet><name>s</name><ipversion>ipv4</ipversion>
    <dhcp>false</dhcp><address>{env.subnet}</address><netmask>255.255.255.0</netmask>
    <gateway>{env.gateway}</gateway></subnet></network></networks>
  <tenants><tenant><name>qemu</name><deployments><deployment><name>{env.deployment}</name>
    <vm_group><name>g</name><image>tiny-{env.tag}</image><flavor>tiny-{env.tag}</flavor>
      <bootup_time>{int(BOOT_TIMEOUT)}</bootup_time><recovery_wait_time>0</recovery_wait_time>
      <interfaces>{interfaces}</interfaces>
      <scaling><min_active>1</min_active><max_active>3</max_active><elastic>true</elastic>
        <static_ip_address_pool><network>{env.network}</network><gateway>{env.gateway}</gateway>
          <netmask>255.255.255.0</netmask>{ips}</static_ip_address_pool></scaling>
      <kpi_data><kpi><event_name>VM_ALIVE</event_name><metric_value>1</metric_value>
        <metric_cond>GT</metric_cond><metric_type>UINT32</metric_type>
        <metric_collector><type>ICMPPing</type><nicid>0</nicid><poll_frequency>1</poll_frequency>
          <polling_unit>seconds</polling_unit><continuous_alarm>false</continuous_alarm>
        </metric_collector></kpi>
        {kpi("VM_OVERLOADED", "GT", 70, 2)}{kpi("VM_UNDERLOADED", "LT", 20, 2)}</kpi_data>
      <rules><admin_rules>
        <rule><event_name>VM_OVERLOADED</event_name><action>"TRUE servicescaleup.sh"</action>
        </rule>
        <rule><event_name>VM_UNDERLOADED</event_name><action>"TRUE servicescaledown.sh"</action>
        </rule>
      </admin_rules></rules>
      <config_data><configuration><dst>escnc/run</dst><data>{program}</data></configuration>
      </config_data>
    </vm_group></deployment></deployments></tenant></tenants>
</esc_datamodel></config>"""


# --- what a user sees in opdata ---------------------------------------------------------


def opdata(m, env: Env) -> etree._Element:  # type: ignore[no-untyped-def]
    flt = f"""<esc_datamodel xmlns="{ESC}"><opdata><tenants><tenant><name>qemu</name>
      <deployments><deployment><name>{env.deployment}</name></deployment></deployments>
      </tenant></tenants></opdata></esc_datamodel>"""
    return etree.fromstring(m.get(filter=("subtree", flt)).data_xml.encode())


def kpi_rows(op: etree._Element) -> dict[tuple[str, str], dict[str, str]]:
    """(generated name, event_name) -> the opdata kpi leaves."""
    rows = {}
    for v in op.iter(f"{E}vm_instance"):
        name = v.findtext(f"{E}name") or ""
        for k in v.iterfind(f"{E}kpis/{E}kpi"):
            rows[(name, k.findtext(f"{E}event_name") or "")] = {
                etree.QName(c).localname: c.text or "" for c in k
            }
    return rows


def scaling(op: etree._Element) -> dict[str, str]:
    for g in op.iter(f"{E}vm_group"):
        sc = g.find(f"{E}scaling")
        if g.findtext(f"{E}name") == "g" and sc is not None:
            return {etree.QName(c).localname: c.text or "" for c in sc}
    return {}


def vm_names(op: etree._Element) -> list[str]:
    return sorted(v.findtext(f"{E}name") or "" for v in op.iter(f"{E}vm_instance"))


def wait_until(what: Callable[[], object], timeout: float, describe: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s: {describe()}"
        time.sleep(0.5)


def wait_event(m, env: Env, events: Events, type_: str, count: int, timeout: float) -> str:  # type: ignore[no-untyped-def]
    """The VM of the count-th ``type_`` event; the KPIs' last values in a time-out."""
    deadline = time.monotonic() + timeout
    while sum(e.type == type_ for e in events.seen) < count:
        left = deadline - time.monotonic()
        loads = {
            (vm.split("_")[2], ev[3:]): (r.get("last_value"), r.get("state"))
            for (vm, ev), r in kpi_rows(opdata(m, env)).items() if ev != "VM_ALIVE"
        }
        print(f"waiting for {type_} #{count}: {loads}")
        assert left > 0, f"no {type_} #{count} after {timeout:.0f} s; KPIs: {loads}"
        until = time.monotonic() + min(left, 10.0)
        events.wait(
            lambda s, until=until: sum(e.type == type_ for e in s) >= count
            or time.monotonic() >= until,
            min(left, 10.0) + 5.0, type_,
        )
    return [e for e in events.seen if e.type == type_][count - 1].vm


def scale_events(events: Events) -> list[tuple[str, str]]:
    return [(e.type, e.vm) for e in events.seen if e.type.startswith("VM_SCALE_")]


# --- the test ---------------------------------------------------------------------------


def test_cpu_load_scales_out_to_max_and_back_in_to_min(
    guest_disk: Path,  # noqa: F811
    qemu_env: Env,  # noqa: F811
    control: tuple[Control, int],
    server_factory: Callable[..., Server],  # last: escnc stops before the env's clean-up
) -> None:
    env = qemu_env
    ctl, port = control
    srv = server_factory(state_dir=env.state, vims={"default": URI}, scale_cooldown=COOLDOWN)
    with connect(srv) as m:
        m.timeout = 120
        m.create_subscription(stream_name="escEvent")
        events = Events(m)
        t0 = time.monotonic()
        assert m.edit_config(config=elastic_config_xml(env, guest_disk, port), target="running").ok
        vm0 = events.wait_type("VM_ALIVE").vm
        events.wait_type("SERVICE_ALIVE")
        print(f"VM_ALIVE after {time.monotonic() - t0:.1f} s")

        # idle: the day-0 program runs (asks the server) and the one VM is underloaded,
        # which cannot scale in below min_active
        def idle_seen() -> bool:
            row = kpi_rows(opdata(m, env)).get((vm0, "VM_UNDERLOADED"), {})
            return ctl.seen(vm0) > 0 and "min_active" in row.get("last_action_outcome", "")

        wait_until(idle_seen, 120, lambda: f"polls {ctl.polls}, kpis {kpi_rows(opdata(m, env))}")
        op = opdata(m, env)
        rows = kpi_rows(op)
        print(f"idle: {rows[(vm0, 'VM_UNDERLOADED')]}")
        assert int(float(rows[(vm0, "VM_UNDERLOADED")]["last_value"])) < 20
        assert rows[(vm0, "VM_UNDERLOADED")]["state"] == "TRUE"
        assert rows[(vm0, "VM_OVERLOADED")]["state"] == "FALSE"
        assert rows[(vm0, "VM_UNDERLOADED")]["last_action"] == "TRUE servicescaledown.sh"
        assert scaling(op)["active_count"] == "1"
        assert scale_events(events) == []

        # burn: VM_OVERLOADED twice -> scale out to 2, after the cool-down to 3
        ctl.burn = True
        t1 = time.monotonic()
        vm1 = wait_event(m, env, events, "VM_SCALE_OUT_COMPLETE", 1, SCALE_TIMEOUT)
        print(f"scale out to 2 after {time.monotonic() - t1:.1f} s")
        op = opdata(m, env)
        assert vm_names(op) == sorted([vm0, vm1])
        sc = scaling(op)
        assert (sc["active_count"], sc["elastic_count"], sc["last_operation"]) == (
            "2", "1", "scale out"
        ), sc
        fired = kpi_rows(op)[(vm0, "VM_OVERLOADED")]
        assert fired["last_action"] == "TRUE servicescaleup.sh", fired
        init = next(e for e in events.seen if e.type == "VM_SCALE_OUT_INIT")
        assert "VM_OVERLOADED is TRUE" in init.message, init

        t2 = time.monotonic()
        vm2 = wait_event(m, env, events, "VM_SCALE_OUT_COMPLETE", 2, SCALE_TIMEOUT)
        ctl.burn = False  # the cool-down after this scale out covers the last burn slices
        print(f"scale out to 3 after {time.monotonic() - t2:.1f} s more")
        op = opdata(m, env)
        assert vm_names(op) == sorted([vm0, vm1, vm2])
        assert scaling(op)["active_count"] == "3" and scaling(op)["target_count"] == "3"
        assert our_domains(env.deployment + "_") == sorted([vm0, vm1, vm2])

        # idle again: VM_UNDERLOADED scales in the newest VM, then the next, down to 1
        t3 = time.monotonic()
        wait_event(m, env, events, "VM_SCALE_IN_COMPLETE", 2, 180)
        print(f"scale in to 1 after {time.monotonic() - t3:.1f} s")
        op = opdata(m, env)
        assert vm_names(op) == [vm0]
        sc = scaling(op)
        assert (sc["active_count"], sc["elastic_count"], sc["last_operation"]) == (
            "1", "0", "scale in"
        ), sc
        assert our_domains(env.deployment + "_") == [vm0]
        assert ctl.seen(vm1) > 0 and ctl.seen(vm2) > 0  # their day-0 programs ran too

        assert scale_events(events) == [
            ("VM_SCALE_OUT_INIT", vm1), ("VM_SCALE_OUT_DEPLOYED", vm1),
            ("VM_SCALE_OUT_COMPLETE", vm1),
            ("VM_SCALE_OUT_INIT", vm2), ("VM_SCALE_OUT_DEPLOYED", vm2),
            ("VM_SCALE_OUT_COMPLETE", vm2),
            ("VM_SCALE_IN_INIT", vm2), ("VM_SCALE_IN_COMPLETE", vm2),
            ("VM_SCALE_IN_INIT", vm1), ("VM_SCALE_IN_COMPLETE", vm1),
        ]
        types = [(e.type, e.vm) for e in events.seen]
        for vm in (vm1, vm2):  # ESC's order: INIT, DEPLOYED, VM_ALIVE, COMPLETE
            assert (
                types.index(("VM_SCALE_OUT_DEPLOYED", vm))
                < types.index(("VM_ALIVE", vm))
                < types.index(("VM_SCALE_OUT_COMPLETE", vm))
            )
        assert all(e.status == "SUCCESS" for e in events.seen if e.type.startswith("VM_SCALE"))

        assert m.edit_config(config=undeploy_xml(env), target="running").ok
        events.wait_type("SERVICE_UNDEPLOYED", timeout=120)
        assert our_domains(env.deployment + "_") == []
        assert m.edit_config(config=cleanup_config_xml(env), target="running").ok


def test_vnic_hot_added_to_a_running_guest_appears_inside_it(
    guest_disk: Path,  # noqa: F811
    qemu_env: Env,  # noqa: F811
    control: tuple[Control, int],
    server_factory: Callable[..., Server],
) -> None:
    """An update adding nicid 1 attaches it live (VM_UPDATED says so); the guest's
    kernel sees the hot-plugged virtio NIC, and the guest reports its MAC."""
    env = qemu_env
    ctl, port = control
    srv = server_factory(state_dir=env.state, vims={"default": URI})
    with connect(srv) as m:
        m.timeout = 120
        m.create_subscription(stream_name="escEvent")
        events = Events(m)
        assert m.edit_config(config=elastic_config_xml(env, guest_disk, port), target="running").ok
        vm = events.wait_type("VM_ALIVE").vm
        events.wait_type("SERVICE_ALIVE")
        wait_until(lambda: ctl.seen(vm) > 0, 120, lambda: f"no poll from {vm}: {ctl.polls}")
        before = ctl.guest_macs(vm)
        assert len(before) == 1, before

        edit = elastic_config_xml(env, guest_disk, port, nics=2)
        assert m.edit_config(config=edit, target="running").ok
        updated = events.wait_type("VM_UPDATED", timeout=120)
        events.wait_type("SERVICE_UPDATED", timeout=120)
        found = re.search(r"attached live: ([0-9a-f:]{17})", updated.message)
        assert found, updated.message
        mac = found.group(1).lower()
        with hypervisor() as conn:  # the same domain, still running: not restarted
            assert conn.lookupByName(vm).isActive()

        wait_until(lambda: mac in ctl.guest_macs(vm), 120,
                   lambda: f"guest {vm} reports {ctl.guest_macs(vm)}, not {mac}")
        assert sorted(ctl.guest_macs(vm)) == sorted([*before, mac])
        assert [e.type for e in events.seen].count("VM_ALIVE") == 1  # never restarted

        assert m.edit_config(config=undeploy_xml(env), target="running").ok
        events.wait_type("SERVICE_UNDEPLOYED", timeout=120)
        assert m.edit_config(config=cleanup_config_xml(env), target="running").ok
