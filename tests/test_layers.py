"""Import contracts between escnc's layers, read from the source (no imports run).

netconf/, http/ (transports) -> rpc/ (protocol-neutral requests) -> operations/ (RPC
handlers) -> datastore/, engine/ -> vim/, events/. Nothing imports upward (in
particular nothing below the transports imports either of them, type hints included),
and only vim/ (and, for now, the engine module listed in ``ENGINE_LIBVIRT`` -- a
ratchet: no module may join it) imports libvirt: the engine talks to the VIM driver
(vim/driver.py). No engine module imports ``engine/engine.py``: modules are typed
against the small views of engine/context.py; the type-only import in
``ENGINE_TYPE_ONLY`` is what is left of the engine god object (issue 12), and the list
may not grow either.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "escnc"

# engine modules that still import libvirt (to move behind vim/driver.py)
ENGINE_LIBVIRT: set[str] = set()
# engine modules that name the Engine class in type hints (to take a context instead)
ENGINE_TYPE_ONLY: set[str] = set()


def imports(path: Path) -> list[tuple[str, bool]]:
    """(module, type-only) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(sub) for stmt in node.body for sub in ast.walk(stmt))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in type_only) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, id(node) in type_only))
    return found


def modules(package: str) -> dict[str, list[tuple[str, bool]]]:
    return {str(p.relative_to(SRC)): imports(p) for p in sorted((SRC / package).rglob("*.py"))}


def everything() -> dict[str, list[tuple[str, bool]]]:
    return {str(p.relative_to(SRC)): imports(p) for p in sorted(SRC.rglob("*.py"))}


def test_only_vim_imports_libvirt() -> None:
    users = {
        name
        for name, found in everything().items()
        if any(m == "libvirt" or m.startswith("libvirt.") for m, _ in found)
    }
    outside = {u for u in users if not u.startswith("vim/")}
    assert outside <= ENGINE_LIBVIRT, (
        f"new libvirt imports outside vim/: {outside - ENGINE_LIBVIRT}"
    )


def test_nothing_outside_vim_imports_libvirt_but_the_listed_files() -> None:
    """The contract, exactly: the remaining exceptions still are exceptions (when one
    stops importing libvirt it leaves the list), and nothing else imports it."""
    users = {
        name
        for name, found in everything().items()
        if any(m == "libvirt" or m.startswith("libvirt.") for m, _ in found)
    }
    assert {u for u in users if not u.startswith("vim/")} == ENGINE_LIBVIRT


def test_engine_modules_stay_small() -> None:
    """engine.py was a god object: it stays below 600 lines, like every new module."""
    sizes = {
        str(p.relative_to(SRC)): len(p.read_text().splitlines())
        for p in (SRC / "engine").glob("*.py")
    }
    assert sizes["engine/engine.py"] < 600
    big = {n for n, lines in sizes.items() if lines >= 600}
    assert big <= {"engine/capacity.py"}, f"over 600 lines: {big}"


def test_no_engine_module_imports_the_engine_at_run_time() -> None:
    typed = set()
    for name, found in modules("engine").items():
        for module, type_only in found:
            if module != "escnc.engine.engine" or name == "engine/engine.py":
                continue
            assert type_only, f"{name} imports engine/engine.py at run time"
            typed.add(name)
    assert typed <= ENGINE_TYPE_ONLY, f"new: {typed - ENGINE_TYPE_ONLY}"


def _upward(package: str, forbidden: tuple[str, ...], *, runtime_only: bool) -> list[str]:
    bad = []
    for name, found in modules(package).items():
        for module, type_only in found:
            if runtime_only and type_only:
                continue
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                bad.append(f"{name} -> {module}")
    return bad


TRANSPORTS = ("escnc.netconf", "escnc.http")


def test_nothing_imports_upward() -> None:
    assert (
        _upward(
            "vim",
            ("escnc.engine", "escnc.operations", "escnc.rpc", *TRANSPORTS, "escnc.datastore"),
            runtime_only=False,
        )
        == []
    )
    assert _upward("engine", ("escnc.operations", "escnc.rpc"), runtime_only=True) == []
    assert (
        _upward("datastore", ("escnc.operations", "escnc.rpc", "escnc.engine"), runtime_only=True)
        == []
    )
    assert (
        _upward("events", ("escnc.operations", "escnc.rpc", "escnc.engine"), runtime_only=True)
        == []
    )
    assert _upward("netconf", ("escnc.engine", "escnc.vim", "escnc.http"), runtime_only=False) == []
    assert _upward("http", ("escnc.netconf",), runtime_only=False) == []


def test_only_the_transports_import_the_transports() -> None:
    """The request layer and everything under it are protocol-neutral: not even a type
    hint names netconf/ or http/ (so an HTTP request travels the NETCONF path)."""
    bad = []
    for name, found in everything().items():
        if name.startswith(("netconf/", "http/", "cli/")) or name == "app.py":
            continue
        bad += [f"{name} -> {m}" for m, _ in found
                if any(m == t or m.startswith(t + ".") for t in TRANSPORTS)]
    assert bad == []


def test_the_check_sees_type_only_and_runtime_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\nimport libvirt\n"
        "if TYPE_CHECKING:\n    from escnc.engine.engine import Engine\n"
    )
    assert imports(src) == [("typing", False), ("libvirt", False), ("escnc.engine.engine", True)]
