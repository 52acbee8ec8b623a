"""Copy a domain's root disk into a storage volume (EXPORT, volume from snapshot).

Sources, best first:
* a snapshot of a local qcow2 disk: ``qemu-img convert -l snapshot.name=ID`` reads the
  disk as the snapshot captured it (``-U``: QEMU may hold the image open);
* a disk that is a libvirt storage volume: ``virStorageVolCreateXMLFrom`` (libvirt copies);
* a local file that is no volume: a new volume, then the file streamed into it.
The test driver keeps no guest data: there a disk that is not a pool volume yields an
empty volume of the same capacity.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

import libvirt
from lxml import etree

from escnc.vim.domains import (
    DomainOpError,
    is_test_driver,
    libvirt_message,
    lookup,
    parse_xml,
)

DEFAULT_TEST_CAPACITY = 1024**3


@dataclass(frozen=True)
class DiskRef:
    target: str  # vda
    path: str  # file path, or "" for a pool/volume source
    fmt: str  # qcow2 | raw | ""
    pool: str = ""  # <source pool=... volume=...>
    volume: str = ""


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    pool: str
    path: str
    key: str
    capacity_bytes: int


def root_disk(dom: libvirt.virDomain) -> DiskRef:
    """The first disk device of the domain (the boot disk in escnc's domain XML)."""
    root = parse_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    for disk in root.iterfind("devices/disk"):
        if disk.get("device", "disk") != "disk":
            continue
        src = disk.find("source")
        if src is None:
            continue
        target = disk.find("target")
        driver = disk.find("driver")
        return DiskRef(
            target=target.get("dev", "") if target is not None else "",
            path=src.get("file") or src.get("dev") or "",
            fmt=driver.get("type", "") if driver is not None else "",
            pool=src.get("pool", ""),
            volume=src.get("volume", ""),
        )
    raise DomainOpError(f"VM {dom.name()} has no disk to copy")


def _disk_volume(conn: libvirt.virConnect, disk: DiskRef) -> libvirt.virStorageVol | None:
    try:
        if disk.pool and disk.volume:
            return conn.storagePoolLookupByName(disk.pool).storageVolLookupByName(disk.volume)
        if disk.path:
            return conn.storageVolLookupByPath(disk.path)
    except libvirt.libvirtError:
        return None
    return None


def resolve_pool(
    conn: libvirt.virConnect, pool_name: str | None, source: libvirt.virStorageVol | None = None
) -> libvirt.virStoragePool:
    """The named pool; else the pool holding ``source``; else the first active pool."""
    try:
        if pool_name:
            return conn.storagePoolLookupByName(pool_name)
        if source is not None:
            return source.storagePoolLookupByVolume()
        pools = conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
    except libvirt.libvirtError as exc:
        raise DomainOpError(
            f"storage pool {pool_name or ''} not found: {libvirt_message(exc)}"
        ) from exc
    if not pools:
        raise DomainOpError("the host has no active storage pool for the volume")
    return sorted(pools, key=lambda p: p.name())[0]


def _vol_xml(name: str, capacity: int, fmt: str) -> str:
    root = etree.Element("volume")
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "capacity", unit="bytes").text = str(capacity)
    if fmt:
        etree.SubElement(etree.SubElement(root, "target"), "format", type=fmt)
    return etree.tostring(root, encoding="unicode")


def _vol_format(vol: libvirt.virStorageVol | None) -> str:
    if vol is None:
        return ""
    fmt = parse_xml(vol.XMLDesc(0)).find("target/format")
    return fmt.get("type", "") if fmt is not None else ""


def _info(pool: libvirt.virStoragePool, vol: libvirt.virStorageVol) -> VolumeInfo:
    return VolumeInfo(
        str(vol.name()), str(pool.name()), str(vol.path()), str(vol.key()), int(vol.info()[1])
    )


def _pool_dir(pool: libvirt.virStoragePool) -> str:
    path = parse_xml(pool.XMLDesc(0)).findtext("target/path") or ""
    if not path or not os.path.isdir(path):
        raise DomainOpError(f"pool {pool.name()} is not a local directory pool")
    return path


