"""Splitting a <data> tree into units and assembling trees from units.

Units: ``("r",)`` the <data> root without tenant entries and without the entries
of the root lists, ``("e", container, name)`` one entry of a root list (images,
flavors, networks, VIM connectors: edit.ROOT_LISTS), ``("t", tenant)`` a tenant
without its deployment entries, ``("d", tenant, deployment)`` one deployment. Each
is stored and compared as bytes, so a one-entry edit touches one or two units.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lxml import etree

from escnc.datastore.edit import (
    CONTAINER_TAGS,
    DEPLOYMENT,
    NAME,
    ROOT_LISTS,
    ROOT_UNIT,
    TENANT,
    UnitKey,
)
from escnc.datastore.lxmltypes import make_element, shallow_copy, sub_element
from escnc.ns import ESC, NC

DATA = f"{{{NC}}}data"
_ROOT = f"{{{ESC}}}esc_datamodel"
_TENANTS = f"{{{ESC}}}tenants"
_DEPLOYMENTS = f"{{{ESC}}}deployments"
_LIST_PARENT = {TENANT: _TENANTS, DEPLOYMENT: _DEPLOYMENTS}
_PARSER = etree.XMLParser(remove_blank_text=True, resolve_entities=False, huge_tree=True)


def empty_data() -> etree._Element:
    return make_element(DATA, nsmap={None: NC})


def entry_container(data: etree._Element, name: str) -> etree._Element | None:
    return data.find(f"{_ROOT}/{{{ESC}}}{name}")


def find_unit(data: etree._Element, key: UnitKey) -> etree._Element | None:
    if key == ROOT_UNIT:
        return data
    if key[0] == "e":
        holder = entry_container(data, key[1])
        return None if holder is None else _child_by_name(holder, ROOT_LISTS[key[1]], key[2])
    tenants = data.find(f"{_ROOT}/{_TENANTS}")
    if tenants is None:
        return None
    ten = _child_by_name(tenants, TENANT, key[1])
    if ten is None or key[0] == "t":
        return ten
    deps = ten.find(_DEPLOYMENTS)
    return None if deps is None else _child_by_name(deps, DEPLOYMENT, key[2])


def find_units(
    data: etree._Element, keys: Iterable[UnitKey]
) -> dict[UnitKey, etree._Element | None]:
    """:func:`find_unit` for many keys in one pass over the tenant (and deployment)
    lists: an edit that adds N tenants must not scan the list N times."""
    out: dict[UnitKey, etree._Element | None] = {}
    tenants = data.find(f"{_ROOT}/{_TENANTS}")
    by_tenant: dict[str, etree._Element] | None = None
    deps: dict[str, dict[str, etree._Element]] = {}
    entries: dict[str, dict[str, etree._Element]] = {}
    for key in keys:
        if key == ROOT_UNIT:
            out[key] = data
            continue
        if key[0] == "e":
            emap = entries.get(key[1])
            if emap is None:
                emap = {}
                holder = entry_container(data, key[1])
                if holder is not None:
                    for ch in holder.iterchildren(ROOT_LISTS[key[1]]):
                        emap.setdefault((ch.findtext(NAME) or "").strip(), ch)
                entries[key[1]] = emap
            out[key] = emap.get(key[2])
            continue
        if tenants is None:
            out[key] = None
            continue
        if by_tenant is None:
            by_tenant = {}
            for ch in tenants.iterchildren(TENANT):
                by_tenant.setdefault(ch.findtext(NAME) or "", ch)
        ten = by_tenant.get(key[1])
        if ten is None or key[0] == "t":
            out[key] = ten
            continue
        dmap = deps.get(key[1])
        if dmap is None:
            dmap = {}
            holder = ten.find(_DEPLOYMENTS)
            if holder is not None:
                for ch in holder.iterchildren(DEPLOYMENT):
                    dmap.setdefault(ch.findtext(NAME) or "", ch)
            deps[key[1]] = dmap
        out[key] = dmap.get(key[2])
    return out


def _child_by_name(parent: etree._Element, tag: str, name: str) -> etree._Element | None:
    for ch in parent.iterchildren(tag):
        if (ch.findtext(NAME) or "").strip() == name:
            return ch
    return None


def shell(el: etree._Element, key: UnitKey) -> bytes:
    """Serialized unit: the element without the entries of the units below it."""
    if key[0] in ("d", "e"):
        return etree.tostring(el)
    skip = DEPLOYMENT if key[0] == "t" else TENANT
    return etree.tostring(_copy_without(el, skip, key[0] == "r"))


def _copy_without(el: etree._Element, skip: str, root: bool = False) -> etree._Element:
    new = shallow_copy(el)
    for ch in el:
        if not isinstance(ch.tag, str) or ch.tag == skip:
            continue
        if (ch.tag in (_TENANTS, _DEPLOYMENTS) and ch.tag == _LIST_PARENT[skip]) or (
            root and ch.tag in CONTAINER_TAGS and el.tag == _ROOT
        ):
            # these containers hold only the skipped list(s): copy them empty (O(1),
            # not O(n)); the schema allows nothing else in them
            new.append(shallow_copy(ch))
        elif ch.tag in (_ROOT, _TENANTS, _DEPLOYMENTS, TENANT):
            new.append(_copy_without(ch, skip, root))
        else:
            new.append(_deep(ch))
    return new


def _deep(el: etree._Element) -> etree._Element:
    import copy

    return copy.deepcopy(el)


def _elements(parent: etree._Element) -> list[etree._Element]:
    return [ch for ch in parent if isinstance(ch.tag, str)]


def split_units(data: etree._Element) -> dict[UnitKey, etree._Element] | None:
    """``all_units``, or None unless splitting ``data`` into units loses nothing:
    one esc_datamodel, one tenants and one deployments container per level, only
    entries (with unique names) inside those, no tenant/deployment entries
    elsewhere on the way. Units of such a tree that equal running's need no new
    validation; anything else gets the whole-tree check."""
    out: dict[UnitKey, etree._Element] = {ROOT_UNIT: data}
    top = _elements(data)
    if sum(ch.tag == _ROOT for ch in top) > 1 or any(ch.tag == TENANT for ch in top):
        return None
    root = data.find(_ROOT)
    if root is None:
        return out
    below = _elements(root)
    if sum(ch.tag == _TENANTS for ch in below) > 1 or any(ch.tag == TENANT for ch in below):
        return None
    for cname, etag in ROOT_LISTS.items():
        ctag = f"{{{ESC}}}{cname}"
        if any(ch.tag == etag for ch in below) or sum(ch.tag == ctag for ch in below) > 1:
            return None
        holder = root.find(ctag)
        if holder is None:
            continue
        for ent in _elements(holder):
            ename = ent.findtext(NAME)
            if ent.tag != etag or ename is None or ("e", cname, ename.strip()) in out:
                return None
            out[("e", cname, ename.strip())] = ent
    tenants = root.find(_TENANTS)
    if tenants is None:
        return out
    for ten in _elements(tenants):
        tname = ten.findtext(NAME)
        if ten.tag != TENANT or tname is None or ("t", tname) in out:
            return None
        out[("t", tname)] = ten
        parts = _elements(ten)
        if sum(ch.tag == _DEPLOYMENTS for ch in parts) > 1 or any(
            ch.tag in (TENANT, DEPLOYMENT) for ch in parts
        ):
            return None
        deps = ten.find(_DEPLOYMENTS)
        if deps is None:
            continue
        before = len(out)
        n = 0
        for dep in deps.iterchildren(DEPLOYMENT):
            dname = dep.findtext(NAME)
            if dname is None:
                return None
            out[("d", tname, dname)] = dep
            n += 1
        if len(out) - before != n:  # a duplicate name
            return None
        if n != len(deps) and n != len(_elements(deps)):  # something else in there
            return None
    return out


def all_units(data: etree._Element) -> dict[UnitKey, etree._Element]:
    out: dict[UnitKey, etree._Element] = {ROOT_UNIT: data}
    root = data.find(_ROOT)
    if root is None:
        return out
    for holder in root.iterchildren(*CONTAINER_TAGS):
        cname = CONTAINER_TAGS[str(holder.tag)]
        for ent in holder.iterchildren(ROOT_LISTS[cname]):
            out[("e", cname, (ent.findtext(NAME) or "").strip())] = ent
    tenants = root.find(_TENANTS)
    if tenants is None:
        return out
    for ten in tenants.iterchildren(TENANT):
        tname = ten.findtext(NAME) or ""
        out[("t", tname)] = ten
        deps = ten.find(_DEPLOYMENTS)
        if deps is not None:
            for dep in deps.iterchildren(DEPLOYMENT):
                out[("d", tname, dep.findtext(NAME) or "")] = dep
    return out


def assemble(
    units: Mapping[UnitKey, bytes], keys: Iterable[UnitKey] | None = None
) -> etree._Element:
    """Build a <data> tree from unit bytes (all units, or the root plus ``keys``).

    Order follows the iteration order of ``keys``/``units`` (callers pass them
    sorted by sequence). Deployments whose tenant is not listed bring its shell.
    """
    root_bytes = units.get(ROOT_UNIT)
    data = etree.fromstring(root_bytes, _PARSER) if root_bytes else empty_data()
    wanted = list(units if keys is None else keys)
    tenants_el = data.find(f"{_ROOT}/{_TENANTS}")
    placed: dict[str, etree._Element] = {}

    def tenant(name: str) -> etree._Element | None:
        nonlocal tenants_el
        if name in placed:
            return placed[name]
        raw = units.get(("t", name))
        if raw is None:
            return None
        if tenants_el is None:
            root = data.find(_ROOT)
            if root is None:
                root = sub_element(data, _ROOT, nsmap={None: ESC})
            tenants_el = etree.SubElement(root, _TENANTS)
        el = etree.fromstring(raw, _PARSER)
        tenants_el.append(el)
        placed[name] = el
        return el

    holders: dict[str, etree._Element] = {}
    for key in wanted:
        if key[0] == "t":
            tenant(key[1])
        elif key[0] == "e":
            raw = units.get(key)
            if raw is None:
                continue
            holder = holders.get(key[1])
            if holder is None:
                top = data.find(_ROOT)
                if top is None:
                    top = sub_element(data, _ROOT, nsmap={None: ESC})
                holder = top.find(f"{{{ESC}}}{key[1]}")
                if holder is None:
                    holder = etree.SubElement(top, f"{{{ESC}}}{key[1]}")
                holders[key[1]] = holder
            holder.append(etree.fromstring(raw, _PARSER))
    for key in wanted:
        if key[0] != "d":
            continue
        raw = units.get(key)
        ten = tenant(key[1])
        if raw is None or ten is None:
            continue
        deps = ten.find(_DEPLOYMENTS)
        if deps is None:
            deps = etree.SubElement(ten, _DEPLOYMENTS)
        deps.append(etree.fromstring(raw, _PARSER))
    return data
