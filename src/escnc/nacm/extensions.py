"""``nacm:default-deny-write`` / ``nacm:default-deny-all`` read from the YANG text.

yangson keeps no extension statements, so the modules' text is scanned with a
small YANG tokenizer: every data definition (container, list, leaf, leaf-list,
anydata, anyxml), rpc and notification carrying one of the extensions is recorded
by its schema path (Clark names from the top; choice and case do not count).
Extensions inside groupings or augments are not resolved (no module escnc serves
has any there).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

NACM_MODULE = "ietf-netconf-acm"
_DATA = {"container", "list", "leaf", "leaf-list", "anydata", "anyxml", "rpc", "action",
         "notification"}
_TRANSPARENT = {"choice", "case", "input", "output"}
_TOKEN = re.compile(
    r"""\s+|//[^\n]*|/\*.*?\*/|"((?:[^"\\]|\\.)*)"|'([^']*)'|([{};])|([^\s{};"']+)""",
    re.S,
)


@dataclass
class Extensions:
    # schema path (Clark names, top first) -> "write" | "all"
    data: dict[tuple[str, ...], str] = field(default_factory=dict)
    # (namespace, rpc name) / (namespace, notification name) with default-deny-all
    rpcs: set[tuple[str, str]] = field(default_factory=set)
    notifications: set[tuple[str, str]] = field(default_factory=set)


def _tokens(text: str) -> Iterator[str]:
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            pos += 1
            continue
        pos = m.end()
        if m.group(1) is not None:
            yield '"' + m.group(1)
        elif m.group(2) is not None:
            yield '"' + m.group(2)
        elif m.group(3) is not None:
            yield m.group(3)
        elif m.group(4) is not None:
            yield m.group(4)


def _statements(text: str) -> Iterator[tuple[int, str, str, bool]]:
    """(depth, keyword, argument, opens a block) of every statement, in order;
    depth counts braces. A ``}`` yields (depth, "}", "", False)."""
    depth = 0
    words: list[str] = []
    for tok in _tokens(text):
        if tok in ("{", ";"):
            if words:
                kw = words[0]
                arg = "".join(w[1:] if w.startswith('"') else w for w in words[1:] if w != "+")
                yield depth, kw, arg, tok == "{"
            words = []
            if tok == "{":
                depth += 1
        elif tok == "}":
            depth -= 1
            words = []
            yield depth, "}", "", False
        else:
            words.append(tok)


def scan_module(text: str, namespace: str, module: str) -> Extensions:
    out = Extensions()
    nacm_prefixes: set[str] = set()
    stack: list[tuple[str, str]] = []  # (keyword, argument) of open statements
    pending_import = ""
    for depth, kw, arg, block in _statements(text):
        if kw == "}":
            if stack:
                stack.pop()
            continue
        if kw == "import":
            pending_import = arg
        elif kw == "prefix" and (
            (depth == 1 and module == NACM_MODULE) or pending_import == NACM_MODULE
        ):
            nacm_prefixes.add(arg)
        prefix, _, name = kw.partition(":")
        if name in ("default-deny-write", "default-deny-all") and prefix in nacm_prefixes:
            _record(out, stack, namespace, "all" if name.endswith("all") else "write")
        if block:
            stack.append((kw, arg))
    return out


def _record(out: Extensions, stack: list[tuple[str, str]], ns: str, kind: str) -> None:
    path: list[str] = []
    top_kind = ""
    for kw, arg in stack[1:]:  # stack[0] is the module statement
        if kw in ("grouping", "augment", "typedef", "extension", "identity", "feature"):
            return
        if kw in _DATA:
            path.append(f"{{{ns}}}{arg.rpartition(':')[2]}")
            if not top_kind:
                top_kind = kw
        elif kw not in _TRANSPARENT:
            continue
    if not path:
        return
    name = path[0].rpartition("}")[2]
    if top_kind == "rpc" and len(path) == 1:
        if kind == "all":
            out.rpcs.add((ns, name))
    elif top_kind == "notification" and len(path) == 1:
        if kind == "all":
            out.notifications.add((ns, name))
    elif top_kind not in ("rpc", "notification", "action"):
        out.data[tuple(path)] = kind


def scan(modules: list[tuple[str, str, Path]]) -> Extensions:
    """Scan (name, namespace, path) of every module served."""
    total = Extensions()
    for name, ns, path in modules:
        ext = scan_module(path.read_text(), ns, name)
        total.data.update(ext.data)
        total.rpcs |= ext.rpcs
        total.notifications |= ext.notifications
    return total
