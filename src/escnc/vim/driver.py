"""The engine's one VIM driver (nova's shape): one interface, one wrapper per libvirt object.

``engine/`` never imports libvirt: it talks to a :class:`VimDriver` (the protocol
below; :class:`LibvirtDriver` is the implementation) and to the :class:`Domain`
wrappers it returns. Every failure of a VIM call is a :class:`VimError` -- the
name under which the engine catches libvirt's errors (an alias, so the vim/
helpers that raise libvirt's error keep working unchanged).

What the driver offers: domains (define, start, stop, reboot via stop/start,
remove, lookup, listing with escnc metadata), resize, migration, snapshots and
volumes (vim/resize.py, migrate.py, snapshots.py, volumes.py, on vim/domains.py),
networks and storage pools, host facts and statistics, and lifecycle events
translated to words ("stopped", "crashed").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import libvirt
from lxml import etree

from escnc.vim import guest_metrics, storage
from escnc.vim import migrate as vim_migrate
from escnc.vim import resize as vim_resize
from escnc.vim import snapshots as vim_snapshots
from escnc.vim import volumes as vim_volumes
from escnc.vim.domain_xml import META_NS, VmMeta
from escnc.vim.domains import libvirt_message
from escnc.vim.hosts import Host, HostRegistry
from escnc.vim.live_nics import NicSync, sync_live_nics
from escnc.vim.stats import DomainStats, HostStats, domain_stats, host_stats

log = logging.getLogger(__name__)

VimError = libvirt.libvirtError  # every failure of a call into a VIM
Connection = libvirt.virConnect  # for the vim/ helpers' signatures

# libvirt lifecycle event -> the word the engine acts on (others are ignored)
LIFECYCLE_EVENTS = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}


def error_text(exc: BaseException) -> str:
    """A VIM error's first line (libvirt may quote a remote's answer); else ``str``."""
    return libvirt_message(exc) if isinstance(exc, libvirt.libvirtError) else str(exc)


def lifecycle_event(event: int) -> str:
    """libvirt's lifecycle event number as a word ("" for the ones the engine ignores)."""
    return LIFECYCLE_EVENTS.get(event, "")


class Domain:
    """One libvirt domain (virDomain)."""

    def __init__(self, dom: libvirt.virDomain) -> None:
        self._dom = dom

    @property
    def name(self) -> str:
        return str(self._dom.name())

    def running(self) -> bool:
        return bool(self._dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING)

    def shut_off(self) -> bool:
        return bool(self._dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF)

    def active(self) -> bool:
        """Running, paused, crashed or hung in shutdown (anything but shut off)."""
        return bool(self._dom.isActive())

    def start(self) -> None:
        self._dom.create()

    def shutdown(self) -> None:
        """ACPI shutdown request (returns at once)."""
        self._dom.shutdown()

    def destroy(self) -> None:
        """Power off at once."""
        self._dom.destroy()

    def suspend(self) -> None:
        """Pause the guest (it stops answering; the domain stays active)."""
        self._dom.suspend()

    def stats(self) -> DomainStats:
        return domain_stats(self._dom)

    # guest counters for the KPI collectors (vim/guest_metrics.py; MetricsError when the
    # hypervisor cannot say)
    def cpu_counter(self) -> guest_metrics.CpuCounter:
        return guest_metrics.cpu(self._dom)

    def memory_stats(self) -> dict[str, int]:
        return guest_metrics.memory(self._dom)

    def nic_bytes(self, mac: str) -> tuple[int, int]:
        return guest_metrics.nic_bytes(self._dom, mac)

    def disk_bytes(self) -> tuple[int, int]:
        return guest_metrics.disk_bytes(self._dom)

    def sync_live_nics(self) -> NicSync:
        """Attach/detach live what differs between the running and the defined domain
        (vim/live_nics.py)."""
        return sync_live_nics(self._dom)

    def _test_networks_have_ip(self) -> bool:
        conn = self._dom.connect()
        root = etree.fromstring(self._dom.XMLDesc(0).encode())
        for src in root.iterfind("devices/interface/source"):
            name = src.get("network")
            if not name:
                return False
            net = etree.fromstring(conn.networkLookupByName(name).XMLDesc(0).encode())
            if not any(ip.get("family", "ipv4") == "ipv4" for ip in net.iterfind("ip")):
                return False
        return True

    def address(self, mac: str) -> str:
        """The IPv4 address the guest really has on the NIC with ``mac``: libvirt's
        DHCP lease for it, else the host's ARP table ("" when neither knows one)."""
        try:
            if self._dom.connect().getType() == "TEST" and not self._test_networks_have_ip():
                # the test driver makes its fake leases up from the networks' IPv4
                # ranges; with a network that has none, interfaceAddresses crashes the
                # process (SIGSEGV, libvirt 9.0)
                return ""
        except libvirt.libvirtError:
            return ""
        for source in (
            libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
            libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP,
        ):
            try:
                found = self._dom.interfaceAddresses(source)
            except libvirt.libvirtError:
                continue
            for nic in (found or {}).values():
                if str(nic.get("hwaddr", "")).lower() != mac.lower():
                    continue
                for addr in nic.get("addrs") or []:
                    if addr.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4 and addr.get("addr"):
                        return str(addr["addr"])
        return ""

    def escnc_meta(self) -> VmMeta | None:
        """The escnc metadata of the domain (None: not created by an escnc)."""
        try:
            xml = self._dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, META_NS, 0)
        except libvirt.libvirtError:
            return None
        return VmMeta.from_xml(xml)

    def remove(self) -> None:
        """Power off and undefine (managed save and snapshot metadata too); logs what fails."""
        name = self.name
        try:
            if self._dom.isActive():
                self._dom.destroy()
        except libvirt.libvirtError as exc:
            log.warning("cannot destroy %s: %s", name, exc)
        flags = (
            libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        )
        try:
            self._dom.undefineFlags(flags)
        except libvirt.libvirtError:
            try:
                self._dom.undefine()
            except libvirt.libvirtError as exc:
                log.warning("cannot undefine %s: %s", name, exc)


