"""Linear-time replacements inside yangson (1.7) for large lists.

* Iterating an array instance (``for entry in inst``) made each entry with
  ``next()``, which copies the deques of all preceding and following entries: a
  list of n entries cost O(n^2) (10,000 tenants or flavors in one edit spent most
  of a second there). :class:`_LazyEntry` builds those deques only when an entry
  asks for its siblings (XPath, ``up()``), which validation of a flat entry never does.
* Making an object member copied the parent object (its ``siblings``), for every
  member validation visits; :class:`_LazyMember` copies only when asked (``up()``).
* A node's schema pattern is checked per instance (derivatives over the member
  names). Where the pattern has no ``when`` condition the verdict depends only on
  the member names, so a successful check is remembered per (node, content type,
  names) and 10,000 entries of one shape pay for it once.

Both keep yangson's verdicts and error reports: failures are always recomputed by
the original code. ``install()`` is idempotent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

from yangson import instance, schemanode, schpattern
from yangson.instvalue import ArrayValue, ObjectValue

_CACHE_MAX = 4096
_installed = False


class _LazyEntry(instance.ArrayEntry):
    """An ArrayEntry whose ``before``/``after`` deques are made on first use."""

    def __init__(self, key: int, array: ArrayValue, parinst: Any, schema_node: Any) -> None:
        instance.InstanceNode.__init__(
            self, key, array[key], parinst, schema_node, array.timestamp
        )
        self._array = array

    @property  # type: ignore[override]
    def before(self) -> deque[Any]:
        d = self.__dict__.get("_before")
        if d is None:
            d = self.__dict__["_before"] = deque(reversed(self._array[: self._key]))
        return d

    @before.setter
    def before(self, value: deque[Any]) -> None:
        self.__dict__["_before"] = value

    @property  # type: ignore[override]
    def after(self) -> deque[Any]:
        d = self.__dict__.get("_after")
        if d is None:
            d = self.__dict__["_after"] = deque(self._array[self._key + 1 :])
        return d

    @after.setter
    def after(self, value: deque[Any]) -> None:
        self.__dict__["_after"] = value


class _LazyMember(instance.ObjectMember):
    """An ObjectMember whose ``siblings`` (a copy of the parent object without it)
    are made on first use: validation visits every member of every entry, and the
    copy (with a fresh timestamp) per member was a tenth of validating a flat list."""

    def __init__(
        self, key: str, obj: ObjectValue, value: Any, parinst: Any, schema_node: Any
    ) -> None:
        instance.InstanceNode.__init__(self, key, value, parinst, schema_node, obj.timestamp)
        self._obj = obj

    @property  # type: ignore[override]
    def siblings(self) -> dict[str, Any]:
        d = self.__dict__.get("_siblings")
        if d is None:
            d = self._obj.copy()
            d.pop(self._key)
            self.__dict__["_siblings"] = d
        return d  # type: ignore[no-any-return]

    @siblings.setter
    def siblings(self, value: dict[str, Any]) -> None:
        self.__dict__["_siblings"] = value


def _when_free(p: object, depth: int = 0) -> bool:
    if depth > 200:
        return False
    if isinstance(p, schpattern.Conditional) and p.when:
        return False
    for attr in ("left", "right", "pattern"):
        sub = getattr(p, attr, None)
        if sub is not None and not _when_free(sub, depth + 1):
            return False
    return True


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    orig_iter = instance.InstanceNode.__iter__

    def fast_iter(self: instance.InstanceNode) -> Iterator[Any]:
        value = self.value
        if isinstance(value, ArrayValue):
            return (_LazyEntry(i, value, self, self.schema_node) for i in range(len(value)))
        return orig_iter(self)

    instance.InstanceNode.__iter__ = fast_iter  # type: ignore[method-assign]

    orig_member = instance.InstanceNode._member

    def fast_member(self: instance.InstanceNode, name: str) -> Any:
        value = self.value
        if not isinstance(value, ObjectValue):
            return orig_member(self, name)
        pts = name.partition(":")
        if pts[1] and pts[0] == self.namespace:
            name = pts[2]
        if name not in value:  # yangson's own error
            return orig_member(self, name)
        return _LazyMember(name, value, value[name], self, self._member_schema_node(name))

    instance.InstanceNode._member = fast_member  # type: ignore[method-assign]

    orig_check = schemanode.InternalNode._check_schema_pattern

    def check(self: schemanode.InternalNode, inst: Any, ctype: Any) -> None:
        free = self.__dict__.get("_escnc_when_free")
        if free is None:
            free = self.__dict__["_escnc_when_free"] = _when_free(self.schema_pattern)
        if not free:
            orig_check(self, inst, ctype)
            return
        key = (ctype, tuple(inst))
        ok = self.__dict__.setdefault("_escnc_pattern_ok", set())
        if key in ok:
            return
        orig_check(self, inst, ctype)
        if len(ok) < _CACHE_MAX:
            ok.add(key)

    schemanode.InternalNode._check_schema_pattern = check  # type: ignore[method-assign]
