"""Durable day-2 state (``state_dir/day2.sqlite3``): snapshots, volumes, pending resizes.

Snapshots and volumes are what opdata lists; a *pending* record is a VM waiting in
VM_VERIFY_RESIZE_STATE for CONFIRM_RESIZE / REVERT_RESIZE (after a resize or a cold
migration), kept with everything the revert needs so it survives a restart.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lxml import etree

from escnc.ns import ESC, qn


def now_iso() -> str:
    """ESC's timestamp style: 2021-09-20T08:29:22.074+00:00."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class SnapshotRecord:
    id: str
    name: str
    vm_name: str  # generated VM name
    host: str  # host registry name
    hostname: str
    tenant: str
    deployment: str
    kind: str = "SNAPSHOT"  # SNAPSHOT | EXPORT
    creation_start_date: str = ""
    creation_end_date: str = ""
    status: str = "creating"  # creating | active | error | deleting
    status_message: str = ""
    volume_snapshot_id: str = ""
    image_volume: str = ""  # EXPORT: pool/volume holding the exported disk

    def to_xml(self) -> etree._Element:
        el = etree.Element(qn(ESC, "snapshot"))
        fields = [
            ("id", self.id),
            ("name", self.name),
            ("creation_start_date", self.creation_start_date),
            ("creation_end_date", self.creation_end_date),
            ("status", self.status),
            ("status_message", self.status_message),
            ("created_from_generated_vm_name", self.vm_name),
            ("vim_id", self.host),
            ("hostname", self.hostname),
            ("tenant", self.tenant),
            ("deployment", self.deployment),
            ("volume_snapshot_id", self.volume_snapshot_id),
        ]
        for tag, value in fields:
            if value:
                etree.SubElement(el, qn(ESC, tag)).text = value
        return el


@dataclass
class VolumeRecord:
    id: str
    name: str
    snapshot: str  # snapshot id
    host: str
    pool: str = ""
    vol_name: str = ""  # name inside the pool
    volume_type: str = ""
    multiattach: bool = False
    bootable: bool = True
    size_bytes: int = 0
    status: str = "creating"  # creating | available | error
    path: str = ""

    def to_xml(self) -> etree._Element:
        el = etree.Element(qn(ESC, "volume"))
        etree.SubElement(el, qn(ESC, "id")).text = self.id
        etree.SubElement(el, qn(ESC, "name")).text = self.name
        etree.SubElement(el, qn(ESC, "snapshot")).text = self.snapshot
        if self.volume_type:
            etree.SubElement(el, qn(ESC, "volume_type")).text = self.volume_type
        etree.SubElement(el, qn(ESC, "multiattach")).text = str(self.multiattach).lower()
        etree.SubElement(el, qn(ESC, "bootable")).text = str(self.bootable).lower()
        etree.SubElement(el, qn(ESC, "size_bytes")).text = str(self.size_bytes)
        etree.SubElement(el, qn(ESC, "status")).text = self.status
        etree.SubElement(el, qn(ESC, "vim_id")).text = self.host
        if self.path:
            etree.SubElement(el, qn(ESC, "path")).text = self.path
        return el


@dataclass
class PendingResize:
    """A VM in VM_VERIFY_RESIZE_STATE and how to revert it."""

    vm_name: str
    kind: str  # resize | migrate
    host: str  # where the VM is now
    old_flavor: str = ""
    new_flavor: str = ""
    resize: dict[str, object] | None = None  # ResizeRecord fields
    source_host: str = ""  # migrate: where a revert moves it back
    previous_state: str = ""
    # multi-VM group resize: VMs still to resize, and those already confirmed
    queue: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS volumes (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending (vm_name TEXT PRIMARY KEY, body TEXT NOT NULL);
"""


class Day2Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self._snaps = {r.id: r for r in self._load("snapshots", SnapshotRecord)}
        self._vols = {r.id: r for r in self._load("volumes", VolumeRecord)}
        self._pending = {r.vm_name: r for r in self._load("pending", PendingResize)}

    def _load(self, table: str, cls: type) -> list:  # type: ignore[type-arg]
        rows = self._db.execute(f"SELECT body FROM {table}")
        return [cls(**json.loads(body)) for (body,) in rows]

    def _write(self, table: str, key: str, record: Any) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO {table} VALUES (?, ?)", (key, json.dumps(asdict(record)))
        )

    # snapshots
    def put_snapshot(self, rec: SnapshotRecord) -> None:
        with self._lock:
            self._snaps[rec.id] = replace(rec)
            self._write("snapshots", rec.id, rec)

    def update_snapshot(self, snap_id: str, **changes: object) -> SnapshotRecord | None:
        with self._lock:
            rec = self._snaps.get(snap_id)
            if rec is None:
                return None
            new = replace(rec, **changes)  # type: ignore[arg-type]
            self.put_snapshot(new)
            return replace(new)

    def snapshot(self, snap_id: str) -> SnapshotRecord | None:
        with self._lock:
            rec = self._snaps.get(snap_id)
            return replace(rec) if rec else None

    def snapshots(self) -> list[SnapshotRecord]:
        with self._lock:
            recs = [replace(r) for r in self._snaps.values()]
        return sorted(recs, key=lambda r: (r.creation_start_date, r.id))

    def delete_snapshot(self, snap_id: str) -> None:
        with self._lock:
            self._snaps.pop(snap_id, None)
            self._db.execute("DELETE FROM snapshots WHERE id=?", (snap_id,))

    # volumes
    def put_volume(self, rec: VolumeRecord) -> None:
        with self._lock:
            self._vols[rec.id] = replace(rec)
            self._write("volumes", rec.id, rec)

    def update_volume(self, vol_id: str, **changes: object) -> VolumeRecord | None:
        with self._lock:
            rec = self._vols.get(vol_id)
            if rec is None:
                return None
            new = replace(rec, **changes)  # type: ignore[arg-type]
            self.put_volume(new)
            return replace(new)

    def volumes(self) -> list[VolumeRecord]:
        with self._lock:
            return [replace(r) for r in self._vols.values()]

    # pending confirm/revert
    def put_pending(self, rec: PendingResize) -> None:
        with self._lock:
            self._pending[rec.vm_name] = replace(rec)
            self._write("pending", rec.vm_name, rec)

    def pending(self, vm_name: str) -> PendingResize | None:
        with self._lock:
            rec = self._pending.get(vm_name)
            return replace(rec) if rec else None

    def all_pending(self) -> list[PendingResize]:
        with self._lock:
            return [replace(r) for r in self._pending.values()]

    def delete_pending(self, vm_name: str) -> None:
        with self._lock:
            self._pending.pop(vm_name, None)
            self._db.execute("DELETE FROM pending WHERE vm_name=?", (vm_name,))

    def opdata(self) -> etree._Element:
        """``<opdata>`` holding ``snapshots`` and ``volumes`` (both always present)."""
        opdata = etree.Element(qn(ESC, "opdata"))
        snaps = etree.SubElement(opdata, qn(ESC, "snapshots"))
        for rec in self.snapshots():
            snaps.append(rec.to_xml())
        vols = etree.SubElement(opdata, qn(ESC, "volumes"))
        for vol in sorted(self.volumes(), key=lambda v: (v.name, v.id)):
            vols.append(vol.to_xml())
        return opdata

    def close(self) -> None:
        with self._lock:
            self._db.close()
