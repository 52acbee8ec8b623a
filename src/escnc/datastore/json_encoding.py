"""RFC 7951 JSON encoding of what a NETCONF server sends: data, RPC output, errors
and notifications (the shapes RFC 8040 gives them).

Data and RPC output are encoded by yangson from the served modules, so member names
are module-qualified where the module changes, lists are arrays even with one entry
and numbers, booleans and ``empty`` leaves have their JSON types. A subtree yangson
cannot place (an element of a module escnc does not serve, say) falls back to a
schema-less encoding that still qualifies names by module but keeps values as strings.
"""

from __future__ import annotations

import json
from typing import Any

from lxml import etree
from yangson import DataModel
from yangson import exceptions as yx
from yangson.instance import RootNode
from yangson.instvalue import ObjectValue
from yangson.schemanode import InternalNode

from escnc.datastore.schema import Schema
from escnc.ns import NC

NOTIF_NS = "urn:ietf:params:xml:ns:netconf:notification:1.0"
_ERROR_FIELDS = ("error-type", "error-tag", "error-app-tag", "error-path", "error-message")


class Rfc7951:
    """Encoder over a yangson model of every module escnc serves (the validation model
    leaves out modules whose data escnc builds itself, e.g. netconf-state)."""

    def __init__(self, schema: Schema) -> None:
        modules = [
            {"name": m.name, "revision": m.revision, "namespace": m.namespace,
             "conformance-type": m.conformance,
             **({"feature": list(m.features)} if m.features else {})}
            for m in schema.modules()
        ]
        library = {"ietf-yang-library:modules-state": {"module-set-id": "json",
                                                        "module": modules}}
        self.schema = schema
        self.dm = DataModel(json.dumps(library), [str(schema.yang_dir)])

    def data(self, data: etree._Element) -> dict[str, Any]:
        return encode_data(self, data)

    def reply(self, reply: etree._Element, rpc: etree.QName | None = None) -> dict[str, Any]:
        return encode_reply(self, reply, rpc)

    def notification(self, notification: etree._Element) -> dict[str, Any]:
        return encode_notification(self, notification)

    def module_of(self, namespace: str | None) -> str | None:
        return self.schema.module_of(namespace)


def encode_data(schema: Rfc7951, data: etree._Element) -> dict[str, Any]:
    """A ``<data>`` element (get, get-config, get-data) -> RFC 7951 instance object."""
    members: dict[str, Any] = {}
    for child in _elements(data):
        members.update(_encode_top(schema, child))
    return members


def encode_reply(schema: Rfc7951, reply: etree._Element, rpc: etree.QName | None) -> dict[str, Any]:
    """An ``<rpc-reply>``: errors as ``ietf-restconf:errors`` (RFC 8040 7.1), data as
    instance data, RPC output as ``{"module:output": {...}}`` (RFC 8040 3.6.2), and
    ``<ok/>`` as an empty object (RFC 8040 answers it with no content)."""
    errors = reply.findall(f"{{{NC}}}rpc-error")
    if errors:
        return {"ietf-restconf:errors": {"error": [_encode_error(e) for e in errors]}}
    data = reply.find(f"{{{NC}}}data")
    if data is not None:
        return encode_data(schema, data)
    if reply.find(f"{{{NC}}}ok") is not None:
        return {}
    output = _elements(reply)
    if rpc is None or not output:
        return {"output": _generic_members(schema, output, None)}
    module = schema.module_of(rpc.namespace) or "unknown"
    return {f"{module}:output": _encode_output(schema, module, rpc.localname, reply)}


def encode_notification(schema: Rfc7951, notification: etree._Element) -> dict[str, Any]:
    """An RFC 5277 ``<notification>`` -> ``{"ietf-restconf:notification": {eventTime,
    "module:name": {...}}}`` (RFC 8040 6.4)."""
    out: dict[str, Any] = {}
    for child in _elements(notification):
        q = etree.QName(child)
        if q.namespace == NOTIF_NS and q.localname == "eventTime":
            out["eventTime"] = (child.text or "").strip()
            continue
        out.update(_encode_notification_body(schema, child))
    return {"ietf-restconf:notification": out}


# --- yangson-backed encoders ------------------------------------------------------------


def _encode_top(schema: Rfc7951, el: etree._Element) -> dict[str, Any]:
    wrapper = etree.Element(f"{{{NC}}}data")
    ids = _Identities(schema)
    wrapper.append(ids.copy(el))
    try:
        raw = ids.restore(schema.dm.from_xml(wrapper).raw_value())
        return dict(raw) if isinstance(raw, dict) else {}
    except (yx.YangsonException, TypeError, AttributeError, KeyError):
        return _generic_members(schema, [el], None)


