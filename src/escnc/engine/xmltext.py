"""Reading leaves of escnc's configuration elements (the desired-state parsers)."""

from __future__ import annotations

from lxml import etree

from escnc.ns import ESC


def q(name: str) -> str:
    """Clark name of ``name`` in the escnc namespace."""
    return f"{{{ESC}}}{name}"


def text(el: etree._Element | None, name: str, default: str = "") -> str:
    """The stripped text of child leaf ``name``, or ``default`` when absent."""
    if el is None:
        return default
    value = el.findtext(q(name))
    return value.strip() if value is not None else default


def int_of(el: etree._Element | None, name: str, default: int) -> int:
    """Child leaf ``name`` as an int; ``default`` when absent or not a number."""
    try:
        return int(text(el, name, str(default)))
    except ValueError:
        return default
