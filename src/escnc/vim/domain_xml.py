"""libvirt domain XML for escnc VMs, and the escnc metadata each domain carries.

What the generated domain supports (for the QEMU integration tests and images):

* ``type='test'`` on test-driver hosts, ``type='qemu'`` (TCG, no KVM) elsewhere;
  ``hvm`` OS, ACPI (graceful shutdown), ``on_reboot=restart``.
* Boot from the first disk: a qcow2 (or raw) volume, normally a copy-on-write clone
  of the registered image (``persistent=false``) or the image volume itself.
* Direct kernel boot when the image entry carries ``kernel`` (and optionally
  ``initrd`` and ``cmdline``) leaves: paths or URLs registered like the image; the
  root disk is still attached as ``vda``.
* Day-0 config drive as a second virtio disk ``vdb`` (read only): an ISO 9660 image
  labelled ``cidata`` (cloud-init NoCloud) made by genisoimage, or, without
  genisoimage, a raw disk holding a POSIX tar archive of the same files (read it in
  the guest with ``tar -x < /dev/vdb``). See ``vim/configdrive.py`` for the files.
* One virtio NIC per interface, in nicid order, on the libvirt network that backs
  the escnc network, with the configured (or a stable generated) MAC.
* A pty serial console (``virsh console``).

The ``<metadata>`` element (namespace :data:`META_NS`) names the tenant,
deployment, vm group, index, vm id and generated name: the reconciler adopts or
removes domains by it, and never touches domains without it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from lxml import etree

META_NS = "http://escnc.io/xmlns/vm/1"
META_PREFIX = "escnc"


@dataclass(frozen=True)
class VmMeta:
    tenant: str
    deployment: str
    deployment_id: str
    group: str
    index: int
    vm_id: str
    generated_name: str
    # the escnc instance (state directory) that created the domain: several escnc
    # servers may share one libvirtd, and each reconciles only its own domains
    owner: str = ""

    def to_xml(self) -> etree._Element:
        root = etree.Element(f"{{{META_NS}}}vm", nsmap={META_PREFIX: META_NS})
        for name in (
            "tenant",
            "deployment",
            "deployment_id",
            "group",
            "index",
            "vm_id",
            "generated_name",
            "owner",
        ):
            etree.SubElement(root, f"{{{META_NS}}}{name}").text = str(getattr(self, name))
        return root

    @classmethod
    def from_xml(cls, text: str) -> VmMeta | None:
        """Parse what ``virDomain.metadata`` returns (libvirt drops the prefix)."""
        try:
            root = etree.fromstring(text.encode())
        except etree.XMLSyntaxError:
            return None
        values = {etree.QName(child).localname: (child.text or "") for child in root}
        try:
            return cls(
                tenant=values["tenant"],
                deployment=values["deployment"],
                deployment_id=values.get("deployment_id", ""),
                group=values["group"],
                index=int(values["index"]),
                vm_id=values["vm_id"],
                generated_name=values["generated_name"],
                owner=values.get("owner", ""),
            )
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class DiskSpec:
    path: str
    target: str  # vda, vdb, ...
    format: str = "qcow2"
    readonly: bool = False


@dataclass(frozen=True)
class NicSpec:
    network: str  # libvirt network name
    mac: str


@dataclass
class DomainSpec:
    name: str
    uuid: str
    domain_type: str
    vcpus: int
    memory_mb: int
    meta: VmMeta
    disks: list[DiskSpec] = field(default_factory=list)
    nics: list[NicSpec] = field(default_factory=list)
    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""


def stable_mac(generated_name: str, nicid: int) -> str:
    """A locally administered MAC in QEMU's 52:54:00 range, stable per VM and nicid."""
    digest = hashlib.sha256(f"{generated_name}/{nicid}".encode()).digest()
    return "52:54:00:{:02x}:{:02x}:{:02x}".format(*digest[:3])


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def build_domain_xml(spec: DomainSpec) -> str:
    dom = etree.Element("domain", type=spec.domain_type)
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", spec.uuid)
    metadata = _sub(dom, "metadata")
    metadata.append(spec.meta.to_xml())
    _sub(dom, "memory", str(spec.memory_mb * 1024), unit="KiB")
    _sub(dom, "currentMemory", str(spec.memory_mb * 1024), unit="KiB")
    _sub(dom, "vcpu", str(spec.vcpus), placement="static")
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm")
    if spec.kernel:
        _sub(os_el, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os_el, "initrd", spec.initrd)
        if spec.cmdline:
            _sub(os_el, "cmdline", spec.cmdline)
    else:
        _sub(os_el, "boot", dev="hd")
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    for disk in spec.disks:
        d = _sub(devices, "disk", type="file", device="disk")
        _sub(d, "driver", name="qemu", type=disk.format)
        _sub(d, "source", file=disk.path)
        _sub(d, "target", dev=disk.target, bus="virtio")
        if disk.readonly:
            _sub(d, "readonly")
    for nic in spec.nics:
        i = _sub(devices, "interface", type="network")
        _sub(i, "source", network=nic.network)
        _sub(i, "mac", address=nic.mac)
        _sub(i, "model", type="virtio")
    if spec.domain_type != "test":
        serial = _sub(devices, "serial", type="pty")
        _sub(serial, "target", port="0")
        console = _sub(devices, "console", type="pty")
        _sub(console, "target", type="serial", port="0")
        _sub(devices, "memballoon", model="virtio")
    return etree.tostring(dom, encoding="unicode")


def domain_macs(xml: str) -> list[tuple[str, str]]:
    """(network, mac) of every network interface in a domain's XML, in order."""
    root = etree.fromstring(xml.encode())
    result = []
    for itf in root.iterfind("devices/interface"):
        src = itf.find("source")
        mac = itf.find("mac")
        result.append(
            (
                src.get("network", "") if src is not None else "",
                mac.get("address", "") if mac is not None else "",
            )
        )
    return result


def domain_disk_paths(xml: str) -> list[str]:
    root = etree.fromstring(xml.encode())
    return [s.get("file", "") for s in root.iterfind("devices/disk/source") if s.get("file")]
