"""RFC 6243 with-defaults on lxml trees (basic-mode explicit; report-all, trim).

The datastore stores exactly what clients set (explicit), so ``explicit`` is the
identity; ``report-all`` adds default leaves to existing containers and list
entries (and non-presence containers that would only hold defaults); ``trim``
drops leaves equal to their default.
"""

from __future__ import annotations

from lxml import etree

from escnc.datastore.schema import SNode


def report_all(data: etree._Element, root: SNode, config_only: bool = False) -> None:
    for el in data:
        sn = root.child(el.tag) if isinstance(el.tag, str) else None
        if sn is not None:
            _add(el, sn, config_only)


def _add(el: etree._Element, sn: SNode, config_only: bool) -> None:
    if sn.kind not in ("container", "list"):
        return
    present = {ch.tag for ch in el if isinstance(ch.tag, str)}
    for tag, child in sn.children.items():
        if config_only and not child.config:
            continue
        if child.kind == "leaf" and child.default is not None and tag not in present:
            etree.SubElement(el, tag).text = child.default
        elif child.kind == "container" and not child.presence and tag not in present:
            sub = etree.Element(tag)
            _add(sub, child, config_only)
            if len(sub):
                el.append(sub)
    for ch in el:
        if isinstance(ch.tag, str):
            below = sn.child(ch.tag)
            if below is not None:
                _add(ch, below, config_only)


def trim(data: etree._Element, root: SNode) -> None:
    for el in data:
        sn = root.child(el.tag) if isinstance(el.tag, str) else None
        if sn is not None:
            _trim(el, sn)


def _trim(el: etree._Element, sn: SNode) -> None:
    for ch in list(el):
        if not isinstance(ch.tag, str):
            continue
        child = sn.child(ch.tag)
        if child is None:
            continue
        if (
            child.kind == "leaf"
            and child.default is not None
            and (ch.text or "") == child.default
            and child.name not in sn.keys
        ):
            el.remove(ch)
        elif child.kind in ("container", "list"):
            _trim(ch, child)
