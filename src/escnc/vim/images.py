"""Fetching image files into escnc's local image cache.

An image ``src`` is a local path, a ``file://`` URL or an ``http``/``https`` URL, each
under the operator's policy (``vim/source_policy.py``: import directories, allowed
addresses, ``image_max_bytes``) and opened by ``vim/fetch.py``; any other scheme is
refused. The bytes land in ``<state_dir>/images/`` (mode 0600, written to a temporary
name, renamed when complete, so a crash never leaves a half image that looks
finished), with progress in the log every :data:`PROGRESS_EVERY` seconds and an
optional sha256 check. Downloads time out on connect and on every read
(:data:`TIMEOUT`), follow at most five redirects (each re-checked), and never log
credentials: user:password in a URL becomes a Basic Authorization header and is
shown as ``***`` like every query string. A download without Content-Length must
end cleanly (chunked encoding) or carry a checksum that matches: a stream that is
simply cut off is never taken for a complete image.
Storage pools on the hosts are filled from this cache (``vim/storage.py``).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from escnc.vim.fetch import FetchError, open_source, reason
from escnc.vim.source_policy import SourcePolicy, SourceRefused
from escnc.vim.source_policy import redact as redact

log = logging.getLogger(__name__)

CHUNK = 1 << 20
PROGRESS_EVERY = 5.0  # seconds between progress lines
TIMEOUT = 30.0  # seconds, for the connect and for every read


class ImageFetchError(Exception):
    """The image could not be fetched, is refused by the policy, or its checksum does
    not match."""


@dataclass(frozen=True)
class Fetched:
    size: int
    sha256: str


def _create_private(path: Path) -> int:
    """A new file only this user can read (0600 whatever the umask), never through a
    symbolic link."""
    path.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def write_private(path: Path, data: bytes) -> None:
    """``data`` into ``path`` (replaced atomically), mode 0600."""
    tmp = path.with_name(path.name + ".tmp")
    with os.fdopen(_create_private(tmp), "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def normalise_checksum(checksum: str | None) -> str:
    """``sha256:HEX`` or ``HEX`` -> lower-case hex ('' when none)."""
    value = (checksum or "").strip().lower()
    return value.split(":", 1)[1] if value.startswith("sha256:") else value


def fetch_image(
    name: str,
    src: str,
    dest: Path,
    checksum: str | None = None,
    timeout: float | None = None,
    *,
    policy: SourcePolicy,
) -> Fetched:
    """Copy or download ``src`` to ``dest`` under ``policy``; return its size and sha256."""
    timeout = TIMEOUT if timeout is None else timeout
    shown = redact(src)
    expected = normalise_checksum(checksum)
    limit = policy.max_bytes
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    done = 0
    started = last = time.monotonic()
    try:
        opened = open_source(policy, src, timeout)
    except (SourceRefused, FetchError) as exc:
        raise ImageFetchError(str(exc)) from exc
    total = opened.length
    log.info(
        "image %s: fetching %s (%s)", name, shown, f"{total} bytes" if total else "size unknown"
    )
    try:
        with opened.stream as source, os.fdopen(_create_private(tmp), "wb") as out:
            while True:
                try:
                    chunk = source.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise ImageFetchError(
                        f"download of {shown} failed after {done} bytes: "
                        f"{reason(exc, 'the server', timeout)}"
                    ) from exc
                if not chunk:
                    break
                done += len(chunk)
                if limit and done > limit:
                    raise ImageFetchError(
                        f"download of {shown} aborted: more than {limit} bytes "
                        f"({policy.max_setting})"
                    )
                out.write(chunk)
                digest.update(chunk)
                now = time.monotonic()
                if now - last >= PROGRESS_EVERY:
                    last = now
                    pct = f"{100 * done / total:.0f}%" if total else "?%"
                    rate = done / max(now - started, 1e-6) / (1 << 20)
                    log.info(
                        "image %s: %d of %s bytes (%s) in %.0f s, %.1f MiB/s",
                        name,
                        done,
                        total if total else "?",
                        pct,
                        now - started,
                        rate,
                    )
        if total is not None and done != total:
            raise ImageFetchError(f"download of {shown} incomplete: got {done} of {total} bytes")
        actual = digest.hexdigest()
        if expected and actual != expected:
            raise ImageFetchError(
                f"checksum mismatch for image {name}: expected sha256 {expected}, got {actual}"
            )
        if not opened.framed and not expected:
            raise ImageFetchError(
                f"download of {shown}: the server sent neither Content-Length nor chunked "
                "encoding, so a complete image cannot be told from a truncated one "
                "(give the image a checksum to accept such a server)"
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info(
        "image %s: %d bytes (100%%) fetched from %s in %.1f s, sha256 %s",
        name,
        done,
        shown,
        time.monotonic() - started,
        actual,
    )
    return Fetched(done, actual)


def copy_file(src: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
