"""The libvirt metric collectors against a real libvirt test-driver domain.

The test driver's guest numbers are synthetic, so in the engine these collectors
report "unknown" on test hosts (checked first here); with that check turned off
(``is_test`` is the engine's collaborator) the same code reads the test driver's
counters, which proves the libvirt calls and the arithmetic (rates need two samples)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from conftest import test_host_uri as host_uri
from escnc.engine.kpi.collectors import CollectorEnv, Collectors, Unknown
from escnc.engine.kpi.spec import KpiDef
from escnc.engine.store import VmRecord
from escnc.settings import MetricScript
from escnc.vim.driver import Domain

MAC = "52:54:00:aa:bb:01"
DOMAIN = f"""<domain type='test'><name>kpi-vm</name><memory unit='MiB'>256</memory>
<vcpu>2</vcpu><os><type>hvm</type></os><devices>
<disk type='file' device='disk'><source file='/tmp/kpi-vm.img'/><target dev='vda'/></disk>
<interface type='network'><source network='default'/><mac address='{MAC}'/>
<target dev='vnet7'/></interface><memballoon model='virtio'/></devices></domain>"""


@pytest.fixture
def dom(tmp_path: Path) -> Iterator[libvirt.virDomain]:
    conn = libvirt.open(host_uri(tmp_path / "hosts"))
    conn.networkDefineXML(
        "<network><name>default</name><bridge name='virbr9'/></network>"
    ).create()
    d = conn.createXML(DOMAIN, 0)
    yield d
    conn.close()


def vm() -> VmRecord:
    return VmRecord("kpi-vm", "id", "t1", "dep1", "g1", 0, "host", "VM_ALIVE_STATE",
                    interfaces=[(0, "default", "10.0.0.5", MAC)])


def collectors(dom: libvirt.virDomain, is_test: bool) -> Collectors:
    # the engine hands collectors the VIM driver's wrapper, as here
    wrapped = Domain(dom)
    return Collectors(CollectorEnv(lambda _vm: wrapped, lambda _vm: is_test),
                      {"LOAD": MetricScript(("/bin/echo", "7"), 2.0)}, 4096)


@pytest.mark.parametrize(
    "name",
    ["CPU_LOAD", "MEMORY", "INPUT_TOTAL_BIT_RATE", "OUTPUT_TOTAL_BIT_RATE",
     "DISK_READ_BYTE_RATE", "DISK_WRITE_BYTE_RATE", "ICMPPing"],
)
def test_libvirt_collectors_are_unknown_on_test_hosts(dom: libvirt.virDomain, name: str) -> None:
    c = collectors(dom, is_test=True).get(name)
    assert c is not None
    got = c.sample(vm(), KpiDef("K", collector=name))
    assert isinstance(got, Unknown) and not got.quiet
    assert "test driver" in got.reason


def test_libvirt_collectors_read_counters(dom: libvirt.virDomain) -> None:
    cs = collectors(dom, is_test=False)
    kpi = KpiDef("K", nicid=0)
    mem = cs.get("MEMORY").sample(vm(), kpi)  # type: ignore[union-attr]
    assert isinstance(mem, float) and 0.0 <= mem <= 100.0
    for name in ("CPU_LOAD", "INPUT_TOTAL_BIT_RATE", "OUTPUT_TOTAL_BIT_RATE",
                 "DISK_READ_BYTE_RATE", "DISK_WRITE_BYTE_RATE"):
        c = cs.get(name)
        assert c is not None
        first = c.sample(vm(), kpi)
        assert isinstance(first, Unknown) and first.quiet, (name, first)  # no interval yet
        time.sleep(0.02)
        second = c.sample(vm(), kpi)
        assert isinstance(second, float) and second >= 0.0, (name, second)
        if name == "CPU_LOAD":
            assert second <= 100.0
        c.forget("kpi-vm")
        assert isinstance(c.sample(vm(), kpi), Unknown)  # forgotten: a new baseline
    no_nic = cs.get("INPUT_TOTAL_BIT_RATE").sample(vm(), KpiDef("K", nicid=3))  # type: ignore[union-attr]
    assert isinstance(no_nic, Unknown) and "nicid 3" in no_nic.reason


def test_collector_names_and_scripts(dom: libvirt.virDomain) -> None:
    cs = collectors(dom, is_test=True)
    assert cs.get("cpu_load") is cs.get("CPU_LOAD")  # ESC names, any case
    assert cs.get("LOAD").sample(vm(), KpiDef("K")) == 7.0  # type: ignore[union-attr]
    assert cs.get("NOPE") is None
    assert "LOAD" in cs.names() and "CPU_LOAD" in cs.names()


def test_two_kpis_on_one_rate_collector_keep_their_own_intervals(
    dom: libvirt.virDomain,
) -> None:
    """VM_OVERLOADED and VM_UNDERLOADED both on CPU_LOAD: the second KPI's sample must
    not become the first one's baseline (it would measure the instant between them)."""
    cpu = collectors(dom, is_test=False).get("CPU_LOAD")
    assert cpu is not None
    over, under = KpiDef("VM_OVERLOADED"), KpiDef("VM_UNDERLOADED")
    assert isinstance(cpu.sample(vm(), over), Unknown)
    # each KPI's first sample is its own first: no interval yet, whatever the other did
    got = cpu.sample(vm(), under)
    assert isinstance(got, Unknown) and got.quiet, got
    time.sleep(0.02)
    assert isinstance(cpu.sample(vm(), over), float)
    assert isinstance(cpu.sample(vm(), under), float)


def test_icmpping_kpi_pings_the_static_address_or_asks_libvirt_for_the_lease(
    dom: libvirt.virDomain,
) -> None:
    ping = collectors(dom, is_test=False).get("ICMPPing")
    assert ping is not None
    kpi = KpiDef("K", collector="ICMPPing", nicid=0)
    static = VmRecord("kpi-vm", "id", "t1", "dep1", "g1", 0, "host", "VM_ALIVE_STATE",
                      interfaces=[(0, "default", "127.0.0.1", MAC)])
    assert ping.sample(static, kpi) == 1.0  # a real echo request to the address
    dhcp = VmRecord("kpi-vm", "id", "t1", "dep1", "g1", 0, "host", "VM_ALIVE_STATE",
                    interfaces=[(0, "default", "", MAC)])
    got = ping.sample(dhcp, kpi)  # the test driver knows no lease for the MAC
    assert isinstance(got, Unknown) and "no DHCP lease" in got.reason, got
    other = ping.sample(dhcp, KpiDef("K", collector="ICMPPing", nicid=4))
    assert isinstance(other, Unknown) and "nicid 4" in other.reason
