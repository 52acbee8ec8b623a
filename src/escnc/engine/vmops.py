"""What the engine does to one VM on its libvirt host: create, remove, start, stop,
reboot, redefine. Every operation is idempotent so a job can be retried after a crash.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from pathlib import Path
from typing import Any

from escnc.engine.imagereg import ImageRegistry
from escnc.engine.jobs import idle
from escnc.engine.model import Desired, GroupSpec
from escnc.engine.store import VmRecord
from escnc.vim import storage
from escnc.vim.configdrive import build_config_drive
from escnc.vim.domain_xml import DiskSpec, DomainSpec, NicSpec, VmMeta, build_domain_xml
from escnc.vim.driver import Domain, VimDriver, VimError
from escnc.vim.fetch import FetchError, read_bounded
from escnc.vim.hosts import Host
from escnc.vim.networks import ensure_network
from escnc.vim.source_policy import SourcePolicy, SourceRefused

log = logging.getLogger(__name__)

GRACEFUL_STOP_SECONDS = 60.0


class VmOpError(Exception):
    pass


def _substitute(text: str, vm: VmRecord, group: GroupSpec) -> str:
    """ESC-style day-0 variables: $NICID_<n>_IP_ADDRESS, _MAC_ADDRESS, _NETMASK, _GATEWAY."""
    values = {"VM_NAME": vm.generated_name, "VM_ID": vm.vm_id}
    specs = {i.nicid: i for i in group.interfaces}
    for nicid, _network, ip, mac in vm.interfaces:
        spec = specs.get(nicid)
        values[f"NICID_{nicid}_IP_ADDRESS"] = ip
        values[f"NICID_{nicid}_MAC_ADDRESS"] = mac
        values[f"NICID_{nicid}_NETMASK"] = spec.netmask if spec else ""
        values[f"NICID_{nicid}_GATEWAY"] = spec.gateway if spec else ""
    for key in sorted(values, key=len, reverse=True):
        text = text.replace("${" + key + "}", values[key]).replace("$" + key, values[key])
    return text


def _netmask(group: GroupSpec, desired: Desired, nicid: int, network: str) -> str:
    spec = next((i for i in group.interfaces if i.nicid == nicid), None)
    if spec and spec.netmask:
        return spec.netmask
    net = desired.networks.get(network)
    for sub in net.subnets if net else ():
        if sub.netmask:
            return sub.netmask
    return "255.255.255.0"


DAY0_TIMEOUT = 30.0  # seconds, to connect and for every read of a day-0 URL


def day0_files(
    vm: VmRecord, group: GroupSpec, desired: Desired, policy: SourcePolicy
) -> dict[str, bytes]:
    """The config drive's files: NoCloud meta-data/user-data/network-config, escnc/nics,
    and every config_data entry at its dst (``--user-data`` style names accepted). A
    ``file`` is read under ``policy`` (operator's directories or allowed URLs, at most
    ``day0_max_bytes``); a refused one is a :class:`VmOpError` naming the reason."""
    files: dict[str, bytes] = {
        "meta-data": f"instance-id: {vm.vm_id}\nlocal-hostname: {vm.generated_name}\n".encode()
    }
    nics = []
    net_cfg = ["version: 1", "config:"]
    for nicid, network, ip, mac in vm.interfaces:
        mask = _netmask(group, desired, nicid, network)
        spec = next((i for i in group.interfaces if i.nicid == nicid), None)
        gateway = spec.gateway if spec else ""
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen if ip else 0
        nics.append(f"{nicid} {mac} {ip} {prefix if ip else ''} {gateway}".rstrip())
        net_cfg += ["  - type: physical", f"    name: eth{nicid}", f"    mac_address: '{mac}'"]
        if ip:
            net_cfg += ["    subnets:", "      - type: static", f"        address: {ip}/{prefix}"]
            if gateway:
                net_cfg.append(f"        gateway: {gateway}")
    files["escnc/nics"] = ("\n".join(nics) + "\n").encode()
    files["network-config"] = ("\n".join(net_cfg) + "\n").encode()
    for cfg in group.config_data:
        if cfg.data:
            content = cfg.data
        elif cfg.file:
            content = read_day0(policy, cfg.file)
        else:
            continue
        name = cfg.dst.lstrip("-") or "user-data"
        files[name] = _substitute(content, vm, group).encode()
    files.setdefault("user-data", b"#cloud-config\n")
    return files


def read_day0(policy: SourcePolicy, src: str) -> str:
    """A day-0 template: bounded read (a ``/dev/zero`` or an endless URL fails at the
    limit, never grows memory), UTF-8 text."""
    try:
        data = read_bounded(policy, src, DAY0_TIMEOUT)
    except (SourceRefused, FetchError) as exc:
        raise VmOpError(str(exc)) from exc
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise VmOpError(f"day-0 file {src} is not UTF-8 text (byte {exc.start})") from exc


class VmOps:
    def __init__(
        self,
        driver: VimDriver,
        images: ImageRegistry,
        state_dir: Path,
        owner: str,
        day0: SourcePolicy,
    ) -> None:
        self.driver = driver
        self.vims = driver.hosts
        self.images = images
        self.state_dir = state_dir
        self.owner = owner  # written into every domain's escnc metadata
        self.day0 = day0  # where config_data files may come from
        # (vm, nicid) -> the address libvirt last reported for a DHCP interface: the
        # monitor's scheduler reads it without asking the host
        self.leases: dict[tuple[str, int], str] = {}

    def host(self, vm: VmRecord) -> Host:
        try:
            return self.vims.get(vm.host)
        except KeyError as exc:
            raise VmOpError(f"host {vm.host} of {vm.generated_name} is not configured") from exc

    def pool(self, host: Host) -> Any:
        return self.driver.pool(host, self.state_dir / "pools" / host.name)

    def domain(self, vm: VmRecord) -> Domain | None:
        return self.driver.domain(self.host(vm), vm.generated_name)

    def is_running(self, vm: VmRecord) -> bool:
        dom = self.domain(vm)
        try:
            return dom is not None and dom.running()
        except VimError:
            return False

    def guest_address(self, vm: VmRecord, nicid: int) -> str:
        """The address the guest has on ``nicid`` per libvirt (DHCP lease, ARP); asks
        the host (job threads only) and remembers it in :attr:`leases`."""
        mac = next((m for n, _net, _ip, m in vm.interfaces if n == nicid), "")
        try:
            dom = self.domain(vm) if mac else None
            address = dom.address(mac) if dom is not None else ""
        except (VimError, VmOpError):
            address = ""
        if address:
            self.leases[(vm.generated_name, nicid)] = address
        return address

    # -- create / remove -------------------------------------------------------------

    def domain_spec(
        self, vm: VmRecord, deployment_id: str, group: GroupSpec, desired: Desired
    ) -> DomainSpec:
        host = self.host(vm)
        flavor = desired.flavors.get(vm.flavor)
        image = desired.images.get(vm.image)
        if flavor is None or image is None:
            raise VmOpError(f"flavor {vm.flavor} or image {vm.image} is not configured")
        pool = self.pool(host)
        vols = self.images.volumes_on(host, image.name, pool)
        root_name = f"{vm.generated_name}-root.qcow2"
        root_bytes = flavor.root_disk_mb * 1024 * 1024
        if "disk" not in vols:
            root = storage.create_cow_disk(host, pool, root_name, "", "raw", root_bytes or 1 << 30)
            root_fmt = "qcow2"
        elif image.persistent:
            root, root_fmt = vols["disk"], image.disk_format
        else:
            root = storage.create_cow_disk(
                host, pool, root_name, vols["disk"], image.disk_format, root_bytes
            )
            root_fmt = "qcow2"
        disks = [DiskSpec(root, "vda", root_fmt)]
        if group.config_data or any(ip for _n, _net, ip, _m in vm.interfaces):
            files = day0_files(vm, group, desired, self.day0)
            # not <state_dir>/day0: that is the operator's day-0 source directory
            local = self.state_dir / "configdrives" / vm.generated_name
            fmt = build_config_drive(files, local)
            path = storage.install_file(host, pool, f"{vm.generated_name}-day0.{fmt}", local, "raw")
            local.unlink(missing_ok=True)
            disks.append(DiskSpec(path, "vdb", "raw", readonly=True))
        nics = []
        for _nicid, network, _ip, mac in vm.interfaces:
            nics.append(NicSpec(ensure_network(host, desired.networks.get(network), network), mac))
        meta = VmMeta(
            vm.tenant,
            vm.deployment,
            deployment_id,
            vm.group,
            vm.index,
            vm.vm_id,
            vm.generated_name,
            owner=self.owner,
        )
        return DomainSpec(
            name=vm.generated_name,
            uuid=vm.vm_id,
            domain_type=host.domain_type,
            vcpus=flavor.vcpus,
            memory_mb=flavor.memory_mb,
            meta=meta,
            disks=disks,
            nics=nics,
            kernel=vols.get("kernel", ""),
            initrd=vols.get("initrd", ""),
            cmdline=image.cmdline,
        )

    def create(
        self,
        vm: VmRecord,
        deployment_id: str,
        group: GroupSpec,
        desired: Desired,
        start: bool = True,
    ) -> None:
        """Define (if missing) and start the VM's domain."""
        host = self.host(vm)
        host.connection()  # not connected: fail before building disks
        dom = self.domain(vm)
        if dom is None:
            xml = build_domain_xml(self.domain_spec(vm, deployment_id, group, desired))
            dom = self.driver.define(host, xml)
        if start and not dom.running():
            dom.start()

    def redefine(
        self, vm: VmRecord, deployment_id: str, group: GroupSpec, desired: Desired
    ) -> None:
        """Replace the persistent definition (takes effect at the next boot)."""
        xml = build_domain_xml(self.domain_spec(vm, deployment_id, group, desired))
        self.driver.define(self.host(vm), xml)

    def remove(self, vm: VmRecord) -> None:
        """Destroy and undefine the domain and free its volumes (idempotent)."""
        try:
            host = self.host(vm)
        except VmOpError:
            return
        try:
            self.driver.remove(host, vm.generated_name)
            self.driver.delete_vm_volumes(host, self.pool(host), vm.generated_name)
        except VimError as exc:
            log.warning("cannot free volumes of %s: %s", vm.generated_name, exc)

    # -- power -----------------------------------------------------------------------

    def start(self, vm: VmRecord) -> None:
        dom = self._require(vm)
        if not dom.running():
            dom.start()

    def stop(
        self, vm: VmRecord, force: bool = False, timeout: float = GRACEFUL_STOP_SECONDS
    ) -> None:
        """ACPI shutdown, then power off after ``timeout``; ``force`` powers off at once."""
        dom = self._require(vm)
        if dom.shut_off():
            return
        if not force:
            try:
                dom.shutdown()
            except VimError as exc:
                log.info(
                    "graceful shutdown of %s refused (%s): powering off", vm.generated_name, exc
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if dom.shut_off():
                    return
                idle(0.2)  # a job gives its worker slot back (engine/jobs.py)
        try:
            dom.destroy()
        except VimError:
            if not dom.shut_off():
                raise

    def reboot(self, vm: VmRecord, force: bool = False) -> None:
        dom = self._require(vm)
        if not dom.running():
            if dom.active():  # paused, crashed, hung in shutdown: power-cycle
                dom.destroy()
            dom.start()
            return
        # ESC reboots by stopping and starting: an in-guest reboot (dom.reboot) returns
        # before the guest goes down, so its old self would answer the first ping.
        self.stop(vm, force=force)
        dom.start()

    def _require(self, vm: VmRecord) -> Domain:
        dom = self.domain(vm)
        if dom is None:
            raise VmOpError(f"domain {vm.generated_name} does not exist on host {vm.host}")
        return dom

