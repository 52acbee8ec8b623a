"""Shared parsing for the datastore operations (target/source, options)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lxml import etree

from escnc.datastore.filters import XPathEnv
from escnc.datastore.xpath_names import index_for_directory
from escnc.datastore.xpath_rewrite import FilterBudget
from escnc.errors import RpcError
from escnc.ns import NC, WITH_DEFAULTS, qn

if TYPE_CHECKING:
    from escnc.rpc.dispatch import RpcContext

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


# parameters whose own children are NETCONF base elements too (datastore names, config)
_NESTED_BASE = frozenset({"target", "source"})


def _qualify_unqualified(request: etree._Element, allowed: frozenset[str]) -> None:
    """Read a parameter written without any namespace as the base element it names.

    RFC 6241 defines the parameters in the base namespace; clients such as Ansible's
    netconf_config write ``<config xmlns:xc="urn:...:base:1.0">`` (a prefix declared,
    the element itself unqualified), and ``<target><running/></target>`` likewise. An
    element with no namespace at all cannot mean anything else, so it is taken as the
    base element of that name (ConfD and netopeer2 do the same); elements in another
    namespace are still refused.
    """
    for el in request:
        if not isinstance(el.tag, str) or not _unqualified(el):
            continue
        tag = qn(NC, el.tag)
        if tag not in allowed:
            continue
        el.tag = tag
        if el.tag in _NESTED:
            for sub in el:
                if isinstance(sub.tag, str) and _unqualified(sub):
                    sub.tag = qn(NC, sub.tag)


def _unqualified(el: etree._Element) -> bool:
    return isinstance(el.tag, str) and not el.tag.startswith("{")


_NESTED = frozenset(qn(NC, n) for n in _NESTED_BASE)


def check_parameters(request: etree._Element) -> None:
    """Reject children a base operation does not define."""
    allowed = PARAMETERS.get(etree.QName(request).localname)
    if allowed is None:
        return
    _qualify_unqualified(request, allowed)
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
        if not q.namespace:
            raise RpcError(
                "unknown-element",
                f"<{etree.QName(request).localname}> has no parameter {q.localname!r} "
                "(an element without namespace)",
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


def xpath_env(ctx: RpcContext) -> XPathEnv:
    """One request's XPath filter environment: ConfD-style names resolved against the
    modules escnc serves, and the filter_max_nodes / filter_max_seconds budget."""
    settings = ctx.services.settings
    yang_dir = getattr(ctx.services.schema, "yang_dir", None)
    return XPathEnv(
        names=index_for_directory(yang_dir) if yang_dir is not None else None,
        budget=FilterBudget(settings.filter_max_nodes, settings.filter_max_seconds),
    )
