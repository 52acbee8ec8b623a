"""Day-2 primitives on plain libvirt connections (test driver; QEMU when available)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from escnc.vim import migrate as mig
from escnc.vim import resize as rz
from escnc.vim import snapshots as snaps
from escnc.vim import volumes as vols
from escnc.vim.domains import DomainOpError, DomainOpTimeout, domain_size, run_polled

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def fresh_host(tmp: Path, name: str) -> libvirt.virConnect:
    node = tmp / f"{name}.xml"
    node.write_text("<node></node>\n")
    return libvirt.open(f"test://{node}")


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[libvirt.virConnect, libvirt.virConnect]]:
    a, b = fresh_host(tmp_path, "hostA"), fresh_host(tmp_path, "hostB")
    yield a, b
    a.close()
    b.close()


def make_pool(conn: libvirt.virConnect, path: Path, name: str = "escnc") -> libvirt.virStoragePool:
    pool = conn.storagePoolDefineXML(
        f"<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>"
    )
    pool.create()
    return pool


def define_vm(
    conn: libvirt.virConnect,
    name: str = "vm1",
    vcpus: int = 1,
    max_vcpus: int = 1,
    memory_mb: int = 512,
    disk: str = "/var/lib/escnc/vm1.qcow2",
    start: bool = True,
) -> libvirt.virDomain:
    xml = f"""<domain type='test'><name>{name}</name>
      <memory unit='MiB'>{memory_mb}</memory><currentMemory unit='MiB'>{memory_mb}</currentMemory>
      <vcpu current='{vcpus}'>{max_vcpus}</vcpu><os><type arch='x86_64'>hvm</type></os>
      <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='{disk}'/><target dev='vda' bus='virtio'/></disk></devices></domain>"""
    dom = conn.defineXML(xml)
    if start:
        dom.create()
    return dom


# ---- resize ---------------------------------------------------------------------------


def test_resize_cold_then_revert(hosts):
    a, _ = hosts
    define_vm(a, vcpus=1, max_vcpus=1, memory_mb=512)
    record = rz.resize_domain(a, "vm1", 2, 1024)
    assert record.mode == "cold"
    assert rz.current_size(a, "vm1") == (2, 1024)
    dom = a.lookupByName("vm1")
    assert dom.isActive()
    assert domain_size(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).max_vcpus == 2
    rz.revert_resize(a, record)
    assert rz.current_size(a, "vm1") == (1, 512)
    inactive = domain_size(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert (inactive.max_vcpus, inactive.max_memory_kib) == (1, 512 * 1024)
    assert dom.isActive()


def test_resize_live_within_maxima(hosts):
    a, _ = hosts
    dom = define_vm(a, vcpus=1, max_vcpus=4, memory_mb=2048)
    dom.setMemoryFlags(1024 * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    id_before = dom.ID()
    record = rz.resize_domain(a, "vm1", 3, 1536)
    assert record.mode == "live"
    assert dom.ID() == id_before  # not restarted
    assert rz.current_size(a, "vm1") == (3, 1536)
    rz.revert_resize(a, record)
    assert dom.ID() == id_before
    assert dom.info()[3] == 1


def test_resize_stopped_vm_is_offline(hosts):
    a, _ = hosts
    define_vm(a, start=False)
    record = rz.resize_domain(a, "vm1", 2, 2048)
    assert record.mode == "offline"
    assert rz.current_size(a, "vm1") == (2, 2048)
    assert not a.lookupByName("vm1").isActive()
    rz.revert_resize(a, record)
    assert rz.current_size(a, "vm1") == (1, 512)


def test_resize_unknown_vm_and_bad_size(hosts):
    a, _ = hosts
    with pytest.raises(DomainOpError, match="not found"):
        rz.resize_domain(a, "nope", 1, 512)
    define_vm(a)
    with pytest.raises(DomainOpError, match="invalid size"):
        rz.resize_domain(a, "vm1", 0, 512)


# ---- migration ------------------------------------------------------------------------


def test_live_move_keeps_running_state_and_snapshots(hosts):
    a, b = hosts
    dom = define_vm(a, vcpus=1, max_vcpus=2)
    uuid = dom.UUIDString()
    snaps.create_snapshot(a, "vm1", "s-1", "first")
    record = mig.migrate_domain(a, b, "vm1", live=True)
    assert record.mechanism == "definition" and record.live
    assert [d.name() for d in a.listAllDomains()] == []
    moved = b.lookupByName("vm1")
    assert moved.isActive() and moved.UUIDString() == uuid
    assert [s.id for s in snaps.list_snapshots(b, "vm1")] == ["s-1"]


def test_move_takes_the_disk_volumes_along(hosts, tmp_path):
    a, b = hosts
    pool = make_pool(a, tmp_path / "pool")
    disk = pool.createXML(
        "<volume><name>vm1-root.qcow2</name><capacity unit='M'>8</capacity>"
        "<target><format type='qcow2'/></target></volume>"
    )
    define_vm(a, disk=disk.path())
    make_pool(b, tmp_path / "poolB")
    mig.migrate_domain(a, b, "vm1")
    assert pool.listVolumes() == []
    assert b.storagePoolLookupByName("escnc").listVolumes() == ["vm1-root.qcow2"]
    assert str(tmp_path / "poolB" / "vm1-root.qcow2") in b.lookupByName("vm1").XMLDesc(0)
    # a failed move leaves the volumes where they were
    mig.migrate_domain(b, a, "vm1")
    with pytest.raises(DomainOpError):
        mig.migrate_domain(a, _FailingStartConn(b), "vm1")  # type: ignore[arg-type]
    assert pool.listVolumes() == ["vm1-root.qcow2"]
    assert b.storagePoolLookupByName("escnc").listVolumes() == []


def test_cold_move_restarts_on_target_and_moves_back(hosts):
    a, b = hosts
    define_vm(a)
    record = mig.migrate_domain(a, b, "vm1", live=False)
    assert not record.live and record.was_active
    assert b.lookupByName("vm1").isActive()
    mig.migrate_domain(b, a, "vm1", live=False)  # revert = move back
    assert a.lookupByName("vm1").isActive() and not b.listAllDomains()


def test_move_refuses_duplicate_on_target(hosts):
    a, b = hosts
    define_vm(a)
    define_vm(b)
    with pytest.raises(DomainOpError, match="already has a domain"):
        mig.migrate_domain(a, b, "vm1")
    assert a.lookupByName("vm1").isActive()


def test_move_refuses_when_target_too_small(hosts):
    a, b = hosts
    define_vm(a, memory_mb=3000)
    define_vm(b, name="big", memory_mb=2000)
    with pytest.raises(DomainOpError, match="free memory"):
        mig.migrate_domain(a, b, "vm1")
    assert a.lookupByName("vm1").isActive()
    assert [d.name() for d in b.listAllDomains()] == ["big"]


class _FailingStartConn:
    """A target whose domains refuse to start: a failure after the definition landed."""

    def __init__(self, conn: libvirt.virConnect) -> None:
        self._conn = conn

    def __getattr__(self, name: str):
        return getattr(self._conn, name)

    def defineXML(self, xml: str):  # libvirt's name
        dom = self._conn.defineXML(xml)

        class _Dom:
            def __getattr__(self, attr: str):
                return getattr(dom, attr)

            def create(self) -> int:
                raise libvirt.libvirtError("injected: cannot start on target")

        return _Dom()


def test_failed_move_leaves_no_copy_and_source_running(hosts):
    a, b = hosts
    define_vm(a)
    snaps.create_snapshot(a, "vm1", "s-1")
    with pytest.raises(DomainOpError, match="injected"):
        mig.migrate_domain(a, _FailingStartConn(b), "vm1", live=True)  # type: ignore[arg-type]
    assert b.listAllDomains() == []
    dom = a.lookupByName("vm1")
    assert dom.isActive() and dom.snapshotListNames() == ["s-1"]
    with pytest.raises(DomainOpError, match="injected"):
        mig.migrate_domain(a, _FailingStartConn(b), "vm1", live=False)  # type: ignore[arg-type]
    assert b.listAllDomains() == [] and a.lookupByName("vm1").isActive()


def test_pick_host_most_free_capacity(hosts):
    a, b = hosts
    define_vm(a, name="x", memory_mb=1000)
    caps = {"A": mig.host_capacity(a), "B": mig.host_capacity(b)}
    assert caps["A"].memory_used_mb == 1000 and caps["A"].vcpus_used == 1
    assert mig.pick_host(caps, 1, 512) == "B"
    assert mig.pick_host(caps, 1, 512, allowed=["A"]) == "A"
    assert mig.pick_host(caps, 1, 512, exclude=["B"]) == "A"
    assert mig.pick_host(caps, 1, 10_000) is None


# ---- snapshots and volumes ------------------------------------------------------------


def test_snapshot_create_list_revert_delete(hosts):
    a, _ = hosts
    define_vm(a, vcpus=1, max_vcpus=2)
    info = snaps.create_snapshot(a, "vm1", "id-1", "my <snap> & name")
    assert info.description == "my <snap> & name" and info.state == "running"
    a.lookupByName("vm1").destroy()
    assert snaps.revert_snapshot(a, "vm1", "id-1") == "running"
    assert [s.id for s in snaps.list_snapshots(a, "vm1")] == ["id-1"]
    snaps.delete_snapshot(a, "vm1", "id-1")
    assert snaps.list_snapshots(a, "vm1") == []
    with pytest.raises(DomainOpError, match=r"Snapshot image \[id-1\] not found."):
        snaps.delete_snapshot(a, "vm1", "id-1")
    with pytest.raises(DomainOpError, match="longer than 255"):
        snaps.create_snapshot(a, "vm1", "id-2", "x" * 256)


def test_export_and_volume_from_snapshot_pool_disk(hosts, tmp_path):
    a, _ = hosts
    pool = make_pool(a, tmp_path / "pool")
    disk = pool.createXML(
        "<volume><name>vm1.qcow2</name><capacity unit='M'>64</capacity>"
        "<target><format type='qcow2'/></target></volume>"
    )
    define_vm(a, disk=disk.path())
    snaps.create_snapshot(a, "vm1", "id-1")
    exported = vols.copy_disk_to_volume(a, "vm1", "export-1.qcow2")
    assert exported.pool == "escnc" and exported.capacity_bytes == 64 * 1024**2
    from_snap = vols.copy_disk_to_volume(a, "vm1", "vol-1", snapshot_id="id-1")
    assert sorted(pool.listVolumes()) == ["export-1.qcow2", "vm1.qcow2", "vol-1"]
    assert vols.volume_exists(a, "escnc", from_snap.name)
    vols.delete_volume(a, "escnc", "vol-1")
    assert not vols.volume_exists(a, "escnc", "vol-1")


def test_export_needs_a_pool(hosts):
    a, _ = hosts
    define_vm(a)
    with pytest.raises(DomainOpError, match="no active storage pool"):
        vols.copy_disk_to_volume(a, "vm1", "x")


# ---- polling ----------------------------------------------------------------------------


def test_run_polled_returns_and_times_out():
    assert run_polled(lambda: 7, poll_secs=0.01, timeout_secs=1, what="x") == 7
    polls: list[int] = []
    late: list[int] = []
    release = threading.Event()

    def slow() -> int:
        release.wait(5)
        return 42

    started = time.monotonic()
    with pytest.raises(DomainOpTimeout, match=r"snapshot timed out after 0\.2 s"):
        run_polled(
            slow,
            poll_secs=0.05,
            timeout_secs=0.2,
            what="snapshot",
            progress=lambda: polls.append(1),
            on_late_result=late.append,
        )
    assert 0.15 < time.monotonic() - started < 1.5
    assert len(polls) >= 2
    release.set()
    deadline = time.monotonic() + 2
    while not late and time.monotonic() < deadline:
        time.sleep(0.01)
    assert late == [42]


# ---- placement --------------------------------------------------------------------------


def test_allowed_hosts_follow_placement_rules():
    from escnc.engine.model import DeploymentSpec, GroupSpec, PlacementGroup
    from escnc.engine.placement import allowed_hosts
    from escnc.engine.store import VmRecord

    def rec(name: str, group: str, host: str) -> VmRecord:
        return VmRecord(name, "", "t", "d", group, 0, host, "VM_ALIVE_STATE")

    vm, peer = rec("a0", "ga", "h1"), rec("b0", "gb", "h2")
    hosts = ["h1", "h2", "h3"]
    groups = {"ga": GroupSpec("ga", "i", "f"), "gb": GroupSpec("gb", "i", "f")}
    plain = DeploymentSpec("t", "d", groups)
    assert allowed_hosts(vm, plain, [vm, peer], hosts) == (["h2", "h3"], ["h2", "h3"])
    anti = DeploymentSpec(
        "t", "d", groups, (PlacementGroup("p", "anti_affinity", "strict", ("ga", "gb")),)
    )
    assert allowed_hosts(vm, anti, [vm, peer], hosts) == (["h3"], ["h3"])
    loose = DeploymentSpec(
        "t", "d", groups, (PlacementGroup("p", "anti_affinity", "loose", ("ga", "gb")),)
    )
    assert allowed_hosts(vm, loose, [vm, peer], hosts) == (["h2", "h3"], ["h3"])
    aff = DeploymentSpec(
        "t", "d", groups, (PlacementGroup("p", "affinity", "strict", ("ga", "gb")),)
    )
    assert allowed_hosts(vm, aff, [vm, peer], hosts) == (["h2"], ["h2"])
    pinned = {
        "ga": GroupSpec("ga", "i", "f", placement_type="zone_host", placement_host="h3"),
        "gb": groups["gb"],
    }
    assert allowed_hosts(vm, DeploymentSpec("t", "d", pinned), [vm], hosts)[0] == ["h3"]
    # capacity admission is the caller's collaborator (no registry shared by servers)
    full = {"h2"}
    fits = allowed_hosts(vm, plain, [vm, peer], hosts, lambda _vm, hs: [h for h in hs
                                                                        if h not in full])
    assert fits == (["h3"], ["h3"])
