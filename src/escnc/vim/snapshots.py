"""Internal domain snapshots: create, list, delete, revert in place.

The libvirt snapshot is named by escnc's generated id (a UUID), so user-chosen names
(up to 255 characters, not necessarily unique) never clash; the user's name goes
into the snapshot's ``<description>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import libvirt
from lxml import etree

from escnc.vim.domains import DomainOpError, libvirt_message, lookup, parse_xml

MAX_NAME_LEN = 255


@dataclass(frozen=True)
class SnapshotInfo:
    id: str  # libvirt snapshot name
    description: str
    creation_time: int  # seconds since the epoch
    state: str  # domain state captured: running, shutoff, paused, disk-snapshot
    current: bool


def _info(snap: libvirt.virDomainSnapshot) -> SnapshotInfo:
    root = parse_xml(snap.getXMLDesc(0))
    return SnapshotInfo(
        id=str(snap.getName()),
        description=root.findtext("description") or "",
        creation_time=int(root.findtext("creationTime") or 0),
        state=root.findtext("state") or "",
        current=bool(snap.isCurrent()),
    )


def _snapshot(dom: libvirt.virDomain, snap_id: str) -> libvirt.virDomainSnapshot:
    try:
        return dom.snapshotLookupByName(snap_id)
    except libvirt.libvirtError as exc:
        raise DomainOpError(f"Snapshot image [{snap_id}] not found.") from exc


def create_snapshot(
    conn: libvirt.virConnect, dom_name: str, snap_id: str, description: str = ""
) -> SnapshotInfo:
    """Take an internal snapshot (disks, and memory when running) of ``dom_name``."""
    if len(description) > MAX_NAME_LEN:
        raise DomainOpError(f"snapshot name longer than {MAX_NAME_LEN} characters")
    dom = lookup(conn, dom_name)
    root = etree.Element("domainsnapshot")
    etree.SubElement(root, "name").text = snap_id
    etree.SubElement(root, "description").text = description
    xml = etree.tostring(root, encoding="unicode")
    try:
        snap = dom.snapshotCreateXML(xml, 0)
    except libvirt.libvirtError as exc:
        raise DomainOpError(f"snapshot of {dom_name} failed: {libvirt_message(exc)}") from exc
    return _info(snap)


def list_snapshots(conn: libvirt.virConnect, dom_name: str) -> list[SnapshotInfo]:
    dom = lookup(conn, dom_name)
    return sorted((_info(s) for s in dom.listAllSnapshots(0)), key=lambda i: i.creation_time)


def has_snapshot(conn: libvirt.virConnect, dom_name: str, snap_id: str) -> bool:
    try:
        return snap_id in lookup(conn, dom_name).snapshotListNames(0)
    except DomainOpError:
        return False


def delete_snapshot(conn: libvirt.virConnect, dom_name: str, snap_id: str) -> None:
    dom = lookup(conn, dom_name)
    snap = _snapshot(dom, snap_id)
    try:
        snap.delete(0)
    except libvirt.libvirtError as exc:
        raise DomainOpError(
            f"delete of snapshot [{snap_id}] failed: {libvirt_message(exc)}"
        ) from exc


def revert_snapshot(conn: libvirt.virConnect, dom_name: str, snap_id: str) -> str:
    """Revert ``dom_name`` in place; returns the domain state it is in afterwards.

    The domain ends up as the snapshot captured it (running, paused or shut off).
    """
    dom = lookup(conn, dom_name)
    snap = _snapshot(dom, snap_id)
    try:
        dom.revertToSnapshot(snap, 0)
    except libvirt.libvirtError as exc:
        raise DomainOpError(
            f"revert of {dom_name} to snapshot [{snap_id}] failed: {libvirt_message(exc)}"
        ) from exc
    return "running" if dom.isActive() else "shutoff"
