"""Live vNIC changes: make a running domain's interfaces match its persistent
definition (after an update redefined it) by attaching and detaching devices live.

Interfaces are matched by MAC (escnc's MACs are stable per VM and nicid, so a nicid
whose network changed is detached and attached again). What the hypervisor refuses
(the libvirt test driver cannot attach devices at all) stays deferred to the next
start, and the result says why, for the VM_UPDATED message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import libvirt
from lxml import etree


@dataclass
class NicSync:
    attached: list[str] = field(default_factory=list)  # MACs
    detached: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)  # "MAC: why"

    def summary(self) -> str:
        parts = []
        if self.attached:
            parts.append("attached live: " + ", ".join(self.attached))
        if self.detached:
            parts.append("detached live: " + ", ".join(self.detached))
        if self.deferred:
            parts.append("deferred to the next start: " + "; ".join(self.deferred))
        return "; ".join(parts)


def _interfaces(xml: str) -> dict[str, tuple[str, str]]:
    """mac -> (network, the interface's XML as a device definition)."""
    out = {}
    for itf in etree.fromstring(xml.encode()).iterfind("devices/interface"):
        mac = itf.find("mac")
        src = itf.find("source")
        if mac is None:
            continue
        device = etree.Element("interface", type=itf.get("type", "network"))
        for tag in ("mac", "source", "model"):
            el = itf.find(tag)
            if el is not None:
                device.append(etree.fromstring(etree.tostring(el)))
        out[(mac.get("address") or "").lower()] = (
            src.get("network", "") if src is not None else "",
            etree.tostring(device, encoding="unicode"),
        )
    return out


def sync_live_nics(dom: libvirt.virDomain) -> NicSync:
    """Attach/detach live what differs between the running and the defined domain."""
    result = NicSync()
    try:
        if not dom.isActive():
            return result
        live = _interfaces(dom.XMLDesc(0))
        defined = _interfaces(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    except libvirt.libvirtError as exc:
        result.deferred.append(f"all: {exc.get_error_message()}")
        return result
    for mac, (network, xml) in sorted(live.items()):
        if defined.get(mac, ("", ""))[0] == network:
            continue
        try:
            dom.detachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            result.detached.append(mac)
        except libvirt.libvirtError as exc:
            result.deferred.append(f"{mac} (detach): {exc.get_error_message()}")
    for mac, (network, xml) in sorted(defined.items()):
        if live.get(mac, ("", ""))[0] == network:
            continue
        try:
            dom.attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            result.attached.append(mac)
        except libvirt.libvirtError as exc:
            result.deferred.append(f"{mac} (attach): {exc.get_error_message()}")
    return result
