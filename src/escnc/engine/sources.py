"""Edit-time checks of the sources a client names (docs/security.md): VIM connector
URIs (``vim/uri_policy.py``), image URLs and day-0 files (``vim/source_policy.py``).

Each refusal is an ``invalid-value`` rpc-error whose error-path is the offending
leaf and whose error-app-tag says which policy refused it (:data:`VIM_TAG`,
:data:`IMAGE_TAG`, :data:`DAY0_TAG`). The same policies are applied again where the
source is used (``vim/hosts.py`` before ``libvirt.open``, ``vim/fetch.py`` before
reading), so what is checked here is only what can be told now: a URL's scheme and
address literals (no DNS at edit time), a day-0 path's directory, symbolic links,
file type and size. Image *paths* are checked when the image is registered (an image
file may be copied into the import directory after the entry is configured); a
refused one makes the registration fail, naming the reason.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from escnc.engine.model import Desired
from escnc.errors import RpcError, invalid_value
from escnc.ns import ESC
from escnc.settings import Settings
from escnc.vim.source_policy import (
    SourcePolicy,
    SourceRefused,
    check_resolved,
    check_size,
    day0_policy,
    image_policy,
    is_url,
    local_path,
    parse_url,
)
from escnc.vim.uri_policy import UriRefused, check_vim_uri

NSMAP = {"esc": ESC}
VIM_TAG = "vim-uri-refused"
VIM_DUPLICATE_TAG = "vim-already-registered"
IMAGE_TAG = "image-source-refused"
DAY0_TAG = "day0-source-refused"
ROOT = "/esc:esc_datamodel"


def _lit(value: str) -> str:
    """An XPath string literal for ``value``."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    parts = value.split("'")
    return "concat(" + ", \"'\", ".join(f"'{p}'" for p in parts) + ")"


def _error(message: str, path: str, tag: str) -> RpcError:
    return invalid_value(message, path=path, path_nsmap=NSMAP, app_tag=tag)


def source_errors(settings: Settings, desired: Desired) -> list[RpcError]:
    """Every refused source of the (pruned) proposed configuration."""
    errors: list[RpcError] = []
    # one libvirtd is one VIM: under two names, each would take the other's domains
    # for orphans (the same daemon under another URI: found by host UUID, vim/hosts.py)
    owner = {uri: name for name, uri in reversed(list(settings.vims.items()))}
    for name, (uri, _default) in sorted(desired.vims.items()):
        path = f"{ROOT}/esc:vim_connectors/esc:vim_connector[esc:name={_lit(name)}]/esc:uri"
        if name not in settings.vims and uri and owner.setdefault(uri, name) != name:
            errors.append(_error(
                f"vim_connector {name}: URI {uri} is already registered as VIM "
                f"{owner[uri]}; one libvirtd is registered once",
                path,
                VIM_DUPLICATE_TAG,
            ))
            continue
        operator_uri = settings.vims.get(name)
        if operator_uri is not None:
            if uri != operator_uri:
                errors.append(_error(
                    f"vim_connector {name}: a VIM of that name comes from the operator's "
                    "settings (--vim); its URI cannot be changed from the configuration",
                    path,
                    VIM_TAG,
                ))
            continue
        try:
            check_vim_uri(uri, allow_test=settings.allow_test_vims)
        except UriRefused as exc:
            errors.append(_error(f"vim_connector {name}: URI refused: {exc}", path, VIM_TAG))
    images = image_policy(settings)
    for name, spec in sorted(desired.images.items()):
        for leaf, src in (("src", spec.src), ("kernel", spec.kernel), ("initrd", spec.initrd)):
            if src and is_url(src):
                try:
                    parse_url(images, src)
                except SourceRefused as exc:
                    errors.append(_error(
                        f"image {name}: {exc}",
                        f"{ROOT}/esc:images/esc:image[esc:name={_lit(name)}]/esc:{leaf}",
                        IMAGE_TAG,
                    ))
    day0 = day0_policy(settings)
    for (tenant, dname), dep in sorted(desired.deployments.items()):
        for group in dep.groups.values():
            for cfg in group.config_data:
                if not cfg.file:
                    continue
                try:
                    check_day0(day0, cfg.file)
                except SourceRefused as exc:
                    errors.append(_error(
                        f"vm_group {group.name} config_data {cfg.dst}: {exc}",
                        f"{ROOT}/esc:tenants/esc:tenant[esc:name={_lit(tenant)}]"
                        f"/esc:deployments/esc:deployment[esc:name={_lit(dname)}]"
                        f"/esc:vm_group[esc:name={_lit(group.name)}]/esc:config_data"
                        f"/esc:configuration[esc:dst={_lit(cfg.dst)}]/esc:file",
                        DAY0_TAG,
                    ))
    return errors


def check_day0(policy: SourcePolicy, src: str) -> None:
    """What can be told about a day-0 ``file`` now, without reading it (a file still
    missing is the deploy's to report)."""
    if is_url(src):
        parse_url(policy, src)
        return
    path = local_path(policy, src)
    try:
        resolved = Path(os.path.realpath(path, strict=True))
        check_resolved(policy, src, resolved)
        info = os.lstat(resolved)
    except OSError:
        return
    if not stat.S_ISREG(info.st_mode):
        raise SourceRefused(f"{policy.what} {src}: {path} is not a regular file")
    check_size(policy, src, info.st_size)
