"""Helpers for the NETCONF protocol tests: a minimal real server and a raw client.

The minimal server is the real NetconfServer, SessionManager and UserStore with
the protocol's own operations plus a few test RPCs; it needs no datastore or
engine (those are exercised through the full app in other tests). The raw client
is a real paramiko SSH client that speaks NETCONF framing by hand, so tests can
send exactly the bytes they want. Its framing code is independent of the server's.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path

import paramiko
from lxml import etree

from conftest import PASSWORD, USER, add_user, make_settings
from escnc.errors import RpcError
from escnc.netconf.server import NetconfServer
from escnc.netconf.sessions import SessionManager
from escnc.ns import BASE_10, BASE_11, NC
from escnc.operations import monitoring, session_ops, yang_library
from escnc.rpc.dispatch import RpcContext, RpcRegistry
from escnc.rpc.users import UserStore
from escnc.services import Services

TEST_NS = "urn:escnc:test"
EOM = b"]]>]]>"


def _echo(ctx: RpcContext, request: etree._Element) -> etree._Element:
    out = etree.Element(f"{{{TEST_NS}}}echo-reply", nsmap={None: TEST_NS})
    for child in request:
        out.append(child)
    sid = etree.SubElement(out, f"{{{TEST_NS}}}session-id")
    sid.text = str(ctx.session.session_id)
    return out


def _boom(ctx: RpcContext, request: etree._Element) -> None:
    raise ValueError("boom from a buggy handler")


def _sleep(ctx: RpcContext, request: etree._Element) -> None:
    time.sleep(float(request.findtext(f"{{{TEST_NS}}}seconds") or "1"))


def _errors(ctx: RpcContext, request: etree._Element) -> None:
    raise RpcError("invalid-value", "bad thing", path="/x:a", path_nsmap={"x": TEST_NS},
                   info={"bad-element": "a"})


def _notify(ctx: RpcContext, request: etree._Element) -> None:
    """Queue <count> notifications to the calling session from another thread;
    with <close/> that thread then closes the session (SessionHandle.close())."""
    count = int(request.findtext(f"{{{TEST_NS}}}count") or "1")
    session = ctx.session
    close = request.find(f"{{{TEST_NS}}}close") is not None

    def send() -> None:
        for i in range(count):
            n = etree.Element("{urn:ietf:params:xml:ns:netconf:notification:1.0}notification")
            etree.SubElement(n, "{urn:ietf:params:xml:ns:netconf:notification:1.0}eventTime"
                             ).text = "2024-01-01T00:00:00Z"
            etree.SubElement(n, f"{{{TEST_NS}}}tick").text = str(i)
            session.send_notification(n)
        if close:
            session.close()

    if request.find(f"{{{TEST_NS}}}after-reply") is not None:
        ctx.session.after_reply(send)  # type: ignore[attr-defined]
    else:
        threading.Thread(target=send, daemon=True).start()


class MiniServer:
    """NetconfServer + SessionManager + UserStore + protocol ops, on loopback."""

    def __init__(self, state_dir: Path, *, datastore: object = None, **overrides: object) -> None:
        add_user(state_dir)
        self.settings = make_settings(state_dir, **overrides)
        registry = RpcRegistry()
        self.services = Services(settings=self.settings, registry=registry)
        self.services.users = UserStore(state_dir / "users.sqlite3")
        self.services.sessions = SessionManager(self.services)
        self.services.datastore = datastore
        for mod in (monitoring, session_ops, yang_library):
            mod.register(registry, self.services)
        registry.register(TEST_NS, "echo", _echo)
        registry.register(TEST_NS, "boom", _boom)
        registry.register(TEST_NS, "sleep", _sleep)
        registry.register(TEST_NS, "errors", _errors)
        registry.register(TEST_NS, "notify", _notify)
        self.netconf = NetconfServer(self.services)
        self.netconf.start()

    @property
    def port(self) -> int:
        return self.netconf.port

    @property
    def sessions(self) -> SessionManager:
        return self.services.sessions

    def stop(self) -> None:
        self.netconf.stop()
        self.services.users.close()


class RawClient:
    """A hand-driven NETCONF client over a real paramiko SSH connection."""

    def __init__(self, port: int, user: str = USER, password: str | None = PASSWORD,
                 pkey: paramiko.PKey | None = None, host: str = "127.0.0.1",
                 timeout: float = 10.0, source_address: str | None = None) -> None:
        self.client = paramiko.SSHClient()
        self.client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            sock = (socket.create_connection((host, port), timeout,
                                             source_address=(source_address, 0))
                    if source_address else None)
            self.client.connect(host, port=port, username=user, password=password, pkey=pkey,
                                allow_agent=False, look_for_keys=False, timeout=timeout,
                                banner_timeout=timeout, auth_timeout=timeout, sock=sock)
        except BaseException:
            self.client.close()
            raise
        transport = self.client.get_transport()
        assert transport is not None
        self.transport = transport
        self.chan = transport.open_session(timeout=timeout)
        self.chan.invoke_subsystem("netconf")
        self.chan.settimeout(timeout)
        self.buf = b""
        self.chunked = False
        self.server_hello: etree._Element | None = None
        self.session_id = 0

    # --- framing (independent of the server's implementation) ------------------------

    def _fill(self) -> None:
        data = self.chan.recv(65536)
        if not data:
            raise EOFError("server closed the channel")
        self.buf += data

    def read_message(self) -> bytes:
        if not self.chunked:
            while EOM not in self.buf:
                self._fill()
            msg, _, self.buf = self.buf.partition(EOM)
            return msg
        parts = []
        while True:
            while not re.match(rb"\n#(\d+|#)\n", self.buf):
                self._fill()
            m = re.match(rb"\n#(\d+|#)\n", self.buf)
            assert m is not None
            if m.group(1) == b"#":
                self.buf = self.buf[m.end():]
                return b"".join(parts)
            size = int(m.group(1))
            while len(self.buf) < m.end() + size:
                self._fill()
            parts.append(self.buf[m.end():m.end() + size])
            self.buf = self.buf[m.end() + size:]

    def read_xml(self) -> etree._Element:
        return etree.fromstring(self.read_message())

    def send_raw(self, data: bytes) -> None:
        self.chan.sendall(data)

    def send_message(self, msg: bytes) -> None:
        if self.chunked:
            self.send_raw(b"\n#%d\n%s\n##\n" % (len(msg), msg))
        else:
            self.send_raw(msg + EOM)

    # --- protocol --------------------------------------------------------------------

    def hello(self, caps: tuple[str, ...] = (BASE_10, BASE_11), read_first: bool = True) -> None:
        if read_first:
            self.read_server_hello()
        body = "".join(f"<capability>{c}</capability>" for c in caps)
        self.send_raw(f'<hello xmlns="{NC}"><capabilities>{body}</capabilities></hello>'
                      .encode() + EOM)
        if not read_first:
            self.read_server_hello()
        self.chunked = BASE_11 in caps

    def read_server_hello(self) -> etree._Element:
        hello = self.read_xml()
        self.server_hello = hello
        self.session_id = int(hello.findtext(f"{{{NC}}}session-id") or 0)
        return hello

    def rpc(self, body: str, message_id: str | int = 1) -> etree._Element:
        self.send_message(
            f'<rpc xmlns="{NC}" message-id="{message_id}">{body}</rpc>'.encode()
        )
        return self.read_xml()

    def closed_by_server(self, timeout: float = 10.0) -> bool:
        """True once the server has closed the channel (reads until EOF)."""
        self.chan.settimeout(timeout)
        try:
            while True:
                if not self.chan.recv(65536):
                    return True
        except TimeoutError:
            return False
        except (OSError, EOFError):
            return True

    def close(self) -> None:
        self.client.close()


def errors(reply: etree._Element) -> list[dict[str, str]]:
    out = []
    for err in reply.iter(f"{{{NC}}}rpc-error"):
        d = {etree.QName(c).localname: (c.text or "") for c in err}
        info = err.find(f"{{{NC}}}error-info")
        if info is not None:
            for c in info:
                d["info:" + etree.QName(c).localname] = c.text or ""
        out.append(d)
    return out


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_for(pred, timeout: float = 10.0, interval: float = 0.02) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())


class ResourceBaseline:
    """Thread and file-descriptor counts before a test, checked after it settles."""

    def __init__(self) -> None:
        self.threads = threading.active_count()
        self.fds = fd_count()

    def settled(self, timeout: float = 10.0) -> bool:
        return wait_for(
            lambda: threading.active_count() <= self.threads and fd_count() <= self.fds, timeout
        )

    def describe(self) -> str:
        return (f"threads {self.threads} -> {threading.active_count()} "
                f"({[t.name for t in threading.enumerate()]}), fds {self.fds} -> {fd_count()}")
