"""Operational state for <get>: esc_datamodel/opdata (docs/CONTRACTS.md)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from lxml import etree

from escnc.engine.imagereg import ACTIVE
from escnc.ns import ESC
from escnc.vim.driver import VimError

if TYPE_CHECKING:
    from escnc.engine.context import OpdataView

log = logging.getLogger(__name__)
VERSION = "0.1.0"


def _q(name: str) -> str:
    return f"{{{ESC}}}{name}"


def _leaf(parent: etree._Element, name: str, value: object) -> None:
    if value is None or value == "":
        return
    if isinstance(value, bool):
        value = "true" if value else "false"
    etree.SubElement(parent, _q(name)).text = str(value)


def build_opdata(engine: OpdataView) -> etree._Element:
    root = etree.Element(_q("esc_datamodel"), nsmap={None: ESC})  # type: ignore[dict-item]
    op = etree.SubElement(root, _q("opdata"))
    status = etree.SubElement(op, _q("system_status"))
    _leaf(status, "status", "ACTIVE" if engine.started else "STARTING")
    _leaf(status, "status_message", "escnc is running" if engine.started else "escnc is starting")
    _leaf(status, "version", VERSION)
    _leaf(status, "uptime_seconds", int(time.monotonic() - engine.started_at))

    hosts = etree.SubElement(op, _q("hosts"))
    for host in engine.vims.hosts():
        h = etree.SubElement(hosts, _q("host"))
        _leaf(h, "name", host.name)
        _leaf(h, "uri", host.uri)
        _leaf(h, "connected", host.connected)
        _leaf(h, "status_message", host.status_message)
        _leaf(h, "hostid", host.hostid())
        # from the engine's snapshot (engine/hostfacts.py): <get> asks no host
        facts = engine.host_facts.get(host.name)
        hs = facts.stats if facts is not None and host.connected else None
        if hs is not None:
            _leaf(h, "hostname", hs.hostname)
            _leaf(h, "vcpus_total", hs.vcpus_total)
            _leaf(h, "memory_total_mb", hs.memory_total_mb)
            _leaf(h, "vcpus_used", hs.vcpus_used)
            _leaf(h, "memory_used_mb", hs.memory_used_mb)

    tenants = etree.SubElement(op, _q("tenants"))
    by_tenant: dict[str, etree._Element] = {}
    vms_by_dep: dict[tuple[str, str], list] = {}
    for vm in engine.store.vms():
        vms_by_dep.setdefault(vm.dep_key, []).append(vm)
    for dep in sorted(engine.store.deployments(), key=lambda d: d.key):
        t = by_tenant.get(dep.tenant)
        if t is None:
            t = by_tenant[dep.tenant] = etree.SubElement(tenants, _q("tenant"))
            _leaf(t, "name", dep.tenant)
            _leaf(t, "tenant_id", dep.tenant)
            etree.SubElement(t, _q("deployments"))
        d = etree.SubElement(t[-1], _q("deployment"))
        _leaf(d, "name", dep.name)
        _leaf(d, "deployment_id", dep.deployment_id)
        _leaf(d, "state", dep.state)
        _leaf(d, "status_message", dep.status_message)
        groups: dict[str, etree._Element] = {}
        for vm in vms_by_dep.get(dep.key, []):
            g = groups.get(vm.group)
            if g is None:
                g = groups[vm.group] = etree.SubElement(d, _q("vm_group"))
                _leaf(g, "name", vm.group)
                engine.elastic.group_opdata(g, dep, vm.group)
            _vm_instance(engine, g, vm)

    images = etree.SubElement(op, _q("images"))
    for img in engine.images.states():
        i = etree.SubElement(images, _q("image"))
        _leaf(i, "name", img.spec.name)
        _leaf(i, "state", img.state)
        _leaf(i, "status_message", img.message)
        if img.state == ACTIVE:  # a size only for a complete image
            _leaf(i, "size_bytes", img.size)
    return root


def _vm_instance(engine: OpdataView, parent: etree._Element, vm) -> None:  # type: ignore[no-untyped-def]
    v = etree.SubElement(parent, _q("vm_instance"))
    _leaf(v, "name", vm.generated_name)
    _leaf(v, "vm_id", vm.vm_id)
    _leaf(v, "index", vm.index)
    _leaf(v, "host", vm.host)
    _leaf(v, "vim_id", vm.host)
    _leaf(v, "state", vm.state)
    _leaf(v, "flavor", vm.flavor)
    _leaf(v, "image", vm.image)
    _leaf(v, "monitoring", vm.monitoring)
    _leaf(v, "collector", vm.collector)
    host = engine.vims.get(vm.host) if vm.host in engine.vims else None
    dom = engine.ops.domain(vm) if host is not None and host.connected else None
    if dom is not None:
        try:
            s = dom.stats()
            stats = etree.SubElement(v, _q("stats"))
            _leaf(stats, "vcpus", s.vcpus)
            _leaf(stats, "cpu_time_ns", s.cpu_time_ns)
            _leaf(stats, "memory_kb", s.memory_kb)
            _leaf(stats, "max_memory_kb", s.max_memory_kb)
        except VimError:
            pass
    engine.elastic.vm_opdata(v, vm)  # kpis/kpi
    if vm.interfaces:
        itfs = etree.SubElement(v, _q("interfaces"))
        for nicid, network, ip, mac in vm.interfaces:
            i = etree.SubElement(itfs, _q("interface"))
            _leaf(i, "nicid", nicid)
            _leaf(i, "network", network)
            _leaf(i, "ip_address", ip)
            _leaf(i, "mac_address", mac)
