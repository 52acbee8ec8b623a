"""The root list entries a pruned validation tree needs.

Incremental validation hands yangson a private tree of the units a write touched
plus the root shell. Entries of the root lists (images, flavors, networks, VIM
connectors) are units of their own, so the tree holds only the touched ones; it
also needs

* every entry of a root list that is not entry-local (pruning.analyse: its
  entries' validity may depend on each other), and
* the entries whose key occurs as a text value in the tree (the targets of
  leafrefs from the touched deployments), transitively.

With those, yangson gives the same verdict as on the whole tree (see pruning.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from lxml import etree

from escnc.datastore.edit import ENTRY_CONTAINER, ESC_ROOT, NAME
from escnc.datastore.lxmltypes import sub_element
from escnc.ns import ESC

Lookup = Callable[[str, str], "etree._Element | None"]  # (entry tag, name) -> live entry


def needed_entries(
    pruned: etree._Element, data: etree._Element, local: set[str], lookup: Lookup
) -> None:
    """Copy into ``pruned`` the root list entries of ``data`` it needs (see above).

    ``local``: the entry tags of the entry-local root lists."""
    have: set[tuple[str, str]] = set()
    top = pruned.find(ESC_ROOT)
    if top is not None:
        for holder in top.iterchildren(*ENTRY_CONTAINER.values()):
            for ent in holder:
                if isinstance(ent.tag, str) and ent.tag in ENTRY_CONTAINER:
                    have.add((ent.tag, (ent.findtext(NAME) or "").strip()))
    whole = [tag for tag in ENTRY_CONTAINER if tag not in local]
    for tag in whole:
        src = data.find(f"{ESC_ROOT}/{ENTRY_CONTAINER[tag]}")
        if src is None:
            continue
        for ent in src.iterchildren(tag):
            name = (ent.findtext(NAME) or "").strip()
            if (tag, name) not in have:
                have.add((tag, name))
                _add(pruned, tag, ent)
    targets = [tag for tag in ENTRY_CONTAINER if tag in local]
    if not targets:
        return
    pending = _texts([pruned])
    seen: set[str] = set()
    while pending:
        value = pending.pop()
        if value in seen:
            continue
        seen.add(value)
        for tag in targets:
            if (tag, value) in have:
                continue
            found = lookup(tag, value)
            if found is None:
                continue
            have.add((tag, value))
            pending |= _texts([_add(pruned, tag, found)]) - seen


def _texts(elements: Iterable[etree._Element]) -> set[str]:
    return {str(t).strip() for el in elements for t in el.itertext()}


def _add(pruned: etree._Element, tag: str, ent: etree._Element) -> etree._Element:
    top = pruned.find(ESC_ROOT)
    if top is None:
        top = sub_element(pruned, ESC_ROOT, nsmap={None: ESC})
    ctag = ENTRY_CONTAINER[tag]
    holder = top.find(ctag)
    if holder is None:
        holder = etree.SubElement(top, ctag)
    copy = etree.fromstring(etree.tostring(ent))
    holder.append(copy)
    return copy
