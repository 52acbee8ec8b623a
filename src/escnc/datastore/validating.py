"""Finding units in a tree and validating the units a write touched.

yangson sees a private tree of the touched units, the root shell and the root
list entries they need (validation.needed_entries); removed root entries that
untouched deployments still use are found by references.check_removed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from lxml import etree

from escnc.datastore.edit import (
    CONTAINER_TAGS,
    DEPLOYMENT,
    ENTRY_CONTAINER,
    ESC_ROOT,
    ROOT_LISTS,
    ROOT_UNIT,
    TENANT,
    UnitKey,
)
from escnc.datastore.groupcommit import GroupCommit
from escnc.datastore.references import check_removed
from escnc.datastore.schema import SNode
from escnc.datastore.units import (
    assemble,
    find_unit,
    find_units,
    shell,
)
from escnc.datastore.validation import needed_entries
from escnc.ns import ESC


class Validating(GroupCommit):
    def _find_units(
        self, data: etree._Element, keys: set[UnitKey] | list[UnitKey]
    ) -> dict[UnitKey, etree._Element | None]:
        if len(keys) <= 8:  # a few lookups: the key index is cheaper than a map
            return {k: self._find_unit(data, k) for k in keys}
        return find_units(data, keys)

    def _find_unit(self, data: etree._Element, key: UnitKey) -> etree._Element | None:
        if key[0] == "d":
            return self._find_dep(data, key)
        if key[0] == "e":
            return self._find_entry(data, key)
        return find_unit(data, key)

    def _find_entry(self, data: etree._Element, key: UnitKey) -> etree._Element | None:
        holder = data.find(f"{ESC_ROOT}/{{{ESC}}}{key[1]}")
        if holder is None:
            return None
        index = self._index if data is self._running else self._candidate_index
        return index.lookup(holder, self._entry_snode(key[1]), (key[2],))

    def _entry_snode(self, cname: str) -> SNode:
        sn = self._entry_sn.get(cname)
        if sn is None:
            sn = self._entry_sn[cname] = (
                self.schema.root.children[ESC_ROOT]
                .children[f"{{{ESC}}}{cname}"]
                .children[ROOT_LISTS[cname]]
            )
        return sn

    def _find_dep(self, data: etree._Element, key: UnitKey) -> etree._Element | None:
        ten_sn = self._tenant_sn
        ten_parent = data.find(f"{{{ESC}}}esc_datamodel/{{{ESC}}}tenants")
        if ten_parent is None:
            return None
        index = self._index if data is self._running else self._candidate_index
        ten = index.lookup(ten_parent, ten_sn, (key[1],))
        if ten is None:
            return None
        deps = ten.find(f"{{{ESC}}}deployments")
        if deps is None:
            return None
        return index.lookup(deps, self._dep_sn, (key[2],))

    @property
    def _tenant_sn(self):  # type: ignore[no-untyped-def]
        return (
            self.schema.root.children[f"{{{ESC}}}esc_datamodel"]
            .children[f"{{{ESC}}}tenants"]
            .children[TENANT]
        )

    @property
    def _dep_sn(self):  # type: ignore[no-untyped-def]
        return self._tenant_sn.children[f"{{{ESC}}}deployments"].children[DEPLOYMENT]

    def _validate_units(
        self,
        data: etree._Element,
        keys: Collection[UnitKey],
        old_units: dict[UnitKey, bytes] | None,
        elements: dict[UnitKey, etree._Element] | None = None,
        raws: dict[UnitKey, bytes | None] | None = None,
    ) -> None:
        """Validate a proposed tree; incrementally (touched units) when enabled.

        yangson sees a private tree of the touched units, the root shell and the root
        list entries they need (needed_entries); removed root entries that untouched
        deployments still use are found by check_removed. ``raws``: units of ``data``
        already serialized (None: absent), not serialized again."""
        if not self.incremental:
            self._full_validate(data)
            return
        present: dict[UnitKey, bytes] = {}
        ctx = set(keys) | {ROOT_UNIT}
        for k in list(ctx):
            if k[0] == "d":
                ctx.add(("t", k[1]))
        gone: dict[str, set[str]] = {}
        if raws:
            for k in ctx & raws.keys():
                raw = raws[k]
                if raw is not None:
                    present[k] = raw
                elif k[0] == "e":
                    gone.setdefault(ROOT_LISTS[k[1]], set()).add(k[2])
            ctx -= raws.keys()
        found = self._find_units(data, ctx) if elements is None else elements
        for k in ctx:
            el = found.get(k)
            if el is not None:
                present[k] = shell(el, k)
            elif k[0] == "e":
                gone.setdefault(ROOT_LISTS[k[1]], set()).add(k[2])
        pruned = assemble(present, sorted(present, key=lambda k: (self._seq.get(k, 1 << 60), k)))
        needed_entries(pruned, data, self._prunable, self._entry_lookup(data))
        self.schema.validate_config(pruned)
        if gone:
            check_removed(data, gone)
        for v in self._validators:
            v(pruned)

    def _entry_lookup(
        self, data: etree._Element
    ) -> Callable[[str, str], etree._Element | None]:
        index = self._index if data is self._running else self._candidate_index
        holders: dict[str, etree._Element | None] = {}

        def lookup(tag: str, name: str) -> etree._Element | None:
            cname = CONTAINER_TAGS[ENTRY_CONTAINER[tag]]
            if cname not in holders:
                holders[cname] = data.find(f"{ESC_ROOT}/{ENTRY_CONTAINER[tag]}")
            holder = holders[cname]
            if holder is None:
                return None
            return index.lookup(holder, self._entry_snode(cname), (name,))

        return lookup

    def _full_validate(self, data: etree._Element, syntax_only: bool = False) -> None:
        if syntax_only:
            self.schema.to_instance(data)
            return
        self.schema.validate_config(data)
        for v in self._validators:
            v(data)

    def _check_known(self, data: etree._Element) -> None:
        self.schema.to_instance(data)
