"""Resize a domain's vCPUs and memory, keeping what is needed to revert.

Live when the new size fits in the running domain's maxima (vCPU hot-plug and the
balloon), otherwise the domain is stopped, redefined and started again ("cold"), as
OpenStack does. A stopped domain is simply redefined ("offline").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import libvirt

from escnc.vim.domains import (
    DomainOpError,
    domain_size,
    libvirt_message,
    lookup,
    persistent_xml,
    stop_domain,
    with_size,
)

log = logging.getLogger(__name__)

ResizeMode = Literal["live", "cold", "offline"]


@dataclass(frozen=True)
class ResizeRecord:
    """What :func:`revert_resize` needs to put the old size back."""

    name: str
    mode: ResizeMode
    old_xml: str  # persistent definition before the resize
    old_vcpus: int
    old_memory_kib: int
    new_vcpus: int
    new_memory_kib: int


def _set_live(dom: libvirt.virDomain, vcpus: int, memory_kib: int) -> None:
    live, config = libvirt.VIR_DOMAIN_AFFECT_LIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG
    dom.setVcpusFlags(vcpus, live)
    dom.setVcpusFlags(vcpus, config)
    # the test driver refuses LIVE|CONFIG together for memory; QEMU takes both ways
    dom.setMemoryFlags(memory_kib, live)
    dom.setMemoryFlags(memory_kib, config)


def _fits_live(dom: libvirt.virDomain, vcpus: int, memory_kib: int) -> bool:
    live_max_vcpus = dom.vcpusFlags(
        libvirt.VIR_DOMAIN_VCPU_MAXIMUM | libvirt.VIR_DOMAIN_AFFECT_LIVE
    )
    return vcpus <= live_max_vcpus and memory_kib <= dom.maxMemory()


def _restart_with(
    conn: libvirt.virConnect, dom: libvirt.virDomain, xml: str, shutdown_timeout: float
) -> None:
    stop_domain(dom, shutdown_timeout)
    try:
        conn.defineXML(xml).create()
    except libvirt.libvirtError as exc:
        raise DomainOpError(
            f"restart of {dom.name()} with the new size failed: {libvirt_message(exc)}"
        ) from exc


def resize_domain(
    conn: libvirt.virConnect,
    name: str,
    vcpus: int,
    memory_mb: int,
    *,
    shutdown_timeout: float = 60.0,
    allow_live: bool = True,
) -> ResizeRecord:
    """Give domain ``name`` ``vcpus`` vCPUs and ``memory_mb`` MiB; return how to undo it."""
    if vcpus < 1 or memory_mb < 1:
        raise DomainOpError(f"invalid size for {name}: {vcpus} vCPUs, {memory_mb} MB")
    dom = lookup(conn, name)
    old_xml = persistent_xml(dom)
    old = domain_size(old_xml)
    memory_kib = memory_mb * 1024
    new_xml = with_size(old_xml, vcpus, memory_kib)
    try:
        if not dom.isActive():
            conn.defineXML(new_xml)
            mode: ResizeMode = "offline"
        elif allow_live and _fits_live(dom, vcpus, memory_kib):
            try:
                _set_live(dom, vcpus, memory_kib)
                mode = "live"
            except libvirt.libvirtError as exc:
                # e.g. the guest refused a vCPU unplug: fall back to a restart
                log.info("live resize of %s failed (%s); restarting it", name, exc)
                _restart_with(conn, dom, new_xml, shutdown_timeout)
                mode = "cold"
        else:
            _restart_with(conn, dom, new_xml, shutdown_timeout)
            mode = "cold"
    except libvirt.libvirtError as exc:
        raise DomainOpError(f"resize of {name} failed: {libvirt_message(exc)}") from exc
    return ResizeRecord(name, mode, old_xml, old.vcpus, old.memory_kib, vcpus, memory_kib)


def revert_resize(
    conn: libvirt.virConnect, record: ResizeRecord, *, shutdown_timeout: float = 60.0
) -> None:
    """Put back the definition (and, if running, the live size) from before the resize."""
    dom = lookup(conn, record.name)
    try:
        if not dom.isActive():
            conn.defineXML(record.old_xml)
        elif record.mode == "live":
            try:
                _set_live(dom, record.old_vcpus, record.old_memory_kib)
                conn.defineXML(record.old_xml)
            except libvirt.libvirtError as exc:
                # a vCPU unplug needs the guest's cooperation; without it, restart
                log.info("live revert of %s failed (%s); restarting it", record.name, exc)
                _restart_with(conn, dom, record.old_xml, shutdown_timeout)
        else:
            _restart_with(conn, dom, record.old_xml, shutdown_timeout)
    except libvirt.libvirtError as exc:
        raise DomainOpError(
            f"revert of the resize of {record.name} failed: {libvirt_message(exc)}"
        ) from exc


def current_size(conn: libvirt.virConnect, name: str) -> tuple[int, int]:
    """(vCPUs, memory MiB) the domain has now (live if running, else its definition)."""
    dom = lookup(conn, name)
    if dom.isActive():
        state = dom.info()
        return int(state[3]), int(state[2]) // 1024
    size = domain_size(persistent_xml(dom))
    return size.vcpus, size.memory_kib // 1024
