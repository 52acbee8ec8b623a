"""The capacity model: amounts of the three resource kinds of ETSI NFV IFA 005 (seed
003) and their figures (total / allocated / reserved / available).

Internal units: memory and storage in MiB, everything else in counts. The seed's
names and units (docs/capacity.md):

* compute: ``vcInstances`` / ``numVcInstances`` (VMs), ``vcpus`` / ``numCpuCores``,
  ``memory`` (MiB, escnc's flavor unit) and ``virtualMemSize`` (GiB, the seed's);
* network: ``publicIps`` / ``numPublicIps`` (addresses);
* storage: ``storageSize`` (GiB), ``volumes`` / ``numVolumes``, ``snapshots`` /
  ``numSnapshots``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from escnc.engine.model import FlavorSpec

KINDS = ("compute", "network", "storage")
INF = float("inf")
GIB = 1024  # MiB per GiB

# resource type id -> (kind, Amount field, MiB per unit: 0 = a count)
RESOURCE_TYPES: dict[str, tuple[str, str, int]] = {
    "vcInstances": ("compute", "instances", 0),
    "numVcInstances": ("compute", "instances", 0),
    "vcpus": ("compute", "vcpus", 0),
    "numCpuCores": ("compute", "vcpus", 0),
    "memory": ("compute", "memory_mb", 1),
    "virtualMemSize": ("compute", "memory_mb", GIB),
    "publicIps": ("network", "public_ips", 0),
    "numPublicIps": ("network", "public_ips", 0),
    "storageSize": ("storage", "storage_mb", GIB),
    "volumes": ("storage", "volumes", 0),
    "numVolumes": ("storage", "volumes", 0),
    "snapshots": ("storage", "snapshots", 0),
    "numSnapshots": ("storage", "snapshots", 0),
}
TYPE_LEAF = {
    "compute": "computeResourceTypeId",
    "network": "networkResourceTypeId",
    "storage": "storageResourceTypeId",
}


def types_of(kind: str) -> list[str]:
    return [t for t, (k, _f, _u) in RESOURCE_TYPES.items() if k == kind]


@dataclass(frozen=True)
class Amount:
    instances: int = 0
    vcpus: int = 0
    memory_mb: int = 0
    public_ips: int = 0
    storage_mb: int = 0
    volumes: int = 0
    snapshots: int = 0

    def _zip(self, o: Amount) -> list[tuple[int, int]]:
        return [(getattr(self, f.name), getattr(o, f.name)) for f in fields(self)]

    def __add__(self, o: Amount) -> Amount:
        return Amount(*(a + b for a, b in self._zip(o)))

    def __sub__(self, o: Amount) -> Amount:
        return Amount(*(a - b for a, b in self._zip(o)))

    def clamp(self) -> Amount:
        return Amount(*(max(0, getattr(self, f.name)) for f in fields(self)))

    def min(self, o: Amount) -> Amount:
        return Amount(*(min(a, b) for a, b in self._zip(o)))

    def fits_in(self, o: Amount) -> bool:
        return all(a <= b for a, b in self._zip(o))

    def is_zero(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))

    def field(self, name: str) -> int:
        return int(getattr(self, name))

    def describe(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value:
                unit = " MiB" if f.name.endswith("_mb") else ""
                parts.append(f"{f.name.removesuffix('_mb')} {value}{unit}")
        return ", ".join(parts) or "nothing"

    def short(self, o: Amount) -> str:
        """What of ``self`` does not fit in ``o``, e.g. 'vcpus 64 needed, 16 available'."""
        parts = []
        for f in fields(self):
            need, have = getattr(self, f.name), getattr(o, f.name)
            if need > have:
                unit = " MiB" if f.name.endswith("_mb") else ""
                parts.append(
                    f"{f.name.removesuffix('_mb')} {need}{unit} needed, {max(have, 0)}{unit} "
                    "available"
                )
        return "; ".join(parts)


def vm_amount(flavor: FlavorSpec | None) -> Amount:
    """What one VM of ``flavor`` takes (no flavor: one instance, one vCPU)."""
    if flavor is None:
        return Amount(instances=1, vcpus=1)
    disk = flavor.root_disk_mb + flavor.ephemeral_disk_mb + flavor.swap_disk_mb
    return Amount(
        instances=1, vcpus=flavor.vcpus, memory_mb=flavor.memory_mb, storage_mb=disk
    )


@dataclass(frozen=True)
class Figures:
    """total / allocated / reserved of one zone (available is derived)."""

    total: Amount
    allocated: Amount
    reserved: Amount

    @property
    def available(self) -> Amount:
        return (self.total - self.allocated - self.reserved).clamp()

    def info(self, rtype: str) -> dict[str, int]:
        """capacityInformation in ``rtype``'s unit; a GiB figure rounds what is used
        up and what is there down, so available never promises a partial GiB."""
        _kind, name, unit = RESOURCE_TYPES[rtype]

        def down(v: int) -> int:
            return v // unit if unit > 1 else v

        def up(v: int) -> int:
            return -(-v // unit) if unit > 1 else v

        return {
            "available": down(self.available.field(name)),
            "reserved": up(self.reserved.field(name)),
            "total": down(self.total.field(name)),
            "allocated": up(self.allocated.field(name)),
        }


def parse_time(text: str) -> float:
    """yang:date-and-time -> epoch seconds (raises ValueError)."""
    value = datetime.fromisoformat(text.strip().replace("z", "Z"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def format_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