def _convert_snapshot(pool: libvirt.virStoragePool, name: str, src: str, snap_id: str) -> None:
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        raise DomainOpError("qemu-img is not installed")
    dst = os.path.join(_pool_dir(pool), name)
    if os.path.exists(dst):
        raise DomainOpError(f"volume {name} already exists in pool {pool.name()}")
    cmd = [
        qemu_img,
        "convert",
        "-U",
        "-f",
        "qcow2",
        "-O",
        "qcow2",
        "-l",
        f"snapshot.name={snap_id}",
        src,
        dst,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        if os.path.exists(dst):
            os.unlink(dst)
        raise DomainOpError(f"copy of snapshot [{snap_id}] failed: {proc.stderr.strip()}")
    pool.refresh(0)


def _upload(conn: libvirt.virConnect, vol: libvirt.virStorageVol, path: str) -> None:
    size = os.path.getsize(path)
    stream = conn.newStream(0)
    vol.upload(stream, 0, size, 0)
    with open(path, "rb") as fh:
        stream.sendAll(lambda _s, nbytes, f: f.read(nbytes), fh)
    stream.finish()


def copy_disk_to_volume(
    conn: libvirt.virConnect,
    dom_name: str,
    vol_name: str,
    *,
    pool_name: str | None = None,
    snapshot_id: str | None = None,
) -> VolumeInfo:
    """A new volume ``vol_name`` holding the root disk of ``dom_name`` (at ``snapshot_id``)."""
    dom = lookup(conn, dom_name)
    disk = root_disk(dom)
    src_vol = _disk_volume(conn, disk)
    pool = resolve_pool(conn, pool_name, src_vol)
    fmt = disk.fmt or _vol_format(src_vol)
    try:
        local = not is_test_driver(conn) and disk.path and os.path.exists(disk.path)
        if snapshot_id and local and fmt == "qcow2":
            _convert_snapshot(pool, vol_name, disk.path, snapshot_id)
            vol = pool.storageVolLookupByName(vol_name)
        elif src_vol is not None:
            xml = _vol_xml(vol_name, int(src_vol.info()[1]), fmt)
            vol = pool.createXMLFrom(xml, src_vol, 0)
        elif local:
            vol = pool.createXML(_vol_xml(vol_name, os.path.getsize(disk.path), fmt or "raw"), 0)
            try:
                _upload(conn, vol, disk.path)
            except libvirt.libvirtError:
                vol.delete(0)
                raise
        elif is_test_driver(conn):
            vol = pool.createXML(_vol_xml(vol_name, DEFAULT_TEST_CAPACITY, fmt), 0)
        else:
            raise DomainOpError(
                f"disk {disk.target} of {dom_name} is neither a storage volume "
                f"nor a readable local file"
            )
    except libvirt.libvirtError as exc:
        raise DomainOpError(
            f"copy of the disk of {dom_name} into volume {vol_name} failed: {libvirt_message(exc)}"
        ) from exc
    return _info(pool, vol)


def volume_format(conn: libvirt.virConnect, vol: VolumeInfo) -> str:
    """The format (qcow2, raw) of a volume made by :func:`copy_disk_to_volume`."""
    try:
        return _vol_format(conn.storagePoolLookupByName(vol.pool).storageVolLookupByName(vol.name))
    except libvirt.libvirtError:
        return ""


def delete_volume(conn: libvirt.virConnect, pool_name: str, vol_name: str) -> None:
    try:
        conn.storagePoolLookupByName(pool_name).storageVolLookupByName(vol_name).delete(0)
    except libvirt.libvirtError as exc:
        raise DomainOpError(f"delete of volume {vol_name} failed: {libvirt_message(exc)}") from exc


def volume_exists(conn: libvirt.virConnect, pool_name: str, vol_name: str) -> bool:
    try:
        conn.storagePoolLookupByName(pool_name).storageVolLookupByName(vol_name)
        return True
    except libvirt.libvirtError:
        return False
