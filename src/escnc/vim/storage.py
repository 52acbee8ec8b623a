"""The escnc storage pool on each host: image volumes, per-VM disks, config drives.

One ``dir`` pool named :data:`POOL_NAME` per host. On a local hypervisor its
directory is under escnc's state directory and files are copied in; on a remote
one the pool lives in ``/var/lib/escnc/pool`` and bytes are uploaded through a
libvirt stream. On test-driver hosts volumes are bookkeeping only (the driver keeps
no bytes), so volumes are created with the right capacity and nothing is copied.
Volume names: ``image-<image>.<version>.<part>.<fmt>``, ``<generated vm name>-root.qcow2``,
``<generated vm name>-day0.<iso|raw>``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import libvirt
from lxml import etree

from escnc.vim.hosts import Host
from escnc.vim.images import copy_file

log = logging.getLogger(__name__)

POOL_NAME = "escnc"
REMOTE_POOL_DIR = "/var/lib/escnc/pool"


def ensure_pool(host: Host, local_dir: Path) -> libvirt.virStoragePool:
    conn = host.connection()
    with host.lock:
        path = str(local_dir) if host.is_local or host.is_test else REMOTE_POOL_DIR
        try:
            pool: libvirt.virStoragePool | None = conn.storagePoolLookupByName(POOL_NAME)
        except libvirt.libvirtError:
            pool = None
        if pool is not None and host.is_local and not host.is_test:
            stale = pool_path(pool)
            if stale != path and not Path(stale).is_dir():
                # left behind by a state directory that no longer exists: take it over
                log.info("host %s: pool %s pointed at missing %s", host.name, POOL_NAME, stale)
                if pool.isActive():
                    pool.destroy()
                pool.undefine()
                pool = None
        if pool is None:
            if host.is_local and not host.is_test:
                local_dir.mkdir(parents=True, exist_ok=True)
            pool = conn.storagePoolDefineXML(pool_xml(POOL_NAME, path), 0)
            if not host.is_test:
                pool.build(0)
                pool.setAutostart(1)
            log.info("host %s: defined storage pool %s at %s", host.name, POOL_NAME, path)
        if not pool.isActive():
            pool.create(0)
        return pool


def pool_xml(name: str, path: str) -> str:
    """A ``dir`` pool definition (built with lxml: any name or path is escaped)."""
    root = etree.Element("pool", type="dir")
    etree.SubElement(root, "name").text = name
    etree.SubElement(etree.SubElement(root, "target"), "path").text = path
    return etree.tostring(root, encoding="unicode")


def volume_xml(
    name: str,
    capacity: int,
    fmt: str,
    *,
    allocation: int | None = None,
    backing: tuple[str, str] | None = None,
) -> str:
    """A volume definition; ``backing`` is (path, format) of a copy-on-write base."""
    root = etree.Element("volume")
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "capacity", unit="bytes").text = str(int(capacity))
    if allocation is not None:
        etree.SubElement(root, "allocation").text = str(int(allocation))
    etree.SubElement(etree.SubElement(root, "target"), "format", type=fmt)
    if backing is not None:
        store = etree.SubElement(root, "backingStore")
        etree.SubElement(store, "path").text = backing[0]
        etree.SubElement(store, "format", type=backing[1])
    return etree.tostring(root, encoding="unicode")


def pool_path(pool: libvirt.virStoragePool) -> str:
    root = etree.fromstring(pool.XMLDesc(0).encode())
    return root.findtext("target/path") or ""


def _lookup(pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError:
        return None


def install_file(
    host: Host, pool: libvirt.virStoragePool, vol_name: str, local: Path, fmt: str
) -> str:
    """Make ``local`` a volume of the pool (idempotent); return the volume path."""
    with host.lock:
        vol = _lookup(pool, vol_name)
        if vol is not None:
            return str(vol.path())
        size = local.stat().st_size
        if host.is_local and not host.is_test:
            copy_file(local, Path(pool_path(pool)) / vol_name)
            pool.refresh(0)
            vol = pool.storageVolLookupByName(vol_name)
            return str(vol.path())
        vol = pool.createXML(volume_xml(vol_name, max(size, 1), fmt), 0)
        if not host.is_test:
            _upload(host, vol, local, size)
        return str(vol.path())


def _upload(host: Host, vol: libvirt.virStorageVol, local: Path, size: int) -> None:
    stream = host.connection().newStream(0)
    vol.upload(stream, 0, size, 0)
    with local.open("rb") as src:
        stream.sendAll(lambda _s, n, f: f.read(n), src)
    stream.finish()


def download_volume(host: Host, path: str, local: Path, capacity: int) -> None:
    """The bytes of volume ``path`` of ``host`` into the file ``local``. A test-driver
    volume holds no bytes: ``local`` becomes a sparse file of its capacity."""
    tmp = local.with_name(local.name + ".part")
    if host.is_test:
        with tmp.open("wb") as fh:
            fh.truncate(max(capacity, 1))
    elif host.is_local and Path(path).exists():
        copy_file(Path(path), tmp)
    else:
        vol = host.connection().storageVolLookupByPath(path)
        stream = host.connection().newStream(0)
        vol.download(stream, 0, 0, 0)
        with tmp.open("wb") as fh:
            stream.recvAll(lambda _s, data, f: f.write(data), fh)
        stream.finish()
    tmp.replace(local)


def volume_capacity(host: Host, path: str) -> int:
    try:
        return int(host.connection().storageVolLookupByPath(path).info()[1])
    except libvirt.libvirtError:
        return 0


def create_cow_disk(
    host: Host,
    pool: libvirt.virStoragePool,
    vol_name: str,
    backing_path: str,
    backing_format: str,
    capacity_bytes: int,
) -> str:
    """A qcow2 volume whose backing file is the image (copy on write); idempotent."""
    with host.lock:
        vol = _lookup(pool, vol_name)
        if vol is not None:
            return str(vol.path())
        capacity = max(
            capacity_bytes, volume_capacity(host, backing_path) if backing_path else 0, 1
        )
        # allocation 0: qcow2 is thin, and the test driver's synthetic pool is finite;
        # no backing path: a blank disk
        xml = volume_xml(
            vol_name,
            capacity,
            "qcow2",
            allocation=0,
            backing=(backing_path, backing_format) if backing_path else None,
        )
        return str(pool.createXML(xml, 0).path())


def delete_volume(host: Host, path: str) -> None:
    try:
        vol = host.connection().storageVolLookupByPath(path)
    except libvirt.libvirtError:
        return
    try:
        vol.delete(0)
    except libvirt.libvirtError as exc:
        log.warning("host %s: cannot delete volume %s: %s", host.name, path, exc)


def delete_vm_volumes(host: Host, pool: libvirt.virStoragePool, generated_name: str) -> None:
    """Free every volume named after a VM (root disk and day-0 drive)."""
    with host.lock:
        for vol in pool.listAllVolumes(0):
            if vol.name().startswith(generated_name + "-"):
                try:
                    vol.delete(0)
                except libvirt.libvirtError as exc:
                    log.warning("host %s: cannot delete volume %s: %s", host.name, vol.name(), exc)


def paths_in_use(host: Host, pool: libvirt.virStoragePool) -> set[str]:
    """Paths some domain has as a disk, or some volume of the pool has as its backing
    file (a copy-on-write root disk): those volumes must stay."""
    used: set[str] = set()
    conn = host.connection()
    for dom in conn.listAllDomains(0):
        try:
            root = etree.fromstring(dom.XMLDesc(0).encode())
        except libvirt.libvirtError:
            continue  # vanished meanwhile
        for src in root.iterfind("devices/disk/source"):
            path = src.get("file") or src.get("dev")
            if path:
                used.add(path)
    with host.lock:
        for vol in pool.listAllVolumes(0):
            try:
                root = etree.fromstring(vol.XMLDesc(0).encode())
            except libvirt.libvirtError:
                continue
            path = root.findtext("backingStore/path")
            if path:
                used.add(path)
    return used


def delete_matching_volumes(
    host: Host, pool: libvirt.virStoragePool, match: Callable[[str], bool], keep: set[str]
) -> tuple[list[str], list[str]]:
    """Delete the pool's volumes whose name ``match``es unless their path is in ``keep``;
    returns (deleted names, kept names)."""
    deleted: list[str] = []
    kept: list[str] = []
    with host.lock:
        for vol in pool.listAllVolumes(0):
            name = vol.name()
            if not match(name):
                continue
            if vol.path() in keep:
                kept.append(name)
                continue
            try:
                vol.delete(0)
                deleted.append(name)
            except libvirt.libvirtError as exc:
                log.warning("host %s: cannot delete volume %s: %s", host.name, name, exc)
                kept.append(name)
    return deleted, kept
