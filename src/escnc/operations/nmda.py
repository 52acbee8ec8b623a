"""RFC 8526 (NETCONF for NMDA): get-data and edit-data.

get-data reads one datastore: ``ds:running``, ``ds:candidate``, ``ds:startup``
(configuration only) or ``ds:operational`` (running plus every state provider,
the same tree ``get`` filters). The reply is built in this order: the datastore's
data, NACM read pruning (before any content filter, as for get), with-defaults,
the subtree or XPath filter (the same code as get's, with its names and budget),
``config-filter``, then ``max-depth`` (counted from the top of the data tree).
The 'origin' feature is not supported. edit-data writes ``ds:running`` or
``ds:candidate`` through edit-config, so it has its semantics and checks.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from lxml import etree

from escnc.datastore import defaults, filters
from escnc.datastore.schema import SNode
from escnc.errors import RpcError
from escnc.ns import NC, qn
from escnc.operations import datastore_read, datastore_write
from escnc.operations._common import xpath_env

if TYPE_CHECKING:
    from escnc.rpc.dispatch import RpcContext, RpcRegistry
    from escnc.services import Services

NMDA = "urn:ietf:params:xml:ns:yang:ietf-netconf-nmda"
DS = "urn:ietf:params:xml:ns:yang:ietf-datastores"
CONVENTIONAL = ("running", "candidate", "startup")
READABLE = (*CONVENTIONAL, "operational")
_GET_DATA_PARAMS = frozenset(
    {"datastore", "subtree-filter", "xpath-filter", "config-filter", "max-depth",
     "with-defaults"}
)
_EDIT_DATA_PARAMS = frozenset({"datastore", "default-operation", "config", "url"})


def register(registry: RpcRegistry, services: Services) -> None:
    registry.register(NMDA, "get-data", get_data)
    registry.register(NMDA, "edit-data", edit_data)


def _param(request: etree._Element, name: str) -> etree._Element | None:
    return request.find(qn(NMDA, name))


def _check_params(request: etree._Element, allowed: frozenset[str]) -> None:
    op = etree.QName(request).localname
    for el in request:
        if not isinstance(el.tag, str):
            continue
        q = etree.QName(el)
        if q.namespace != NMDA or q.localname not in allowed:
            why = ("the 'origin' feature is not supported"
                   if q.localname in ("origin-filter", "negated-origin-filter", "with-origin")
                   else "no such parameter")
            raise RpcError(
                "unknown-element", f"<{op}> has no parameter {q.localname!r} ({why})",
                type="protocol", info={"bad-element": q.localname},
            )


def datastore(request: etree._Element, allowed: tuple[str, ...]) -> str:
    """The datastore identity in <datastore> (``ds:running``), checked against ``allowed``."""
    el = _param(request, "datastore")
    if el is None:
        raise RpcError("missing-element", "<datastore> is required", type="protocol",
                       info={"bad-element": "datastore"})
    text = (el.text or "").strip()
    prefix, _, name = text.rpartition(":")
    ns = el.nsmap.get(prefix) if prefix else DS  # unprefixed: taken as ietf-datastores
    if ns != DS or name not in allowed:
        raise RpcError(
            "invalid-value",
            f"datastore {text!r} is not supported here (supported: "
            f"{', '.join('ds:' + a for a in allowed)})",
            info={"bad-element": "datastore"},
        )
    return name


def _data_of(ctx: RpcContext, name: str) -> etree._Element:
    """A private copy of the datastore's complete data as a <data> element."""
    store = ctx.services.datastore
    with store.reading("running" if name == "operational" else name) as tree:
        data = copy.deepcopy(tree)
    if name == "operational":
        for provider in list(ctx.services.state_providers):
            for node in provider():
                holder = etree.Element(qn(NC, "data"))
                holder.append(copy.deepcopy(node))
                datastore_read.merge_into(data, holder, ctx.services.schema.root)
    nacm = getattr(ctx.services, "nacm", None)
    if nacm is not None:
        from escnc.operations.authorize import principal

        who = principal(ctx)
        if nacm.view(who) is not None:
            nacm.prune(who, data)
    return data


def _keep_config(el: etree._Element, sn: SNode | None, inherited: bool, want: bool) -> bool:
    """Filter ``el``'s subtree in place by the config property; True: keep ``el``.

    ``want`` True keeps config nodes (dropping state below them); False keeps state
    nodes, and config nodes only as their ancestors (with list keys).
    """
    here = sn.config if sn is not None else inherited
    if not here:
        return not want  # a config false subtree is state throughout
    kept = False
    for ch in list(el):
        if not isinstance(ch.tag, str):
            continue
        csn = sn.child(ch.tag) if sn is not None else None
        if _keep_config(ch, csn, here, want):
            kept = True
        elif want or not (sn is not None and etree.QName(ch).localname in sn.keys):
            el.remove(ch)
    return want or kept


