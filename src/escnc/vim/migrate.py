"""Move a domain between hosts, and pick a target host.

Two mechanisms:

* libvirt migration (real daemons): peer-to-peer, live when asked, with storage copy
  (``VIR_MIGRATE_NON_SHARED_DISK``) for block migration. libvirt itself cleans the
  target up when a migration fails; we check again anyway.
* moving the definition (the test driver has no migration API, and any pair of hosts
  where libvirt migration is impossible): export the persistent XML and snapshot
  metadata, define and start on the target, and only once that worked destroy and
  undefine on the source. Any failure before that point removes the target's copy,
  so the VM keeps running on the source and nothing is left behind on the target.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import libvirt
from lxml import etree

from escnc.vim.domains import (
    DomainOpError,
    domain_size,
    find_domain,
    host_label,
    is_test_driver,
    libvirt_message,
    lookup,
    parse_xml,
    persistent_xml,
    stop_domain,
    undefine_fully,
)

log = logging.getLogger(__name__)

Mechanism = Literal["libvirt", "definition"]


@dataclass(frozen=True)
class MigrationRecord:
    name: str
    uuid: str
    live: bool
    mechanism: Mechanism
    was_active: bool
    source_xml: str  # the persistent definition on the source, for moving back


@dataclass(frozen=True)
class HostCapacity:
    vcpus_total: int
    memory_total_mb: int
    vcpus_used: int
    memory_used_mb: int

    @property
    def vcpus_free(self) -> int:
        return self.vcpus_total - self.vcpus_used

    @property
    def memory_free_mb(self) -> int:
        return self.memory_total_mb - self.memory_used_mb


def host_capacity(conn: libvirt.virConnect) -> HostCapacity:
    """Capacity from the node info, use from the running domains' current sizes."""
    info = conn.getInfo()
    vcpus_used = mem_used_kib = 0
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        state = dom.info()
        vcpus_used += int(state[3])
        mem_used_kib += int(state[2])
    return HostCapacity(int(info[2]), int(info[1]), vcpus_used, mem_used_kib // 1024)


def pick_host(
    capacities: Mapping[str, HostCapacity],
    need_vcpus: int,
    need_memory_mb: int,
    allowed: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
) -> str | None:
    """The allowed host with the most free memory (then vCPUs) that fits the VM."""
    allowed_set = set(capacities) if allowed is None else set(allowed)
    excluded = set(exclude)
    fitting = [
        (cap.memory_free_mb, cap.vcpus_free, name)
        for name, cap in capacities.items()
        if name in allowed_set
        and name not in excluded
        and cap.memory_free_mb >= need_memory_mb
        and cap.vcpus_free >= need_vcpus
    ]
    if not fitting:
        return None
    # most free memory wins; ties by free vCPUs, then by name for a stable choice
    fitting.sort(key=lambda t: (-t[0], -t[1], t[2]))
    return fitting[0][2]


def check_fits(dst: libvirt.virConnect, dom: libvirt.virDomain) -> None:
    """Refuse a target that cannot hold the VM's current size."""
    size = domain_size(dom.XMLDesc(0))
    cap = host_capacity(dst)
    need_mb = size.memory_kib // 1024
    if cap.memory_free_mb < need_mb or cap.vcpus_free < size.vcpus:
        raise DomainOpError(
            f"host {host_label(dst)} has {cap.vcpus_free} free vCPUs and "
            f"{cap.memory_free_mb} MB free memory; {dom.name()} needs {size.vcpus} "
            f"vCPUs and {need_mb} MB"
        )


def _snapshots_in_order(dom: libvirt.virDomain) -> list[tuple[str, bool]]:
    try:
        snaps = dom.listAllSnapshots(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)
    except libvirt.libvirtError:
        snaps = dom.listAllSnapshots(0)
    return [
        (s.getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE), bool(s.isCurrent())) for s in snaps
    ]


def _remove_copy(dst: libvirt.virConnect, name: str, uuid: str) -> None:
    copy = find_domain(dst, name, uuid)
    if copy is None:
        return
    try:
        undefine_fully(copy)
    except libvirt.libvirtError:
        log.exception("could not remove the copy of %s from %s", name, host_label(dst))
        raise


def _disk_volumes(conn: libvirt.virConnect, xml: str) -> list[libvirt.virStorageVol]:
    vols = []
    for src in parse_xml(xml).iterfind("devices/disk/source"):
        path = src.get("file") or src.get("dev")
        if not path:
            continue
        try:
            vols.append(conn.storageVolLookupByPath(path))
        except libvirt.libvirtError:
            continue
    return vols


