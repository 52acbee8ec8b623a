"""NACM ``path`` values (RFC 8341 node-instance-identifier) and error paths.

A path is a list of steps ``/prefix:name[prefix:key='value']...``; prefixes are
resolved with the XML namespace declarations in scope of the ``<path>`` element,
falling back to module names and module prefixes (``/escnc:esc_datamodel`` and
``/esc:esc_datamodel`` both work without an ``xmlns:esc``). ``/`` alone matches
every data node.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from lxml import etree


class BadPath(ValueError):
    """A path value NACM cannot use."""


@dataclass(frozen=True)
class Step:
    tag: str  # Clark name
    # (Clark name of the key leaf, value): every one must equal the entry's leaf
    preds: tuple[tuple[str, str], ...] = ()

    def matches(self, el: etree._Element) -> bool:
        if el.tag != self.tag:
            return False
        return all((el.findtext(key) or "").strip() == value for key, value in self.preds)


_STEP = re.compile(r"\s*/\s*([A-Za-z_][\w.\-]*(?::[A-Za-z_][\w.\-]*)?)")
_PRED = re.compile(
    r"\s*\[\s*([A-Za-z_][\w.\-]*(?::[A-Za-z_][\w.\-]*)?)\s*=\s*(?:'([^']*)'|\"([^\"]*)\")\s*\]"
)


def parse_path(
    text: str,
    nsmap: Mapping[str | None, str],
    modules: Mapping[str, str],
) -> tuple[Step, ...]:
    """Steps of ``text``; ``modules`` maps module names and prefixes to namespaces.

    An unprefixed name takes the namespace of the step before it (the first step
    must be prefixed)."""
    text = text.strip()
    if text == "/":
        return ()
    steps: list[Step] = []
    pos = 0
    ns: str | None = None
    while pos < len(text):
        m = _STEP.match(text, pos)
        if m is None:
            raise BadPath(f"cannot parse {text!r} at offset {pos}")
        ns, tag = _qualify(m.group(1), nsmap, modules, ns, text)
        pos = m.end()
        preds: list[tuple[str, str]] = []
        while True:
            p = _PRED.match(text, pos)
            if p is None:
                break
            _, key = _qualify(p.group(1), nsmap, modules, ns, text)
            preds.append((key, p.group(2) if p.group(2) is not None else p.group(3)))
            pos = p.end()
        steps.append(Step(tag, tuple(preds)))
        if pos < len(text) and text[pos:].strip() and not text[pos:].lstrip().startswith("/"):
            raise BadPath(f"cannot parse {text!r} at offset {pos}")
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return tuple(steps)


def _qualify(
    name: str,
    nsmap: Mapping[str | None, str],
    modules: Mapping[str, str],
    current: str | None,
    text: str,
) -> tuple[str, str]:
    prefix, _, local = name.rpartition(":")
    if not prefix:
        if current is None:
            raise BadPath(f"the first step of {text!r} needs a prefix")
        return current, f"{{{current}}}{local}"
    ns = nsmap.get(prefix) or modules.get(prefix)
    if ns is None:
        raise BadPath(f"unknown prefix {prefix!r} in {text!r}")
    return ns, f"{{{ns}}}{local}"
