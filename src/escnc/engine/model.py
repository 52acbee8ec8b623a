"""The desired state, parsed from a committed configuration tree (esc_datamodel).

Element names follow docs/CONTRACTS.md. Parsing is tolerant: a missing optional
leaf takes ESC's default, so partial payloads from the seeds work as written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from lxml import etree

from escnc.engine.kpi.spec import KpiDef, RuleDef, parse_kpis, parse_rules
from escnc.engine.startup import StartupDep, parse_startup
from escnc.engine.xmltext import int_of as _int
from escnc.engine.xmltext import q as _q
from escnc.engine.xmltext import text as _text
from escnc.ns import ESC
from escnc.vim.networks import NetworkSpec, SubnetSpec

DEFAULT_POLL_SECONDS = 3.0
_T = TypeVar("_T")
_K = TypeVar("_K")
_V = TypeVar("_V")


def _bool(el: etree._Element | None, name: str, default: bool = False) -> bool:
    value = _text(el, name, "")
    return value.lower() == "true" if value else default


def _children(el: etree._Element | None, *path: str) -> list[etree._Element]:
    if el is None:
        return []
    return list(el.iterfind("/".join(_q(p) for p in path)))


def _canonical(el: etree._Element, skip: tuple[str, ...] = ()) -> str:
    """Order-insensitive fingerprint of a subtree (list order does not matter to us)."""

    def walk(node: etree._Element) -> str:
        name = etree.QName(node).localname
        if name in skip:
            return ""
        kids = sorted(walk(c) for c in node if isinstance(c.tag, str))
        return f"<{name}>{(node.text or '').strip()}{''.join(kids)}</{name}>"

    return walk(el)


@dataclass(frozen=True)
class ImageSpec:
    name: str
    src: str = ""
    disk_format: str = "qcow2"
    persistent: bool = False
    checksum: str = ""
    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""


@dataclass(frozen=True)
class FlavorSpec:
    name: str
    vcpus: int = 1
    memory_mb: int = 512
    root_disk_mb: int = 0
    ephemeral_disk_mb: int = 0
    swap_disk_mb: int = 0


@dataclass(frozen=True)
class InterfaceSpec:
    nicid: int
    network: str
    ip_address: str = ""
    mac_address: str = ""
    netmask: str = ""
    gateway: str = ""


@dataclass(frozen=True)
class KpiSpec:
    collector: str = "ICMPPing"
    nicid: int = 0
    poll_seconds: float = DEFAULT_POLL_SECONDS
    occurrences_false: int = 1  # consecutive failed polls before a monitored VM is down


@dataclass(frozen=True)
class ConfigFile:
    dst: str
    file: str = ""
    data: str = ""


@dataclass(frozen=True)
class GroupSpec:
    name: str
    image: str
    flavor: str
    bootup_time: int = 0  # 0: settings.default_bootup_time
    recovery_wait_time: int = 0
    recovery_type: str = "AUTO"
    action_on_recovery: str = "REBOOT_THEN_REDEPLOY"
    max_retries: int = 3  # YANG default
    interfaces: tuple[InterfaceSpec, ...] = ()
    min_active: int = 1
    max_active: int = 1
    ip_pools: tuple[tuple[str, tuple[str, ...]], ...] = ()
    kpi: KpiSpec | None = None
    config_data: tuple[ConfigFile, ...] = ()
    placement_type: str = ""
    placement_host: str = ""
    vim_id: str = ""
    vim_project: str = ""
    reservation_id: str = ""  # first reservation consumed (engine/capacity/)
    reservation_ids: tuple[str, ...] = ()  # every reservation named (one per kind)
    elastic: bool = False  # scale between min_active and max_active on KPIs
    kpis: tuple[KpiDef, ...] = ()  # every kpi_data/kpi (engine/kpi/)
    rules: tuple[RuleDef, ...] = ()  # rules/admin_rules/rule (engine/rules.py)
    # fingerprint of everything that changes an existing VM: not scaling, not flavor
    # (day-2 resize) and not image (ESC: a new image applies at the next redeployment)
    fingerprint: str = ""

    def pool(self, network: str) -> tuple[str, ...]:
        return dict(self.ip_pools).get(network, ())


@dataclass(frozen=True)
class PlacementGroup:
    name: str
    type: str
    enforcement: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class DeploymentSpec:
    tenant: str
    name: str
    groups: dict[str, GroupSpec] = field(default_factory=dict)
    placement_groups: tuple[PlacementGroup, ...] = ()
    fingerprint: str = ""
    startup: tuple[StartupDep, ...] = ()  # policies/startup (engine/startup.py)

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant, self.name)


@dataclass
class Desired:
    images: dict[str, ImageSpec] = field(default_factory=dict)
    flavors: dict[str, FlavorSpec] = field(default_factory=dict)
    networks: dict[str, NetworkSpec] = field(default_factory=dict)
    vims: dict[str, tuple[str, bool]] = field(default_factory=dict)  # name -> (uri, default)
    tenants: set[str] = field(default_factory=set)
    deployments: dict[tuple[str, str], DeploymentSpec] = field(default_factory=dict)


def find_root(tree: etree._Element | None) -> etree._Element | None:
    if tree is None:
        return None
    if tree.tag == _q("esc_datamodel"):
        return tree
    return tree.find(_q("esc_datamodel"))


def parse_group(el: etree._Element) -> GroupSpec:
    interfaces = tuple(
        sorted(
            (
                InterfaceSpec(
                    nicid=_int(i, "nicid", 0),
                    network=_text(i, "network"),
                    ip_address=_text(i, "ip_address"),
                    mac_address=_text(i, "mac_address"),
                    netmask=_text(i, "netmask"),
                    gateway=_text(i, "gateway"),
                )
                for i in _children(el, "interfaces", "interface")
            ),
            key=lambda i: i.nicid,
        )
    )
    scaling = el.find(_q("scaling"))
    pools = tuple(
        (
            _text(p, "network"),
            tuple((a.text or "").strip() for a in p.iterfind(_q("ip_address"))),
        )
        for p in _children(scaling, "static_ip_address_pool")
    )
    kpi = None
    for k in _children(el, "kpi_data", "kpi"):
        coll = k.find(_q("metric_collector"))
        if coll is None:
            continue
        freq = float(
            _int(coll, "poll_frequency", int(DEFAULT_POLL_SECONDS)) or DEFAULT_POLL_SECONDS
        )
        if _text(coll, "polling_unit", "seconds").startswith("minute"):
            freq *= 60
        kpi = KpiSpec(
            _text(coll, "type", "ICMPPing"),
            _int(coll, "nicid", 0),
            freq,
            max(1, _int(k, "metric_occurrences_false", 1)),
        )
        if _text(k, "event_name") == "VM_ALIVE":
            break
    policy = el.find(_q("recovery_policy"))
    placement = el.find(_q("placement"))
    locator = el.find(_q("locator"))
    min_active = _int(scaling, "min_active", 1)
    return GroupSpec(
        name=_text(el, "name"),
        image=_text(el, "image"),
        flavor=_text(el, "flavor"),
        bootup_time=_int(el, "bootup_time", 0),
        recovery_wait_time=_int(el, "recovery_wait_time", 0),
        recovery_type=_text(policy, "recovery_type", "AUTO"),
        action_on_recovery=_text(policy, "action_on_recovery", "REBOOT_THEN_REDEPLOY"),
        max_retries=_int(policy, "max_retries", 3),
        interfaces=interfaces,
        min_active=min_active,
        max_active=_int(scaling, "max_active", max(min_active, 1)),
        ip_pools=pools,
        kpi=kpi,
        config_data=tuple(
            ConfigFile(_text(c, "dst"), _text(c, "file"), _text(c, "data"))
            for c in _children(el, "config_data", "configuration")
        ),
        placement_type=_text(placement, "type"),
        placement_host=_text(placement, "host"),
        vim_id=_text(locator, "vim_id"),
        vim_project=_text(locator, "vim_project"),
        reservation_id=_text(el, "reservation_id"),
        reservation_ids=tuple(
            t for t in ((r.text or "").strip() for r in _children(el, "reservation_id")) if t
        ),
        elastic=_bool(scaling, "elastic"),
        kpis=parse_kpis(el),
        rules=parse_rules(el),
        fingerprint=_canonical(el, skip=("scaling", "flavor", "image", "reservation_id")),
    )


def parse_deployment(tenant: str, el: etree._Element) -> DeploymentSpec:
    groups = {g.name: g for g in (parse_group(x) for x in _children(el, "vm_group"))}
    pgs = tuple(
        PlacementGroup(
            _text(p, "name"),
            _text(p, "type"),
            _text(p, "enforcement", "strict"),
            tuple((v.text or "").strip() for v in p.iterfind(_q("vm_group"))),
        )
        for p in _children(el, "placement_group")
    )
    return DeploymentSpec(
        tenant, _text(el, "name"), groups, pgs, _canonical(el), parse_startup(el)
    )


_NS = f"{{{ESC}}}"
_NSLEN = len(_NS)


def _leaves(el: etree._Element) -> dict[str, str]:
    """localname -> stripped text of ``el``'s ESC children, the first of each name
    (what ``_text`` finds), in one pass over the children."""
    out: dict[str, str] = {}
    for c in el:
        tag = c.tag
        if isinstance(tag, str) and tag.startswith(_NS):
            name = tag[_NSLEN:]
            if name not in out:
                out[name] = (c.text or "").strip()
    return out


def _lint(leaves: dict[str, str], name: str, default: int) -> int:
    try:
        return int(leaves.get(name, str(default)))
    except ValueError:
        return default


def _lbool(leaves: dict[str, str], name: str) -> bool:
    value = leaves.get(name, "")
    return value.lower() == "true" if value else False


def _image(el: etree._Element) -> ImageSpec:
    v = _leaves(el)
    return ImageSpec(
        name=v.get("name", ""),
        src=v.get("src", ""),
        disk_format=v.get("disk_format", "qcow2") or "qcow2",
        persistent=_lbool(v, "persistent"),
        checksum=v.get("checksum", ""),
        kernel=v.get("kernel", ""),
        initrd=v.get("initrd", ""),
        cmdline=v.get("cmdline", ""),
    )


def _flavor(el: etree._Element) -> FlavorSpec:
    v = _leaves(el)
    return FlavorSpec(
        name=v.get("name", ""),
        vcpus=_lint(v, "vcpus", 1),
        memory_mb=_lint(v, "memory_mb", 512),
        root_disk_mb=_lint(v, "root_disk_mb", 0),
        ephemeral_disk_mb=_lint(v, "ephemeral_disk_mb", 0),
        swap_disk_mb=_lint(v, "swap_disk_mb", 0),
    )


# Specs of root-level list entries (images, flavors) by a fingerprint of the entry's
# children (tag, text): every commit hands over the whole root, and re-parsing
# hundreds of unchanged flavors per commit showed up in profiles. Specs are frozen.
_SPEC_CACHE: dict[tuple[object, ...], object] = {}
_SPEC_CACHE_MAX = 8192


def _cached(el: etree._Element, parse: Callable[[etree._Element], _T]) -> _T:
    if len(el) > 32:  # not a flat entry of a few leaves: parse it
        return parse(el)
    key: tuple[object, ...] = (parse,)
    for c in el:
        if len(c):  # nested content: the fingerprint would not cover it
            return parse(el)
        key += (c.tag, c.text)
    hit = _SPEC_CACHE.get(key)
    if hit is None:
        hit = parse(el)
        if len(_SPEC_CACHE) >= _SPEC_CACHE_MAX:
            _SPEC_CACHE.clear()
        _SPEC_CACHE[key] = hit
    return hit  # type: ignore[return-value]


def parse_desired(tree: etree._Element | None, root_entries: bool = True) -> Desired:
    """The desired state of ``tree``; ``root_entries=False`` skips images, flavors,
    networks and VIM connectors (only tenants and deployments are wanted)."""
    root = find_root(tree)
    desired = Desired()
    if root is None:
        return desired
    if root_entries:
        _parse_root_entries(root, desired)
    for tenant in _children(root, "tenants", "tenant"):
        tname = _text(tenant, "name")
        desired.tenants.add(tname)
        for dep in _children(tenant, "deployments", "deployment"):
            dspec = parse_deployment(tname, dep)
            desired.deployments[dspec.key] = dspec
    return desired


def _parse_root_entries(root: etree._Element, desired: Desired) -> None:
    for el in _children(root, "images", "image"):
        spec = _cached(el, _image)
        desired.images[spec.name] = spec
    for el in _children(root, "flavors", "flavor"):
        fl = _cached(el, _flavor)
        desired.flavors[fl.name] = fl
    for el in _children(root, "networks", "network"):
        subnets = tuple(
            SubnetSpec(
                name=_text(s, "name"),
                address=_text(s, "address"),
                netmask=_text(s, "netmask"),
                gateway=_text(s, "gateway"),
                dhcp=_bool(s, "dhcp"),
            )
            for s in _children(el, "subnet")
        )
        desired.networks[_text(el, "name")] = NetworkSpec(_text(el, "name"), subnets)
    for el in _children(root, "vim_connectors", "vim_connector"):
        desired.vims[_text(el, "name")] = (_text(el, "uri"), _bool(el, "default"))


def merge_pruned(current: Desired, before: Desired, after: Desired) -> Desired:
    """The datastore hands over pruned trees: only the root list entries (images,
    flavors, networks, VIMs), tenants and deployments the commit touched (old versions
    in ``before``, new in ``after``). An entry in neither tree was untouched and keeps
    its current desired state; one only in ``before`` is gone."""

    def merge(cur: dict[_K, _V], was: dict[_K, _V], now: dict[_K, _V]) -> dict[_K, _V]:
        if not was and not now:
            return cur
        out = dict(cur)  # a C-level copy; the old Desired stays as it was
        for k in was:
            out.pop(k, None)
        out.update(now)
        return out

    deployments = merge(current.deployments, before.deployments, after.deployments)
    tenants = (current.tenants - before.tenants) | after.tenants
    tenants |= {tenant for tenant, _ in deployments}
    return Desired(
        images=merge(current.images, before.images, after.images),
        flavors=merge(current.flavors, before.flavors, after.flavors),
        networks=merge(current.networks, before.networks, after.networks),
        vims=merge(current.vims, before.vims, after.vims),
        tenants=tenants,
        deployments=deployments,
    )
