"""Names that YANG accepts but the host cannot use, refused at edit time.

A VM's generated name ``<deployment>_<vm_group>_<index>_<uuid4>`` becomes a libvirt
domain name and the stem of file names (``<name>-root.qcow2``, ``<name>-day0.iso``,
QEMU's ``<name>.log``); image and network names become volume and libvirt object
names. File names are limited to 255 bytes, so names whose derived file names would be
longer (three 255-character names) must be refused with an error-path instead of
failing at deploy time with "File name too long".
"""

from __future__ import annotations

from lxml import etree

from escnc.engine.validate import group_path
from escnc.errors import RpcError, RpcErrors, invalid_value
from escnc.ns import ESC

NSMAP = {"esc": ESC}
E = f"{{{ESC}}}"
FILE_NAME_MAX = 255
UUID_LEN = 36
# the longest suffix escnc appends to a generated name ("-day0.iso", "-root.qcow2")
SUFFIX_MAX = len("-root.qcow2")
INDEX_DIGITS = 6
# bytes a deployment name and a vm_group name may use together
GENERATED_BUDGET = FILE_NAME_MAX - SUFFIX_MAX - UUID_LEN - INDEX_DIGITS - 3  # three "_"
# image volumes are image-<name>.<version>.<part>.<fmt>; networks are libvirt objects
IMAGE_NAME_MAX = 200
NETWORK_NAME_MAX = 200


def _len(text: str | None) -> int:
    return len((text or "").encode("utf-8"))


def check_names(tree: etree._Element) -> None:
    """Validator for a proposed configuration (the datastore hands it the touched
    units): raises RpcErrors listing every name that cannot work downstream."""
    errors: list[RpcError] = []
    root = tree.find(f"{E}esc_datamodel")
    if root is None:
        return
    for tenant in root.iterfind(f"{E}tenants/{E}tenant"):
        tname = tenant.findtext(f"{E}name") or ""
        for dep in tenant.iterfind(f"{E}deployments/{E}deployment"):
            dname = dep.findtext(f"{E}name") or ""
            for group in dep.iterfind(f"{E}vm_group"):
                gname = group.findtext(f"{E}name") or ""
                used = _len(dname) + _len(gname)
                if used > GENERATED_BUDGET:
                    errors.append(invalid_value(
                        f"deployment {dname[:40]!r}... and vm_group {gname[:40]!r}... are "
                        f"{used} bytes together; VM names built from them "
                        f"(<deployment>_<vm_group>_<index>_<uuid>) must fit in a "
                        f"{FILE_NAME_MAX}-byte file name: at most {GENERATED_BUDGET} bytes",
                        path=group_path(tname, dname, gname, "name"),
                        path_nsmap=NSMAP,
                    ))
    for kind, limit in (("image", IMAGE_NAME_MAX), ("network", NETWORK_NAME_MAX)):
        for entry in root.iterfind(f"{E}{kind}s/{E}{kind}"):
            name = entry.findtext(f"{E}name") or ""
            if _len(name) > limit:
                errors.append(invalid_value(
                    f"{kind} name is {_len(name)} bytes; at most {limit} (it names files "
                    "and libvirt objects on the host)",
                    path=f"/esc:esc_datamodel/esc:{kind}s/esc:{kind}[esc:name='{name}']/esc:name",
                    path_nsmap=NSMAP,
                ))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise RpcErrors(errors)
