"""Which element names the served YANG modules define, for ConfD-style XPath names.

XPath 1.0 gives an unprefixed name the null namespace, and an undeclared prefix is
an error. ConfD (which Cisco ESC runs on) and netopeer2 are friendlier, and the
filters clients send rely on it: ESC's own ``select="esc_datamodel/opdata"``,
netconf-console2's ``-x /esc_datamodel/opdata``, ``/escnc:esc_datamodel`` (module
name as prefix) and ``/esc:esc_datamodel`` without ``xmlns:esc``. A
:class:`NameIndex` answers what such names mean: for every data node, notification
and their descendants in every served module (RPC input/output excluded), its
local name -> the namespaces defining it; and module names and prefixes ->
namespace. It is built once per YANG directory with pyang (which parses every
module escnc serves, including those yangson's library does not load).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_DATA_KEYWORDS = frozenset(
    {"container", "list", "leaf", "leaf-list", "anydata", "anyxml", "notification"}
)
_SKIP = frozenset({"rpc", "action", "input", "output"})


@dataclass(frozen=True)
class NameIndex:
    """Element local name -> namespaces; module name / module prefix -> namespace."""

    elements: dict[str, frozenset[str]] = field(default_factory=dict)
    modules: dict[str, str] = field(default_factory=dict)  # module name -> namespace
    prefixes: dict[str, str] = field(default_factory=dict)  # module prefix -> namespace

    @property
    def namespaces(self) -> frozenset[str]:
        return frozenset(self.modules.values())

    def namespace_of(self, prefix: str) -> str | None:
        """A prefix not declared in the request: a module name, else a module prefix."""
        return self.modules.get(prefix) or self.prefixes.get(prefix)

    def element_namespaces(self, local: str) -> frozenset[str]:
        return self.elements.get(local, frozenset())

    def defines(self, namespace: str, local: str) -> bool:
        return namespace in self.elements.get(local, frozenset())


def _namespace(stmt: Any) -> str | None:
    module = stmt.i_module
    if module is None:
        return None
    if module.keyword == "submodule":
        belongs = module.search_one("belongs-to")
        module = module.i_ctx.get_module(belongs.arg) if belongs is not None else None
        if module is None:
            return None
    ns = module.search_one("namespace")
    return str(ns.arg) if ns is not None else None


def _walk(stmt: Any, out: dict[str, set[str]]) -> None:
    for ch in getattr(stmt, "i_children", None) or ():
        if ch.keyword in _SKIP:
            continue
        if ch.keyword in _DATA_KEYWORDS:
            ns = _namespace(ch)
            if ns is not None:
                out.setdefault(str(ch.arg), set()).add(ns)
        _walk(ch, out)


@functools.lru_cache(maxsize=4)
def index_for_directory(yang_dir: Path) -> NameIndex:
    """Parse every module in ``yang_dir`` (cached: the directory is read-only)."""
    from pyang import context, repository

    repo = repository.FileRepository(str(yang_dir), use_env=False)
    ctx = context.Context(repo)
    modules = []
    for path in sorted(yang_dir.glob("*.yang")):
        module = ctx.add_module(str(path), path.read_text())
        if module is not None and module.keyword == "module":
            modules.append(module)
    ctx.validate()
    elements: dict[str, set[str]] = {}
    names: dict[str, str] = {}
    prefixes: dict[str, str] = {}
    for module in modules:
        ns = module.search_one("namespace")
        prefix = module.search_one("prefix")
        if ns is None:
            continue
        names[str(module.arg)] = str(ns.arg)
        if prefix is not None:
            prefixes.setdefault(str(prefix.arg), str(ns.arg))
        _walk(module, elements)
    return NameIndex(
        elements={k: frozenset(v) for k, v in elements.items()},
        modules=names,
        prefixes=prefixes,
    )
