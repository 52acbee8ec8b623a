"""SSH side of one connection: authentication and the ``netconf`` subsystem.

Only password and public-key authentication against the :class:`UserStore`, only
one ``session`` channel per connection, and only the ``netconf`` subsystem on it
(no shell, no exec, no port forwarding).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import paramiko
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_FAILED_RESOURCE_SHORTAGE,
    OPEN_SUCCEEDED,
)

if TYPE_CHECKING:
    from escnc.rpc.users import UserStore

log = logging.getLogger(__name__)

# paramiko logs every client that vanishes (reset, EOF, port scanner) at ERROR, with a
# traceback; for a server those are routine. Server transports log through this channel.
TRANSPORT_LOG = "escnc.netconf.ssh.transport"
_ROUTINE = ("Socket exception", "Error reading SSH protocol banner", "EOF in transport thread",
            "Exception (server)", "Traceback", "  ", "EOFError", "OSError", "socket.timeout",
            "TimeoutError", "paramiko.ssh_exception")


class _RoutineDisconnects(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith(_ROUTINE):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(TRANSPORT_LOG).isEnabledFor(logging.DEBUG)
        return True


logging.getLogger(TRANSPORT_LOG).addFilter(_RoutineDisconnects())


class NetconfSshInterface(paramiko.ServerInterface):
    """Callbacks of one connection's paramiko transport (they run in its own thread).

    ``failure_delay``: a failed password attempt is answered no sooner than this many
    seconds after it arrived (slows guessing; the same for unknown users and wrong
    passwords). ``admit``: asked once, when the authenticated client opens its session
    channel, whether a session slot is free (max-sessions); if not, the channel open
    fails with "resource shortage" and :attr:`refused` is set.
    """

    def __init__(
        self,
        users: UserStore | None,
        max_auth_attempts: int,
        peer: str,
        failure_delay: float = 0.0,
        admit: Callable[[str], bool] | None = None,
    ) -> None:
        self.users = users
        self.max_auth_attempts = max(1, max_auth_attempts)
        self.peer = peer
        self.failure_delay = max(0.0, failure_delay)
        self.admit = admit
        self.username: str | None = None
        self.failures = 0
        self.transport: paramiko.Transport | None = None
        self.channel_id: int | None = None
        self.subsystem_ready = threading.Event()
        self.auth_exhausted = threading.Event()
        self.refused = threading.Event()

    def get_allowed_auths(self, username: str) -> str:
        return "password,publickey"

    def check_auth_none(self, username: str) -> int:
        return AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        started = time.monotonic()
        if self.auth_exhausted.is_set():
            return AUTH_FAILED
        if self.users is not None and self.users.check_password(username, password):
            self.username = username
            return AUTH_SUCCESSFUL
        # Only this connection's transport thread waits; other connections go on.
        wait = self.failure_delay - (time.monotonic() - started)
        if wait > 0:
            time.sleep(wait)
        return self._failed(username, "password")

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        # Called for the key query and again for the signed request (paramiko
        # verifies the signature itself before the second call).
        if self.auth_exhausted.is_set():
            return AUTH_FAILED
        if self.users is not None and self.users.check_key(username, key):
            self.username = username
            return AUTH_SUCCESSFUL
        return self._failed(username, "publickey")

    def _failed(self, username: str, method: str) -> int:
        self.failures += 1
        log.info(
            "authentication failed for %r from %s (%s, attempt %d of %d)",
            username, self.peer, method, self.failures, self.max_auth_attempts,
        )
        if self.failures >= self.max_auth_attempts:
            self.auth_exhausted.set()
            log.warning(
                "dropping connection from %s: %d failed authentication attempts (last user %r)",
                self.peer, self.failures, username,
            )
            # paramiko disconnects after sending this failure once its own counter
            # reaches 10; push it there so the client is cut off now.
            handler = getattr(self.transport, "auth_handler", None)
            if handler is not None and hasattr(handler, "auth_fail_count"):
                handler.auth_fail_count = 10
        return AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session" and self.channel_id is None and self.username is not None:
            if self.refused.is_set():
                return OPEN_FAILED_RESOURCE_SHORTAGE
            if self.admit is not None and not self.admit(self.username):
                self.refused.set()
                return OPEN_FAILED_RESOURCE_SHORTAGE
            self.channel_id = chanid
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_pty_request(
        self,
        channel: paramiko.Channel,
        term: bytes,
        width: int,
        height: int,
        pixelwidth: int,
        pixelheight: int,
        modes: bytes,
    ) -> bool:
        """Grant a pty on the session channel, but allocate none.

        OpenSSH clients driven by a program (scrapli's system transport runs
        ``ssh -tt ... -s netconf``) ask for one: without it their local terminal
        stays cooked (echo, CR/LF mapping, 4 KiB lines) and the framing breaks.
        Granting it changes nothing here: the channel is a paramiko byte stream, no
        line discipline, no echo, so the netconf subsystem stays 8-bit clean.
        """
        return channel.get_id() == self.channel_id and not self.subsystem_ready.is_set()

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        if name == "netconf" and channel.get_id() == self.channel_id:
            if self.subsystem_ready.is_set():
                return False
            self.subsystem_ready.set()
            return True
        return False


def open_netconf_channel(
    transport: paramiko.Transport, iface: NetconfSshInterface, timeout: float,
    stopping: threading.Event,
) -> paramiko.Channel | None:
    """Wait (bounded) for authentication, the channel and the netconf subsystem."""
    deadline = time.monotonic() + timeout
    chan: paramiko.Channel | None = None
    while chan is None:
        remaining = deadline - time.monotonic()
        if (
            remaining <= 0
            or stopping.is_set()
            or iface.auth_exhausted.is_set()
            or iface.refused.is_set()
        ):
            return None
        if not transport.is_active():
            return None
        chan = transport.accept(min(remaining, 0.5))
    while not iface.subsystem_ready.wait(min(max(deadline - time.monotonic(), 0), 0.5)):
        if (
            time.monotonic() >= deadline
            or stopping.is_set()
            or not transport.is_active()
            or chan.closed
        ):
            chan.close()
            return None
    return chan
