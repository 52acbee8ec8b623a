"""The NETCONF/SSH listener: one thread per connection, bounded handshakes."""

from __future__ import annotations

import errno
import logging
import socket
import threading
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
                srv.services.users, settings.max_auth_attempts, f"{self.peer[0]}:{self.peer[1]}"
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
            self.session.terminate("other")
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
            sock = _tune(sock)
            with self._lock:
                if self.stopping.is_set() or len(self._conns) >= self.settings.max_sessions:
                    full = not self.stopping.is_set()
                    conn = None
                else:
                    full = False
                    conn = _Connection(self, sock, addr)
                    self._conns.add(conn)
            if conn is None:
                if full:
                    log.warning(
                        "refusing connection from %s: %d sessions (max-sessions)",
                        addr[0], self.settings.max_sessions,
                    )
                sock.close()
                continue
            conn.thread.start()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._conns.discard(conn)

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._conns)

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
        if exc.errno == errno.EADDRINUSE:
            why = "address already in use"
        elif exc.errno == errno.EACCES:
            why = "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        elif exc.errno == errno.EADDRNOTAVAIL:
            why = "address not available on this machine"
        else:
            why = exc.strerror or str(exc)
        raise ListenError(f"cannot listen on {host} port {port}: {why}") from exc
    return sock
