"""Transport limits: unauthenticated-connection floods (max-startups), session slots,
failed-authentication throttling, flushing on close from another thread, and the
listen error messages.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from pathlib import Path

import paramiko
import pytest

from conftest import PASSWORD, USER
from escnc.netconf.server import bind_error_reason
from escnc.ns import NC
from netconf_helpers import TEST_NS, MiniServer, RawClient, ResourceBaseline, wait_for

ECHO = f'<echo xmlns="{TEST_NS}"><a>1</a></echo>'
N = "{urn:ietf:params:xml:ns:netconf:notification:1.0}"


def _session(port: int, **kw: object) -> RawClient:
    c = RawClient(port, **kw)  # type: ignore[arg-type]
    c.hello()
    return c


def _works(port: int, **kw: object) -> None:
    c = _session(port, **kw)
    assert c.rpc(ECHO, 7).get("message-id") == "7"
    c.close()


def _mute(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A TCP connection that never speaks SSH."""
    return socket.create_connection(("127.0.0.1", port), 10, source_address=(source, 0))


def _closed_without_banner(s: socket.socket) -> bool:
    """True when the server closed the connection before sending anything."""
    s.settimeout(10)
    try:
        return s.recv(100) == b""
    except ConnectionResetError:
        return True


def _read_until_eof(s: socket.socket, timeout: float = 20) -> bytes:
    s.settimeout(timeout)
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    return data


# --- pre-authentication flood ---------------------------------------------------------


def test_unauthenticated_flood_does_not_lock_out_users(tmp_path: Path) -> None:
    srv = MiniServer(tmp_path / "s", max_sessions=2, max_startups=6, auth_timeout=1.5)
    try:
        base = ResourceBaseline()
        flood = [_mute(srv.port) for _ in range(5)]  # more than max_sessions
        assert wait_for(lambda: srv.netconf.startups == 5)
        # real users still log in, and both session slots are theirs
        a = _session(srv.port)
        b = _session(srv.port)
        assert a.rpc(ECHO, 1).get("message-id") == "1"
        assert b.rpc(ECHO, 2).get("message-id") == "2"
        assert srv.netconf.startups == 5
        a.close()
        b.close()
        # the flood times out (auth_timeout): banner sent, then closed by the server
        for s in flood:
            assert _read_until_eof(s).startswith(b"SSH-2.0-")
            s.close()
        assert wait_for(lambda: srv.netconf.connections == 0)
        assert srv.netconf.startups == 0
        assert base.settled(), base.describe()
        _works(srv.port)
    finally:
        srv.stop()


def test_max_startups_refuses_at_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    srv = MiniServer(tmp_path / "s", max_startups=3)
    try:
        base = ResourceBaseline()
        flood = [_mute(srv.port) for _ in range(3)]
        assert wait_for(lambda: srv.netconf.startups == 3)
        with caplog.at_level(logging.WARNING, logger="escnc.netconf.server"):
            extra = _mute(srv.port)
            assert _closed_without_banner(extra)
        extra.close()
        assert any("max-startups" in r.getMessage() and "127.0.0.1" in r.getMessage()
                   for r in caplog.records)
        assert srv.netconf.connections == 3
        for s in flood:
            s.close()
        assert wait_for(lambda: srv.netconf.connections == 0)
        assert base.settled(), base.describe()
        _works(srv.port)
    finally:
        srv.stop()


