"""Domain helpers shared by vim/resize.py, migrate.py, snapshots.py and volumes.py.

Everything here works on plain ``libvirt.virConnect`` / ``virDomain`` objects so the
primitives can be used (and tested) without the engine or the host registry.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import libvirt
from lxml import etree

from escnc.errors import EscncError

log = logging.getLogger(__name__)
T = TypeVar("T")

_UNITS_KIB = {
    "b": 1 / 1024,
    "bytes": 1 / 1024,
    "k": 1,
    "kib": 1,
    "kb": 1000 / 1024,
    "m": 1024,
    "mib": 1024,
    "mb": 1000**2 / 1024,
    "g": 1024**2,
    "gib": 1024**2,
    "gb": 1000**3 / 1024,
    "t": 1024**3,
    "tib": 1024**3,
    "tb": 1000**4 / 1024,
}

SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


class DomainOpError(EscncError):
    """A domain operation (resize, migrate, snapshot, volume copy) could not be done;
    the message says why (goes into FAILURE)."""


class DomainOpTimeout(DomainOpError):
    """A polled operation did not finish within its timeout."""


def is_test_driver(conn: libvirt.virConnect) -> bool:
    return conn.getType().upper() == "TEST"


def parse_xml(text: str) -> etree._Element:
    return etree.fromstring(text.encode(), SAFE_PARSER)


def to_kib(value: str, unit: str | None) -> int:
    return int(int(value) * _UNITS_KIB.get((unit or "KiB").lower(), 1))


@dataclass(frozen=True)
class DomainSize:
    vcpus: int  # current
    max_vcpus: int
    memory_kib: int  # currentMemory
    max_memory_kib: int  # <memory>


def domain_size(xml: str | etree._Element) -> DomainSize:
    root = parse_xml(xml) if isinstance(xml, str) else xml
    vcpu_el = root.find("vcpu")
    max_vcpus = int(vcpu_el.text or "1") if vcpu_el is not None else 1
    vcpus = int(vcpu_el.get("current", max_vcpus)) if vcpu_el is not None else 1
    mem_el = root.find("memory")
    max_mem = to_kib(mem_el.text or "0", mem_el.get("unit")) if mem_el is not None else 0
    cur_el = root.find("currentMemory")
    cur_mem = to_kib(cur_el.text or "0", cur_el.get("unit")) if cur_el is not None else max_mem
    return DomainSize(vcpus, max_vcpus, cur_mem, max_mem)


def with_size(xml: str, vcpus: int, memory_kib: int) -> str:
    """``xml`` with vCPUs and memory (maximum and current) set to the given values."""
    root = parse_xml(xml)
    vcpu_el = root.find("vcpu")
    if vcpu_el is None:
        vcpu_el = etree.SubElement(root, "vcpu")
    vcpu_el.text = str(vcpus)
    if "current" in vcpu_el.attrib:
        del vcpu_el.attrib["current"]
    for tag in ("memory", "currentMemory"):
        el = root.find(tag)
        if el is None:
            el = etree.SubElement(root, tag)
        el.text = str(memory_kib)
        el.set("unit", "KiB")
    # a NUMA topology or hot-plug maximum larger than the new size would be rejected
    max_mem = root.find("maxMemory")
    if max_mem is not None and to_kib(max_mem.text or "0", max_mem.get("unit")) < memory_kib:
        root.remove(max_mem)
    return etree.tostring(root, encoding="unicode")


def persistent_xml(dom: libvirt.virDomain) -> str:
    flags = libvirt.VIR_DOMAIN_XML_SECURE
    if dom.isPersistent():
        flags |= libvirt.VIR_DOMAIN_XML_INACTIVE
    return str(dom.XMLDesc(flags))


def lookup(conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        raise DomainOpError(f"VM {name} not found on host {host_label(conn)}") from exc


def find_domain(
    conn: libvirt.virConnect, name: str, uuid: str | None = None
) -> libvirt.virDomain | None:
    for dom in conn.listAllDomains():
        if dom.name() == name or (uuid and dom.UUIDString() == uuid):
            return dom
    return None


def host_label(conn: libvirt.virConnect) -> str:
    try:
        return str(conn.getURI())
    except libvirt.libvirtError:
        return "?"


def undefine_fully(dom: libvirt.virDomain) -> None:
    """Destroy (if running) and undefine, dropping snapshot metadata and managed save."""
    if dom.isActive():
        dom.destroy()
    if not dom.isPersistent():
        return
    flags = (
        libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    )
    for attempt in (
        flags | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM,
        flags,
        libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA,
        0,
    ):
        try:
            dom.undefineFlags(attempt)
            return
        except libvirt.libvirtError as exc:
            # drivers reject flags they do not know (the test driver refuses NVRAM)
            if exc.get_error_code() not in (
                libvirt.VIR_ERR_INVALID_ARG,
                libvirt.VIR_ERR_NO_SUPPORT,
                libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
            ):
                raise
    dom.undefine()


def stop_domain(dom: libvirt.virDomain, timeout: float) -> None:
    """Graceful shutdown (ACPI), then destroy once ``timeout`` seconds have passed."""
    if not dom.isActive():
        return
    try:
        dom.shutdown()
    except libvirt.libvirtError as exc:
        log.info("shutdown of %s refused (%s); destroying", dom.name(), exc)
    deadline = time.monotonic() + timeout
    while dom.isActive() and time.monotonic() < deadline:
        time.sleep(0.1)
    if dom.isActive():
        dom.destroy()


def run_polled(
    call: Callable[[], T],
    *,
    poll_secs: float,
    timeout_secs: float,
    what: str,
    progress: Callable[[], None] | None = None,
    on_timeout: Callable[[], None] | None = None,
    on_late_result: Callable[[T], None] | None = None,
) -> T:
    """Run a blocking libvirt call in a worker thread, checking on it every ``poll_secs``.

    libvirt's snapshot and volume calls block until done; ESC polls its VIM instead.
    This keeps ESC's poll-interval/timeout contract: past ``timeout_secs`` the operation
    is abandoned (``on_timeout`` may abort it) and :class:`DomainOpTimeout` is raised;
    if the call still completes later, ``on_late_result`` gets its result (to remove
    what it made, so a timed-out operation leaves nothing behind).
    """
    done = threading.Event()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vim-op")
    try:
        future = pool.submit(call)
        future.add_done_callback(lambda _f: done.set())
        deadline = time.monotonic() + timeout_secs
        while True:
            remaining = deadline - time.monotonic()
            if done.wait(max(0.0, min(poll_secs, remaining))):
                return future.result()
            if time.monotonic() >= deadline:
                if on_timeout is not None:
                    try:
                        on_timeout()
                    except Exception:  # best effort abort
                        log.exception("abort after timeout of %s failed", what)
                if on_late_result is not None:
                    future.add_done_callback(lambda f: _late(f, on_late_result, what))
                raise DomainOpTimeout(f"{what} timed out after {timeout_secs:g} s")
            if progress is not None:
                progress()
    finally:
        pool.shutdown(wait=False)


def _late(future: concurrent.futures.Future[T], handler: Callable[[T], None], what: str) -> None:
    if future.exception() is not None:
        return
    try:
        handler(future.result())
    except Exception:  # cleanup is best effort, and logged
        log.exception("cleanup after late completion of %s failed", what)


def libvirt_message(exc: BaseException) -> str:
    if isinstance(exc, libvirt.libvirtError):
        return str(exc.get_error_message() or exc)
    return str(exc)
