"""Cross-tree reference checks for incremental validation.

A one-deployment edit is validated by yangson on a pruned tree (touched units plus
the root list entries they name, validation.py), which resolves the deployment's
leafrefs into images/flavors/networks. The reverse direction -- removing an
image/flavor/network that an *untouched* deployment still uses -- is checked here
over the whole tree, only for the entries a write removed.
"""

from __future__ import annotations

from lxml import etree

from escnc.datastore.lxmltypes import xpath_elements
from escnc.errors import RpcError
from escnc.ns import ESC

_NS = {"esc": ESC}
# (target list, name leaf XPath under the root, referencing leaves)
_REFS = (
    ("images/esc:image", "//esc:deployment/esc:vm_group/esc:image"),
    ("flavors/esc:flavor", "//esc:deployment/esc:vm_group/esc:flavor"),
    (
        "networks/esc:network",
        "//esc:deployment/esc:vm_group/esc:interfaces/esc:interface/esc:network",
    ),
    (
        "networks/esc:network",
        "//esc:deployment/esc:vm_group/esc:scaling/esc:static_ip_address_pool/esc:network",
    ),
)


def check_removed(data: etree._Element, gone: dict[str, set[str]]) -> None:
    """Root list entries removed by a write (entry tag -> names) must not be used by
    a deployment of ``data`` (the whole proposed tree: untouched deployments too)."""
    for target, refs in _REFS:
        names = gone.get(f"{{{ESC}}}{target.split(':')[-1]}")
        if not names:
            continue
        for leaf in xpath_elements(data, refs, _NS):
            value = (leaf.text or "").strip()
            if value in names:
                raise RpcError(
                    "data-missing",
                    f"{target.split('/')[0][:-1]} {value!r} is still used by {_path(leaf)}",
                    app_tag="instance-required",
                    path=_path(leaf),
                    path_nsmap=_NS,
                )


def _path(el: etree._Element) -> str:
    steps = []
    node: etree._Element | None = el
    while node is not None and node.tag != "{urn:ietf:params:xml:ns:netconf:base:1.0}data":
        name = etree.QName(node).localname
        key = (
            node.findtext(f"{{{ESC}}}name")
            if name in ("tenant", "deployment", "vm_group")
            else None
        )
        if key is None and name == "interface":
            key_pred = f"[esc:nicid='{node.findtext(f'{{{ESC}}}nicid')}']"
        elif key is None and name == "static_ip_address_pool":
            key_pred = f"[esc:network='{node.findtext(f'{{{ESC}}}network')}']"
        else:
            key_pred = f"[esc:name='{key}']" if key is not None else ""
        steps.append(f"esc:{name}{key_pred}")
        node = node.getparent()
    return "/" + "/".join(reversed(steps))
