"""The NETCONF/SSH listener: one thread per connection, bounded handshakes.

Limits like sshd's MaxStartups and MaxSessions (see admission.py): connections that
have not yet authenticated ("startups": banner, key exchange, authentication, all
bounded by ``auth_timeout``) face random early drop from ``max_startups_begin`` on, a
hard cap at ``max_startups`` and a per-source cap (``max_startups_per_source``); a
refused connection is closed at once. An authenticated client takes a session slot
(``max_sessions``, ``max_sessions_per_user``, the last ``reserved_sessions`` kept for the
recovery user) when it opens its session channel, so a flood of connections that never
log in cannot lock real users out of the session slots. Failed passwords slow down
further attempts from the same address; a removed user's sessions end.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import paramiko
from paramiko.common import AUTH_SUCCESSFUL

from escnc.errors import EscncError
from escnc.netconf.admission import AuthPenalty, StartupGate, session_refusal
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
        self.username: str | None = None
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
            iface = _PenalisedInterface(
                srv.penalty, self.peer[0],
                srv.services.users, settings.max_auth_attempts, f"{self.peer[0]}:{self.peer[1]}",
                failure_delay=srv.penalty.delay(self.peer[0]),
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
        st = self.settings
        # connections not yet holding a session slot, in total and per source address
        self._gate = StartupGate(st.max_startups_begin, st.max_startups_rate,
                                 st.max_startups, st.max_startups_per_source)
        # shared with HTTP Basic when the services hold one: guessing over both
        # northbounds from one address counts once
        self.penalty: AuthPenalty = getattr(services, "auth_penalty", None) or AuthPenalty(
            st.auth_failure_delay, st.auth_failure_delay_max)
        self._refusals = _RefusalLog()
        self._users_watch: threading.Thread | None = None

    def start(self) -> None:
        self.host_key = load_or_create_host_key(self.settings.state_dir)
        self._sock = _listen(self.settings.listen_host, self.settings.listen_port)
        self.port = self._sock.getsockname()[1]
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="nc-accept", daemon=True
        )
        self._accept_thread.start()
        self._users_watch = threading.Thread(target=self._watch_users, name="nc-users",
                                             daemon=True)
        self._users_watch.start()
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
            why: str | None = None
            conn = None
            with self._lock:
                if self.stopping.is_set():
                    why = ""
                else:
                    why = self._gate.refusal(host)
                    if why is None:
                        conn = _Connection(self, _tune(sock), addr)
                        self._conns.add(conn)
            if conn is None:
                if why:
                    self._refusals.refused(host, why)
                _drop_now(sock)
                continue
            conn.thread.start()

    def _admit(self, conn: _Connection, user: str) -> bool:
        """An authenticated connection asks for a session slot (max-sessions, per user,
        slots reserved for the recovery user)."""
        st = self.settings
        with self._lock:
            if conn.authenticated:
                return True
            by_user: dict[str, int] = {}
            for c in self._conns:
                if c.authenticated and c.username is not None:
                    by_user[c.username] = by_user.get(c.username, 0) + 1
            why = session_refusal(
                user, by_user, max_sessions=st.max_sessions, per_user=st.max_sessions_per_user,
                reserved=st.reserved_sessions, recovery_user=st.nacm_recovery_user,
            )
            if why is None:
                conn.authenticated = True
                conn.username = user
                self._gate.release(conn.peer[0])
                return True
        log.warning("refusing session for user %s from %s: %s", user, conn.peer[0], why)
        return False

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            if conn not in self._conns:
                return
            self._conns.discard(conn)
            if not conn.authenticated:
                self._gate.release(conn.peer[0])

    def _watch_users(self) -> None:
        """End the sessions of users removed from the user store (by ``escnc user
        remove`` in another process, too) within about a second."""
        users = self.services.users
        if users is None:
            return
        seen: tuple[int, int] | None = None
        while not self.stopping.wait(USERS_POLL_SECS):
            try:
                version = users.version()
                if version == seen:
                    continue
                seen = version
                names = users.names()
            except Exception as exc:  # a store being replaced: try again next tick
                log.debug("user store check failed: %s", exc)
                continue
            with self._lock:
                gone = [c for c in self._conns if c.authenticated and c.username is not None
                        and c.username not in names]
            for c in gone:
                log.warning("user %s was removed: ending its session from %s",
                            c.username, c.peer[0])
                if c.session is not None:
                    c.session.terminate("other")
                elif c.transport is not None:
                    c.transport.close()

    @property
    def connections(self) -> int:
        """Open connections, authenticated or not."""
        with self._lock:
            return len(self._conns)

    @property
    def startups(self) -> int:
        """Connections that do not hold a session slot yet."""
        with self._lock:
            return self._gate.total

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
        if self._users_watch is not None:
            self._users_watch.join(5.0)
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.stop()
        for conn in conns:
            conn.thread.join(10.0)
            if conn.thread.is_alive():
                log.warning("connection thread %s did not stop", conn.thread.name)


USERS_POLL_SECS = 1.0


class _PenalisedInterface(NetconfSshInterface):
    """Failed passwords count against the source address (AuthPenalty): the next failed
    attempt from it, on this connection or another, waits longer."""

    def __init__(self, penalty: AuthPenalty, host: str, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._penalty = penalty
        self._host = host

    def check_auth_password(self, username: str, password: str) -> int:
        exhausted = self.auth_exhausted.is_set()
        result = super().check_auth_password(username, password)
        if result != AUTH_SUCCESSFUL and not exhausted:
            self._penalty.failed(self._host)
            self.failure_delay = self._penalty.delay(self._host)
        return result


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
