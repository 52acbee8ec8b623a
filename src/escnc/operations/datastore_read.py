"""get and get-config (with :xpath filters and :with-defaults)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from lxml import etree

from escnc.datastore import defaults, filters
from escnc.datastore.schema import Schema, SNode
from escnc.errors import RpcError
from escnc.ns import NC, WITH_DEFAULTS, qn
from escnc.operations._common import checked, child, datastore_name, xpath_env

if TYPE_CHECKING:
    from escnc.rpc.dispatch import RpcContext, RpcRegistry
    from escnc.services import Services

CAPABILITIES = [
    "urn:ietf:params:netconf:capability:xpath:1.0",
    "urn:ietf:params:netconf:capability:with-defaults:1.0"
    "?basic-mode=explicit&also-supported=report-all,trim",
]


def register(registry: RpcRegistry, services: Services) -> None:
    registry.register(NC, "get", checked(lambda ctx, req: get(ctx, req)))
    registry.register(NC, "get-config", checked(lambda ctx, req: get_config(ctx, req)))
    for cap in CAPABILITIES:
        if cap not in services.capabilities:
            services.capabilities.append(cap)


def key_resolver(schema: Schema) -> filters.KeyResolver:
    """Key child tags of a data element, looked up by its position in the schema."""
    cache: dict[tuple[str, ...], list[str]] = {}
    data_tag = qn(NC, "data")

    def keys(el: etree._Element) -> list[str]:
        path: list[str] = []
        node: etree._Element | None = el
        while node is not None and node.tag != data_tag:
            path.append(node.tag)
            node = node.getparent()
        sig = tuple(reversed(path))
        if sig not in cache:
            sn: SNode | None = schema.root
            for tag in sig:
                sn = sn.child(tag) if sn is not None else None
            cache[sig] = [f"{{{sn.ns}}}{k}" for k in sn.keys] if sn is not None else []
        return cache[sig]

    return keys


def merge_into(dst: etree._Element, src: etree._Element, sn: SNode | None) -> None:
    """Merge ``src``'s children into ``dst`` (same qname; list entries by key)."""
    for ch in list(src):
        if not isinstance(ch.tag, str):
            continue
        csn = sn.child(ch.tag) if sn is not None else None
        match = None
        if csn is None or csn.kind in ("container",):
            match = dst.find(ch.tag)
        elif csn.kind == "list":
            key = [ch.findtext(f"{{{csn.ns}}}{k}") for k in csn.keys]
            for cand in dst.iterchildren(ch.tag):
                if [cand.findtext(f"{{{csn.ns}}}{k}") for k in csn.keys] == key:
                    match = cand
                    break
        elif csn.kind == "leaf":
            match = dst.find(ch.tag)
            if match is not None:
                match.text = ch.text
                continue
        if match is None:
            dst.append(copy.deepcopy(ch))
        else:
            merge_into(match, ch, csn)


def _apply_filter(
    ctx: RpcContext,
    filt: etree._Element,
    tops: list[etree._Element],
    env: filters.XPathEnv | None = None,
) -> etree._Element:
    """Filter top-level data nodes (only read) into a new <data> holding copies."""
    keys = key_resolver(ctx.services.schema)
    ftype = filt.get("type", "subtree")
    if ftype == "subtree":
        return filters.filter_nodes(tops, filt, keys)
    if ftype == "xpath":
        select = filt.get("select")
        if select is None:
            raise RpcError(
                "missing-attribute",
                "xpath filter needs a select attribute",
                type="protocol",
                info={"bad-attribute": "select", "bad-element": "filter"},
            )
        return filters.xpath_nodes(tops, select, filt.nsmap, keys, env or xpath_env(ctx))
    raise RpcError(
        "bad-attribute",
        f"unknown filter type {ftype!r}",
        type="protocol",
        info={"bad-attribute": "type", "bad-element": "filter"},
    )


def filter_data(ctx: RpcContext, filt: etree._Element, data: etree._Element) -> etree._Element:
    """Apply a get/get-config ``<filter>`` to a complete ``<data>`` reply (used by
    access control, which prunes before a content-matching filter runs)."""
    return _apply_filter(ctx, filt, _tops(data))


def _tops(el: etree._Element) -> list[etree._Element]:
    return [d for d in el if isinstance(d.tag, str)]


def _wd_mode(request: etree._Element) -> str | None:
    wd = request.find(qn(WITH_DEFAULTS, "with-defaults"))
    return None if wd is None else (wd.text or "").strip()


def _with_defaults(
    ctx: RpcContext, request: etree._Element, data: etree._Element, config_only: bool
) -> etree._Element:
    wd = request.find(qn(WITH_DEFAULTS, "with-defaults"))
    if wd is None:
        return data
    mode = (wd.text or "").strip()
    root = ctx.services.schema.root
    if mode == "report-all":
        defaults.report_all(data, root, config_only)
    elif mode == "trim":
        defaults.trim(data, root)
    elif mode != "explicit":
        raise RpcError(
            "invalid-value",
            f"with-defaults mode {mode!r} is not supported",
            type="protocol",
            info={"bad-element": "with-defaults"},
        )
    return data


def get_config(ctx: RpcContext, request: etree._Element) -> etree._Element:
    name = datastore_name(request, "source")
    store = ctx.services.datastore
    filt = child(request, "filter")
    if filt is not None and _wd_mode(request) in ("report-all", "trim"):
        # defaults must be in place (or trimmed) before the filter looks at them
        with store.reading(name) as tree:
            data = copy.deepcopy(tree)
        data = _with_defaults(ctx, request, data, config_only=True)
        return _apply_filter(ctx, filt, _tops(data))
    with store.reading(name) as tree:
        # with a filter, straight from the live tree: only the selected nodes are copied
        data = copy.deepcopy(tree) if filt is None else _apply_filter(ctx, filt, _tops(tree))
    return _with_defaults(ctx, request, data, config_only=True)


def get(ctx: RpcContext, request: etree._Element) -> etree._Element:
    """Running config merged with every state provider's nodes, then filtered.

    With a filter (and no report-all/trim), running is filtered under the read
    lock without copying it, each provider's nodes are filtered likewise, and the
    (small) results are merged. This equals filter(merge(...)) because config and
    state data never share a list entry or a leaf's parent with content-match
    leaves (``esc_datamodel/opdata`` is a separate config-false subtree).
    """
    store = ctx.services.datastore
    schema = ctx.services.schema
    filt = child(request, "filter")
    env = xpath_env(ctx)  # one XPath budget for the whole request
    if filt is not None and _wd_mode(request) not in ("report-all", "trim"):
        with store.reading("running") as tree:
            data = _apply_filter(ctx, filt, _tops(tree), env)
        for provider in list(ctx.services.state_providers):
            nodes = [n for n in provider() if isinstance(n.tag, str)]
            if nodes:
                merge_into(data, _apply_filter(ctx, filt, nodes, env), schema.root)
        return _with_defaults(ctx, request, data, config_only=False)
    with store.reading("running") as tree:
        data = copy.deepcopy(tree)
    for provider in list(ctx.services.state_providers):
        for node in provider():
            holder = etree.Element(qn(NC, "data"))
            holder.append(copy.deepcopy(node))
            merge_into(data, holder, schema.root)
    data = _with_defaults(ctx, request, data, config_only=False)
    return data if filt is None else _apply_filter(ctx, filt, _tops(data), env)