def _target_pool(
    dst: libvirt.virConnect, src_pool: libvirt.virStoragePool
) -> libvirt.virStoragePool:
    try:
        pool = dst.storagePoolLookupByName(src_pool.name())
    except libvirt.libvirtError:
        pool = dst.storagePoolDefineXML(src_pool.XMLDesc(0), 0)
    if not pool.isActive():
        pool.create(0)
    return pool


def _copy_volume_records(
    dst: libvirt.virConnect, vols: list[libvirt.virStorageVol], paths: dict[str, str]
) -> list[libvirt.virStorageVol]:
    """Test driver only: recreate the VM's volumes (bookkeeping, no bytes) on the target,
    so the disks follow the VM and deleting it later frees the target's pool.
    ``paths`` gets old path -> new path for the domain XML."""
    made: list[libvirt.virStorageVol] = []
    try:
        for vol in vols:
            pool = _target_pool(dst, vol.storagePoolLookupByVolume())
            try:
                pool.storageVolLookupByName(vol.name())
                continue  # already there (shared pool path)
            except libvirt.libvirtError:
                pass
            new = pool.createXML(vol.XMLDesc(0), 0)
            made.append(new)
            paths[str(vol.path())] = str(new.path())
    except libvirt.libvirtError:
        for vol in made:
            vol.delete(0)
        raise
    return made


