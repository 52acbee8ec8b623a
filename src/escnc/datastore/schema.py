"""The YANG modules escnc serves and the yangson data model built from them.

``Schema.load()`` reads ``escnc/yang`` once. It offers:

* the module list for hello capabilities, yang-library and get-schema;
* ``validate_config`` / ``validate_rpc_input`` / ``validate_notification`` (yangson),
  turning yangson exceptions into precise ``RpcError``s;
* a light schema tree of :class:`SNode` (kind, keys, defaults, namespaces) that the
  edit-config engine, filters and with-defaults walk on lxml trees.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree
from yangson import DataModel
from yangson import exceptions as yx
from yangson.enumerations import ContentType, ValidationScope
from yangson.instance import InstanceNode, RootNode
from yangson.instvalue import ObjectValue
from yangson.schemanode import (
    AnyContentNode,
    ChoiceNode,
    ContainerNode,
    InternalNode,
    LeafListNode,
    LeafNode,
    ListNode,
    NotificationNode,
    SchemaNode,
)

from escnc.datastore import yangson_speed
from escnc.errors import RpcError
from escnc.ns import NC

YANG_DIR = Path(__file__).resolve().parent.parent / "yang"
LIBRARY = YANG_DIR / "yang-library.json"


@dataclass(frozen=True)
class ModuleInfo:
    name: str
    revision: str
    namespace: str
    prefix: str
    path: Path
    # RFC 8525: "implement" or "import" (served for get-schema, not implemented)
    conformance: str = "implement"
    features: tuple[str, ...] = ()


# ietf-netconf features escnc supports (RFC 6241; no :url). Announced in the hello
# capability (RFC 6020 5.6.4 "features=") and in the YANG library.
NETCONF_FEATURES = (
    "writable-running", "candidate", "confirmed-commit", "rollback-on-error",
    "validate", "startup", "xpath",
)
# Modules present only because others import them (ietf-netconf-acm is implemented
# and enforced by escnc.nacm; ietf-origin is imported by ietf-netconf-nmda, whose
# 'origin' feature escnc does not support).
IMPORT_ONLY: frozenset[str] = frozenset({"ietf-origin"})


@dataclass
class SNode:
    """What the datastore needs to know about one data node of the schema."""

    name: str
    ns: str  # XML namespace
    kind: str  # container | list | leaf | leaf-list | anydata
    config: bool = True
    keys: tuple[str, ...] = ()
    default: str | None = None
    presence: bool = False
    user_ordered: bool = False
    mandatory: bool = False
    children: dict[str, SNode] = field(default_factory=dict)  # Clark qname -> node
    parent: SNode | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # read on every node of every edit: computed once, not per access
        self.tag: str = f"{{{self.ns}}}{self.name}"
        self.key_tags: tuple[str, ...] = tuple(f"{{{self.ns}}}{k}" for k in self.keys)

    def child(self, tag: str) -> SNode | None:
        return self.children.get(tag)


class Schema:
    def __init__(self, yang_dir: Path, library: Path) -> None:
        self.yang_dir = yang_dir
        yangson_speed.install()  # linear-time list iteration and pattern checks
        self.dm = DataModel.from_file(str(library), [str(yang_dir)])
        self._modules = _scan_modules(yang_dir)
        self._ns_by_module = {m.name: m.namespace for m in self._modules}
        self.prefixes = {m.namespace: m.prefix for m in self._modules}
        self.root = SNode("data", NC, "container")
        for ch in _data_children(self.dm.schema):
            node = self._convert(ch, None)
            self.root.children[node.tag] = node
        self.rpcs: dict[str, SchemaNode] = {}

    @classmethod
    def load(cls) -> Schema:
        return cls(YANG_DIR, LIBRARY)

    # ---- modules ---------------------------------------------------------------

    def modules(self) -> list[ModuleInfo]:
        return list(self._modules)

    def module_capabilities(self) -> list[str]:
        return [
            f"{m.namespace}?module={m.name}&revision={m.revision}"
            + (f"&features={','.join(m.features)}" if m.features else "")
            for m in self._modules
        ]

    def module_text(self, identifier: str, version: str | None = None) -> str:
        for m in self._modules:
            if m.name == identifier and (not version or version == m.revision):
                return m.path.read_text()
        raise RpcError(
            "invalid-value",
            f"no schema {identifier!r}" + (f" revision {version!r}" if version else ""),
            type="application",
        )

    def namespace_of(self, module: str) -> str:
        return self._ns_by_module[module]

    def module_of(self, namespace: str | None) -> str | None:
        """Name of the served module with this XML namespace, if any."""
        return self._module_by_ns(namespace)

    # ---- validation ------------------------------------------------------------

    def to_instance(self, data: etree._Element) -> InstanceNode:
        """yangson instance of a ``<data>`` tree; unknown elements -> RpcError."""
        try:
            return self.dm.from_xml(data)
        except yx.YangsonException as exc:
            raise self.raw_error(exc, data) from exc

    def validate_config(self, data: etree._Element) -> None:
        """Whole-tree YANG validation of a ``<data>`` configuration tree."""
        inst = self.to_instance(data)
        try:
            inst.validate(ValidationScope.all, ContentType.config)
        except yx.ValidationError as exc:
            raise self.validation_error(exc) from exc

    def validate_rpc_input(self, request: etree._Element) -> None:
        qname = etree.QName(request)
        module = self._module_by_ns(qname.namespace)
        if module is None:
            return
        sn = self.dm.schema.get_child(qname.localname, module)
        if sn is None:
            return
        el = copy.copy(request)
        el.tag = "input"
        el.attrib.clear()
        try:
            inst = self.dm.from_xml(el, f"{module}:{qname.localname}")
            inst.validate(ValidationScope.syntax, ContentType.all)
        except yx.ValidationError as exc:
            raise self.validation_error(exc, rpc=qname) from exc
        except yx.YangsonException as exc:
            raise self.raw_error(exc, request, rpc=qname) from exc
        except (TypeError, AttributeError, KeyError) as exc:
            # yangson 1.7.9 trips over some inputs (e.g. an empty input of an RPC with a
            # mandatory choice): still a precise refusal, never an internal error
            prefix = self.prefixes.get(qname.namespace or "", "x")
            raise RpcError(
                "invalid-value",
                f"input of {qname.localname} does not match its YANG definition ({exc})",
                path=f"/{prefix}:{qname.localname}",
                path_nsmap={prefix: qname.namespace or ""},
            ) from exc

    def validate_notification(self, body: etree._Element) -> None:
        qname = etree.QName(body)
        module = self._module_by_ns(qname.namespace)
        if module is None:
            raise RpcError("unknown-namespace", f"no module for {qname.namespace}")
        if not isinstance(self.dm.schema.get_child(qname.localname, module), NotificationNode):
            # served for get-schema only (RFC 5277/6470 modules are not in the
            # yangson library): nothing to validate against
            return
        sn = self.dm.schema.get_child(qname.localname, module)
        try:
            # yangson's from_xml leaves a notification's own members unqualified,
            # but its schema pattern wants them as "module:name": qualify them
            cooked = sn.from_xml(body)
            value = ObjectValue(
                {(k if ":" in k else f"{module}:{k}"): v for k, v in cooked.items()},
                cooked.timestamp,
            )
            inst = RootNode(value, sn, self.dm.schema_data, value.timestamp)
            inst.validate(ValidationScope.syntax, ContentType.all)
        except yx.ValidationError as exc:
            raise self.validation_error(exc, rpc=qname) from exc
        except yx.YangsonException as exc:
            raise self.raw_error(exc, body, rpc=qname) from exc

    # ---- yangson errors -> RpcError -----------------------------------------------

    def validation_error(self, exc: yx.ValidationError, rpc: etree.QName | None = None) -> RpcError:
        path = self.instance_path(exc.instance, rpc)
        tag, msg = exc.tag or "", exc.message or ""
        nsmap = {"esc": "http://www.cisco.com/esc/esc"}
        if rpc is not None:
            nsmap = {self.prefixes.get(rpc.namespace or "", "x"): rpc.namespace or ""}
        kw: dict[str, Any] = {"path": path, "path_nsmap": nsmap}
        if isinstance(exc, yx.YangTypeError):
            return RpcError(
                "invalid-value", f"invalid value at {path}: {msg or tag}{_valid_enums(exc)}", **kw
            )
        if isinstance(exc, yx.SchemaError):
            if tag.endswith("member-not-allowed"):
                member = msg.split(":")[-1]
                return RpcError(
                    "unknown-element",
                    f"element {member!r} not allowed at {path}",
                    type="application",
                    info={"bad-element": member},
                    **kw,
                )
            # missing-data: "expected 'x'" or "expected one of 'a', 'b'"
            names = re.findall(r"'([^']+)'", msg)
            bad = names[0].split(":")[-1] if names else ""
            return RpcError(
                "missing-element",
                f"missing mandatory element {msg[9:]} at {path}",
                type="application",
                info={"bad-element": bad},
                **kw,
            )
        if tag == "instance-required":
            return RpcError(
                "data-missing",
                f"{path} refers to an instance that does not exist",
                app_tag="instance-required",
                **kw,
            )
        if tag.startswith("data-not-unique"):
            return RpcError(
                "operation-failed",
                f"unique constraint violated in {path}",
                app_tag="data-not-unique",
                **kw,
            )
        if tag in ("too-many-elements", "too-few-elements"):
            return RpcError("operation-failed", f"{tag} in {path}", app_tag=tag, **kw)
        if tag in ("non-unique-key", "repeated-leaf-list-value"):
            return RpcError("data-exists", f"duplicate entry in {path}", **kw)
        # must / when: yangson uses the must error-app-tag (default must-violation)
        return RpcError(
            "operation-failed",
            msg or f"constraint {tag} violated at {path}",
            app_tag=tag or "must-violation",
            **kw,
        )

    def raw_error(
        self, exc: Exception, data: etree._Element, rpc: etree.QName | None = None
    ) -> RpcError:
        if isinstance(exc, yx.MissingModuleNamespace):
            # RFC 6241 Appendix A: error-info names the element and the namespace
            ns = str(exc)
            bad = next(
                (
                    el
                    for el in data.iter()
                    if isinstance(el.tag, str) and etree.QName(el).namespace == ns
                ),
                None,
            )
            info = {"bad-element": etree.QName(bad).localname} if bad is not None else {}
            return RpcError(
                "unknown-namespace",
                f"unknown namespace {ns}",
                type="protocol",
                info=info | {"bad-namespace": ns},
            )
        kw: dict[str, Any] = {}
        if rpc is not None and isinstance(exc, yx.RawMemberError | yx.RawTypeError):
            prefix = self.prefixes.get(rpc.namespace or "", "x")
            steps = [rpc.localname] + [
                st.split(":")[-1]
                for st in str(exc.path).split("/")
                if st and not st.isdigit() and st != "input"
            ]
            kw = {
                "path": "/" + "/".join(f"{prefix}:{st}" for st in steps),
                "path_nsmap": {prefix: rpc.namespace or ""},
            }
        if isinstance(exc, yx.RawMemberError):
            member = str(exc.path).rsplit("/", 1)[-1].split(":")[-1]
            return RpcError(
                "unknown-element",
                f"unknown element {member!r} at {kw.get('path', exc.path)}",
                type="application",
                info={"bad-element": member},
                **kw,
            )
        if isinstance(exc, yx.RawTypeError):
            member = str(exc.path).rsplit("/", 1)[-1].split(":")[-1]
            return RpcError(
                "invalid-value",
                f"invalid value at {kw.get('path', exc.path)}: {exc.message}",
                info={"bad-element": member},
                **kw,
            )
        return RpcError("invalid-value", f"invalid data: {exc}")

    def instance_path(self, inst: InstanceNode, rpc: etree.QName | None = None) -> str:
        """RFC 6241 error-path (instance-identifier with module prefixes)."""
        parts: list[str] = []
        if rpc is not None:
            parts.append(f"{self.prefixes.get(rpc.namespace or '', 'x')}:{rpc.localname}")
        node: Any = inst.top()
        prefix = "esc"
        for i, step in enumerate(inst.path):
            if rpc is not None and i == 0 and isinstance(step, str) and step.endswith("input"):
                node = node._member(step)  # RPC input: the path names the rpc, not "input"
                continue
            if isinstance(step, str):
                if ":" in step:
                    module, name = step.split(":", 1)
                    prefix = self.prefixes.get(self._ns_by_module.get(module, ""), module)
                else:
                    name = step
                node = node._member(step)
                parts.append(f"{prefix}:{name}")
            else:
                node = node._entry(step)
                keys = getattr(node.schema_node, "keys", None) or []
                pred = "".join(
                    f"[{prefix}:{k[0]}='{node.value[k[0]]}']" for k in keys if k[0] in node.value
                )
                parts[-1] += pred or f"[{step + 1}]"
        return "/" + "/".join(parts)

    def _module_by_ns(self, ns: str | None) -> str | None:
        for m in self._modules:
            if m.namespace == ns:
                return m.name
        return None

    # ---- light schema tree -------------------------------------------------------

    def _convert(self, sn: SchemaNode, parent: SNode | None) -> SNode:
        ns = self._ns_by_module.get(sn.ns, sn.ns)
        kind = (
            "list"
            if isinstance(sn, ListNode)
            else "leaf-list"
            if isinstance(sn, LeafListNode)
            else "leaf"
            if isinstance(sn, LeafNode)
            else "anydata"
            if isinstance(sn, AnyContentNode)
            else "container"
        )
        keys = tuple(k[0] for k in sn.keys) if isinstance(sn, ListNode) else ()
        node = SNode(sn.name, ns, kind, config=bool(sn.config), keys=keys, parent=parent)
        if isinstance(sn, (ListNode, LeafListNode)):
            node.user_ordered = bool(sn.user_ordered)
        if isinstance(sn, ContainerNode):
            node.presence = bool(sn.presence)
        if isinstance(sn, LeafNode):
            node.mandatory = bool(sn.mandatory)
            default = sn.default
            if default is not None:
                node.default = sn.type.canonical_string(default)
        if isinstance(sn, InternalNode):
            for ch in _data_children(sn):
                child = self._convert(ch, node)
                node.children[child.tag] = child
        return node


def _valid_enums(exc: yx.ValidationError) -> str:
    """For an enumeration leaf: the values it accepts, for the error message."""
    sn = getattr(exc.instance, "schema_node", None)
    names = list(getattr(getattr(sn, "type", None), "enum", None) or ())
    return f" (valid values: {', '.join(names)})" if names else ""


def _data_children(sn: InternalNode) -> list[SchemaNode]:
    """Data children, looking through choice/case."""
    out: list[SchemaNode] = []
    for ch in sn.children:
        if isinstance(ch, ChoiceNode):
            for case in ch.children:
                out.extend(_data_children(case))
        elif isinstance(ch, (ContainerNode, ListNode, LeafNode, LeafListNode, AnyContentNode)):
            out.append(ch)
    return out


_NS_RE = re.compile(r'^\s*namespace\s+"?([^";]+)"?\s*;', re.M)
_PREFIX_RE = re.compile(r'^\s*prefix\s+"?([^";]+)"?\s*;', re.M)


def _scan_modules(yang_dir: Path) -> list[ModuleInfo]:
    out = []
    for path in sorted(yang_dir.glob("*.yang")):
        name, _, rev = path.stem.partition("@")
        text = path.read_text()
        ns = _NS_RE.search(text)
        prefix = _PREFIX_RE.search(text)
        if ns is None or prefix is None:  # a submodule
            continue
        out.append(
            ModuleInfo(
                name, rev, ns.group(1), prefix.group(1), path,
                conformance="import" if name in IMPORT_ONLY else "implement",
                features=NETCONF_FEATURES if name == "ietf-netconf" else (),
            )
        )
    return out