@dataclass(frozen=True)
class HostFacts:
    """What validation may know about a host without asking it (see engine/hostfacts.py)."""

    name: str
    connected: bool
    networks: frozenset[str] = field(default_factory=frozenset)
    stats: HostStats | None = None
    uuid: str = ""
    error: str = ""


class VimDriver(Protocol):
    """What the engine asks of its VIMs (:class:`LibvirtDriver` is the implementation).
    Hosts are :class:`Host` objects from :attr:`hosts` or host names; every method
    may raise :class:`VimError`."""

    hosts: HostRegistry

    # domains
    def domain(self, host: Host, name: str) -> Domain | None: ...
    def define(self, host: Host, xml: str) -> Domain: ...
    def remove(self, host: Host, name: str) -> None: ...
    def domains(self, host: Host) -> list[Domain]: ...

    # storage
    def pool(self, host: Host, directory: Path) -> Any: ...
    def delete_vm_volumes(self, host: Host, pool: Any, vm_name: str) -> None: ...
    def locate_volume(self, host: Host, pool: Any, path: str) -> int | None: ...

    # resize and migration
    def resize(
        self, host: str, name: str, vcpus: int, memory_mb: int
    ) -> vim_resize.ResizeRecord: ...
    def revert_resize(self, host: str, record: vim_resize.ResizeRecord) -> None: ...
    def current_size(self, host: str, name: str) -> tuple[int, int]: ...
    def capacity(self, host: str) -> vim_migrate.HostCapacity: ...
    def migrate(
        self, source: str, target: str, name: str, *, live: bool, block: bool = False
    ) -> None: ...

    # snapshots and volumes
    def create_snapshot(self, host: str, name: str, snap_id: str, title: str) -> Any: ...
    def delete_snapshot(self, host: str, name: str, snap_id: str) -> None: ...
    def has_snapshot(self, host: str, name: str, snap_id: str) -> bool: ...
    def revert_snapshot(self, host: str, name: str, snap_id: str) -> None: ...
    def copy_disk_to_volume(
        self, host: str, name: str, vol_name: str, snapshot_id: str
    ) -> vim_volumes.VolumeInfo: ...
    def volume_format(self, host: str, vol: vim_volumes.VolumeInfo) -> str: ...
    def volume_exists(self, host: str, pool: str, vol: str) -> bool: ...
    def delete_volume(self, host: str, pool: str, vol: str) -> None: ...

    # host facts, statistics and events
    def facts(self, host: Host) -> HostFacts: ...
    def host_stats(self, host: Host) -> HostStats: ...
    def add_lifecycle_listener(self, listener: Callable[[str, str, str], None]) -> None: ...


