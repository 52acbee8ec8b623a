"""Opening a client-named source under a :class:`~escnc.vim.source_policy.SourcePolicy`:
a local file (``open_local``) or an http(s) URL (``open_url``); images and day-0
files both come through here.

Local files: the path is checked on its spelling, then with every symbolic link
followed, then ``lstat``-ed (only a regular file is opened at all, so a FIFO or a
device such as ``/dev/zero`` is never touched), opened with ``O_NOFOLLOW`` and checked
once more through the descriptor (same inode, and on Linux the path the kernel
actually opened), so a symbolic link swapped in meanwhile gains nothing.

URLs: the host name is resolved here and every address it resolves to must be
allowed; the connection then goes to that checked address (TLS still verifies the
certificate against the host name), so a DNS answer that changes between the check
and the connect cannot redirect it. Redirects are followed by hand, each one checked
the same way. No proxy from the environment is used. Error messages say what went
wrong (status code, refused connection, timeout) and never carry what the remote
sent (body, banner, reason phrase).
"""

from __future__ import annotations

import base64
import errno
import http
import http.client
import io
import ipaddress
import os
import socket
import ssl
import stat
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from escnc.vim.source_policy import (
    SourcePolicy,
    SourceRefused,
    UrlParts,
    check_address,
    check_resolved,
    check_size,
    local_path,
    parse_url,
    redact,
)

MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)


class FetchError(Exception):
    """The source is allowed but could not be read; the message says why."""


@dataclass
class Opened:
    stream: IO[bytes]
    length: int | None  # announced size, None when unknown
    framed: bool  # a truncated stream can be told from a complete one (length or chunked)
    shown: str  # the source as it may be shown (no credentials)


# -- local files ---------------------------------------------------------------------


def open_local(policy: SourcePolicy, src: str) -> Opened:
    path = local_path(policy, src)
    try:
        resolved = Path(os.path.realpath(path, strict=True))
    except (FileNotFoundError, NotADirectoryError):
        raise FetchError(f"{policy.what} {src}: {path} does not exist") from None
    except OSError as exc:
        raise FetchError(f"{policy.what} {src}: cannot read {path}: {exc.strerror}") from exc
    check_resolved(policy, src, resolved)
    try:
        before = os.lstat(resolved)
    except OSError as exc:
        raise FetchError(f"{policy.what} {src}: cannot read {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(before.st_mode):
        raise SourceRefused(f"{policy.what} {src}: {path} is not a regular file")
    check_size(policy, src, before.st_size)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(resolved, flags)
    except OSError as exc:
        raise FetchError(f"{policy.what} {src}: cannot read {path}: {exc.strerror}") from exc
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino) or not stat.S_ISREG(
            now.st_mode
        ):
            raise SourceRefused(f"{policy.what} {src}: {path} changed while it was opened")
        proc = f"/proc/self/fd/{fd}"
        if os.path.exists(proc):
            check_resolved(policy, src, Path(os.readlink(proc)))
        os.set_blocking(fd, True)
        stream = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return Opened(stream, now.st_size, True, src)


# -- URLs ----------------------------------------------------------------------------


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to the checked ``address``; Host header and everything else as usual."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]
        except BaseException:
            sock.close()
            raise


class _Body(io.RawIOBase):
    """A response body whose close also closes its connection (no socket left to GC)."""

    def __init__(self, resp: http.client.HTTPResponse, conn: http.client.HTTPConnection) -> None:
        super().__init__()
        self._resp = resp
        self._conn = conn

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._resp.read(None if size < 0 else size)

    def close(self) -> None:
        if not self.closed:
            self._resp.close()
            self._conn.close()
        super().close()


