"""Which files and URLs a NETCONF client may name as an image ``src`` or a day-0 ``file``.

The operator decides what escnc reads from the host: local files only from the
directories of a :class:`SourcePolicy` (``image_import_dirs``, ``day0_dirs``), never
escnc's own state files; URLs only ``http``/``https`` to addresses the policy allows
(loopback, link-local and the cloud metadata address only with ``url_allow_loopback``).

Everything here decides; nothing reads a file's content or opens a connection
(``vim/fetch.py`` does, asking these functions first). A path outside the allowed
directories is refused on its spelling alone, before the file system is asked
anything, so a refusal never tells whether a file exists.
"""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from escnc.settings import Settings

URL_SCHEMES = ("http", "https")
# the cloud metadata services (AWS/GCP/Azure/OpenStack IPv4; AWS IPv6)
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
# escnc's own subdirectories of the state directory: never a source, whatever the
# operator configured (images: the cache, pools: VM disks, configdrives: day-0 drives)
OWN_SUBDIRS = ("images", "pools", "configdrives")
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class SourceRefused(Exception):
    """The policy refuses this source; the message says why (and names no content)."""


@dataclass(frozen=True)
class SourcePolicy:
    what: str  # "image" or "day-0 file": names the source in messages
    dirs: tuple[Path, ...]  # allowed local directories (the first one anchors relative paths)
    dirs_setting: str  # the setting that lists them, for messages
    state_dir: Path
    allow_loopback: bool = False
    max_bytes: int = 0  # 0: no limit
    max_setting: str = ""


def _dirs(configured: list[Path] | None, default: Path) -> tuple[Path, ...]:
    if isinstance(configured, (str, Path)):  # one directory where a list was expected
        configured = [Path(configured)]
    paths = [default] if configured is None else [Path(str(d)).expanduser() for d in configured]
    return tuple(Path(os.path.abspath(p)) for p in paths)


def image_policy(settings: Settings) -> SourcePolicy:
    return SourcePolicy(
        what="image",
        dirs=_dirs(settings.image_import_dirs, settings.state_dir / "import"),
        dirs_setting="image_import_dirs",
        state_dir=Path(os.path.abspath(settings.state_dir)),
        allow_loopback=settings.url_allow_loopback,
        max_bytes=settings.image_max_bytes,
        max_setting="image_max_bytes",
    )


def day0_policy(settings: Settings) -> SourcePolicy:
    return SourcePolicy(
        what="day-0 file",
        dirs=_dirs(settings.day0_dirs, settings.state_dir / "day0"),
        dirs_setting="day0_dirs",
        state_dir=Path(os.path.abspath(settings.state_dir)),
        allow_loopback=settings.url_allow_loopback,
        max_bytes=settings.day0_max_bytes,
        max_setting="day0_max_bytes",
    )


def callback_policy(settings: Settings, what: str = "callback") -> SourcePolicy:
    """URLs escnc POSTs to (ESC REST callbacks, capacity notificationUrl): no files."""
    return SourcePolicy(what=what, dirs=(), dirs_setting="",
                        state_dir=Path(os.path.abspath(settings.state_dir)),
                        allow_loopback=settings.url_allow_loopback)


def is_url(src: str) -> bool:
    scheme = urllib.parse.urlsplit(src).scheme if "://" in src else ""
    return bool(scheme) and scheme.lower() != "file"


# -- local files ---------------------------------------------------------------------


