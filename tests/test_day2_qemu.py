"""Day-2 primitives on a real libvirtd + QEMU (TCG) with the tiny test guest.

Skipped unless ESCNC_QEMU_URI is set (e.g. qemu:///system, libvirtd started by
scripts/hypervisor.sh). ESCNC_QEMU_URI2 (a second daemon with its own host UUID)
enables the migration test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from escnc.vim import migrate as mig
from escnc.vim import resize as rz
from escnc.vim import snapshots as snaps
from escnc.vim import volumes as vols

URI = os.environ.get("ESCNC_QEMU_URI", "")
pytestmark = [
    pytest.mark.qemu,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not URI, reason="ESCNC_QEMU_URI is not set"),
]
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def guest_disk() -> Path:
    out = subprocess.run(
        [sys.executable, str(HERE / "guest" / "build.py")],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def env(guest_disk: Path) -> Iterator[tuple[libvirt.virConnect, libvirt.virStoragePool, str]]:
    """A connection, a throw-away dir pool holding a qcow2 copy of the guest, a domain."""
    conn = libvirt.open(URI)
    tag = uuid.uuid4().hex[:8]
    pool_dir = Path(f"/var/lib/libvirt/images/escnc-day2-{tag}")
    pool_dir.mkdir(parents=True)
    disk = pool_dir / "root.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(guest_disk), str(disk)], check=True
    )
    pool = conn.storagePoolCreateXML(
        f"<pool type='dir'><name>day2-{tag}</name><target><path>{pool_dir}</path></target></pool>",
        0,
    )
    name = f"day2-{tag}"
    conn.defineXML(f"""<domain type='qemu'><name>{name}</name>
      <memory unit='MiB'>256</memory><currentMemory unit='MiB'>256</currentMemory>
      <vcpu current='1'>2</vcpu><os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>
      <features><acpi/></features><on_poweroff>destroy</on_poweroff>
      <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='{disk}'/><target dev='vda' bus='virtio'/></disk>
      <serial type='pty'/><memballoon model='virtio'/></devices></domain>""").create()
    try:
        yield conn, pool, name
    finally:
        dom = mig.find_domain(conn, name)
        if dom is not None:
            mig.undefine_fully(dom)
        pool.destroy()
        shutil.rmtree(pool_dir, ignore_errors=True)
        conn.close()


def test_live_vcpu_resize_and_revert(env):
    conn, _pool, name = env
    dom = conn.lookupByName(name)
    dom_id = dom.ID()
    record = rz.resize_domain(conn, name, 2, 256, shutdown_timeout=20)
    assert record.mode == "live" and dom.ID() == dom_id  # hot-plugged, not restarted
    assert dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == 2
    rz.revert_resize(conn, record, shutdown_timeout=20)
    assert dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_CONFIG) == 1
    assert dom.isActive()


def test_cold_resize_above_maximum_restarts(env):
    conn, _pool, name = env
    record = rz.resize_domain(conn, name, 3, 320, shutdown_timeout=20)
    assert record.mode == "cold"
    assert rz.current_size(conn, name)[0] == 3
    rz.revert_resize(conn, record, shutdown_timeout=20)
    assert rz.current_size(conn, name)[0] == 1


def test_snapshot_volume_revert_delete(env):
    conn, pool, name = env
    time.sleep(2)  # let the guest boot a little: the snapshot then holds a running guest
    started = time.monotonic()
    info = snaps.create_snapshot(conn, name, "s1", "qemu snapshot")
    took = time.monotonic() - started
    assert info.state == "running", info
    assert [s.id for s in snaps.list_snapshots(conn, name)] == ["s1"]
    vol = vols.copy_disk_to_volume(
        conn, name, "from-s1.qcow2", pool_name=pool.name(), snapshot_id="s1"
    )
    assert vol.capacity_bytes > 0 and Path(vol.path).exists()
    out = subprocess.run(
        ["qemu-img", "info", vol.path], capture_output=True, text=True, check=True
    ).stdout
    assert "qcow2" in out
    conn.lookupByName(name).destroy()
    assert snaps.revert_snapshot(conn, name, "s1") == "running"
    snaps.delete_snapshot(conn, name, "s1")
    assert snaps.list_snapshots(conn, name) == []
    print(f"qemu internal snapshot of a running guest: {took:.2f} s")


@pytest.mark.skipif(not os.environ.get("ESCNC_QEMU_URI2"), reason="ESCNC_QEMU_URI2 not set")
def test_live_migration_between_daemons(env):
    conn, _pool, name = env
    peer = libvirt.open(os.environ["ESCNC_QEMU_URI2"])
    record = mig.migrate_domain(conn, peer, name, live=True, dst_uri=os.environ["ESCNC_QEMU_URI2"])
    assert record.mechanism == "libvirt"
    assert peer.lookupByName(name).isActive()
    assert mig.find_domain(conn, name) is None
    mig.migrate_domain(peer, conn, name, live=True, dst_uri=URI)
    assert conn.lookupByName(name).isActive()
