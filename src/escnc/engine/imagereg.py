"""Image registration: image entries in the configuration become files in the local
cache (``vim/images.py``) and volumes in each host's escnc pool (``vim/storage.py``).

State per image, shown in opdata: ``registering`` -> ``active`` | ``error``. A
deployment that needs an image waits for its registration and fails with the
registration's error message. An image without ``src`` registers as a blank disk
(the flavor's root disk size), which is enough for test-driver hosts.

Cache files are ``<cache>/<image>.<part>`` (part: disk, kernel, initrd) with a
``.meta`` JSON beside each (source, checksum, size, sha256): a file is reused (after
a restart) only for the same source and checksum, and only while the source still
passes the operator's policy (``vim/source_policy.py``); both are mode 0600. Pool volumes are named
``image-<image>.<version>.<part>.<fmt>``, the version being a digest of the content,
so a changed image never overwrites a volume that still backs a VM's disk.

An image whose ``src`` already is a volume of a host's escnc pool (an EXPORT of a VM's
disk, ``engine/maintenance.py``) is registered in place: nothing is fetched or copied, the
volume itself backs the VMs of that host; another host gets a copy when a deployment
first needs it there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from escnc.engine.model import ImageSpec
from escnc.vim import storage
from escnc.vim.fetch import FetchError, check_source
from escnc.vim.hosts import Host
from escnc.vim.images import (
    ImageFetchError,
    fetch_image,
    normalise_checksum,
    redact,
    write_private,
)
from escnc.vim.source_policy import SourcePolicy, SourceRefused

log = logging.getLogger(__name__)

REGISTERING = "registering"
ACTIVE = "active"
ERROR = "error"
PARTS = ("disk", "kernel", "initrd")


@dataclass
class ImageState:
    spec: ImageSpec
    state: str = REGISTERING
    message: str = ""
    size: int = 0
    sha256: str = ""  # of the disk file
    version: str = ""  # digest of every part: names the pool volumes
    reused: bool = False  # active from the cache of an earlier run, nothing fetched
    volume_host: Host | None = None  # src is a volume of this host's pool: no copy
    done: threading.Event = field(default_factory=threading.Event)
    # set once the engine has installed it and published CREATE_IMAGE (or not)
    reported: threading.Event = field(default_factory=threading.Event)


class ImageError(Exception):
    pass


# src path -> (host whose escnc pool holds it as a volume, its capacity), or None
VolumeLocator = Callable[[str], "tuple[Host, int] | None"]


def _sources(spec: ImageSpec) -> list[tuple[str, str]]:
    return [(p, s) for p, s in zip(PARTS, (spec.src, spec.kernel, spec.initrd), strict=True) if s]


def volume_name_pattern(name: str) -> re.Pattern[str]:
    """Names of every pool volume of image ``name`` (any version, any part)."""
    return re.compile(rf"image-{re.escape(name)}\.[0-9a-f]{{12}}\.(disk|kernel|initrd)\.\w+")


class ImageRegistry:
    def __init__(self, cache_dir: Path, pools_dir: Path, policy: SourcePolicy) -> None:
        self._cache = cache_dir
        self._pools = pools_dir
        self._policy = policy  # which local files and URLs an image src may name
        self._lock = threading.Lock()
        self._images: dict[str, ImageState] = {}

    def states(self) -> list[ImageState]:
        with self._lock:
            return list(self._images.values())

    def get(self, name: str) -> ImageState | None:
        with self._lock:
            return self._images.get(name)

    def _file(self, spec: ImageSpec, part: str) -> Path:
        return self._cache / f"{spec.name}.{part}"

    def begin(self, spec: ImageSpec, retry_failed: bool = True) -> bool:
        """Mark the image registering (synchronously, so deployments committed with it
        wait for it); False when it is already registered or registering as is (or
        failed as is and ``retry_failed`` is off: a commit that did not change it)."""
        with self._lock:
            current = self._images.get(spec.name)
            if (
                current is not None
                and current.spec == spec
                and (current.state != ERROR or not retry_failed)
            ):
                return False
            self._images[spec.name] = ImageState(spec)
            return True

    def _cached(
        self, spec: ImageSpec, dest: Path, src: str, checksum: str
    ) -> dict[str, object] | None:
        """The meta of a complete earlier fetch of ``src`` for this very ``spec``
        into ``dest`` (a restart), if any."""
        try:
            meta = json.loads(dest.with_name(dest.name + ".meta").read_text())
            if (
                meta.get("src") == src
                and meta.get("spec") == dataclasses.asdict(spec)
                and (not checksum or meta.get("sha256") == checksum)
                and dest.stat().st_size == meta.get("size")
            ):
                return dict(meta)
        except (OSError, ValueError, AttributeError):
            pass
        return None

    def register(self, spec: ImageSpec, locate: VolumeLocator | None = None) -> ImageState | None:
        """Fetch the image (and kernel/initrd) into the cache; blocking, run as a job.
        Returns the state it settled, or None when there was nothing to do (already
        done, or superseded by a newer registration of the same name)."""
        with self._lock:
            st = self._images.get(spec.name)
            if st is None or st.spec != spec:
                return None  # removed or changed meanwhile: a later job handles it
        if st.done.is_set():
            return None
        try:
            size = 0
            digests = []
            reused = True
            found = locate(spec.src) if locate is not None and spec.src.startswith("/") else None
            for part, src in _sources(spec):
                if part == "disk" and found is not None:
                    st.volume_host, part_size = found
                    size += part_size
                    digests.append(f"disk:volume:{src}")
                    reused = False
                    continue
                dest = self._file(spec, part)
                checksum = normalise_checksum(spec.checksum) if part == "disk" else ""
                check_source(self._policy, src)  # a cached file too: the policy may be newer
                meta = self._cached(spec, dest, src, checksum)
                if meta is not None:
                    for cached in (dest, dest.with_name(dest.name + ".meta")):
                        cached.chmod(0o600)  # cached by an older escnc: 0644
                    part_size, sha = int(str(meta["size"])), str(meta["sha256"])
                else:
                    reused = False
                    fetched = fetch_image(spec.name, src, dest, checksum, policy=self._policy)
                    part_size, sha = fetched.size, fetched.sha256
                    meta = {
                        "src": src,
                        "size": part_size,
                        "sha256": sha,
                        "spec": dataclasses.asdict(spec),
                    }
                    # 0600 like the image: the src may hold a URL's credentials
                    write_private(dest.with_name(dest.name + ".meta"), json.dumps(meta).encode())
                size += part_size
                digests.append(f"{part}:{sha}")
                if part == "disk":
                    st.sha256 = sha
            st.size = size
            st.version = hashlib.sha256(" ".join(digests).encode()).hexdigest()[:12]
            st.reused = reused and bool(digests)
            st.message = (
                f"image {spec.name} registered in place from volume {spec.src} of host "
                f"{st.volume_host.name} (no copy): {size} bytes"
                if st.volume_host is not None
                else f"image {spec.name} registered from {redact(spec.src)}: {size} bytes, "
                f"sha256 {st.sha256}"
                if spec.src
                else f"image {spec.name} has no src: VMs get a blank root disk"
            )
            st.state = ACTIVE
        except (ImageFetchError, SourceRefused, FetchError, OSError) as exc:
            st.state = ERROR
            st.message = f"image {spec.name} registration failed: {exc}"
            log.error("%s", st.message)
        finally:
            st.done.set()
        return st

    def forget(self, name: str) -> ImageState | None:
        """Drop the image's state and cache files (the pool volumes are the engine's)."""
        with self._lock:
            st = self._images.pop(name, None)
        spec = st.spec if st is not None else ImageSpec(name)
        for part in PARTS:
            dest = self._file(spec, part)
            dest.unlink(missing_ok=True)
            dest.with_name(dest.name + ".meta").unlink(missing_ok=True)
        return st

    def wait_active(
        self, name: str, timeout: float, cancel: threading.Event | None = None
    ) -> ImageState:
        st = self.get(name)
        if st is None:
            raise ImageError(f"image {name} is not registered")
        deadline = timeout
        while not st.done.wait(min(0.5, deadline)):
            deadline -= 0.5
            if deadline <= 0 or (cancel is not None and cancel.is_set()):
                raise ImageError(f"image {name} is still registering")
        if st.state != ACTIVE:
            # the image job publishes CREATE_IMAGE FAILURE right after ``done``: a
            # deployment failing on this image reports after it, never before
            st.reported.wait(min(max(deadline, 0.0), 10.0))
            raise ImageError(st.message or f"image {name} registration failed")
        return st

    def volumes_on(self, host: Host, name: str, pool: object) -> dict[str, str]:
        """Install the image's files as volumes on ``host``; part -> volume path."""
        st = self.get(name)
        if st is None or st.state != ACTIVE:
            raise ImageError(f"image {name} is not active")
        spec = st.spec
        paths: dict[str, str] = {}
        for part, _src in _sources(spec):
            fmt = spec.disk_format if part == "disk" else "raw"
            if part == "disk" and st.volume_host is not None:
                if host.name == st.volume_host.name:
                    paths[part] = spec.src  # the volume itself
                    continue
                self._copy_volume(st)  # another host: a copy, as of any image
            vol = f"image-{spec.name}.{st.version}.{part}.{fmt}"
            paths[part] = storage.install_file(host, pool, vol, self._file(spec, part), fmt)  # type: ignore[arg-type]
        return paths

    def _copy_volume(self, st: ImageState) -> None:
        """The cache file of an image registered from a pool volume (once)."""
        owner = st.volume_host
        dest = self._file(st.spec, "disk")
        if owner is None or dest.exists():
            return
        try:
            storage.download_volume(owner, st.spec.src, dest, st.size)
        except Exception as exc:
            dest.unlink(missing_ok=True)
            raise ImageError(
                f"image {st.spec.name}: cannot copy volume {st.spec.src} from host "
                f"{owner.name}: {exc}"
            ) from exc