def config_filter(data: etree._Element, root: SNode, want: bool) -> None:
    for top in list(data):
        if not isinstance(top.tag, str):
            continue
        # nodes no YANG module of the data model describes come from state providers
        if not _keep_config(top, root.child(top.tag), False, want):
            data.remove(top)


def max_depth(data: etree._Element, root: SNode, depth: int) -> None:
    def cut(el: etree._Element, sn: SNode | None, level: int) -> None:
        for ch in list(el):
            if not isinstance(ch.tag, str):
                continue
            csn = sn.child(ch.tag) if sn is not None else None
            if level >= depth and not (sn is not None and etree.QName(ch).localname in sn.keys):
                el.remove(ch)
            else:
                cut(ch, csn, level + 1)

    for top in data:
        if isinstance(top.tag, str):
            cut(top, root.child(top.tag), 1)


def _depth(request: etree._Element) -> int | None:
    el = _param(request, "max-depth")
    if el is None or (el.text or "").strip() == "unbounded":
        return None
    text = (el.text or "").strip()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise RpcError("invalid-value", f"max-depth must be 1..65535 or unbounded, not {text!r}",
                       info={"bad-element": "max-depth"})
    return int(text)


def _boolean(request: etree._Element, name: str) -> bool | None:
    el = _param(request, name)
    if el is None:
        return None
    text = (el.text or "").strip()
    if text not in ("true", "false"):
        raise RpcError("invalid-value", f"<{name}> must be true or false, not {text!r}",
                       info={"bad-element": name})
    return text == "true"


def get_data(ctx: RpcContext, request: etree._Element) -> etree._Element:
    _check_params(request, _GET_DATA_PARAMS)
    name = datastore(request, READABLE)
    subtree, xpath = _param(request, "subtree-filter"), _param(request, "xpath-filter")
    if subtree is not None and xpath is not None:
        raise RpcError("bad-element", "give subtree-filter or xpath-filter, not both",
                       type="protocol", info={"bad-element": "xpath-filter"})
    depth = _depth(request)
    config = _boolean(request, "config-filter")
    schema = ctx.services.schema
    data = _data_of(ctx, name)
    wd = _param(request, "with-defaults")
    if wd is not None:
        mode = (wd.text or "").strip()
        if mode == "report-all":
            defaults.report_all(data, schema.root, config_only=name != "operational")
        elif mode == "trim":
            defaults.trim(data, schema.root)
        elif mode != "explicit":
            raise RpcError("invalid-value", f"with-defaults mode {mode!r} is not supported",
                           info={"bad-element": "with-defaults"})
    keys = datastore_read.key_resolver(schema)
    tops = [d for d in data if isinstance(d.tag, str)]
    if subtree is not None:
        data = filters.filter_nodes(tops, subtree, keys)
    elif xpath is not None:
        data = filters.xpath_nodes(tops, (xpath.text or "").strip(), xpath.nsmap, keys,
                                   xpath_env(ctx))
    if config is not None:
        config_filter(data, schema.root, config)
    if depth is not None:
        max_depth(data, schema.root, depth)
    out = etree.Element(qn(NMDA, "data"), nsmap={None: NMDA})  # type: ignore[dict-item]
    for el in list(data):
        out.append(el)
    return out


def edit_data(ctx: RpcContext, request: etree._Element) -> None:
    """edit-data on ds:running or ds:candidate, as the equivalent edit-config."""
    _check_params(request, _EDIT_DATA_PARAMS)
    name = datastore(request, ("running", "candidate"))
    if _param(request, "url") is not None:
        raise RpcError("operation-not-supported", "the :url capability is not supported",
                       type="protocol", info={"bad-element": "url"})
    config = _param(request, "config")
    if config is None:
        raise RpcError("missing-element", "<config> is required", type="protocol",
                       info={"bad-element": "config"})
    edit = etree.Element(qn(NC, "edit-config"))
    etree.SubElement(etree.SubElement(edit, qn(NC, "target")), qn(NC, name))
    op = _param(request, "default-operation")
    if op is not None:
        etree.SubElement(edit, qn(NC, "default-operation")).text = op.text
    nc_config = etree.SubElement(edit, qn(NC, "config"))
    for el in list(config):
        nc_config.append(copy.deepcopy(el))
    datastore_write.edit_config(ctx, edit)