def resolve(policy: SourcePolicy, parts: UrlParts) -> str:
    """The address to connect to: every address the host resolves to must be allowed."""
    try:
        infos = socket.getaddrinfo(parts.host, parts.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve host {parts.host}: {exc.strerror or exc}") from exc
    addresses: list[str] = []
    for info in infos:
        addr = str(info[4][0]).split("%", 1)[0]
        if addr not in addresses:
            addresses.append(addr)
    if not addresses:
        raise FetchError(f"host {parts.host} has no address")
    for addr in addresses:
        check_address(policy, ipaddress.ip_address(addr), parts.host)
    return addresses[0]


def reason(exc: BaseException, where: str, timeout: float) -> str:
    """What went wrong, in words of our own (nothing the remote sent)."""
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {where}"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, ConnectionResetError):
        return f"connection reset by {where}"
    if isinstance(exc, http.client.IncompleteRead):
        return f"{where} closed the connection before the end of the data"
    if isinstance(exc, http.client.RemoteDisconnected):
        return f"{where} closed the connection without an HTTP response"
    if isinstance(exc, http.client.HTTPException):
        return f"{where} did not answer with valid HTTP"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate of {where} not accepted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {where} failed ({exc.reason or 'handshake error'})"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{os.strerror(exc.errno).lower()} ({errno.errorcode.get(exc.errno, exc.errno)})"
    return type(exc).__name__


def _status_text(code: int) -> str:
    try:
        return f"HTTP status {code} ({http.HTTPStatus(code).phrase})"
    except ValueError:
        return f"HTTP status {code}"


def open_url(policy: SourcePolicy, url: str, timeout: float) -> Opened:
    """GET ``url`` (credentials in it become a Basic Authorization header, sent to that
    host only); follows up to :data:`MAX_REDIRECTS` redirects, each one re-checked."""
    parts = parse_url(policy, url)
    auth = ""
    if parts.username is not None:
        creds = f"{parts.username}:{parts.password or ''}".encode()
        auth = "Basic " + base64.b64encode(creds).decode()
    auth_host = (parts.host, parts.port)
    current = url
    shown = redact(url)  # after a redirect: the first URL and the host now asked (the
    # rest of a Location is the remote's words, never shown)
    for _hop in range(MAX_REDIRECTS + 1):
        address = resolve(policy, parts)
        where = f"host {parts.hostport}"
        cls = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
        conn = cls(parts.host, parts.port, address, timeout)
        headers = {"User-Agent": "escnc", "Accept-Encoding": "identity"}
        if auth and (parts.host, parts.port) == auth_host:
            headers["Authorization"] = auth
        try:
            conn.request("GET", parts.target, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise FetchError(f"cannot download {shown}: {reason(exc, where, timeout)}") from exc
        if resp.status in REDIRECTS:
            location = resp.getheader("Location") or ""
            conn.close()
            if not location:
                raise FetchError(
                    f"cannot download {shown}: {_status_text(resp.status)} without a Location"
                )
            current = urllib.parse.urljoin(current, location)
            try:
                parts = parse_url(policy, current)
            except SourceRefused as exc:
                raise SourceRefused(f"redirect from {redact(url)} refused: {exc}") from exc
            shown = f"{redact(url)} (redirected to host {parts.hostport})"
            continue
        if resp.status != 200:
            conn.close()
            raise FetchError(f"cannot download {shown}: {_status_text(resp.status)}")
        length = resp.length if not resp.chunked else None
        if length is not None:
            try:
                check_size(policy, shown, length)
            except SourceRefused:
                conn.close()
                raise
        framed = length is not None or bool(resp.chunked)
        return Opened(cast(IO[bytes], _Body(resp, conn)), length, framed, redact(url))
    raise FetchError(f"cannot download {redact(url)}: more than {MAX_REDIRECTS} redirects")


def open_source(policy: SourcePolicy, src: str, timeout: float) -> Opened:
    """A local path / ``file://`` URL or an http(s) URL; any other scheme is refused."""
    if "://" in src and src[:7].lower() != "file://":
        return open_url(policy, src, timeout)
    return open_local(policy, src)


def read_bounded(policy: SourcePolicy, src: str, timeout: float) -> bytes:
    """The whole content of a small source (day-0), at most ``policy.max_bytes``:
    reads no more than one byte past the limit, whatever the source."""
    opened = open_source(policy, src, timeout)
    limit = policy.max_bytes
    chunks: list[bytes] = []
    got = 0
    with opened.stream:
        while True:
            want = (limit + 1 - got) if limit else 1 << 20
            try:
                chunk = opened.stream.read(min(want, 1 << 20))
            except (OSError, http.client.HTTPException) as exc:
                raise FetchError(
                    f"{policy.what} {opened.shown}: read failed after {got} bytes: "
                    f"{reason(exc, 'the server', timeout)}"
                ) from exc
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
            if limit and got > limit:
                raise SourceRefused(
                    f"{policy.what} {opened.shown} is over the limit of {limit} bytes "
                    f"({policy.max_setting})"
                )
    if opened.length is not None and got != opened.length:
        raise FetchError(
            f"{policy.what} {opened.shown} incomplete: got {got} of {opened.length} bytes"
        )
    if not opened.framed:
        raise FetchError(
            f"{policy.what} {opened.shown}: the server sent neither Content-Length nor "
            "chunked encoding, so a complete answer cannot be told from a truncated one"
        )
    return b"".join(chunks)


def check_source(policy: SourcePolicy, src: str) -> None:
    """``src`` is allowed as far as can be told without reading it or asking DNS
    (a cached copy of a source the policy now refuses must not be used)."""
    if "://" in src and src[:7].lower() != "file://":
        parse_url(policy, src)
        return
    path = local_path(policy, src)
    try:
        resolved = Path(os.path.realpath(path, strict=True))
    except OSError:
        return  # gone: opening it would say so
    check_resolved(policy, src, resolved)