def _encode_output(schema: Rfc7951, module: str, rpc: str, reply: etree._Element) -> Any:
    rpc_node = schema.dm.schema.get_child(rpc, module)
    output = rpc_node.get_child("output") if isinstance(rpc_node, InternalNode) else None
    if output is None:
        return _generic_members(schema, list(_elements(reply)), module)
    el = etree.Element("output")
    ids = _Identities(schema)
    for child in _elements(reply):
        el.append(ids.copy(child))
    return ids.restore(_raw_of(schema, output, module, el)) or _generic_members(
        schema, list(_elements(reply)), module)


def _encode_notification_body(schema: Rfc7951, body: etree._Element) -> dict[str, Any]:
    q = etree.QName(body)
    module = schema.module_of(q.namespace)
    name = f"{module or 'unknown'}:{q.localname}"
    node = schema.dm.schema.get_child(q.localname, module) if module else None
    ids = _Identities(schema)
    value = (ids.restore(_raw_of(schema, node, module, ids.copy(body)))
             if node is not None and module else None)
    if value is None:
        value = _generic_members(schema, list(_elements(body)), module)
    return {name: value}


def _raw_of(schema: Rfc7951, node: Any, module: str | None, el: etree._Element) -> Any:
    """Raw (RFC 7951) value of ``el`` under schema ``node`` (an RPC output or a
    notification), or None when yangson cannot place it."""
    try:
        cooked = node.from_xml(el)
        # yangson leaves these members unqualified; its instance API wants them qualified
        value = ObjectValue(
            {(k if ":" in k else f"{module}:{k}"): v for k, v in cooked.items()},
            cooked.timestamp,
        )
        raw = RootNode(value, node, schema.dm.schema_data, value.timestamp).raw_value()
    except (yx.YangsonException, TypeError, AttributeError, KeyError):
        return None
    # members of the node's own module are unqualified inside it (RFC 7951 4)
    return {(k.split(":", 1)[1] if k.startswith(f"{module}:") else k): v
            for k, v in dict(raw).items()}


# --- schema-less fallback ----------------------------------------------------------------


def _generic_members(schema: Rfc7951, els: list[etree._Element], parent: str | None) -> Any:
    members: dict[str, list[Any]] = {}
    for el in els:
        q = etree.QName(el)
        module = schema.module_of(q.namespace) or q.namespace or parent
        name = q.localname if module == parent else f"{module}:{q.localname}"
        members.setdefault(name, []).append(_generic_value(schema, el, module))
    return {k: v[0] if len(v) == 1 else v for k, v in members.items()}


def _generic_value(schema: Rfc7951, el: etree._Element, module: str | None) -> Any:
    children = list(_elements(el))
    if children:
        return _generic_members(schema, children, module)
    text = (el.text or "").strip()
    return text if text else [None]  # RFC 7951 6.9: empty is [null]


def _encode_error(err: etree._Element) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _ERROR_FIELDS:
        text = err.findtext(f"{{{NC}}}{name}")
        if text is not None and text.strip():
            out[name] = text.strip()
    info = err.find(f"{{{NC}}}error-info")
    if info is not None:
        out["error-info"] = {
            etree.QName(c).localname: (c.text or "").strip() for c in _elements(info)
        }
    return out


def _elements(el: etree._Element) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str)]


class _Identities:
    """Works around yangson's identityref parsing from XML (its issue #79: it looks
    the prefix up in attributes, where lxml never puts namespace declarations, so
    ``ds:running`` fails). Before yangson sees a copy, a leaf whose whole text is
    ``p:name`` with ``p`` a declared prefix of a served module gets a colon-free
    placeholder; after encoding, the placeholder becomes RFC 7951's ``module:name``."""

    def __init__(self, schema: Rfc7951) -> None:
        self.schema = schema
        self.values: dict[str, str] = {}

    def copy(self, el: etree._Element) -> etree._Element:
        out = etree.fromstring(etree.tostring(el))  # the caller's tree stays untouched
        for node in out.iter():
            if not isinstance(node.tag, str) or len(node) or not node.text:
                continue
            prefix, sep, name = node.text.strip().partition(":")
            if not sep or not prefix or not name or ":" in name or "/" in name:
                continue
            ns = node.nsmap.get(prefix)
            module = self.schema.module_of(ns) if ns else None
            if module is not None:
                token = f"escnc-identity-{len(self.values)}"
                self.values[token] = f"{module}:{name}"
                node.text = token
        return out

    def restore(self, value: Any) -> Any:
        if not self.values:
            return value
        if isinstance(value, dict):
            return {k: self.restore(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.restore(v) for v in value]
        if isinstance(value, str):
            return self.values.get(value.rpartition(":")[2], value)
        return value