def _within(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def _dirs_text(policy: SourcePolicy) -> str:
    shown = ", ".join(str(d) for d in policy.dirs) or "none configured"
    return f"{policy.dirs_setting}: {shown}"


def local_path(policy: SourcePolicy, src: str) -> Path:
    """The absolute path ``src`` (a path or a ``file://`` URL) names, checked on its
    spelling only: inside an allowed directory once ``..`` is taken out. Relative paths
    are relative to the first directory. Touches no file."""
    text = src
    if src[:7].lower() == "file://":
        parsed = urllib.parse.urlsplit(src)
        if parsed.netloc not in ("", "localhost"):
            raise SourceRefused(
                f"{policy.what} URL {src}: file:// URLs name local files only (host "
                f"{parsed.netloc!r} refused)"
            )
        if parsed.query or parsed.fragment:
            raise SourceRefused(f"{policy.what} URL {src}: no query or fragment in a file:// URL")
        text = urllib.parse.unquote(parsed.path)
    if not text or "\0" in text:
        raise SourceRefused(f"{policy.what} path {src!r} is empty or holds a NUL character")
    if not policy.dirs:
        raise SourceRefused(
            f"{policy.what} path {src}: local files are disabled ({_dirs_text(policy)})"
        )
    base = policy.dirs[0]
    path = Path(os.path.normpath(base / text))  # absolute text replaces base
    allowed = [d for d in policy.dirs if _within(path, d)]
    if not allowed:
        raise SourceRefused(
            f"{policy.what} path {src} is outside the directories the operator allows "
            f"({_dirs_text(policy)})"
        )
    return path


def check_resolved(policy: SourcePolicy, src: str, resolved: Path) -> None:
    """``resolved`` (``src`` with every symbolic link followed) must still be inside an
    allowed directory (itself resolved) and must not be one of escnc's own files."""
    real_dirs = [Path(os.path.realpath(d)) for d in policy.dirs]
    if not any(_within(resolved, d) for d in real_dirs):
        raise SourceRefused(
            f"{policy.what} path {src} leads (through a symbolic link) outside the "
            f"directories the operator allows ({_dirs_text(policy)})"
        )
    state = Path(os.path.realpath(policy.state_dir))
    if not _within(resolved, state):
        return
    own = [state / sub for sub in OWN_SUBDIRS]
    granted = any(
        _within(resolved, d) and d != state and _within(d, state) for d in real_dirs
    )
    if not granted or any(_within(resolved, o) for o in own):
        raise SourceRefused(
            f"{policy.what} path {src} is one of escnc's own state files "
            f"(state directory {policy.state_dir}): refused"
        )


def check_size(policy: SourcePolicy, src: str, size: int) -> None:
    if policy.max_bytes and size > policy.max_bytes:
        raise SourceRefused(
            f"{policy.what} {src} is {size} bytes, over the limit of {policy.max_bytes} "
            f"bytes ({policy.max_setting})"
        )


# -- URLs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class UrlParts:
    scheme: str
    host: str  # no brackets around an IPv6 address
    port: int
    target: str  # path and query for the request line
    username: str | None
    password: str | None

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_url(policy: SourcePolicy, url: str) -> UrlParts:
    """``url`` split and checked on its spelling: http(s), a well-formed host (an
    address literal must be allowed, :func:`check_address`), a valid port."""
    try:
        parsed = urllib.parse.urlsplit(url)
        port = parsed.port
    except ValueError as exc:
        raise SourceRefused(f"{policy.what} URL {redact(url)} is malformed: {exc}") from exc
    scheme = parsed.scheme.lower()
    if scheme not in URL_SCHEMES:
        raise SourceRefused(
            f"{policy.what} URL scheme {scheme!r} is not allowed (http and https only)"
        )
    host = parsed.hostname or ""
    if not host:
        raise SourceRefused(f"{policy.what} URL {redact(url)} names no host")
    literal = _address(host)
    if literal is None and not _HOSTNAME.fullmatch(host):
        raise SourceRefused(f"{policy.what} URL {redact(url)}: {host!r} is not a host name")
    if literal is not None:
        check_address(policy, literal, host)
    elif not policy.allow_loopback and (host == "localhost" or host.endswith(".localhost")):
        raise SourceRefused(
            f"{policy.what} URL host {host} is loopback, not allowed (url_allow_loopback)"
        )
    target = parsed.path or "/"
    if parsed.query:
        target += "?" + parsed.query
    if any(c in target for c in " \r\n\t"):
        raise SourceRefused(f"{policy.what} URL {redact(url)} holds white space")
    return UrlParts(
        scheme,
        host,
        port if port is not None else (443 if scheme == "https" else 80),
        target,
        urllib.parse.unquote(parsed.username) if parsed.username is not None else None,
        urllib.parse.unquote(parsed.password) if parsed.password is not None else None,
    )


def _address(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_address(policy: SourcePolicy, address: IpAddress, host: str = "") -> None:
    """Refuse an address a URL may not reach: loopback, link-local and the metadata
    address unless ``allow_loopback``; unspecified, multicast and reserved ones always.
    Private ranges are allowed (images usually live on internal servers)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    named = f"address {address}" + (f" (of host {host})" if host and host != str(address) else "")
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        raise SourceRefused(f"{named} is not allowed for a {policy.what} URL")
    if policy.allow_loopback:
        return
    if address.is_loopback:
        kind = "loopback"
    elif address in METADATA_ADDRESSES:
        kind = "the cloud metadata address"
    elif address.is_link_local:
        kind = "link-local"
    else:
        return
    raise SourceRefused(f"{named} is not allowed: {kind} (url_allow_loopback)")


def redact(src: str) -> str:
    """``src`` fit for a log line, an event or an error: no user:password, no query."""
    try:
        parsed = urllib.parse.urlsplit(src)
    except ValueError:
        return src
    if parsed.scheme.lower() not in URL_SCHEMES:
        return src
    netloc = parsed.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "***" if parsed.query else ""
    return urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, query, ""))


def check_spelling(policy: SourcePolicy, src: str) -> None:
    """Everything decidable without the file system or DNS (edit time)."""
    if is_url(src):
        parse_url(policy, src)
    else:
        local_path(policy, src)
