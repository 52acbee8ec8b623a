"""Fetching image files into escnc's local image cache.

An image ``src`` is a local path, a ``file://`` URL or an ``http``/``https`` URL.
The bytes land in ``<state_dir>/images/`` (written to a temporary name, renamed when
complete, so a crash never leaves a half image that looks finished), with progress
in the log and an optional sha256 check. Storage pools on the hosts are filled from
this cache (``vim/storage.py``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

CHUNK = 1 << 20
PROGRESS_EVERY = 5.0  # seconds between progress lines


class ImageFetchError(Exception):
    """The image could not be fetched or its checksum does not match."""


def _open_source(src: str, timeout: float) -> tuple[BinaryIO, int | None]:
    parsed = urllib.parse.urlparse(src)
    if parsed.scheme in ("http", "https"):
        try:
            resp = urllib.request.urlopen(src, timeout=timeout)
        except (OSError, ValueError) as exc:
            raise ImageFetchError(f"cannot download {src}: {exc}") from exc
        length = resp.headers.get("Content-Length")
        return resp, int(length) if length and length.isdigit() else None
    if parsed.scheme == "file":
        path = Path(urllib.parse.unquote(parsed.path))
    elif parsed.scheme == "":
        path = Path(src)
    else:
        raise ImageFetchError(f"unsupported image source scheme {parsed.scheme!r} in {src}")
    try:
        return path.open("rb"), path.stat().st_size
    except OSError as exc:
        raise ImageFetchError(f"cannot read image {src}: {exc}") from exc


def fetch_image(
    name: str, src: str, dest: Path, checksum: str | None = None, timeout: float = 60.0
) -> int:
    """Copy or download ``src`` to ``dest``; return its size in bytes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    done = 0
    started = last = time.monotonic()
    source, total = _open_source(src, timeout)
    try:
        with source, tmp.open("wb") as out:
            while True:
                try:
                    chunk = source.read(CHUNK)
                except OSError as exc:
                    raise ImageFetchError(
                        f"download of {src} failed after {done} bytes: {exc}"
                    ) from exc
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                now = time.monotonic()
                if now - last >= PROGRESS_EVERY:
                    last = now
                    pct = f"{100 * done / total:.0f}%" if total else "?%"
                    log.info("image %s: %d bytes (%s) in %.0f s", name, done, pct, now - started)
        if total is not None and done != total:
            raise ImageFetchError(f"image {src}: got {done} bytes, expected {total}")
        if checksum and digest.hexdigest().lower() != checksum.strip().lower():
            raise ImageFetchError(
                f"image {name}: sha256 {digest.hexdigest()} does not match checksum {checksum}"
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info(
        "image %s: %d bytes fetched from %s in %.1f s", name, done, src, time.monotonic() - started
    )
    return done


def copy_file(src: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
