"""Keep libraries escnc uses for one function from loading whole.

yangson imports ``translate_pattern`` and ``RegexError`` from ``elementpath``, whose
package ``__init__`` loads the complete XPath 1-3.1 engine (14 MiB imported alone;
4 MiB of a started server's resident memory) although only the XSD regex translator in
``elementpath.regex`` is used. :func:`defer_elementpath` registers the package
without running its ``__init__``, loads only ``elementpath.regex``, and completes the
real package on the first access to any other name, so a later user of elementpath
still sees the whole library.

paramiko imports ``invoke`` (18 MiB imported alone; 5 MiB of a started server) for
one client-side ssh_config feature (``Match exec``) that a server never uses;
:func:`defer_invoke` makes that import lazy, so invoke loads on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any


class _DeferredPackage(types.ModuleType):
    """A package whose ``__init__`` runs on the first access to a name it lacks."""

    _completing = False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or type(self)._completing:
            raise AttributeError(name)
        spec = self.__spec__
        if spec is None or spec.loader is None:
            raise AttributeError(name)
        type(self)._completing = True
        try:
            spec.loader.exec_module(self)
        finally:
            type(self)._completing = False
        # Completed: from now on attribute access is the plain module's.
        self.__class__ = types.ModuleType  # type: ignore[assignment]
        return getattr(self, name)


def _register_unexecuted(name: str) -> _DeferredPackage | None:
    """Put package ``name`` into ``sys.modules`` without running its ``__init__``."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return None
    pkg = _DeferredPackage(spec.name)
    pkg.__spec__ = spec
    pkg.__loader__ = spec.loader
    pkg.__file__ = spec.origin
    pkg.__package__ = spec.name
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules[spec.name] = pkg
    return pkg


def defer_elementpath() -> None:
    """Register ``elementpath`` with only its regex translator loaded (idempotent)."""
    if "elementpath" in sys.modules:
        return
    pkg = _register_unexecuted("elementpath")
    if pkg is None:
        return
    try:
        regex = importlib.import_module("elementpath.regex")
    except Exception:  # an unexpected layout: fall back to the normal import
        for name in [m for m in sys.modules if m.split(".")[0] == "elementpath"]:
            del sys.modules[name]
        return
    pkg.translate_pattern = regex.translate_pattern  # type: ignore[attr-defined]
    pkg.RegexError = regex.RegexError  # type: ignore[attr-defined]


def defer_invoke() -> None:
    """Register ``invoke`` unexecuted (idempotent): it loads on first attribute access.

    (``importlib.util.LazyLoader`` would load it at once on Python 3.11: the import
    statement itself reads ``__spec__`` of a module found in ``sys.modules``.)"""
    if "invoke" in sys.modules:
        return
    _register_unexecuted("invoke")
