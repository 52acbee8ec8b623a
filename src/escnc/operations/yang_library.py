"""RFC 8525 yang-library (and the RFC 7895 modules-state view of it)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from lxml import etree

from escnc.ns import YANG_LIBRARY, qn
from escnc.operations.monitoring import schema_modules
from escnc.rpc.dispatch import RpcRegistry

if TYPE_CHECKING:
    from escnc.services import Services

DATASTORES_NS = "urn:ietf:params:xml:ns:yang:ietf-datastores"
_SET = "complete"


def _sub(parent: etree._Element, name: str, text: object = None) -> etree._Element:
    el = etree.SubElement(parent, qn(YANG_LIBRARY, name))
    if text is not None:
        el.text = str(text)
    return el


def content_id(modules: list[Any]) -> str:
    h = hashlib.sha256()
    for m in sorted(modules, key=lambda m: (m.name, m.revision or "")):
        features = ",".join(getattr(m, "features", ()))
        conformance = getattr(m, "conformance", "implement")
        h.update(f"{m.name}@{m.revision or ''}={m.namespace};{conformance};{features}\n".encode())
    return h.hexdigest()[:16]


def yang_library(services: Services) -> etree._Element:
    modules = schema_modules(services)
    nsmap = {None: YANG_LIBRARY, "ds": DATASTORES_NS}
    root = etree.Element(qn(YANG_LIBRARY, "yang-library"), nsmap=nsmap)  # type: ignore[arg-type]
    mset = _sub(root, "module-set")
    _sub(mset, "name", _SET)
    # implemented modules first, then the import-only ones
    for m in sorted(modules, key=lambda m: getattr(m, "conformance", "implement") != "implement"):
        implement = getattr(m, "conformance", "implement") == "implement"
        el = _sub(mset, "module" if implement else "import-only-module")
        _sub(el, "name", m.name)
        if m.revision or not implement:
            _sub(el, "revision", m.revision or "")
        _sub(el, "namespace", m.namespace)
        for feature in getattr(m, "features", ()):
            _sub(el, "feature", feature)
    schema = _sub(root, "schema")
    _sub(schema, "name", _SET)
    _sub(schema, "module-set", _SET)
    for ds in ("running", "candidate", "startup", "operational"):
        d = _sub(root, "datastore")
        _sub(d, "name", f"ds:{ds}")
        _sub(d, "schema", _SET)
    _sub(root, "content-id", content_id(modules))
    return root


def modules_state(services: Services) -> etree._Element:
    modules = schema_modules(services)
    root = etree.Element(qn(YANG_LIBRARY, "modules-state"), nsmap={None: YANG_LIBRARY})  # type: ignore[dict-item]
    _sub(root, "module-set-id", content_id(modules))
    for m in modules:
        el = _sub(root, "module")
        _sub(el, "name", m.name)
        _sub(el, "revision", m.revision or "")
        _sub(el, "namespace", m.namespace)
        for feature in getattr(m, "features", ()):
            _sub(el, "feature", feature)
        _sub(el, "conformance-type", getattr(m, "conformance", "implement"))
    return root


def register(registry: RpcRegistry, services: Services) -> None:
    services.state_providers.append(lambda: [yang_library(services), modules_state(services)])
    modules = schema_modules(services)
    if modules:
        # RFC 7950 5.6.4: servers with YANG 1.1 modules announce the library this way;
        # "revision" is that of the ietf-yang-library module implemented (RFC 8525's,
        # whose deprecated modules-state carries the same module-set-id).
        revision = next(
            (m.revision for m in modules if m.name == "ietf-yang-library" and m.revision),
            "2019-01-04",
        )
        # RFC 7950's yang-library:1.0 for clients that read modules-state (its
        # module-set-id), RFC 8526's yang-library:1.1 for NMDA clients (get-data of
        # /yang-library, whose content-id is the same value)
        services.capabilities.append(
            "urn:ietf:params:netconf:capability:yang-library:1.0"
            f"?revision={revision}&module-set-id={content_id(modules)}"
        )
        services.capabilities.append(
            "urn:ietf:params:netconf:capability:yang-library:1.1"
            f"?revision={revision}&content-id={content_id(modules)}"
        )
