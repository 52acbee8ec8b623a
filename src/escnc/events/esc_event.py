"""The escEvent notification body (namespace http://www.cisco.com/esc/esc).

Field order follows ESC's notifications so existing clients parse them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from escnc.ns import ESC, qn

SUCCESS = "SUCCESS"
FAILURE = "FAILURE"


_VM_FIELDS = (
    "vmid",
    "vmname",
    "generated_vmname",
    "vim_id",
    "vim_project",
    "vim_project_id",
    "hostid",
    "hostname",
)


@dataclass
class VmRef:
    vmid: str = ""
    vmname: str = ""
    generated_vmname: str = ""
    vim_id: str = ""
    vim_project: str = ""
    vim_project_id: str = ""
    hostid: str = ""
    hostname: str = ""
    # (nicid, network, ip_address, mac_address)
    interfaces: list[tuple[int, str, str, str]] = field(default_factory=list)

    def to_xml(self, tag: str) -> etree._Element:
        el = etree.Element(qn(ESC, tag))
        for name in _VM_FIELDS:
            value = getattr(self, name)
            if value:
                etree.SubElement(el, qn(ESC, name)).text = value
        if self.interfaces:
            ifs = etree.SubElement(el, qn(ESC, "interfaces"))
            for nicid, network, ip, mac in self.interfaces:
                itf = etree.SubElement(ifs, qn(ESC, "interface"))
                etree.SubElement(itf, qn(ESC, "nicid")).text = str(nicid)
                if network:
                    etree.SubElement(itf, qn(ESC, "network")).text = network
                if ip:
                    etree.SubElement(itf, qn(ESC, "ip_address")).text = ip
                if mac:
                    etree.SubElement(itf, qn(ESC, "mac_address")).text = mac
        return el


@dataclass
class EscEvent:
    type: str
    status: str = SUCCESS
    status_code: int = 200
    status_message: str = ""
    depname: str = ""
    tenant: str = ""
    tenant_id: str = ""
    depid: str = ""
    vm_group: str = ""
    vm_source: VmRef | None = None
    vm_target: VmRef | None = None

    def to_xml(self) -> etree._Element:
        root = etree.Element(qn(ESC, "escEvent"), nsmap={None: ESC})  # type: ignore[dict-item]
        etree.SubElement(root, qn(ESC, "status")).text = self.status
        etree.SubElement(root, qn(ESC, "status_code")).text = str(self.status_code)
        etree.SubElement(root, qn(ESC, "status_message")).text = self.status_message
        for name in ("depname", "tenant", "tenant_id", "depid", "vm_group"):
            value = getattr(self, name)
            if value:
                etree.SubElement(root, qn(ESC, name)).text = value
        if self.vm_source is not None:
            root.append(self.vm_source.to_xml("vm_source"))
        if self.vm_target is not None:
            root.append(self.vm_target.to_xml("vm_target"))
        ev = etree.SubElement(root, qn(ESC, "event"))
        etree.SubElement(ev, qn(ESC, "type")).text = self.type
        return root


ESC_STREAM = "escEvent"
NETCONF_STREAM = "NETCONF"
