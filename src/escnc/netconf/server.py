"""The NETCONF/SSH listener: one thread per connection, bounded handshakes.

Two limits, like sshd's MaxStartups and MaxSessions: connections that have not yet
authenticated ("startups": banner, key exchange, authentication, all bounded by
``auth_timeout``) are capped by ``max_startups`` (and optionally per source address by
``max_startups_per_source``); beyond that a new connection is closed at once. An
authenticated client takes a session slot (``max_sessions``) when it opens its session
channel, so a flood of connections that never log in cannot lock real users out of
the session slots.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING

import paramiko

from escnc.errors import EscncError
from escnc.netconf.hostkey import load_or_create_host_key
from escnc.netconf.session import NetconfSession
from escnc.netconf.sessions import SessionManager
from escnc.netconf.ssh import TRANSPORT_LOG, NetconfSshInterface, open_netconf_channel

if TYPE_CHECKING:
    from escnc.services import Services

log = logging.getLogger(__name__)


class ListenError(EscncError):
    """The server could not bind its listening socket."""


class _Connection:
    def __init__(self, server: NetconfServer, sock: socket.socket, addr: tuple) -> None:
        self.server = server
        self.sock = sock
        self.peer = (str(addr[0]), int(addr[1]))
        self.transport: paramiko.Transport | None = None
        self.session: NetconfSession | None = None
        self.authenticated = False  # holds a session slot rather than a startup slot
        self.thread = threading.Thread(
            target=self.run, name=f"nc-conn-{self.peer[0]}:{self.peer[1]}", daemon=True
        )

    def run(self) -> None:
        srv = self.server
        settings = srv.services.settings
        try:
            transport = paramiko.Transport(self.sock)
            transport.set_log_channel(TRANSPORT_LOG)
            self.transport = transport
            # Bounds for clients that connect and then stall (banner, kex, auth).
            transport.banner_timeout = settings.auth_timeout
            transport.handshake_timeout = settings.auth_timeout
            transport.auth_timeout = settings.auth_timeout
            assert srv.host_key is not None
            transport.add_server_key(srv.host_key)
            iface = NetconfSshInterface(
                srv.services.users, settings.max_auth_attempts, f"{self.peer[0]}:{self.peer[1]}",
                failure_delay=settings.auth_failure_delay,
                admit=lambda user: srv._admit(self, user),
            )
            iface.transport = transport
            if srv.stopping.is_set():
                return
            try:
                transport.start_server(server=iface)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                log.debug("SSH negotiation with %s failed: %s", self.peer[0], exc)
                return
            chan = open_netconf_channel(transport, iface, settings.auth_timeout, srv.stopping)
            if chan is None or iface.username is None:
                return
            session = NetconfSession(
                srv.services, srv.sessions, transport, chan, iface.username, self.peer
            )
            self.session = session
            if srv.stopping.is_set():
                session.terminate("other")
            session.run()
        except Exception:
            log.exception("connection from %s failed", self.peer[0])
        finally:
            if self.transport is not None:
                self.transport.close()
            try:
                self.sock.close()
            except OSError:
                pass
            srv._forget(self)

    def stop(self) -> None:
        if self.session is not None:
            self.session.terminate("other", flush=False)
        if self.transport is not None:
            self.transport.close()
        else:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class NetconfServer:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings
        if services.sessions is None:
            services.sessions = SessionManager(services)
        self.sessions: SessionManager = services.sessions
        self.host_key: paramiko.PKey | None = None
        self.port = 0
        self.stopping = threading.Event()
        self._sock: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._conns: set[_Connection] = set()
        # connections not yet holding a session slot, in total and per source address
        self._startups = 0
        self._startups_by_host: dict[str, int] = {}
        self._refusals = _RefusalLog()

    def start(self) -> None:
        self.host_key = load_or_create_host_key(self.settings.state_dir)
        self._sock = _listen(self.settings.listen_host, self.settings.listen_port)
        self.port = self._sock.getsockname()[1]
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="nc-accept", daemon=True
        )
        self._accept_thread.start()
        log.info("NETCONF/SSH listening on %s port %d", self.settings.listen_host, self.port)

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self.stopping.is_set():
            try:
                sock, addr = self._sock.accept()
            except OSError as exc:
                if self.stopping.is_set():
                    return
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("accept failed: %s", exc)
                    self.stopping.wait(0.1)
                continue
            host = str(addr[0])
            why = None
            conn = None
            with self._lock:
                if self.stopping.is_set():
                    why = ""
                elif self._startups >= max(1, self.settings.max_startups):
                    why = (f"{self._startups} connections not yet authenticated "
                           "(max-startups)")
                elif (
                    self.settings.max_startups_per_source > 0
                    and self._startups_by_host.get(host, 0)
                    >= self.settings.max_startups_per_source
                ):
                    why = (f"{self._startups_by_host[host]} connections from it not yet "
                           "authenticated (max-startups-per-source)")
                else:
                    conn = _Connection(self, _tune(sock), addr)
                    self._conns.add(conn)
                    self._startups += 1
                    self._startups_by_host[host] = self._startups_by_host.get(host, 0) + 1
            if conn is None:
                if why:
                    self._refusals.refused(host, why)
                _drop_now(sock)
                continue
            conn.thread.start()

    def _admit(self, conn: _Connection, user: str) -> bool:
        """An authenticated connection asks for a session slot (max-sessions)."""
        with self._lock:
            if conn.authenticated:
                return True
            sessions = len(self._conns) - self._startups
            if sessions < self.settings.max_sessions:
                conn.authenticated = True
                self._release_startup(conn.peer[0])
                return True
        log.warning(
            "refusing session for user %s from %s: %d sessions (max-sessions)",
            user, conn.peer[0], sessions,
        )
        return False

    def _release_startup(self, host: str) -> None:
        self._startups -= 1
        left = self._startups_by_host.get(host, 0) - 1
        if left > 0:
            self._startups_by_host[host] = left
        else:
            self._startups_by_host.pop(host, None)

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            if conn not in self._conns:
                return
            self._conns.discard(conn)
            if not conn.authenticated:
                self._release_startup(conn.peer[0])

    @property
    def connections(self) -> int:
        """Open connections, authenticated or not."""
        with self._lock:
            return len(self._conns)

    @property
    def startups(self) -> int:
        """Connections that do not hold a session slot yet."""
        with self._lock:
            return self._startups

    def stop(self) -> None:
        self.stopping.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
            except OSError:
                pass
            self._sock.close()
        if self._accept_thread is not None:
            self._accept_thread.join(5.0)
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.stop()
        for conn in conns:
            conn.thread.join(10.0)
            if conn.thread.is_alive():
                log.warning("connection thread %s did not stop", conn.thread.name)


class _RefusalLog:
    """One log line per refused connection, but at most one per second in a flood
    (the next line says how many were refused meanwhile)."""

    INTERVAL = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = -self.INTERVAL
        self._suppressed = 0

    def refused(self, host: str, why: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.INTERVAL:
                self._suppressed += 1
                return
            self._last, suppressed, self._suppressed = now, self._suppressed, 0
        log.warning(
            "refusing connection from %s: %s%s", host, why,
            f" ({suppressed} more refused in the last second)" if suppressed else "",
        )


def _drop_now(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


class _QuickAckSocket(socket.socket):
    """ACKs every segment at once (Linux TCP_QUICKACK, which the kernel keeps resetting).

    A client without TCP_NODELAY (paramiko's SSHClient, ncclient) that writes two SSH
    packets back to back holds the second until the first is ACKed; with delayed ACKs
    that costs 40 ms twice per connection (key exchange, authentication).
    """

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        try:
            self.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)  # type: ignore[arg-type]
        except OSError:
            pass
        return data


def _tune(sock: socket.socket) -> socket.socket:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # our replies are small
    except OSError:
        pass
    if _QUICKACK is None:
        return sock
    tuned = _QuickAckSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    tuned.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
    return tuned


def _listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                                   socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot resolve listen address {host!r}: {exc}") from exc
    family, socktype, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        why = bind_error_reason(exc.errno, port, exc.strerror or str(exc))
        raise ListenError(f"cannot listen on {host} port {port}: {why}") from exc
    return sock


def bind_error_reason(err: int | None, port: int, strerror: str = "") -> str:
    """Why binding the listening socket failed, in words an operator can act on."""
    if err == errno.EADDRINUSE:
        return "address already in use"
    if err in (errno.EACCES, errno.EPERM):
        if 0 < port < 1024:
            return "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        return "permission denied (a security policy forbids binding this address)"
    if err == errno.EADDRNOTAVAIL:
        return "address not available on this machine"
    if strerror:
        return strerror
    return os.strerror(err) if err else "unknown error"
