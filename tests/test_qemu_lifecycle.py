"""The whole lifecycle on a real libvirtd + QEMU (TCG) with the tiny test guest.

Through NETCONF only: deploy the guest to VM_ALIVE by real ICMP ping, stop, start,
reboot, undeploy; and kill -9 escnc while VMs deploy, restart it, and check that every
VM reaches VM_ALIVE exactly once and no domain is left orphaned.

Skipped unless ESCNC_QEMU_URI is set (scripts/test.sh sets qemu:///system after
starting libvirtd inside network namespace escnc-ci with scripts/hypervisor.sh, and
runs pytest inside that namespace, where the guests' addresses live).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from conftest import PASSWORD, USER, add_user, connect
from escnc.app import Server

URI = os.environ.get("ESCNC_QEMU_URI", "")
pytestmark = [
    pytest.mark.qemu,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        not URI,
        reason="ESCNC_QEMU_URI is not set (needs a real libvirtd with QEMU: scripts/test.sh)",
    ),
]

HERE = Path(__file__).resolve().parent
ESC = "http://www.cisco.com/esc/esc"
E = f"{{{ESC}}}"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
# QEMU runs as libvirt-qemu: VM disks must sit below directories it can traverse
# (pytest's tmp dirs are 0700), so state directories go here.
STATE_ROOT = Path(os.environ.get("ESCNC_QEMU_STATE_ROOT", "/var/lib/escnc-tests"))
BOOT_TIMEOUT = 240.0


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guest_disk() -> Path:
    sys.path.insert(0, str(HERE / "guest"))
    try:
        import build  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    t0 = time.monotonic()
    image = build.build()
    print(f"tiny guest {image.disk} ({image.kernel_version}) in {time.monotonic() - t0:.1f} s")
    return Path(image.disk)


@dataclass
class Env:
    tag: str
    state: Path
    deployment: str
    network: str
    third_octet: int

    def ip(self, index: int) -> str:
        return f"10.{self.third_octet // 256 + 200}.{self.third_octet % 256}.{10 + index}"

    @property
    def gateway(self) -> str:
        return f"10.{self.third_octet // 256 + 200}.{self.third_octet % 256}.1"

    @property
    def subnet(self) -> str:
        return f"10.{self.third_octet // 256 + 200}.{self.third_octet % 256}.0"


def _libvirt():  # type: ignore[no-untyped-def]
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)
    return libvirt


@contextmanager
def hypervisor() -> Iterator[Any]:
    """A short-lived connection to the test hypervisor."""
    conn = _libvirt().open(URI)
    try:
        yield conn
    finally:
        conn.close()


def our_domains(prefix: str) -> list[str]:
    with hypervisor() as conn:
        return sorted(d.name() for d in conn.listAllDomains(0) if d.name().startswith(prefix))


def domain_running(name: str) -> bool:
    with hypervisor() as conn:
        state, _ = conn.lookupByName(name).state()
        return bool(state == _libvirt().VIR_DOMAIN_RUNNING)


def _cleanup_libvirt(env: Env) -> None:
    """Remove whatever a failed test left: our domains, our network, a stale pool."""
    libvirt = _libvirt()
    with hypervisor() as conn:
        for dom in conn.listAllDomains(0):
            if dom.name().startswith(env.deployment + "_"):
                try:
                    if dom.isActive():
                        dom.destroy()
                    dom.undefineFlags(
                        libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                        | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                        | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                    )
                except libvirt.libvirtError:
                    pass
        for net in conn.listAllNetworks(0):
            if net.name() == f"escnc-{env.network}":
                try:
                    if net.isActive():
                        net.destroy()
                    net.undefine()
                except libvirt.libvirtError:
                    pass
        # (escnc itself takes over a pool left pointing into a removed state directory)


@pytest.fixture
def env() -> Iterator[Env]:
    tag = uuid.uuid4().hex[:6]
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    STATE_ROOT.chmod(0o755)
    state = STATE_ROOT / f"state-{tag}"
    state.mkdir(mode=0o755)
    e = Env(tag, state, f"qemu-{tag}", f"qn{tag}", int(tag, 16) % 10000)
    yield e
    _cleanup_libvirt(e)
    shutil.rmtree(state, ignore_errors=True)


# --- payloads and events --------------------------------------------------------------


def config_xml(env: Env, disk: Path, vms: int) -> str:
    imported = env.state / "import" / disk.name  # escnc reads images from its import dir
    if not imported.exists():
        imported.parent.mkdir(exist_ok=True)
        shutil.copyfile(disk, imported)
    disk = imported
    ips = "".join(f"<ip_address>{env.ip(i)}</ip_address>" for i in range(vms))
    return f"""<config xmlns="{NC}"><esc_datamodel xmlns="{ESC}">
  <images><image><name>tiny-{env.tag}</name><src>{disk}</src><disk_format>raw</disk_format>
  </image></images>
  <flavors><flavor><name>tiny-{env.tag}</name><vcpus>1</vcpus><memory_mb>192</memory_mb>
    <root_disk_mb>64</root_disk_mb></flavor></flavors>
  <networks><network><name>{env.network}</name><subnet><name>s</name><ipversion>ipv4</ipversion>
    <dhcp>false</dhcp><address>{env.subnet}</address><netmask>255.255.255.0</netmask>
    <gateway>{env.gateway}</gateway></subnet></network></networks>
  <tenants><tenant><name>qemu</name><deployments><deployment><name>{env.deployment}</name>
    <vm_group><name>g</name><image>tiny-{env.tag}</image><flavor>tiny-{env.tag}</flavor>
      <bootup_time>{int(BOOT_TIMEOUT)}</bootup_time><recovery_wait_time>0</recovery_wait_time>
      <interfaces><interface><nicid>0</nicid><network>{env.network}</network></interface>
      </interfaces>
      <scaling><min_active>{vms}</min_active><max_active>{vms}</max_active><elastic>true</elastic>
        <static_ip_address_pool><network>{env.network}</network><gateway>{env.gateway}</gateway>
          <netmask>255.255.255.0</netmask>{ips}</static_ip_address_pool></scaling>
      <kpi_data><kpi><event_name>VM_ALIVE</event_name><metric_value>1</metric_value>
        <metric_cond>GT</metric_cond><metric_type>UINT32</metric_type>
        <metric_collector><type>ICMPPing</type><nicid>0</nicid><poll_frequency>1</poll_frequency>
          <polling_unit>seconds</polling_unit><continuous_alarm>false</continuous_alarm>
        </metric_collector></kpi></kpi_data>
    </vm_group></deployment></deployments></tenant></tenants>