class LibvirtDriver:
    """:class:`VimDriver` on libvirt, over the process's :class:`HostRegistry`."""

    def __init__(self, hosts: HostRegistry) -> None:
        self.hosts = hosts

    def conn(self, host_name: str) -> libvirt.virConnect:
        """A host's connection, for the vim/ helpers (resize, migrate, ...)."""
        try:
            host = self.hosts.get(host_name)
        except KeyError:
            raise VimError(f"host {host_name} is not configured") from None
        return host.connection()

    # -- domains -----------------------------------------------------------------------

    def domain(self, host: Host, name: str) -> Domain | None:
        try:
            return Domain(host.connection().lookupByName(name))
        except libvirt.libvirtError:
            return None

    def define(self, host: Host, xml: str) -> Domain:
        return Domain(host.connection().defineXML(xml))

    def remove(self, host: Host, name: str) -> None:
        """Destroy and undefine ``name`` if it exists (idempotent)."""
        dom = self.domain(host, name)
        if dom is not None:
            dom.remove()

    def domains(self, host: Host) -> list[Domain]:
        return [Domain(d) for d in host.connection().listAllDomains(0)]

    # -- storage -----------------------------------------------------------------------

    def pool(self, host: Host, directory: Path) -> libvirt.virStoragePool:
        return storage.ensure_pool(host, directory)

    def delete_vm_volumes(self, host: Host, pool: libvirt.virStoragePool, vm_name: str) -> None:
        storage.delete_vm_volumes(host, pool, vm_name)

    def locate_volume(self, host: Host, pool: libvirt.virStoragePool, path: str) -> int | None:
        """The capacity of the volume at ``path`` if it is in ``pool`` (else None)."""
        try:
            vol = host.connection().storageVolLookupByPath(path)
            if vol.storagePoolLookupByVolume().name() == pool.name():
                return int(vol.info()[1])
        except libvirt.libvirtError:
            pass
        return None

    # -- day 2 -------------------------------------------------------------------------

    def resize(self, host: str, name: str, vcpus: int, memory_mb: int) -> vim_resize.ResizeRecord:
        return vim_resize.resize_domain(self.conn(host), name, vcpus, memory_mb)

    def revert_resize(self, host: str, record: vim_resize.ResizeRecord) -> None:
        vim_resize.revert_resize(self.conn(host), record)

    def current_size(self, host: str, name: str) -> tuple[int, int]:
        return vim_resize.current_size(self.conn(host), name)

    def capacity(self, host: str) -> vim_migrate.HostCapacity:
        return vim_migrate.host_capacity(self.conn(host))

    def migrate(
        self, source: str, target: str, name: str, *, live: bool, block: bool = False
    ) -> None:
        vim_migrate.migrate_domain(
            self.conn(source),
            self.conn(target),
            name,
            live=live,
            block=block,
            dst_uri=self.hosts.get(target).uri,
        )

    def create_snapshot(self, host: str, name: str, snap_id: str, title: str) -> Any:
        return vim_snapshots.create_snapshot(self.conn(host), name, snap_id, title)

    def delete_snapshot(self, host: str, name: str, snap_id: str) -> None:
        vim_snapshots.delete_snapshot(self.conn(host), name, snap_id)

    def has_snapshot(self, host: str, name: str, snap_id: str) -> bool:
        return bool(vim_snapshots.has_snapshot(self.conn(host), name, snap_id))

    def revert_snapshot(self, host: str, name: str, snap_id: str) -> None:
        vim_snapshots.revert_snapshot(self.conn(host), name, snap_id)

    def copy_disk_to_volume(
        self, host: str, name: str, vol_name: str, snapshot_id: str
    ) -> vim_volumes.VolumeInfo:
        return vim_volumes.copy_disk_to_volume(
            self.conn(host), name, vol_name, snapshot_id=snapshot_id
        )

    def volume_format(self, host: str, vol: vim_volumes.VolumeInfo) -> str:
        return str(vim_volumes.volume_format(self.conn(host), vol) or "")

    def volume_exists(self, host: str, pool: str, vol: str) -> bool:
        return bool(vim_volumes.volume_exists(self.conn(host), pool, vol))

    def delete_volume(self, host: str, pool: str, vol: str) -> None:
        vim_volumes.delete_volume(self.conn(host), pool, vol)

    # -- host facts and events -----------------------------------------------------------

    def host_stats(self, host: Host) -> HostStats:
        return host_stats(host)

    def facts(self, host: Host) -> HostFacts:
        """A connected host's networks, statistics and UUID (remote calls: engine
        threads only, never under the datastore lock)."""
        if not host.connected:
            return HostFacts(host.name, False, error=host.error)
        conn = host.connection()
        networks = frozenset(str(n) for n in conn.listNetworks() + conn.listDefinedNetworks())
        try:
            stats: HostStats | None = host_stats(host)
        except libvirt.libvirtError as exc:
            log.debug("host stats of %s: %s", host.name, exc)
            stats = None
        return HostFacts(host.name, True, networks, stats, host.uuid)

    def add_lifecycle_listener(self, listener: Callable[[str, str, str], None]) -> None:
        """``listener(host, domain name, event word)`` for every lifecycle event."""

        def on_event(host: str, name: str, event: int, _detail: int) -> None:
            word = lifecycle_event(event)
            if word:
                listener(host, name, word)

        self.hosts.add_domain_listener(on_event)
