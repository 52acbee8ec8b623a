"""Image and network jobs: register an image on every connected host, forget a
removed one (freeing its pool volumes once no VM disk uses them), remove a network.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import TYPE_CHECKING

from escnc.engine.imagereg import ACTIVE, ImageError, ImageState, volume_name_pattern
from escnc.engine.jobs import Job, idle
from escnc.engine.model import ImageSpec
from escnc.vim import storage
from escnc.vim.driver import VimError
from escnc.vim.hosts import Host
from escnc.vim.networks import remove_network as vim_remove_network

if TYPE_CHECKING:
    from escnc.engine.context import ImageJobView

log = logging.getLogger(__name__)


def remove_network(host: Host, name: str, _job: Job) -> None:
    vim_remove_network(host, name)


IMAGE_RELEASE_WAIT = 120.0  # seconds a removed image waits for the VMs it backs to go


def register_image(engine: ImageJobView, spec: ImageSpec, _job: Job) -> None:
    """Fetch the image, install it in the pool of every connected host, and report
    CREATE_IMAGE (not for an image found complete in the cache at start)."""
    image = engine.images.register(spec, functools.partial(locate_volume, engine))
    if image is None:
        return  # nothing done: already registered, or superseded by a newer version
    try:
        install_image(engine, spec, image)
    finally:
        image.reported.set()


def install_image(engine: ImageJobView, spec: ImageSpec, image: ImageState) -> None:
    if image.state != ACTIVE:
        engine.notifier.publish_resource("CREATE_IMAGE", message=image.message, failure=True)
        return
    problems = []
    hosts = []
    for host in engine.vims.hosts():
        if not host.connected or not spec.src:
            continue
        if image.volume_host is not None and host.name != image.volume_host.name:
            continue  # an in-place volume: other hosts get a copy when they need one
        try:
            engine.images.volumes_on(host, spec.name, engine.ops.pool(host))
            hosts.append(host.name)
        except (VimError, ImageError, OSError) as exc:
            # not fatal: deployments install it again on their host when they need it
            log.warning("image %s: cannot install on host %s: %s", spec.name, host.name, exc)
            problems.append(f"not installed on host {host.name}: {exc}")
    if image.reused:
        return
    message = image.message
    if hosts:
        message += f"; in the storage pool of host(s) {', '.join(hosts)}"
    if problems:
        message += "; " + "; ".join(problems)
    engine.notifier.publish_resource("CREATE_IMAGE", message=message)


def locate_volume(engine: ImageJobView, path: str) -> tuple[Host, int] | None:
    """The connected host whose escnc pool holds ``path`` as a volume, and its
    capacity (an image registered in place, e.g. a VM disk exported by day-2)."""
    for host in engine.vims.hosts():
        if not host.connected:
            continue
        try:
            size = engine.driver.locate_volume(host, engine.ops.pool(host), path)
        except VimError:
            continue
        if size is not None:
            return host, size
    return None


def forget_image(engine: ImageJobView, name: str, stop: threading.Event, _job: Job) -> None:
    """A removed image: its cache files go, and its pool volumes on every host once
    no VM disk uses them (an undeploy in the same commit frees them meanwhile); a
    volume still backing a VM's disk after :data:`IMAGE_RELEASE_WAIT` is kept."""
    if name in engine.desired.images:
        return  # added back meanwhile: its registration job comes next
    engine.images.forget(name)
    matches = volume_name_pattern(name).fullmatch
    deleted: list[str] = []
    kept: list[str] = []
    deadline = time.monotonic() + IMAGE_RELEASE_WAIT
    for host in engine.vims.hosts():
        if not host.connected:
            continue
        try:
            pool = engine.ops.pool(host)
            while True:
                in_use = storage.paths_in_use(host, pool)
                freed, busy = storage.delete_matching_volumes(
                    host, pool, lambda vol: matches(vol) is not None, in_use
                )
                deleted += [f"{host.name}:{v}" for v in freed]
                if (
                    not busy
                    or time.monotonic() > deadline
                    or name in engine.desired.images
                    or idle(0.5, stop)
                ):
                    kept += [f"{host.name}:{v}" for v in busy]
                    break
        except VimError as exc:
            log.warning("image %s: cannot free its volumes on host %s: %s", name, host.name, exc)
            kept.append(f"{host.name}: {exc}")
    message = f"image {name} deleted"
    message += f"; volumes freed: {', '.join(deleted)}" if deleted else "; no volume to free"
    if kept:
        message += f"; kept (still backing a VM disk): {', '.join(kept)}"
    engine.notifier.publish_resource("DELETE_IMAGE", message=message)
