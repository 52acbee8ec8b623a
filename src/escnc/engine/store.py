"""The engine's own durable state (``state_dir/engine.sqlite3``).

Records every deployment and VM the engine has created or is creating. A VM row is
written *before* its domain is defined, so after a crash the reconciler knows every
domain that may exist (no orphans) and the generated name is reused (no
duplicates). The ``*_reported`` flags make events at most once across restarts.
Reads come from memory; every change is written through to SQLite (WAL).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

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


_SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
  tenant TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant, name));
CREATE TABLE IF NOT EXISTS vms (generated_name TEXT PRIMARY KEY, body TEXT NOT NULL);
"""


class EngineStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self._deps: dict[tuple[str, str], DeploymentRecord] = {}
        self._vms: dict[str, VmRecord] = {}
        self._vm_listeners: list[VmListener] = []
        for (body,) in self._db.execute("SELECT body FROM deployments"):
            dep = DeploymentRecord(**json.loads(body))
            self._deps[dep.key] = dep
        for (body,) in self._db.execute("SELECT body FROM vms"):
            raw = json.loads(body)
            raw["interfaces"] = [tuple(i) for i in raw.get("interfaces", [])]
            vm = VmRecord(**raw)
            self._vms[vm.generated_name] = vm

    # -- deployments -----------------------------------------------------------------

    def deployment(self, tenant: str, name: str) -> DeploymentRecord | None:
        with self._lock:
            dep = self._deps.get((tenant, name))
            return replace(dep) if dep else None

    def deployments(self) -> list[DeploymentRecord]:
        with self._lock:
            return [replace(d) for d in self._deps.values()]

    def put_deployment(self, dep: DeploymentRecord) -> None:
        with self._lock:
            self._deps[dep.key] = replace(dep)
            self._db.execute(
                "INSERT OR REPLACE INTO deployments VALUES (?, ?, ?)",
                (dep.tenant, dep.name, json.dumps(asdict(dep))),
            )

    def update_deployment(
        self, tenant: str, name: str, **changes: object
    ) -> DeploymentRecord | None:
        with self._lock:
            dep = self._deps.get((tenant, name))
            if dep is None:
                return None
            new = replace(dep, **changes)  # type: ignore[arg-type]
            self.put_deployment(new)
            return replace(new)

    def delete_deployment(self, tenant: str, name: str) -> None:
        with self._lock:
            self._deps.pop((tenant, name), None)
            self._db.execute("DELETE FROM deployments WHERE tenant=? AND name=?", (tenant, name))

    # -- VMs -------------------------------------------------------------------------

    def vm(self, generated_name: str) -> VmRecord | None:
        with self._lock:
            vm = self._vms.get(generated_name)
            return replace(vm) if vm else None

    def vms(self, tenant: str | None = None, deployment: str | None = None) -> list[VmRecord]:
        with self._lock:
            result = [
                replace(v)
                for v in self._vms.values()
                if (tenant is None or v.tenant == tenant)
                and (deployment is None or v.deployment == deployment)
            ]
        result.sort(key=lambda v: (v.tenant, v.deployment, v.group, v.index))
        return result

    def add_vm_listener(self, cb: VmListener) -> None:
        """Be told of every VM write (the monitor follows states this way, whoever writes)."""
        with self._lock:
            self._vm_listeners.append(cb)

    def _notify(self, name: str, vm: VmRecord | None) -> None:
        for cb in self._vm_listeners:
            cb(name, replace(vm) if vm is not None else None)

    def put_vm(self, vm: VmRecord) -> None:
        with self._lock:
            self._vms[vm.generated_name] = replace(vm)
            self._db.execute(
                "INSERT OR REPLACE INTO vms VALUES (?, ?)",
                (vm.generated_name, json.dumps(asdict(vm))),
            )
            self._notify(vm.generated_name, vm)

    def update_vm(self, generated_name: str, **changes: object) -> VmRecord | None:
        with self._lock:
            vm = self._vms.get(generated_name)
            if vm is None:
                return None
            new = replace(vm, **changes)  # type: ignore[arg-type]
            self.put_vm(new)
            return replace(new)

    def delete_vm(self, generated_name: str) -> None:
        with self._lock:
            self._vms.pop(generated_name, None)
            self._db.execute("DELETE FROM vms WHERE generated_name=?", (generated_name,))
            self._notify(generated_name, None)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def instance_id(state_dir: Path) -> str:
    """This escnc instance's identity, kept in the state directory: domains it creates
    carry it, and reconcile adopts or removes only domains that carry it."""
    path = state_dir / "instance-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        ident = str(uuid.uuid4())
        tmp = path.with_suffix(".tmp")
        tmp.write_text(ident + "\n")
        tmp.replace(path)
        return ident
