"""The units of escnc's datastore tree: the root, each entry of a root list, each
tenant, each deployment. Validation and persistence work per unit (units.py splits
and assembles trees; the edit journal records which units an edit touched)."""

from __future__ import annotations

from lxml import etree

from escnc.ns import ESC, NC

TENANT = f"{{{ESC}}}tenant"
DEPLOYMENT = f"{{{ESC}}}deployment"
NAME = f"{{{ESC}}}name"

ESC_ROOT = f"{{{ESC}}}esc_datamodel"

UnitKey = tuple[str, ...]
ROOT_UNIT: UnitKey = ("r",)
# the lists directly below esc_datamodel (container local name -> entry tag); each
# entry is its own unit ("e", container, name), so a one-flavor edit of 10,000
# flavors serializes, stores and validates one flavor
ROOT_LISTS: dict[str, str] = {
    name: f"{{{ESC}}}{name[:-1]}" for name in ("vim_connectors", "images", "flavors", "networks")
}
CONTAINER_TAGS: dict[str, str] = {f"{{{ESC}}}{name}": name for name in ROOT_LISTS}
ENTRY_CONTAINER: dict[str, str] = {tag: f"{{{ESC}}}{name}" for name, tag in ROOT_LISTS.items()}


def unit_key(el: etree._Element) -> UnitKey:
    """The persistence/validation unit an element belongs to."""
    dep = ten = None
    node: etree._Element | None = el
    while node is not None:
        tag = node.tag
        if tag == DEPLOYMENT and dep is None:
            dep = node
        elif tag == TENANT:
            ten = node
            break
        elif tag in ENTRY_CONTAINER:
            key = root_entry_key(node)
            if key is not None:
                return key
        node = node.getparent()
    if ten is None:
        return ROOT_UNIT
    tname = ten.findtext(NAME) or ""
    if dep is None:
        return ("t", tname)
    return ("d", tname, dep.findtext(NAME) or "")


def root_entry_key(el: etree._Element) -> UnitKey | None:
    """("e", container, name) when ``el`` is an entry of a root list, else None."""
    parent = el.getparent()
    if parent is None or parent.tag != ENTRY_CONTAINER.get(el.tag):
        return None
    top = parent.getparent()
    if top is None or top.tag != ESC_ROOT:
        return None
    for name in el.iterchildren(NAME):  # findtext without ElementPath: per entry
        return ("e", CONTAINER_TAGS[parent.tag], (name.text or "").strip())
    return ("e", CONTAINER_TAGS[parent.tag], "")


def _root_entries_within(el: etree._Element) -> list[UnitKey]:
    tag = el.tag
    if tag in ENTRY_CONTAINER:
        key = root_entry_key(el)
        return [] if key is None else [key]
    if tag in CONTAINER_TAGS:
        parent = el.getparent()
        if parent is None or parent.tag != ESC_ROOT:
            return []
        name = CONTAINER_TAGS[tag]
        entry = ROOT_LISTS[name]
        return [("e", name, (ch.findtext(NAME) or "").strip()) for ch in el.iterchildren(entry)]
    if tag == ESC_ROOT:
        return [k for ch in el.iterchildren(*CONTAINER_TAGS) for k in _root_entries_within(ch)]
    if tag == f"{{{NC}}}data":
        return [k for ch in el.iterchildren(ESC_ROOT) for k in _root_entries_within(ch)]
    return []


def units_within(el: etree._Element) -> list[UnitKey]:
    """Units wholly inside ``el`` (root list entries, tenants and deployments below
    it, or itself)."""
    out: list[UnitKey] = _root_entries_within(el)
    if el.tag in (TENANT, DEPLOYMENT):
        out.append(unit_key(el))
    for ten in el.iter(TENANT):
        if ten is not el:
            out.append(("t", ten.findtext(NAME) or ""))
    for dep in el.iter(DEPLOYMENT):
        if dep is not el:
            out.append(unit_key(dep))
    return out
