"""The engine's own durable state (``state_dir/engine.sqlite3``, or the cluster's
PostgreSQL database: component ``engine`` on escnc.storage).

Records every deployment and VM the engine has created or is creating. A VM row is
written *before* its domain is defined, so after a crash the reconciler knows every
domain that may exist (no orphans) and the generated name is reused (no
duplicates). The ``*_reported`` flags make events at most once across restarts.
Reads come from memory; every change is committed (fenced) first, then applied to
the memory mirror, so memory never holds what the database refused. A node that
becomes leader calls :meth:`EngineStore.reload` to read what the old leader wrote.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from escnc.engine.errors import StateChanged
from escnc.storage import Connection, Migration, Storage
from escnc.storage.component import (
    Component,
    FencedStore,
    WriteFence,
    component_storage,
    sqlite_tables,
)

# called with (generated name, new record or None when deleted), under the store lock,
# in the order of the writes; must be quick and must not call back into the store
VmListener = Callable[[str, "VmRecord | None"], None]


@dataclass
class DeploymentRecord:
    tenant: str
    name: str
    deployment_id: str
    state: str
    status_message: str = ""
    alive_reported: bool = False  # SERVICE_ALIVE sent
    # fingerprint of the desired spec the last deploy/update acted on (success or
    # failure): reconcile updates only a deployment whose desired spec differs from it
    applied: str = ""
    # VMs beyond min_active that elastic scaling added, per vm_group (engine/scaling.py)
    elastic: dict[str, int] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant, self.name)


@dataclass
class VmRecord:
    generated_name: str
    vm_id: str
    tenant: str
    deployment: str
    group: str
    index: int
    host: str
    state: str
    monitoring: bool = False
    collector: str = ""
    flavor: str = ""
    image: str = ""
    fingerprint: str = ""
    # (nicid, network, ip_address, mac_address)
    interfaces: list[tuple[int, str, str, str]] = field(default_factory=list)
    deployed_reported: bool = False
    alive_reported: bool = False
    status_message: str = ""

    @property
    def dep_key(self) -> tuple[str, str]:
        return (self.tenant, self.deployment)


def _schema_v1(conn: Connection) -> None:
    """The tables; a file of an escnc from before the storage interface (tables
    ``deployments`` and ``vms``, no version row) keeps its rows under the new names."""
    found = sqlite_tables(conn)
    for old, new in (("deployments", "engine_deployments"), ("vms", "engine_vms")):
        if old in found and new not in found:
            conn.execute(f"ALTER TABLE {old} RENAME TO {new}")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS engine_deployments (tenant TEXT NOT NULL,"
        " name TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant, name))")
    conn.execute("CREATE TABLE IF NOT EXISTS engine_vms (generated_name TEXT PRIMARY KEY,"
                 " body TEXT NOT NULL)")
    # the cluster's instance id (see instance_id): one row, written by the first node
    conn.execute("CREATE TABLE IF NOT EXISTS engine_instance (id INTEGER PRIMARY KEY"
                 " CHECK (id = 1), uuid TEXT NOT NULL)")


MIGRATIONS = (Migration(1, run=_schema_v1),)


_R = TypeVar("_R", "DeploymentRecord", "VmRecord")


def _copy(rec: _R) -> _R:
    """A shallow copy, as ``replace(rec)`` makes, without its per-field checks: the
    mirror hands out copies on every read and write (hot at 10,000 VMs)."""
    new = object.__new__(type(rec))
    new.__dict__.update(rec.__dict__)
    return new


def _body(rec: DeploymentRecord | VmRecord) -> str:
    # the fields are flat (tuples and dicts of str/int): no deep copy (asdict) needed
    return json.dumps(rec.__dict__)


def _index(vms: dict[str, VmRecord]) -> dict[tuple[str, str], dict[str, VmRecord]]:
    out: dict[tuple[str, str], dict[str, VmRecord]] = {}
    for name, vm in vms.items():
        out.setdefault(vm.dep_key, {})[name] = vm
    return out


def _vm_from(body: str) -> VmRecord:
    raw = json.loads(body)
    raw["interfaces"] = [tuple(i) for i in raw.get("interfaces", [])]
    return VmRecord(**raw)


class EngineStore(FencedStore):
    def __init__(self, path: Path | None = None, *, database: str | None = None,
                 storage: Storage | None = None, fence: WriteFence | None = None) -> None:
        """The SQLite file ``path``, or ``database`` (a postgresql:// URL, the cluster's
        shared database), or an open ``storage``. ``fence`` checks every write."""
        storage = component_storage("EngineStore", path, database, storage,
                                    synchronous="NORMAL")
        self.path = path
        self.storage = storage
        self._db = Component(storage, "engine", MIGRATIONS, fence=fence)
        # the writer lock (Component.writing, re-entrant) orders writes and listener
        # calls; _mem guards the mirror only and is never held across database I/O
        self._mem = threading.Lock()
        self._deps: dict[tuple[str, str], DeploymentRecord] = {}
        self._vms: dict[str, VmRecord] = {}
        self._vm_listeners: list[VmListener] = []
        self._deps, self._vms = self._read_all()
        # the VMs of each deployment: vms(tenant, deployment) is asked per deployment
        # by validation and jobs, and a scan of every VM made that O(deployments x VMs)
        self._by_dep = _index(self._vms)

    @property
    def shared(self) -> bool:
        """Whether the state is in a database several nodes share (not a local file)."""
        return self.storage.dialect.name != "sqlite"

    def _read_all(self) -> tuple[dict[tuple[str, str], DeploymentRecord], dict[str, VmRecord]]:
        with self._db.read() as conn:
            dep_rows = conn.execute("SELECT body FROM engine_deployments").fetchall()
            vm_rows = conn.execute("SELECT body FROM engine_vms").fetchall()
        deps = [DeploymentRecord(**json.loads(body)) for (body,) in dep_rows]
        vms = [_vm_from(body) for (body,) in vm_rows]
        return {d.key: d for d in deps}, {v.generated_name: v for v in vms}

    def reload(self) -> None:
        """Re-read everything from storage (a node that becomes leader: the old leader
        wrote since this one started). VM listeners hear of every VM that changed."""
        with self._db.writing():
            deps, vms = self._read_all()
            with self._mem:
                old, self._deps, self._vms = self._vms, deps, vms
                self._by_dep = _index(vms)
            for name in sorted(old.keys() | vms.keys()):
                if old.get(name) != vms.get(name):
                    self._notify(name, vms.get(name))

    # -- deployments -----------------------------------------------------------------

    def deployment(self, tenant: str, name: str) -> DeploymentRecord | None:
        with self._mem:
            dep = self._deps.get((tenant, name))
            return _copy(dep) if dep else None

    def deployments(self) -> list[DeploymentRecord]:
        with self._mem:
            return [_copy(d) for d in self._deps.values()]

    def put_deployment(self, dep: DeploymentRecord) -> None:
        with self._db.writing():
            with self._db.write() as conn:
                conn.execute(
                    "INSERT INTO engine_deployments(tenant, name, body) VALUES (?, ?, ?)"
                    " ON CONFLICT (tenant, name) DO UPDATE SET body = excluded.body",
                    (dep.tenant, dep.name, _body(dep)),
                )
            with self._mem:
                self._deps[dep.key] = _copy(dep)

    def update_deployment(
        self, tenant: str, name: str, **changes: object
    ) -> DeploymentRecord | None:
        with self._db.writing():
            with self._mem:
                dep = self._deps.get((tenant, name))
            if dep is None:
                return None
            new = replace(dep, **changes)  # type: ignore[arg-type]
            self.put_deployment(new)
            return _copy(new)

    def delete_deployment(self, tenant: str, name: str) -> None:
        with self._db.writing():
            with self._db.write() as conn:
                conn.execute("DELETE FROM engine_deployments WHERE tenant = ? AND name = ?",
                             (tenant, name))
            with self._mem:
                self._deps.pop((tenant, name), None)

    # -- VMs -------------------------------------------------------------------------

    def vm(self, generated_name: str) -> VmRecord | None:
        with self._mem:
            vm = self._vms.get(generated_name)
            return _copy(vm) if vm else None

    def vms(self, tenant: str | None = None, deployment: str | None = None) -> list[VmRecord]:
        with self._mem:
            if tenant is not None and deployment is not None:
                result = [_copy(v) for v in self._by_dep.get((tenant, deployment), {}).values()]
            else:
                result = [
                    _copy(v)
                    for v in self._vms.values()
                    if (tenant is None or v.tenant == tenant)
                    and (deployment is None or v.deployment == deployment)
                ]
        result.sort(key=lambda v: (v.tenant, v.deployment, v.group, v.index))
        return result

    def add_vm_listener(self, cb: VmListener) -> None:
        """Be told of every VM write (the monitor follows states this way, whoever writes)."""
        with self._db.writing():
            self._vm_listeners.append(cb)

    def _notify(self, name: str, vm: VmRecord | None) -> None:
        for cb in self._vm_listeners:
            cb(name, _copy(vm) if vm is not None else None)

    def put_vm(self, vm: VmRecord) -> None:
        with self._db.writing():
            with self._db.write() as conn:
                conn.execute(
                    "INSERT INTO engine_vms(generated_name, body) VALUES (?, ?)"
                    " ON CONFLICT (generated_name) DO UPDATE SET body = excluded.body",
                    (vm.generated_name, _body(vm)),
                )
            with self._mem:
                mirror = _copy(vm)
                was = self._vms.get(vm.generated_name)
                if was is not None and was.dep_key != vm.dep_key:
                    self._unindex(was)
                self._vms[vm.generated_name] = mirror
                self._by_dep.setdefault(vm.dep_key, {})[vm.generated_name] = mirror
            self._notify(vm.generated_name, vm)

    def update_vm(self, generated_name: str, *, expected_state: str | None = None,
                  **changes: object) -> VmRecord | None:
        """Change a VM's record; None when there is none. With ``expected_state`` a
        compare-and-set: raises StateChanged, changing nothing, unless the VM is in
        that state (under the writer lock, which every write of this store and, in a
        cluster, the fence make the only one)."""
        with self._db.writing():
            with self._mem:
                vm = self._vms.get(generated_name)
            if vm is None:
                return None
            if expected_state is not None and vm.state != expected_state:
                raise StateChanged(
                    f"VM {generated_name} is {vm.state}, not {expected_state} any more")
            new = replace(vm, **changes)  # type: ignore[arg-type]
            self.put_vm(new)
            return _copy(new)

    def delete_vm(self, generated_name: str) -> None:
        with self._db.writing():
            with self._db.write() as conn:
                conn.execute("DELETE FROM engine_vms WHERE generated_name = ?",
                             (generated_name,))
            with self._mem:
                was = self._vms.pop(generated_name, None)
                if was is not None:
                    self._unindex(was)
            self._notify(generated_name, None)

    def _unindex(self, vm: VmRecord) -> None:
        held = self._by_dep.get(vm.dep_key)
        if held is not None:
            held.pop(vm.generated_name, None)
            if not held:
                del self._by_dep[vm.dep_key]

    def cluster_instance_id(self) -> str:
        """The id in the database: created by the first node, read by every other
        (not fenced: a standby reads it too; the insert is one atomic statement)."""
        with self._db.read() as conn:
            conn.execute("INSERT INTO engine_instance(id, uuid) VALUES (1, ?)"
                         " ON CONFLICT (id) DO NOTHING", (str(uuid.uuid4()),))
            row = conn.execute("SELECT uuid FROM engine_instance WHERE id = 1").fetchone()
        return str(row[0])

    def close(self) -> None:
        self._db.close()


def instance_id(state_dir: Path, store: EngineStore | None = None) -> str:
    """This escnc's identity: domains it creates carry it, and reconcile adopts or
    removes only domains that carry it. Single node: kept in the state directory.
    With a shared database (``store.shared``) it is the cluster's, kept in the
    database, so a new leader adopts the domains the old leader created."""
    if store is not None and store.shared:
        return store.cluster_instance_id()
    path = state_dir / "instance-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        ident = str(uuid.uuid4())
        tmp = path.with_suffix(".tmp")
        tmp.write_text(ident + "\n")
        tmp.replace(path)
        return ident
