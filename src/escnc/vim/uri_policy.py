"""Which libvirt URIs a NETCONF client may configure as a ``vim_connector``.

VIMs from ``--vim`` / the TOML file are the operator's and are never checked here.
A URI from the configuration is a string any client with write access chose, and
libvirt acts on URIs: ``qemu+ext:///system?command=/path`` runs a program,
``?socket=``/``?netcat=``/``?keyfile=``/``?pkipath=`` name files and programs,
``?no_verify=1`` turns off certificate checks, ``test:///FILE`` parses any file (and
libvirt's error then quotes it). So a configured URI is allowed only when it is
exactly one of these shapes, with no query parameter at all:

* ``qemu:///system``, ``qemu:///session`` (the local daemon)
* ``qemu+tls://HOST[:PORT]/system`` (or ``/session``)
* ``qemu+ssh://[USER@]HOST[:PORT]/system`` (also ``qemu+libssh``, ``qemu+libssh2``)
* ``test:///default``, or ``test:///PATH.xml`` with an absolute path, only when the
  operator turned on test VIMs (``allow_test_vims``; the test suite does)

USER and HOST are plain names (no percent-escapes, no leading ``-`` that ssh would
take for an option). Pure functions: nothing is opened or resolved.
"""

from __future__ import annotations

import posixpath
import re

DRIVERS = ("qemu",)
REMOTE_TRANSPORTS = ("tls", "ssh", "libssh", "libssh2")
PATHS = ("/system", "/session")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,63}")
_HOST = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_URI = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<rest>.*)", re.S)
_REASONS = {
    "command": "runs a program",
    "netcat": "runs a program",
    "socket": "names a local socket",
    "keyfile": "names a key file",
    "pkipath": "names a certificate directory",
    "known_hosts": "names a file",
    "no_verify": "turns off certificate checks",
    "known_hosts_verify": "turns off host key checks",
    "mode": "chooses the daemon mode",
    "proxy": "chooses the proxy daemon",
    "name": "passes another URI to the remote daemon",
}
ALLOWED = (
    "qemu:///system, qemu:///session, qemu+tls://HOST/system, "
    "qemu+ssh://[USER@]HOST/system, without query parameters"
)


class UriRefused(Exception):
    """The URI is not allowed for a configured VIM; the message says why."""


def check_vim_uri(uri: str, allow_test: bool = False) -> None:
    """Raise :class:`UriRefused` unless ``uri`` is a shape a client may configure."""
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in uri):
        raise UriRefused("the URI holds white space or control characters")
    match = _URI.fullmatch(uri)
    if match is None:
        raise UriRefused(f"not a libvirt URI of the form DRIVER[+TRANSPORT]://... ({ALLOWED})")
    scheme, authority, rest = match["scheme"].lower(), match["authority"], match["rest"]
    path, sep_q, query = rest.partition("?")
    if "#" in rest:
        raise UriRefused("a fragment (#...) is not allowed")
    if sep_q or query:
        keys = [part.split("=", 1)[0] for part in query.split("&") if part]
        named = [k for k in keys if k.lower() in _REASONS]
        if named:
            key = named[0]
            raise UriRefused(
                f"query parameter {key!r} is not allowed: it {_REASONS[key.lower()]}"
            )
        raise UriRefused(
            "query parameters are not allowed in a configured VIM URI"
            + (f" ({', '.join(repr(k) for k in keys)})" if keys else "")
        )
    if "%" in authority or "%" in path:
        raise UriRefused("percent-escapes are not allowed in a configured VIM URI")
    driver, _plus, transport = scheme.partition("+")
    if driver == "test":
        _check_test(transport, authority, path, allow_test)
        return
    if driver not in DRIVERS:
        raise UriRefused(f"driver {driver!r} is not allowed ({ALLOWED})")
    if path not in PATHS:
        raise UriRefused(f"path {path!r} is not allowed (/system or /session)")
    if not transport:
        if authority:
            raise UriRefused(
                f"a host ({authority}) needs an encrypted transport: qemu+tls:// or qemu+ssh://"
            )
        return
    if transport not in REMOTE_TRANSPORTS:
        why = {
            "ext": "it runs an external program",
            "unix": "it names a local socket (use qemu:///system)",
            "tcp": "it is unencrypted (use qemu+tls://)",
        }.get(transport, f"allowed: {', '.join(REMOTE_TRANSPORTS)}")
        raise UriRefused(f"transport {transport!r} is not allowed: {why}")
    _check_authority(authority, user_allowed=transport != "tls")


def _check_authority(authority: str, user_allowed: bool) -> None:
    user, at, hostport = authority.rpartition("@")
    if at:
        if not user_allowed:
            raise UriRefused("a user name is not allowed with qemu+tls://")
        if not _USER.fullmatch(user):
            raise UriRefused(f"user name {user!r} is not allowed (letters, digits, . _ -)")
    if not hostport:
        raise UriRefused("a remote transport needs a host")
    if hostport.startswith("["):
        host, _close, port = hostport.partition("]")
        host += "]"
        if port and not port.startswith(":"):
            raise UriRefused(f"host {hostport!r} is malformed")
        port = port[1:]
        if not _IPV6.fullmatch(host):
            raise UriRefused(f"host {host!r} is not an IPv6 address")
    else:
        host, _colon, port = hostport.partition(":")
        if not _HOST.fullmatch(host):
            raise UriRefused(f"host {host!r} is not a host name or address")
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise UriRefused(f"port {port!r} is not a port number")


def _check_test(transport: str, authority: str, path: str, allow_test: bool) -> None:
    if not allow_test:
        raise UriRefused(
            "test:/// VIMs are for tests only (the operator has not set allow_test_vims)"
        )
    if transport or authority:
        raise UriRefused("a test VIM is local: test:///default or test:///PATH.xml")
    if path == "/default":
        return
    if (
        not path.startswith("/")
        or posixpath.normpath(path) != path
        or not path.endswith(".xml")
    ):
        raise UriRefused(
            "a test VIM names test:///default or an absolute, normalised PATH.xml"
        )