def test_max_startups_per_source(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    srv = MiniServer(tmp_path / "s", max_startups=10, max_startups_per_source=2)
    try:
        flood = [_mute(srv.port) for _ in range(2)]
        assert wait_for(lambda: srv.netconf.startups == 2)
        with caplog.at_level(logging.WARNING, logger="escnc.netconf.server"):
            extra = _mute(srv.port)
            assert _closed_without_banner(extra)
        extra.close()
        assert any("max-startups-per-source" in r.getMessage() for r in caplog.records)
        # another address is not affected
        _works(srv.port, source_address="127.0.0.2")
        for s in flood:
            s.close()
        assert wait_for(lambda: srv.netconf.startups == 0)
        _works(srv.port)
    finally:
        srv.stop()


def test_max_sessions_refused_after_login(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    srv = MiniServer(tmp_path / "s", max_sessions=1)
    try:
        a = _session(srv.port)
        with (caplog.at_level(logging.WARNING, logger="escnc.netconf.server"),
              pytest.raises(paramiko.ChannelException)):
            RawClient(srv.port)
        assert any("max-sessions" in r.getMessage() for r in caplog.records)
        assert wait_for(lambda: srv.netconf.connections == 1)
        assert srv.netconf.startups == 0
        a.close()
        assert wait_for(lambda: srv.netconf.connections == 0)
        _works(srv.port)
    finally:
        srv.stop()


# --- failed authentication --------------------------------------------------------------


def test_failed_password_is_throttled_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    srv = MiniServer(tmp_path / "s", max_auth_attempts=2, auth_failure_delay=0.2)
    try:
        t = paramiko.Transport(("127.0.0.1", srv.port))
        t.start_client(timeout=10)
        with caplog.at_level(logging.INFO, logger="escnc.netconf.ssh"):
            for _ in range(2):
                started = time.monotonic()
                with pytest.raises(paramiko.AuthenticationException):
                    t.auth_password(USER, "wrong")
                assert time.monotonic() - started >= 0.2  # answered no sooner (lower bound)
            with pytest.raises((paramiko.SSHException, EOFError, OSError)):
                t.auth_password(USER, PASSWORD)
            assert wait_for(lambda: not t.is_active())
        t.close()
        dropped = [r for r in caplog.records if "dropping connection" in r.getMessage()]
        assert len(dropped) == 1
        assert "127.0.0.1" in dropped[0].getMessage()
        assert dropped[0].levelno == logging.WARNING
        assert wait_for(lambda: srv.netconf.connections == 0)
        _works(srv.port)
    finally:
        srv.stop()


def test_failure_delay_does_not_block_other_connections(tmp_path: Path) -> None:
    srv = MiniServer(tmp_path / "s", auth_failure_delay=3.0)
    try:
        t = paramiko.Transport(("127.0.0.1", srv.port))
        t.start_client(timeout=10)
        outcome: list[str] = []

        def fail() -> None:
            try:
                t.auth_password(USER, "wrong")
                outcome.append("accepted")
            except paramiko.AuthenticationException:
                outcome.append("failed")
            except (paramiko.SSHException, EOFError, OSError):
                outcome.append("gone")

        th = threading.Thread(target=fail)
        th.start()
        # while that failure is being held back, someone else logs in and works
        _works(srv.port)
        assert outcome == []
        th.join(15)
        assert outcome == ["failed"]
        t.close()
    finally:
        srv.stop()


# --- close from another thread flushes --------------------------------------------------


def _ticks(c: RawClient) -> tuple[list[int], bool]:
    """Read until EOF: the tick numbers received and whether the rpc-reply came."""
    ticks, replied = [], False
    try:
        while True:
            msg = c.read_xml()
            if msg.tag == f"{N}notification":
                ticks.append(int(msg.findtext(f"{{{TEST_NS}}}tick") or -1))
            elif msg.tag == f"{{{NC}}}rpc-reply":
                replied = True
    except (EOFError, OSError):
        pass
    return ticks, replied


@pytest.mark.parametrize("chunked", [True, False])
def test_close_from_another_thread_flushes_queued_output(tmp_path: Path,
                                                         chunked: bool) -> None:
    srv = MiniServer(tmp_path / "s")
    try:
        base = ResourceBaseline()
        c = RawClient(srv.port)
        c.hello() if chunked else c.hello(caps=("urn:ietf:params:netconf:base:1.0",))
        count = 3000
        c.send_message(f'<rpc xmlns="{NC}" message-id="1"><notify xmlns="{TEST_NS}">'
                       f"<count>{count}</count><close/></notify></rpc>".encode())
        ticks, replied = _ticks(c)
        assert replied
        assert ticks == list(range(count))  # the last queued one too, then EOF
        c.close()
        assert wait_for(lambda: srv.netconf.connections == 0)
        assert base.settled(), base.describe()
    finally:
        srv.stop()


def test_close_flush_is_bounded_when_client_does_not_read(tmp_path: Path) -> None:
    srv = MiniServer(tmp_path / "s")
    try:
        c = _session(srv.port)
        sid = c.session_id
        # far more than the SSH window and socket buffers hold; the client never reads
        c.send_message(f'<rpc xmlns="{NC}" message-id="1"><notify xmlns="{TEST_NS}">'
                       f"<count>100000</count><close/></notify></rpc>".encode())
        assert wait_for(lambda: srv.sessions.get(sid) is None, timeout=20)
        assert wait_for(lambda: srv.netconf.connections == 0)
        c.close()
        _works(srv.port)
    finally:
        srv.stop()


def test_kill_session_flushes_then_releases(tmp_path: Path) -> None:
    srv = MiniServer(tmp_path / "s")
    try:
        victim = _session(srv.port)
        killer = _session(srv.port)
        reply = killer.rpc(f'<kill-session xmlns="{NC}"><session-id>{victim.session_id}'
                           "</session-id></kill-session>")
        assert reply.find(f"{{{NC}}}ok") is not None
        assert victim.closed_by_server()
        assert wait_for(lambda: srv.sessions.get(victim.session_id) is None)
        victim.close()
        killer.close()
    finally:
        srv.stop()


# --- listen errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "port", "expected"),
    [
        (errno.EADDRINUSE, 830, "address already in use"),
        (errno.EACCES, 830, "ports below 1024 need root or CAP_NET_BIND_SERVICE"),
        (errno.EPERM, 22, "ports below 1024 need root or CAP_NET_BIND_SERVICE"),
        (errno.EACCES, 8300, "security policy"),
        (errno.EADDRNOTAVAIL, 830, "address not available"),
        (errno.EAFNOSUPPORT, 830, "Address family not supported"),
        (None, 830, "unknown error"),
    ],
)
def test_bind_error_reason(err: int | None, port: int, expected: str) -> None:
    assert expected in bind_error_reason(err, port)


def test_bind_error_reason_keeps_the_os_message() -> None:
    assert bind_error_reason(errno.ENOMEM, 830, "Cannot allocate memory") == (
        "Cannot allocate memory"
    )
    assert "privileges" not in bind_error_reason(errno.EACCES, 8300)
