"""Hostile and broken clients: framing attacks, hostile XML, disconnects, limits, auth.

After each case the server must still serve a new session, and no thread or file
descriptor may be left behind.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from conftest import PASSWORD, USER, add_user, connect
from escnc.netconf.server import ListenError, NetconfServer
from escnc.ns import BASE_10, NC
from netconf_helpers import (
    TEST_NS,
    MiniServer,
    RawClient,
    ResourceBaseline,
    errors,
    wait_for,
)

ECHO = f'<echo xmlns="{TEST_NS}"><a>1</a></echo>'


@pytest.fixture
def mini(tmp_path: Path) -> Iterator[MiniServer]:
    srv = MiniServer(tmp_path / "state", max_message_size=256 * 1024)
    yield srv
    srv.stop()


def new_session(mini: MiniServer, **kw: object) -> RawClient:
    c = RawClient(mini.port, **kw)  # type: ignore[arg-type]
    c.hello()
    return c


def still_serves(mini: MiniServer) -> None:
    c = new_session(mini)
    assert c.rpc(ECHO, 42).get("message-id") == "42"
    c.close()


def settle(mini: MiniServer, base: ResourceBaseline) -> None:
    assert wait_for(lambda: mini.netconf.connections == 0), "connection threads left"
    assert base.settled(), base.describe()


# --- framing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\n#0\n\n##\n",
        b"\n#01\nx\n##\n",
        b"\n#4294967296\n",
        b"\n#abc\n",
        b"#5\n<rpc/\n##\n",
        b"\n#5\n<rpc/>junk",
        b"<rpc/>]]>]]>",
    ],
)
def test_invalid_chunk_header_ends_only_that_session(mini: MiniServer, data: bytes) -> None:
    base = ResourceBaseline()
    other = new_session(mini)
    c = new_session(mini)
    c.send_raw(data)
    assert c.closed_by_server()
    c.close()
    # the other session is unaffected
    assert other.rpc(ECHO, 5).get("message-id") == "5"
    other.close()
    still_serves(mini)
    settle(mini, base)


def test_oversize_chunked_message(mini: MiniServer) -> None:
    base = ResourceBaseline()
    c = new_session(mini)
    big = b"x" * (mini.settings.max_message_size // 2)
    try:
        c.send_raw(b"\n#%d\n%s" % (len(big), big) * 3)
    except (OSError, EOFError):
        pass  # the server may refuse and close before the client has sent it all
    reply = c.read_xml()
    assert [e["error-tag"] for e in errors(reply)] == ["too-big"]
    assert c.closed_by_server()
    c.close()
    still_serves(mini)
    settle(mini, base)


def test_oversize_eom_message(mini: MiniServer) -> None:
    c = RawClient(mini.port)
    c.hello(caps=(BASE_10,))
    try:
        c.send_raw(b"<rpc>" + b"x" * (mini.settings.max_message_size + 10))
    except OSError:
        pass  # the server may already have closed
    reply = c.read_xml()
    assert [e["error-tag"] for e in errors(reply)] == ["too-big"]
    assert c.closed_by_server()
    c.close()
    still_serves(mini)


def test_message_just_under_limit_accepted(mini: MiniServer) -> None:
    c = new_session(mini)
    pad = "y" * (mini.settings.max_message_size - 200)
    reply = c.rpc(f'<echo xmlns="{TEST_NS}"><p>{pad}</p></echo>', 1)
    assert reply.findtext(f".//{{{TEST_NS}}}p") == pad
    c.close()


def test_truncated_chunk_then_disconnect(mini: MiniServer) -> None:
    base = ResourceBaseline()
    c = new_session(mini)
    c.send_raw(b"\n#100\n<rpc xmlns")
    time.sleep(0.1)
    c.close()
    settle(mini, base)
    still_serves(mini)


def test_disconnect_mid_hello(mini: MiniServer) -> None:
    base = ResourceBaseline()
    c = RawClient(mini.port)
    c.send_raw(b"<hello xmlns='urn:ietf:params:xml:ns:netconf:base:1.0'><capab")
    c.close()
    settle(mini, base)
    still_serves(mini)


def test_disconnect_mid_rpc(mini: MiniServer) -> None:
    base = ResourceBaseline()
    c = new_session(mini)
    c.send_message(
        f'<rpc xmlns="{NC}" message-id="1"><sleep xmlns="{TEST_NS}"><seconds>0.5</seconds>'
        "</sleep></rpc>".encode()
    )
    time.sleep(0.1)
    c.close()
    settle(mini, base)
    still_serves(mini)


def test_disconnect_mid_auth_and_mid_banner(mini: MiniServer) -> None:
    base = ResourceBaseline()
    # plain TCP, nothing sent
    s = socket.create_connection(("127.0.0.1", mini.port))
    s.close()
    # a partial SSH banner
    s = socket.create_connection(("127.0.0.1", mini.port))
    s.sendall(b"SSH-2.0-evil")
    s.close()
    # SSH negotiated, never authenticated
    t = paramiko.Transport(("127.0.0.1", mini.port))
    t.start_client(timeout=10)
    t.close()
    # authenticated, channel opened, no subsystem requested
    cl = paramiko.SSHClient()
    cl.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    cl.connect("127.0.0.1", port=mini.port, username=USER, password=PASSWORD,
               allow_agent=False, look_for_keys=False)
    transport = cl.get_transport()
    assert transport is not None
    transport.open_session()
    cl.close()
    settle(mini, base)
    still_serves(mini)


def test_stalled_handshake_times_out(tmp_path: Path) -> None:
    srv = MiniServer(tmp_path / "s", auth_timeout=1.0)
    try:
        base = ResourceBaseline()
        s = socket.create_connection(("127.0.0.1", srv.port))
        t = paramiko.Transport(("127.0.0.1", srv.port))
        t.start_client(timeout=10)
        start = time.monotonic()
        assert wait_for(lambda: srv.netconf.connections == 0, timeout=20)
        assert time.monotonic() - start < 18
        s.close()
        t.close()
        assert base.settled(), base.describe()
    finally:
        srv.stop()


# --- hostile XML ----------------------------------------------------------------------


def test_deep_nesting(mini: MiniServer) -> None:
    c = new_session(mini)
    depth = 10_000
    body = "<a>" * depth + "</a>" * depth
    reply = c.rpc(f'<echo xmlns="{TEST_NS}">{body}</echo>', 1)
    assert [e["error-tag"] for e in errors(reply)] == ["malformed-message"]
    assert c.rpc(ECHO, 2).get("message-id") == "2"
    c.close()


def test_billion_laughs(mini: MiniServer) -> None:
    c = new_session(mini)
    lol = ['<!ENTITY lol "lol">']
    for i in range(1, 10):
        lol.append(f'<!ENTITY lol{i} "{("&lol%s;" % ("" if i == 1 else i - 1)) * 10}">')
    doc = (
        f'<?xml version="1.0"?><!DOCTYPE rpc [{"".join(lol)}]>'
        f'<rpc xmlns="{NC}" message-id="1"><echo xmlns="{TEST_NS}"><a>&lol9;</a></echo></rpc>'
    )
    start = time.monotonic()
    c.send_message(doc.encode())
    reply = c.read_xml()
    assert time.monotonic() - start < 5
    assert [e["error-tag"] for e in errors(reply)] == ["malformed-message"]
    assert b"lollol" not in c.buf
    assert c.rpc(ECHO, 2).get("message-id") == "2"
    c.close()


def test_external_entity_not_resolved(mini: MiniServer, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    c = new_session(mini)
    doc = (
        f'<!DOCTYPE rpc [<!ENTITY x SYSTEM "file://{secret}">]>'
        f'<rpc xmlns="{NC}" message-id="1"><echo xmlns="{TEST_NS}"><a>&x;</a></echo></rpc>'
    )
    c.send_message(doc.encode())
    data = c.read_message()
    assert b"TOPSECRET" not in data
    assert [e["error-tag"] for e in errors(__import__("lxml.etree").etree.fromstring(data))] == [
        "malformed-message"
    ]
    c.close()


def test_non_utf8(mini: MiniServer) -> None:
    c = new_session(mini)
    c.send_message(
        f'<rpc xmlns="{NC}" message-id="1"><echo xmlns="{TEST_NS}"><a>'.encode()
        + b"\xff\xfe\xc3("
        + b"</a></echo></rpc>"
    )
    reply = c.read_xml()
    assert [e["error-tag"] for e in errors(reply)] == ["malformed-message"]
    # a declared non-UTF-8 encoding is refused too
    c.send_message(
        b'<?xml version="1.0" encoding="ISO-8859-1"?>'
        + f'<rpc xmlns="{NC}" message-id="2"><echo xmlns="{TEST_NS}"><a>'.encode()
        + b"\xe9</a></echo></rpc>"
    )
    assert [e["error-tag"] for e in errors(c.read_xml())] == ["malformed-message"]
    assert c.rpc(ECHO, 3).get("message-id") == "3"
    c.close()


# --- limits ---------------------------------------------------------------------------


def test_idle_timeout(tmp_path: Path) -> None:
    srv = MiniServer(tmp_path / "s", idle_timeout=0.5)
    try:
        ended: list[str | None] = []
        srv.sessions.add_session_listener(
            lambda kind, info: ended.append(info.termination_reason) if kind == "end" else None
        )
        c = new_session(srv)  # type: ignore[arg-type]
        # activity keeps it alive
        for i in range(4):
            time.sleep(0.2)
            c.rpc(ECHO, i)
        assert c.closed_by_server(timeout=5)
        assert wait_for(lambda: ended == ["timeout"])
        assert srv.sessions.stats().dropped_sessions == 1
        c.close()
    finally:
        srv.stop()


def test_hello_timeout(tmp_path: Path) -> None:
    srv = MiniServer(tmp_path / "s", hello_timeout=0.5)
    try:
        c = RawClient(srv.port)
        c.read_server_hello()
        assert c.closed_by_server(timeout=5)
        assert wait_for(lambda: srv.sessions.stats().in_bad_hellos == 1)
        c.close()
    finally:
        srv.stop()


def test_max_sessions(tmp_path: Path) -> None:
    srv = MiniServer(tmp_path / "s", max_sessions=2)
    try:
        a = new_session(srv)  # type: ignore[arg-type]
        b = new_session(srv)  # type: ignore[arg-type]
        with pytest.raises((paramiko.SSHException, EOFError, OSError)):
            new_session(srv)  # type: ignore[arg-type]
        a.rpc(f'<close-session xmlns="{NC}"/>')
        a.close()
        assert wait_for(lambda: srv.netconf.connections == 1)
        c = new_session(srv)  # type: ignore[arg-type]
        assert c.rpc(ECHO, 1).get("message-id") == "1"
        b.close()
        c.close()
    finally:
        srv.stop()


# --- authentication -------------------------------------------------------------------


def test_wrong_password(mini: MiniServer) -> None:
    base = ResourceBaseline()
    with pytest.raises(paramiko.AuthenticationException):
        RawClient(mini.port, password="wrong")
    with pytest.raises(paramiko.AuthenticationException):
        RawClient(mini.port, user="nobody", password=PASSWORD)
    settle(mini, base)
    still_serves(mini)


def test_max_auth_attempts_disconnects(tmp_path: Path) -> None:
    srv = MiniServer(tmp_path / "s", max_auth_attempts=2)
    try:
        t = paramiko.Transport(("127.0.0.1", srv.port))
        t.start_client(timeout=10)
        for _ in range(2):
            with pytest.raises(paramiko.AuthenticationException):
                t.auth_password(USER, "wrong")
        # the right password is no longer accepted on this connection
        with pytest.raises((paramiko.SSHException, EOFError, OSError)):
            t.auth_password(USER, PASSWORD)
        assert wait_for(lambda: not t.is_active())
        t.close()
    finally:
        srv.stop()


def test_publickey_auth(tmp_path: Path) -> None:
    rsa = paramiko.RSAKey.generate(2048)
    other = paramiko.RSAKey.generate(2048)
    state = tmp_path / "s"
    add_user(state, name="keyuser", password=None, keys=(f"ssh-rsa {rsa.get_base64()} k",))
    srv = MiniServer(state)
    try:
        c = RawClient(srv.port, user="keyuser", password=None, pkey=rsa)
        c.hello()
        assert c.rpc(ECHO, 1).get("message-id") == "1"
        (info,) = srv.sessions.list()
        assert info.username == "keyuser"
        c.close()
        with pytest.raises(paramiko.AuthenticationException):
            RawClient(srv.port, user="keyuser", password=None, pkey=other)
        with pytest.raises(paramiko.AuthenticationException):
            RawClient(srv.port, user=USER, password=None, pkey=rsa)
    finally:
        srv.stop()


def test_no_shell_or_exec(mini: MiniServer) -> None:
    cl = paramiko.SSHClient()
    cl.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    cl.connect("127.0.0.1", port=mini.port, username=USER, password=PASSWORD,
               allow_agent=False, look_for_keys=False)
    transport = cl.get_transport()
    assert transport is not None
    chan = transport.open_session()
    with pytest.raises(paramiko.SSHException):
        chan.exec_command("id")
    cl.close()
    cl.connect("127.0.0.1", port=mini.port, username=USER, password=PASSWORD,
               allow_agent=False, look_for_keys=False)
    transport = cl.get_transport()
    assert transport is not None
    chan = transport.open_session()
    with pytest.raises(paramiko.SSHException):
        chan.invoke_subsystem("sftp")
    cl.close()


# --- server lifecycle -----------------------------------------------------------------


def test_host_key_persistent(tmp_path: Path) -> None:
    state = tmp_path / "s"
    keys = []
    for _ in range(2):
        srv = MiniServer(state)
        c = RawClient(srv.port)
        keys.append(c.transport.get_remote_server_key().get_base64())
        c.close()
        srv.stop()
    assert keys[0] == keys[1]
    assert (state / "ssh_host_ed25519_key").stat().st_mode & 0o777 == 0o600


def test_port_in_use(mini: MiniServer) -> None:
    mini.settings.listen_port = mini.port
    other = NetconfServer(mini.services)
    with pytest.raises(ListenError, match="already in use"):
        other.start()


def test_ipv6_loopback(tmp_path: Path) -> None:
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    srv = MiniServer(tmp_path / "s", listen_host="::1")
    try:
        c = RawClient(srv.port, host="::1")
        c.hello()
        assert c.rpc(ECHO, 1).get("message-id") == "1"
        (info,) = srv.sessions.list()
        assert info.source_host == "::1"
        c.close()
    finally:
        srv.stop()


def test_stop_ends_every_session_and_thread(tmp_path: Path) -> None:
    base = ResourceBaseline()
    srv = MiniServer(tmp_path / "s")
    clients = [new_session(srv) for _ in range(5)]  # type: ignore[arg-type]
    half = RawClient(srv.port)  # mid-hello
    srv.stop()
    for c in [*clients, half]:
        assert c.closed_by_server()
        c.close()
    assert base.settled(), base.describe()


def test_many_sessions_no_leak(mini: MiniServer) -> None:
    with connect(mini):
        pass  # ncclient keeps one epoll fd for the process after its first use
    base = ResourceBaseline()
    for _ in range(20):
        with connect(mini) as m:
            assert m.connected
    for _ in range(10):
        c = new_session(mini)
        c.close()
    settle(mini, base)