</esc_datamodel></config>"""


def undeploy_xml(env: Env) -> str:
    return f"""<config xmlns="{NC}" xmlns:nc="{NC}"><esc_datamodel xmlns="{ESC}"><tenants><tenant>
  <name>qemu</name><deployments><deployment nc:operation="delete"><name>{env.deployment}</name>
  </deployment></deployments></tenant></tenants></esc_datamodel></config>"""


def cleanup_config_xml(env: Env) -> str:
    return f"""<config xmlns="{NC}" xmlns:nc="{NC}"><esc_datamodel xmlns="{ESC}">
  <tenants><tenant nc:operation="remove"><name>qemu</name></tenant></tenants>
  <networks><network nc:operation="remove"><name>{env.network}</name></network></networks>
  <flavors><flavor nc:operation="remove"><name>tiny-{env.tag}</name></flavor></flavors>
  <images><image nc:operation="remove"><name>tiny-{env.tag}</name></image></images>
</esc_datamodel></config>"""


@dataclass
class Ev:
    type: str
    status: str
    vm: str
    message: str
    at: float


class Events:
    """escEvents of one subscribed ncclient session."""

    def __init__(self, m) -> None:  # type: ignore[no-untyped-def]
        self.m = m
        self.seen: list[Ev] = []

    def _pump(self, timeout: float) -> None:
        notif = self.m.take_notification(block=True, timeout=timeout)
        if notif is None:
            return
        root = etree.fromstring(notif.notification_xml.encode())
        ev = root.find(f"{E}escEvent")
        if ev is not None:
            self.seen.append(
                Ev(
                    ev.findtext(f"{E}event/{E}type") or "",
                    ev.findtext(f"{E}status") or "",
                    ev.findtext(f"{E}vm_source/{E}generated_vmname") or "",
                    ev.findtext(f"{E}status_message") or "",
                    time.monotonic(),
                )
            )

    def wait(self, pred: Callable[[list[Ev]], bool], timeout: float, what: str) -> list[Ev]:
        deadline = time.monotonic() + timeout
        while not pred(self.seen):
            failures = [e for e in self.seen if e.status == "FAILURE"]
            assert not failures, f"FAILURE while waiting for {what}: {failures}"
            left = deadline - time.monotonic()
            assert left > 0, f"timed out after {timeout:.0f} s waiting for {what}; got " + str(
                [(e.type, e.status, e.message) for e in self.seen]
            )
            self._pump(min(left, 1.0))
        return self.seen

    def wait_type(self, type_: str, count: int = 1, timeout: float = BOOT_TIMEOUT) -> Ev:
        self.wait(lambda s: sum(e.type == type_ for e in s) >= count, timeout, f"{count} {type_}")
        return [e for e in self.seen if e.type == type_][count - 1]


def vm_action(m, action: str, vm: str) -> None:  # type: ignore[no-untyped-def]
    rpc = etree.fromstring(
        f'<vmAction xmlns="{ESC}"><actionType>{action}</actionType><vmName>{vm}</vmName></vmAction>'
    )
    reply = m.dispatch(rpc)
    assert reply.ok, reply.xml


def opdata_vms(m, env: Env) -> dict[str, dict[str, str]]:  # type: ignore[no-untyped-def]
    flt = f"""<esc_datamodel xmlns="{ESC}"><opdata><tenants><tenant><name>qemu</name>
      <deployments><deployment><name>{env.deployment}</name></deployment></deployments>
      </tenant></tenants></opdata></esc_datamodel>"""
    data = etree.fromstring(m.get(filter=("subtree", flt)).xml.encode())
    out = {}
    for vm in data.iter(f"{E}vm_instance"):
        out[vm.findtext(f"{E}name") or ""] = {
            "state": vm.findtext(f"{E}state") or "",
            "collector": vm.findtext(f"{E}collector") or "",
            "ip": next((ip.text or "" for ip in vm.iter(f"{E}ip_address")), ""),
        }
    return out


def ping(address: str) -> bool:
    return (
        subprocess.run(
            ["ping", "-c", "1", "-W", "2", address], capture_output=True, timeout=10
        ).returncode
        == 0
    )


# --- tests ----------------------------------------------------------------------------


def test_qemu_deploy_stop_start_reboot_undeploy(
    server_factory: Callable[..., Server], guest_disk: Path, env: Env
) -> None:
    srv = server_factory(state_dir=env.state, vims={"default": URI})
    with connect(srv) as m:
        m.timeout = 120
        m.create_subscription(stream_name="escEvent")
        events = Events(m)
        t0 = time.monotonic()
        assert m.edit_config(config=config_xml(env, guest_disk, 1), target="running").ok

        deployed = events.wait_type("VM_DEPLOYED")
        alive = events.wait_type("VM_ALIVE")
        events.wait_type("SERVICE_ALIVE")
        vm = alive.vm
        print(f"deploy: VM_DEPLOYED {deployed.at - t0:.1f} s, VM_ALIVE {alive.at - t0:.1f} s")
        info = opdata_vms(m, env)[vm]
        assert info["state"] == "VM_ALIVE_STATE"
        assert info["collector"] == "ICMPPing", info
        assert info["ip"] == env.ip(0)
        assert domain_running(vm)
        assert ping(env.ip(0)), "the guest does not answer ping"

        t1 = time.monotonic()
        vm_action(m, "STOP", vm)
        events.wait_type("VM_STOPPED", timeout=120)
        print(f"stop: {time.monotonic() - t1:.1f} s")
        assert not domain_running(vm)
        assert opdata_vms(m, env)[vm]["state"] == "VM_STOPPED_STATE"
        assert not ping(env.ip(0))

        t1 = time.monotonic()
        vm_action(m, "START", vm)
        events.wait_type("VM_STARTED")
        events.wait_type("VM_ALIVE", count=2)
        print(f"start to VM_ALIVE: {time.monotonic() - t1:.1f} s")
        assert ping(env.ip(0))

        t1 = time.monotonic()
        vm_action(m, "REBOOT", vm)
        events.wait_type("VM_REBOOTED")
        events.wait_type("VM_ALIVE", count=3)
        print(f"reboot to VM_ALIVE: {time.monotonic() - t1:.1f} s")
        assert ping(env.ip(0))

        assert m.edit_config(config=undeploy_xml(env), target="running").ok
        events.wait_type("VM_UNDEPLOYED", timeout=120)
        events.wait_type("SERVICE_UNDEPLOYED", timeout=120)
        assert our_domains(env.deployment + "_") == []
        assert m.edit_config(config=cleanup_config_xml(env), target="running").ok

        types = [e.type for e in events.seen]
        assert types.count("VM_ALIVE") == 3
        assert types.index("VM_DEPLOYED") < types.index("VM_ALIVE") < types.index("SERVICE_ALIVE")


def _start_escnc(state: Path) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE.parent / "src") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "escnc.cli.server", "serve", "--state-dir", str(state),
         "--listen", "127.0.0.1:0", "--vim", f"default={URI}", "--log-level", "INFO"],
        stdout=subprocess.PIPE, stderr=open(state / "serve.log", "a"),  # noqa: SIM115
        text=True, env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"serving NETCONF on 127\.0\.0\.1:(\d+)", line)
    assert found, (line, (state / "serve.log").read_text()[-3000:])
    return proc, int(found.group(1))


class _Srv:
    def __init__(self, port: int) -> None:
        self.port = port


def test_qemu_kill_9_during_deploy_recovers_without_duplicates(
    guest_disk: Path, env: Env
) -> None:
    add_user(env.state, USER, PASSWORD)
    proc, port = _start_escnc(env.state)
    try:
        m = connect(_Srv(port))  # type: ignore[arg-type]
        m.timeout = 120
        m.create_subscription(stream_name="escEvent")
        events = Events(m)
        assert m.edit_config(config=config_xml(env, guest_disk, 2), target="running").ok
        events.wait_type("VM_DEPLOYED", timeout=120)
        # escnc dies in the middle: one VM at least defined, none alive yet (boot ~10 s)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        try:
            m.close_session()
        except Exception:
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
    before = [e.type for e in events.seen]
    print(f"events before kill -9: {before}")

    proc, port = _start_escnc(env.state)
    try:
        with connect(_Srv(port)) as m:  # type: ignore[arg-type]
            m.timeout = 120
            # replay the whole durable log, then follow live events
            m.create_subscription(stream_name="escEvent", start_time="1970-01-01T00:00:00Z")
            events = Events(m)
            events.wait_type("SERVICE_ALIVE", timeout=BOOT_TIMEOUT * 1.5)
            time.sleep(3)  # anything duplicated would come right after
            events.wait(lambda s: True, 1, "late events")
            alive = Counter(e.vm for e in events.seen if e.type == "VM_ALIVE")
            vms = opdata_vms(m, env)
            assert len(vms) == 2, vms
            assert alive == Counter({name: 1 for name in vms}), (alive, vms)
            assert [e.type for e in events.seen].count("SERVICE_ALIVE") == 1
            assert all(v["state"] == "VM_ALIVE_STATE" for v in vms.values()), vms
            assert our_domains(env.deployment + "_") == sorted(vms), "orphan or missing domain"
            for v in vms.values():
                assert ping(v["ip"]), v

            assert m.edit_config(config=undeploy_xml(env), target="running").ok
            events.wait_type("SERVICE_UNDEPLOYED", timeout=120)
            assert our_domains(env.deployment + "_") == []
            assert m.edit_config(config=cleanup_config_xml(env), target="running").ok
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_qemu_reboot_waits_for_the_guest_to_come_back(
    server_factory: Callable[..., Server], guest_disk: Path, env: Env
) -> None:
    """After REBOOT, VM_ALIVE must mean the rebooted guest answers (boot takes seconds)."""
    srv = server_factory(state_dir=env.state, vims={"default": URI})
    with connect(srv) as m:
        m.timeout = 120
        m.create_subscription(stream_name="escEvent")
        events = Events(m)
        assert m.edit_config(config=config_xml(env, guest_disk, 1), target="running").ok
        vm = events.wait_type("VM_ALIVE").vm
        t0 = time.monotonic()
        vm_action(m, "REBOOT", vm)
        alive = events.wait_type("VM_ALIVE", count=2)
        try:
            assert alive.at - t0 > 3.0, f"VM_ALIVE {alive.at - t0:.1f} s after REBOOT"
        finally:
            assert m.edit_config(config=undeploy_xml(env), target="running").ok
            events.wait_type("SERVICE_UNDEPLOYED", timeout=120)
            assert m.edit_config(config=cleanup_config_xml(env), target="running").ok
