"""Shared parsing for the datastore operations (target/source, options)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lxml import etree

from escnc.errors import RpcError
from escnc.ns import NC, WITH_DEFAULTS, qn

DATASTORES = ("running", "candidate", "startup")

# Input parameters of the base operations (ietf-netconf YANG, plus RFC 6243's
# with-defaults where it augments). Anything else is unknown-element (a name the
# base namespace does not have there) or unknown-namespace (RFC 6241 Appendix A).
_WD = qn(WITH_DEFAULTS, "with-defaults")
PARAMETERS: dict[str, frozenset[str]] = {
    name: frozenset(qn(NC, p) if ":" not in p and "{" not in p else p for p in params)
    for name, params in {
        "get": ("filter", _WD),
        "get-config": ("source", "filter", _WD),
        "edit-config": (
            "target",
            "default-operation",
            "test-option",
            "error-option",
            "config",
            "url",
        ),
        "copy-config": ("target", "source", _WD),
        "delete-config": ("target",),
        "lock": ("target",),
        "unlock": ("target",),
        "close-session": (),
        "kill-session": ("session-id",),
        "commit": ("confirmed", "confirm-timeout", "persist", "persist-id"),
        "discard-changes": (),
        "cancel-commit": ("persist-id",),
        "validate": ("source",),
    }.items()
}


def check_parameters(request: etree._Element) -> None:
    """Reject children a base operation does not define."""
    allowed = PARAMETERS.get(etree.QName(request).localname)
    if allowed is None:
        return
    for el in request:
        if not isinstance(el.tag, str) or el.tag in allowed:
            continue
        q = etree.QName(el)
        known_ns = q.namespace == NC or any(a.startswith(f"{{{q.namespace}}}") for a in allowed)
        if known_ns:
            raise RpcError(
                "unknown-element",
                f"<{etree.QName(request).localname}> has no parameter {q.localname!r}",
                type="protocol",
                info={"bad-element": q.localname},
            )
        raise RpcError(
            "unknown-namespace",
            f"unexpected namespace {q.namespace!r} in <{etree.QName(request).localname}>",
            type="protocol",
            info={"bad-element": q.localname, "bad-namespace": q.namespace or ""},
        )


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


def checked(handler: Callable[[Any, etree._Element], Any]) -> Callable[[Any, etree._Element], Any]:
    """``handler`` behind :func:`check_parameters` (for registering base operations)."""

    def run(ctx: Any, request: etree._Element) -> Any:
        check_parameters(request)
        return handler(ctx, request)

    run.__name__ = getattr(handler, "__name__", "handler")
    return run
