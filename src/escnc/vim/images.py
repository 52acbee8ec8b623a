"""Fetching image files into escnc's local image cache.

An image ``src`` is a local path, a ``file://`` URL or an ``http``/``https`` URL; any
other scheme is refused. The bytes land in ``<state_dir>/images/`` (written to a
temporary name, renamed when complete, so a crash never leaves a half image that
looks finished), with progress in the log every :data:`PROGRESS_EVERY` seconds and
an optional sha256 check. Downloads time out on connect and on every read
(:data:`TIMEOUT`), follow at most :data:`MAX_REDIRECTS` redirects (to http/https
only), and never log credentials: user:password in a URL becomes a Basic
Authorization header and is shown as ``***`` like every query string.
Storage pools on the hosts are filled from this cache (``vim/storage.py``).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import logging
import os
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

CHUNK = 1 << 20
PROGRESS_EVERY = 5.0  # seconds between progress lines
TIMEOUT = 30.0  # seconds, for the connect and for every read
MAX_REDIRECTS = 5
SCHEMES = ("http", "https", "file", "")


class ImageFetchError(Exception):
    """The image could not be fetched or its checksum does not match."""


@dataclass(frozen=True)
class Fetched:
    size: int
    sha256: str


def redact(src: str) -> str:
    """``src`` fit for a log line or an event: no user:password, no query values."""
    try:
        parsed = urllib.parse.urlsplit(src)
    except ValueError:
        return src
    if parsed.scheme not in ("http", "https"):
        return src
    netloc = parsed.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "***" if parsed.query else ""
    return urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, query, ""))


class _Redirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS

    def redirect_request(  # type: ignore[override]
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        scheme = urllib.parse.urlsplit(newurl).scheme
        if scheme not in ("http", "https"):
            raise ImageFetchError(f"redirect to unsupported scheme {scheme!r} refused")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if (
            new is not None
            and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc
        ):
            new.remove_header("Authorization")  # credentials go to the named host only
        return new


_opener = urllib.request.build_opener(_Redirects)


def _http_reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        if not isinstance(exc.reason, BaseException):
            return str(exc.reason)
        exc = exc.reason
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"timed out after {TIMEOUT:.0f} s"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror or exc})"
    return str(exc) or type(exc).__name__


def _open_http(src: str, timeout: float) -> tuple[IO[bytes], int | None]:
    parsed = urllib.parse.urlsplit(src)
    headers = {"User-Agent": "escnc"}
    if parsed.username is not None:
        user = urllib.parse.unquote(parsed.username)
        creds = f"{user}:{urllib.parse.unquote(parsed.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(creds.encode()).decode()
        netloc = parsed.netloc.rsplit("@", 1)[1]
        src = urllib.parse.urlunsplit(parsed._replace(netloc=netloc))
    try:
        resp = _opener.open(urllib.request.Request(src, headers=headers), timeout=timeout)
    except ImageFetchError as exc:
        raise ImageFetchError(f"cannot download {redact(src)}: {exc}") from exc
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code in (301, 302, 303, 307, 308):
            reason = f"more than {MAX_REDIRECTS} redirects"
        else:
            reason = _http_reason(exc)
        raise ImageFetchError(f"cannot download {redact(src)}: {reason}") from exc
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise ImageFetchError(f"cannot download {redact(src)}: {_http_reason(exc)}") from exc
    length = resp.headers.get("Content-Length")
    return resp, int(length) if length and length.isdigit() else None


def _open_source(src: str, timeout: float) -> tuple[IO[bytes], int | None]:
    parsed = urllib.parse.urlsplit(src)
    scheme = parsed.scheme.lower()
    if len(scheme) == 1:  # a Windows drive letter is not a scheme
        scheme = ""
    if scheme not in SCHEMES:
        raise ImageFetchError(
            f"unsupported image source scheme {scheme!r} in {redact(src)} "
            "(use a local path, file://, http:// or https://)"
        )
    if scheme in ("http", "https"):
        return _open_http(src, timeout)
    path = Path(urllib.parse.unquote(parsed.path)) if scheme == "file" else Path(src)
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise ImageFetchError(f"cannot read image {src}: {path} {what}")
    try:
        return path.open("rb"), path.stat().st_size
    except OSError as exc:
        raise ImageFetchError(f"cannot read image {src}: {exc}") from exc


def normalise_checksum(checksum: str | None) -> str:
    """``sha256:HEX`` or ``HEX`` -> lower-case hex ('' when none)."""
    value = (checksum or "").strip().lower()
    return value.split(":", 1)[1] if value.startswith("sha256:") else value


def fetch_image(
    name: str, src: str, dest: Path, checksum: str | None = None, timeout: float | None = None
) -> Fetched:
    """Copy or download ``src`` to ``dest``; return its size and sha256."""
    timeout = TIMEOUT if timeout is None else timeout
    shown = redact(src)
    expected = normalise_checksum(checksum)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    done = 0
    started = last = time.monotonic()
    source, total = _open_source(src, timeout)
    log.info(
        "image %s: fetching %s (%s)", name, shown, f"{total} bytes" if total else "size unknown"
    )
    try:
        with source, tmp.open("wb") as out:
            while True:
                try:
                    chunk = source.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise ImageFetchError(
                        f"download of {shown} failed after {done} bytes: {_http_reason(exc)}"
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
