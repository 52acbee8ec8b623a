"""Shared parsing for the datastore operations (target/source, options)."""

from __future__ import annotations

from lxml import etree

from escnc.errors import RpcError
from escnc.ns import NC, qn

DATASTORES = ("running", "candidate", "startup")


def child(request: etree._Element, name: str) -> etree._Element | None:
    return request.find(qn(NC, name))


def datastore_name(
    request: etree._Element, param: str, allowed: tuple[str, ...] = DATASTORES
) -> str:
    """Name of the datastore in <target>/<source>; url -> operation-not-supported."""
    holder = child(request, param)
    if holder is None:
        raise RpcError(
            "missing-element",
            f"<{param}> is required",
            type="protocol",
            info={"bad-element": param},
        )
    for el in holder:
        if not isinstance(el.tag, str):
            continue
        name = etree.QName(el).localname
        if name == "url":
            raise RpcError(
                "operation-not-supported",
                "the :url capability is not supported",
                type="protocol",
                info={"bad-element": "url"},
            )
        if name in allowed:
            return name
        raise RpcError(
            "bad-element",
            f"datastore {name!r} is not allowed in <{param}>",
            type="protocol",
            info={"bad-element": name},
        )
    raise RpcError(
        "missing-element",
        f"<{param}> names no datastore",
        type="protocol",
        info={"bad-element": param},
    )


def source_config(request: etree._Element, param: str = "source") -> str | etree._Element:
    """A datastore name or an inline <config> element."""
    holder = child(request, param)
    if holder is not None:
        cfg = holder.find(qn(NC, "config"))
        if cfg is not None:
            return cfg
    return datastore_name(request, param)


def enum_param(request: etree._Element, name: str, allowed: tuple[str, ...], default: str) -> str:
    el = child(request, name)
    if el is None:
        return default
    value = (el.text or "").strip()
    if value not in allowed:
        raise RpcError(
            "invalid-value",
            f"<{name}> must be one of {', '.join(allowed)}",
            type="protocol",
            info={"bad-element": name},
        )
    return value
