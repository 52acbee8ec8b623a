"""Image registration: image entries in the configuration become files in the local
cache (``vim/images.py``) and volumes in each host's escnc pool (``vim/storage.py``).

State per image, shown in opdata: ``registering`` -> ``active`` | ``error``. A
deployment that needs an image waits for its registration and fails with the
registration's error message. An image without ``src`` registers as a blank disk
(the flavor's root disk size), which is enough for test-driver hosts.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from escnc.engine.model import ImageSpec
from escnc.vim import storage
from escnc.vim.hosts import Host
from escnc.vim.images import ImageFetchError, fetch_image

log = logging.getLogger(__name__)

REGISTERING = "registering"
ACTIVE = "active"
ERROR = "error"


@dataclass
class ImageState:
    spec: ImageSpec
    state: str = REGISTERING
    message: str = ""
    size: int = 0
    done: threading.Event = field(default_factory=threading.Event)


class ImageError(Exception):
    pass


class ImageRegistry:
    def __init__(self, cache_dir: Path, pools_dir: Path) -> None:
        self._cache = cache_dir
        self._pools = pools_dir
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

    def begin(self, spec: ImageSpec) -> bool:
        """Mark the image registering (synchronously, so deployments committed with it
        wait for it); False when it is already registered or registering as is."""
        with self._lock:
            current = self._images.get(spec.name)
            if current is not None and current.spec == spec and current.state != ERROR:
                return False
            self._images[spec.name] = ImageState(spec)
            return True

    def register(self, spec: ImageSpec) -> None:
        """Fetch the image (and kernel/initrd) into the cache; blocking, run as a job."""
        with self._lock:
            st = self._images.get(spec.name)
            if st is None or st.spec != spec:
                st = self._images[spec.name] = ImageState(spec)
        if st.done.is_set():
            return
        try:
            size = 0
            for part, src in (("disk", spec.src), ("kernel", spec.kernel), ("initrd", spec.initrd)):
                if not src:
                    continue
                dest = self._file(spec, part)
                if dest.exists() and not spec.checksum:
                    # completed earlier (files appear only when complete): reuse after restart
                    size += dest.stat().st_size
                    continue
                checksum = spec.checksum if part == "disk" else None
                size += fetch_image(spec.name, src, dest, checksum)
            st.size = size
            st.state = ACTIVE
            st.message = "image registered" if spec.src else "no src: blank root disk"
        except (ImageFetchError, OSError) as exc:
            st.state = ERROR
            st.message = str(exc)
            log.error("image %s registration failed: %s", spec.name, exc)
        finally:
            st.done.set()

    def forget(self, name: str) -> None:
        with self._lock:
            st = self._images.pop(name, None)
        if st is not None:
            for part in ("disk", "kernel", "initrd"):
                self._file(st.spec, part).unlink(missing_ok=True)

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
            raise ImageError(f"image {name} registration failed: {st.message}")
        return st

    def volumes_on(self, host: Host, name: str, pool: object) -> dict[str, str]:
        """Install the image's files as volumes on ``host``; part -> volume path."""
        st = self.get(name)
        if st is None or st.state != ACTIVE:
            raise ImageError(f"image {name} is not active")
        spec = st.spec
        paths: dict[str, str] = {}
        for part, src in (("disk", spec.src), ("kernel", spec.kernel), ("initrd", spec.initrd)):
            if not src:
                continue
            fmt = spec.disk_format if part == "disk" else "raw"
            vol = f"image-{spec.name}.{part}.{fmt}"
            paths[part] = storage.install_file(host, pool, vol, self._file(spec, part), fmt)  # type: ignore[arg-type]
        return paths
