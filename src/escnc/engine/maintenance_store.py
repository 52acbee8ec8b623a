"""Durable day-2 state (``state_dir/day2.sqlite3``, or the cluster's PostgreSQL database:
component ``day2`` on escnc.storage): snapshots, volumes, pending resizes.

Snapshots and volumes are what opdata lists; a *pending* record is a VM waiting in
VM_VERIFY_RESIZE_STATE for CONFIRM_RESIZE / REVERT_RESIZE (after a resize or a cold
migration), kept with everything the revert needs so it survives a restart.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lxml import etree

from escnc.ns import ESC, qn
from escnc.storage import Connection, Migration, Storage
from escnc.storage.component import (
    Component,
    FencedStore,
    WriteFence,
    component_storage,
    sqlite_tables,
)


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


_TABLES = (("snapshots", "day2_snapshots", "id"), ("volumes", "day2_volumes", "id"),
           ("pending", "day2_pending", "vm_name"))


def _schema_v1(conn: Connection) -> None:
    """The tables; a day2.sqlite3 of an escnc from before the storage interface keeps
    its rows under the new (prefixed: one PostgreSQL database holds every component)
    names."""
    found = sqlite_tables(conn)
    for old, new, key in _TABLES:
        if old in found and new not in found:
            conn.execute(f"ALTER TABLE {old} RENAME TO {new}")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {new} ({key} TEXT PRIMARY KEY,"
                     " body TEXT NOT NULL)")


MIGRATIONS = (Migration(1, run=_schema_v1),)


class Day2Store(FencedStore):
    def __init__(self, path: Path | None = None, *, database: str | None = None,
                 storage: Storage | None = None, fence: WriteFence | None = None) -> None:
        """The SQLite file ``path``, or ``database`` (postgresql://), or ``storage``."""
        storage = component_storage("Day2Store", path, database, storage)
        self.storage = storage
        self._db = Component(storage, "day2", MIGRATIONS, fence=fence)
        # writes hold the writer lock (Component.writing) across the commit; _mem
        # guards the mirror and is never held across database I/O
        self._mem = threading.Lock()
        self._snaps: dict[str, SnapshotRecord] = {}
        self._vols: dict[str, VolumeRecord] = {}
        self._pending: dict[str, PendingResize] = {}
        self.reload()

    def reload(self) -> None:
        """Re-read everything from storage (a node that becomes leader)."""
        with self._db.writing():
            with self._db.read() as conn:
                snaps = [SnapshotRecord(**json.loads(b)) for (b,) in
                         conn.execute("SELECT body FROM day2_snapshots").fetchall()]
                vols = [VolumeRecord(**json.loads(b)) for (b,) in
                        conn.execute("SELECT body FROM day2_volumes").fetchall()]
                pend = [PendingResize(**json.loads(b)) for (b,) in
                        conn.execute("SELECT body FROM day2_pending").fetchall()]
            with self._mem:
                self._snaps = {r.id: r for r in snaps}
                self._vols = {r.id: r for r in vols}
                self._pending = {r.vm_name: r for r in pend}

    def _write(self, table: str, key_col: str, key: str, record: Any) -> None:
        with self._db.write() as conn:
            conn.execute(
                f"INSERT INTO {table}({key_col}, body) VALUES (?, ?)"
                f" ON CONFLICT ({key_col}) DO UPDATE SET body = excluded.body",
                (key, json.dumps(asdict(record))),
            )

    def _delete(self, table: str, key_col: str, key: str) -> None:
        with self._db.write() as conn:
            conn.execute(f"DELETE FROM {table} WHERE {key_col} = ?", (key,))

    # snapshots
    def put_snapshot(self, rec: SnapshotRecord) -> None:
        with self._db.writing():
            self._write("day2_snapshots", "id", rec.id, rec)
            with self._mem:
                self._snaps[rec.id] = replace(rec)

    def update_snapshot(self, snap_id: str, **changes: object) -> SnapshotRecord | None:
        with self._db.writing():
            with self._mem:
                rec = self._snaps.get(snap_id)
            if rec is None:
                return None
            new = replace(rec, **changes)  # type: ignore[arg-type]
            self.put_snapshot(new)
            return replace(new)

    def snapshot(self, snap_id: str) -> SnapshotRecord | None:
        with self._mem:
            rec = self._snaps.get(snap_id)
            return replace(rec) if rec else None

    def snapshots(self) -> list[SnapshotRecord]:
        with self._mem:
            recs = [replace(r) for r in self._snaps.values()]
        return sorted(recs, key=lambda r: (r.creation_start_date, r.id))

    def delete_snapshot(self, snap_id: str) -> None:
        with self._db.writing():
            self._delete("day2_snapshots", "id", snap_id)
            with self._mem:
                self._snaps.pop(snap_id, None)

    # volumes
    def put_volume(self, rec: VolumeRecord) -> None:
        with self._db.writing():
            self._write("day2_volumes", "id", rec.id, rec)
            with self._mem:
                self._vols[rec.id] = replace(rec)

    def update_volume(self, vol_id: str, **changes: object) -> VolumeRecord | None:
        with self._db.writing():
            with self._mem:
                rec = self._vols.get(vol_id)
            if rec is None:
                return None
            new = replace(rec, **changes)  # type: ignore[arg-type]
            self.put_volume(new)
            return replace(new)

    def volumes(self) -> list[VolumeRecord]:
        with self._mem:
            return [replace(r) for r in self._vols.values()]

    # pending confirm/revert
    def put_pending(self, rec: PendingResize) -> None:
        with self._db.writing():
            self._write("day2_pending", "vm_name", rec.vm_name, rec)
            with self._mem:
                self._pending[rec.vm_name] = replace(rec)

    def pending(self, vm_name: str) -> PendingResize | None:
        with self._mem:
            rec = self._pending.get(vm_name)
            return replace(rec) if rec else None

    def all_pending(self) -> list[PendingResize]:
        with self._mem:
            return [replace(r) for r in self._pending.values()]

    def delete_pending(self, vm_name: str) -> None:
        with self._db.writing():
            self._delete("day2_pending", "vm_name", vm_name)
            with self._mem:
                self._pending.pop(vm_name, None)

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
        self._db.close()