def move_definition(
    src: libvirt.virConnect, dst: libvirt.virConnect, name: str, *, start: bool | None = None
) -> MigrationRecord:
    """Move domain ``name`` by definition; ``start`` defaults to "was it running"."""
    dom = lookup(src, name)
    uuid = dom.UUIDString()
    if find_domain(dst, name, uuid) is not None:
        raise DomainOpError(
            f"host {host_label(dst)} already has a domain named {name} or with UUID {uuid}"
        )
    was_active = bool(dom.isActive())
    paused = was_active and dom.info()[0] == libvirt.VIR_DOMAIN_PAUSED
    live_size = domain_size(dom.XMLDesc(0))
    xml = persistent_xml(dom)
    snapshots = _snapshots_in_order(dom)
    run_on_target = was_active if start is None else start
    volumes = _disk_volumes(src, xml) if is_test_driver(src) and is_test_driver(dst) else []
    made: list[libvirt.virStorageVol] = []
    try:
        paths: dict[str, str] = {}
        made = _copy_volume_records(dst, volumes, paths)
        new = dst.defineXML(_with_paths(xml, paths))
        for snap_xml, current in snapshots:
            flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
            if current:
                flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
            new.snapshotCreateXML(snap_xml, flags)
        if run_on_target:
            new.create()
            if was_active:
                # carry the live size (hot-plugged vCPUs, balloon) over, as migration does
                new.setVcpusFlags(live_size.vcpus, libvirt.VIR_DOMAIN_AFFECT_LIVE)
                new.setMemoryFlags(live_size.memory_kib, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            if paused:
                new.suspend()
    except libvirt.libvirtError as exc:
        _remove_copy(dst, name, uuid)
        _delete_quietly(made)
        raise DomainOpError(
            f"migration of {name} to {host_label(dst)} failed: {libvirt_message(exc)}"
        ) from exc
    try:
        undefine_fully(dom)
    except libvirt.libvirtError as exc:
        # the source copy could not go: keep exactly one copy, the source's
        _remove_copy(dst, name, uuid)
        _delete_quietly(made)
        if was_active and not dom.isActive():
            dom.create()
        raise DomainOpError(
            f"migration of {name}: removing it from {host_label(src)} failed: "
            f"{libvirt_message(exc)}"
        ) from exc
    _delete_quietly([v for v in volumes if v.name() in {m.name() for m in made}])
    return MigrationRecord(name, uuid, was_active and run_on_target, "definition", was_active, xml)


def _with_paths(xml: str, paths: dict[str, str]) -> str:
    if not paths or all(old == new for old, new in paths.items()):
        return xml
    root = parse_xml(xml)
    for src in root.iterfind("devices/disk/source"):
        if src.get("file") in paths:
            src.set("file", paths[src.get("file", "")])
    return etree.tostring(root, encoding="unicode")


def _delete_quietly(vols: list[libvirt.virStorageVol]) -> None:
    for vol in vols:
        try:
            vol.delete(0)
        except libvirt.libvirtError:
            log.warning("could not delete volume %s", vol.name())


def _is_local_uri(uri: str) -> bool:
    """``qemu:///system`` style: no host part, so the daemon is on this machine."""
    rest = uri.split("://", 1)[1] if "://" in uri else ""
    return rest.startswith("/")


def libvirt_migrate(
    src: libvirt.virConnect,
    dst: libvirt.virConnect,
    dst_uri: str,
    name: str,
    *,
    live: bool,
    block: bool,
    shutdown_timeout: float = 60.0,
) -> MigrationRecord:
    """Migrate with libvirt (peer-to-peer); cold = stop, migrate offline, start on target."""
    dom = lookup(src, name)
    uuid = dom.UUIDString()
    if find_domain(dst, name, uuid) is not None:
        raise DomainOpError(f"host {dst_uri} already has a domain named {name}")
    was_active = bool(dom.isActive())
    xml = persistent_xml(dom)
    flags = (
        libvirt.VIR_MIGRATE_PEER2PEER
        | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    )
    if block:
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
    if live and was_active:
        flags |= libvirt.VIR_MIGRATE_LIVE
    else:
        # a stopped domain moves offline: only its definition (storage must be shared)
        if was_active:
            stop_domain(dom, shutdown_timeout)
        flags = (
            libvirt.VIR_MIGRATE_OFFLINE
            | libvirt.VIR_MIGRATE_PERSIST_DEST
            | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
            | libvirt.VIR_MIGRATE_PEER2PEER
        )
    try:
        if _is_local_uri(dst_uri):
            # libvirt refuses peer-to-peer to a URI without a remote host ("same host");
            # a second daemon on this machine is reached by client-managed migration,
            # its data stream over loopback. Both daemons see the same files, so the
            # storage is shared in fact (libvirt cannot tell: VIR_MIGRATE_UNSAFE).
            if block:
                raise DomainOpError(
                    "block migration to a daemon on the same machine would "
                    "copy the disks onto themselves"
                )
            params = {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1"} if live else {}
            local_flags = (flags & ~libvirt.VIR_MIGRATE_PEER2PEER) | libvirt.VIR_MIGRATE_UNSAFE
            dom.migrate3(dst, params, local_flags)
        else:
            dom.migrateToURI3(dst_uri, {}, flags)
        if was_active and not live:
            lookup(dst, name).create()
    except libvirt.libvirtError as exc:
        stray = find_domain(dst, name, uuid)
        still_on_source = find_domain(src, name, uuid) is not None
        if stray is not None and still_on_source:
            _remove_copy(dst, name, uuid)
        if still_on_source and was_active and not lookup(src, name).isActive():
            lookup(src, name).create()
        raise DomainOpError(
            f"migration of {name} to {dst_uri} failed: {libvirt_message(exc)}"
        ) from exc
    return MigrationRecord(name, uuid, live and was_active, "libvirt", was_active, xml)


def migrate_domain(
    src: libvirt.virConnect,
    dst: libvirt.virConnect,
    name: str,
    *,
    live: bool = True,
    block: bool = False,
    dst_uri: str | None = None,
    shutdown_timeout: float = 60.0,
) -> MigrationRecord:
    """Migrate ``name`` from ``src`` to ``dst`` with the best mechanism the hosts offer.

    Cold migration stops the domain and starts it on the target (as OpenStack does);
    live keeps it running throughout.
    """
    dom = lookup(src, name)
    if dom.isActive():
        check_fits(dst, dom)
    if is_test_driver(src) or is_test_driver(dst):
        if not live and dom.isActive():
            stop_domain(dom, shutdown_timeout)
            try:
                return _started_move(src, dst, name)
            except DomainOpError:
                lookup(src, name).create()  # put the VM back as it was
                raise
        return move_definition(src, dst, name)
    return libvirt_migrate(
        src,
        dst,
        dst_uri or str(dst.getURI()),
        name,
        live=live,
        block=block,
        shutdown_timeout=shutdown_timeout,
    )


def _started_move(src: libvirt.virConnect, dst: libvirt.virConnect, name: str) -> MigrationRecord:
    record = move_definition(src, dst, name, start=True)
    return MigrationRecord(
        record.name, record.uuid, False, record.mechanism, True, record.source_xml
    )
