"""NETCONF protocol over real SSH: hello, framing negotiation, rpc/rpc-reply rules."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from ncclient.devices.default import DefaultDeviceHandler
from ncclient.operations import RPCError

from conftest import connect
from escnc.ns import BASE_10, BASE_11, NC
from netconf_helpers import TEST_NS, MiniServer, RawClient, errors, wait_for

ECHO = f'<echo xmlns="{TEST_NS}"><a>1</a></echo>'


@pytest.fixture
def mini(tmp_path: Path) -> Iterator[MiniServer]:
    srv = MiniServer(tmp_path / "state")
    yield srv
    srv.stop()


@pytest.fixture
def raw(mini: MiniServer) -> Iterator[RawClient]:
    c = RawClient(mini.port)
    c.hello()
    yield c
    c.close()


def caps_of(hello: etree._Element) -> list[str]:
    return [c.text or "" for c in hello.iter(f"{{{NC}}}capability")]


def test_server_hello(mini: MiniServer) -> None:
    c = RawClient(mini.port)
    hello = c.read_server_hello()
    assert hello.tag == f"{{{NC}}}hello"
    caps = caps_of(hello)
    assert BASE_10 in caps and BASE_11 in caps
    assert any("module=ietf-netconf-monitoring" in cap for cap in caps)
    assert len(caps) == len(set(caps))
    assert c.session_id >= 1
    c.close()


def test_session_ids_unique_and_increasing(mini: MiniServer) -> None:
    ids = []
    for _ in range(3):
        c = RawClient(mini.port)
        c.hello()
        ids.append(c.session_id)
        c.close()
    assert ids == sorted(set(ids))


def test_ncclient_base11(mini: MiniServer) -> None:
    with connect(mini) as m:
        assert m.session_id is not None
        assert ":base:1.1" in m.server_capabilities
        reply = m.dispatch(etree.fromstring(ECHO))
        assert reply.ok
        assert etree.fromstring(reply.xml.encode()).findtext(f".//{{{TEST_NS}}}a") == "1"


class Base10Handler(DefaultDeviceHandler):
    """An ncclient device handler that announces base:1.0 only."""

    _BASE_CAPABILITIES = [BASE_10]


def test_ncclient_base10_only(mini: MiniServer) -> None:
    with connect(mini, device_params={"handler": Base10Handler}) as m:
        reply = m.dispatch(etree.fromstring(ECHO))
        assert reply.ok
        # both sides talk EOM framing
        (info,) = mini.sessions.list()
        session = mini.sessions.get(info.session_id)
        assert session.client_capabilities == frozenset({BASE_10})  # type: ignore[union-attr]
        assert session.framing.value == "1.0"  # type: ignore[union-attr]


def test_raw_base10_uses_eom_framing(mini: MiniServer) -> None:
    c = RawClient(mini.port)
    c.hello(caps=(BASE_10,))
    c.send_raw(f'<rpc xmlns="{NC}" message-id="7">{ECHO}</rpc>'.encode() + b"]]>]]>")
    data = c.read_message()  # EOM-framed: a chunked reply would not parse
    reply = etree.fromstring(data)
    assert reply.get("message-id") == "7"
    c.close()


def test_raw_base11_uses_chunked_framing(raw: RawClient) -> None:
    raw.send_raw(b"")
    body = f'<rpc xmlns="{NC}" message-id="8">{ECHO}</rpc>'.encode()
    # split over several chunks
    raw.send_raw(b"\n#10\n" + body[:10] + b"\n#%d\n" % (len(body) - 10) + body[10:] + b"\n##\n")
    assert raw.buf == b""
    first = raw.chan.recv(3)
    assert first[:2] == b"\n#"
    raw.buf = first
    assert raw.read_xml().get("message-id") == "8"


def test_base10_newline_between_messages(mini: MiniServer) -> None:
    c = RawClient(mini.port)
    c.read_server_hello()
    c.send_raw(f'<?xml version="1.0" encoding="UTF-8"?>\n<hello xmlns="{NC}"><capabilities>'
               f"<capability>{BASE_10}</capability></capabilities></hello>]]>]]>\n".encode())
    c.send_raw(f'<?xml version="1.0" encoding="UTF-8"?><rpc xmlns="{NC}" message-id="3">'
               f"{ECHO}</rpc>]]>]]>\n".encode())
    reply = c.read_xml()
    assert reply.get("message-id") == "3" and not errors(reply)
    c.close()


def test_hello_and_rpc_in_one_write(mini: MiniServer) -> None:
    c = RawClient(mini.port)
    hello = (f'<hello xmlns="{NC}"><capabilities><capability>{BASE_11}</capability>'
             "</capabilities></hello>]]>]]>").encode()
    rpc = f'<rpc xmlns="{NC}" message-id="1">{ECHO}</rpc>'.encode()
    c.send_raw(hello + b"\n#%d\n%s\n##\n" % (len(rpc), rpc))
    c.read_server_hello()
    c.chunked = True
    assert c.read_xml().get("message-id") == "1"
    c.close()


def test_client_hello_with_session_id_ends_session(mini: MiniServer) -> None:
    c = RawClient(mini.port)
    c.read_server_hello()
    c.send_raw(f'<hello xmlns="{NC}"><capabilities><capability>{BASE_10}</capability>'
               "</capabilities><session-id>4</session-id></hello>]]>]]>".encode())
    assert c.closed_by_server()
    assert wait_for(lambda: mini.sessions.stats().in_bad_hellos == 1)


@pytest.mark.parametrize(
    "hello",
    [
        f'<hello xmlns="{NC}"><capabilities><capability>urn:x</capability></capabilities></hello>',
        f'<hello xmlns="{NC}"/>',
        '<hello><capabilities><capability>urn:ietf:params:netconf:base:1.0</capability>'
        "</capabilities></hello>",
        f'<rpc xmlns="{NC}" message-id="1"><get/></rpc>',
        "<hello",
    ],
)
def test_bad_client_hello_ends_session(mini: MiniServer, hello: str) -> None:
    c = RawClient(mini.port)
    c.read_server_hello()
    c.send_raw(hello.encode() + b"]]>]]>")
    assert c.closed_by_server()
    assert mini.sessions.list() == []


def test_message_id_missing(raw: RawClient) -> None:
    raw.send_message(f'<rpc xmlns="{NC}">{ECHO}</rpc>'.encode())
    reply = raw.read_xml()
    assert reply.tag == f"{{{NC}}}rpc-reply"
    assert reply.get("message-id") is None
    (err,) = errors(reply)
    assert err["error-tag"] == "missing-attribute"
    assert err["error-type"] == "rpc"
    assert err["info:bad-attribute"] == "message-id"
    assert err["info:bad-element"] == "rpc"
    # session continues
    assert raw.rpc(ECHO, 2).get("message-id") == "2"


def test_rpc_attributes_echoed(raw: RawClient) -> None:
    raw.send_message(
        f'<rpc xmlns="{NC}" xmlns:ex="http://example.net/content/1.0" message-id="101" '
        f'ex:user-id="fred">{ECHO}</rpc>'.encode()
    )
    reply = raw.read_xml()
    assert reply.get("message-id") == "101"
    assert reply.get("{http://example.net/content/1.0}user-id") == "fred"


def test_unknown_rpc(raw: RawClient) -> None:
    reply = raw.rpc('<frobnicate xmlns="urn:nope"/>', 3)
    (err,) = errors(reply)
    assert err["error-tag"] == "operation-not-supported"
    assert reply.get("message-id") == "3"


def test_unknown_rpc_via_ncclient(mini: MiniServer) -> None:
    with connect(mini) as m, pytest.raises(RPCError) as exc:
        m.dispatch(etree.fromstring('<frobnicate xmlns="urn:nope"/>'))
    assert exc.value.tag == "operation-not-supported"


@pytest.mark.parametrize(
    ("payload", "tag"),
    [
        (b"<rpc xmlns='urn:ietf:params:xml:ns:netconf:base:1.0' message-id='1'><get>",
         "malformed-message"),
        (b"not xml at all", "malformed-message"),
        (b"<notrpc xmlns='urn:x' message-id='1'/>", "malformed-message"),
        (b"<rpc message-id='1'><get/></rpc>", "malformed-message"),
        (b"<rpc xmlns='urn:ietf:params:xml:ns:netconf:base:1.0' message-id='1'/>",
         "missing-element"),
        (b"<rpc xmlns='urn:ietf:params:xml:ns:netconf:base:1.0' message-id='1'><a/><b/></rpc>",
         "unknown-element"),
    ],
)
def test_bad_rpcs_get_errors_and_session_continues(
    raw: RawClient, payload: bytes, tag: str
) -> None:
    raw.send_message(payload)
    reply = raw.read_xml()
    assert [e["error-tag"] for e in errors(reply)] == [tag]
    assert raw.rpc(ECHO, 99).get("message-id") == "99"


def test_handler_exception_is_operation_failed(raw: RawClient) -> None:
    reply = raw.rpc(f'<boom xmlns="{TEST_NS}"/>', 5)
    (err,) = errors(reply)
    assert err["error-tag"] == "operation-failed"
    assert "boom from a buggy handler" in err["error-message"]
    assert raw.rpc(ECHO, 6).get("message-id") == "6"


def test_rpc_error_fields(raw: RawClient) -> None:
    reply = raw.rpc(f'<errors xmlns="{TEST_NS}"/>', 5)
    (err,) = errors(reply)
    assert err["error-type"] == "application"
    assert err["error-tag"] == "invalid-value"
    assert err["error-severity"] == "error"
    assert err["error-path"] == "/x:a"
    assert err["info:bad-element"] == "a"
    path = next(reply.iter(f"{{{NC}}}error-path"))
    assert path.nsmap.get("x") == TEST_NS


def test_replies_in_order_many_pipelined(raw: RawClient) -> None:
    n = 200
    batch = b"".join(
        b"\n#%d\n%s\n##\n" % (len(m), m)
        for m in (f'<rpc xmlns="{NC}" message-id="{i}">{ECHO}</rpc>'.encode() for i in range(n))
    )
    raw.send_raw(batch)
    assert [raw.read_xml().get("message-id") for _ in range(n)] == [str(i) for i in range(n)]


def test_notifications_interleave_with_replies(raw: RawClient) -> None:
    raw.send_message(
        f'<rpc xmlns="{NC}" message-id="1"><notify xmlns="{TEST_NS}"><count>300</count>'
        "</notify></rpc>".encode()
    )
    for i in range(2, 40):
        raw.send_message(f'<rpc xmlns="{NC}" message-id="{i}">{ECHO}</rpc>'.encode())
    reply_ids: list[str] = []
    ticks: list[str] = []
    while len(reply_ids) < 39 or len(ticks) < 300:
        msg = raw.read_xml()
        if msg.tag == f"{{{NC}}}rpc-reply":
            reply_ids.append(msg.get("message-id") or "")
        else:
            assert msg.tag == "{urn:ietf:params:xml:ns:netconf:notification:1.0}notification"
            ticks.append(msg.findtext(f"{{{TEST_NS}}}tick") or "")
    assert reply_ids == [str(i) for i in range(1, 40)]
    assert ticks == [str(i) for i in range(300)]


def test_after_reply_runs_after_the_reply(raw: RawClient) -> None:
    reply = raw.rpc(f'<notify xmlns="{TEST_NS}"><count>3</count><after-reply/></notify>', 1)
    # sent from the handler's own thread, yet the reply came first
    assert reply.tag == f"{{{NC}}}rpc-reply"
    ticks = [raw.read_xml().findtext(f"{{{TEST_NS}}}tick") for _ in range(3)]
    assert ticks == ["0", "1", "2"]


def test_close_session(mini: MiniServer, raw: RawClient) -> None:
    reply = raw.rpc(f'<close-session xmlns="{NC}"/>', 11)
    assert reply.find(f"{{{NC}}}ok") is not None
    assert raw.closed_by_server()
    assert wait_for(lambda: mini.sessions.list() == [])


def test_session_listeners(mini: MiniServer) -> None:
    seen: list[tuple[str, int, str | None, int | None]] = []
    mini.sessions.add_session_listener(
        lambda kind, info: seen.append(
            (kind, info.session_id, info.termination_reason, info.killed_by)
        )
    )
    a = RawClient(mini.port)
    a.hello()
    b = RawClient(mini.port)
    b.hello()
    b.rpc(f'<kill-session xmlns="{NC}"><session-id>{a.session_id}</session-id></kill-session>')
    b.rpc(f'<close-session xmlns="{NC}"/>')
    c = RawClient(mini.port)
    c.hello()
    c.close()
    assert wait_for(lambda: len(seen) == 6)
    assert ("end", a.session_id, "killed", b.session_id) in seen
    assert ("end", b.session_id, "closed", None) in seen
    assert ("end", c.session_id, "dropped", None) in seen
    assert [s for s in seen if s[0] == "start"] == [
        ("start", x, None, None) for x in (a.session_id, b.session_id, c.session_id)
    ]


def test_kill_session(mini: MiniServer) -> None:
    a = RawClient(mini.port)
    a.hello()
    b = RawClient(mini.port)
    b.hello()
    released: list[int] = []
    session_a = mini.sessions.get(a.session_id)
    assert session_a is not None
    closed = threading.Event()
    session_a.add_close_callback(closed.set)  # type: ignore[attr-defined]

    own = b.rpc(f'<kill-session xmlns="{NC}"><session-id>{b.session_id}</session-id>'
                "</kill-session>")
    assert [e["error-tag"] for e in errors(own)] == ["invalid-value"]
    unknown = b.rpc(f'<kill-session xmlns="{NC}"><session-id>9999</session-id></kill-session>')
    assert [e["error-tag"] for e in errors(unknown)] == ["invalid-value"]
    bad = b.rpc(f'<kill-session xmlns="{NC}"><session-id>abc</session-id></kill-session>')
    assert [e["error-tag"] for e in errors(bad)] == ["invalid-value"]
    missing = b.rpc(f'<kill-session xmlns="{NC}"/>')
    assert [e["error-tag"] for e in errors(missing)] == ["missing-element"]

    ok = b.rpc(f'<kill-session xmlns="{NC}"><session-id>{a.session_id}</session-id>'
               "</kill-session>")
    assert ok.find(f"{{{NC}}}ok") is not None
    # kill is synchronous: by the time <ok/> arrives the victim is gone
    assert closed.is_set()
    assert [s.session_id for s in mini.sessions.list()] == [b.session_id]
    assert a.closed_by_server()
    del released
    b.close()


def test_get_schema_errors(raw: RawClient) -> None:
    mon = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"
    reply = raw.rpc(f'<get-schema xmlns="{mon}"><identifier>nope</identifier></get-schema>')
    assert [e["error-tag"] for e in errors(reply)] == ["invalid-value"]
    reply = raw.rpc(f'<get-schema xmlns="{mon}"/>')
    assert [e["error-tag"] for e in errors(reply)] == ["missing-element"]
    reply = raw.rpc(f'<get-schema xmlns="{mon}"><identifier>x</identifier>'
                    "<format>xsd</format></get-schema>")
    assert [e["error-tag"] for e in errors(reply)] == ["invalid-value"]


def test_monitoring_counters(mini: MiniServer, raw: RawClient) -> None:
    from escnc.operations.monitoring import netconf_state

    raw.rpc(ECHO, 1)
    raw.rpc('<frobnicate xmlns="urn:nope"/>', 2)
    raw.send_message(b"<broken")
    raw.read_xml()
    state = netconf_state(mini.services)
    mon = "{urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring}"
    (sess,) = state.iter(f"{mon}session")
    assert sess.findtext(f"{mon}session-id") == str(raw.session_id)
    assert sess.findtext(f"{mon}username") == "admin"
    assert sess.findtext(f"{mon}source-host") == "127.0.0.1"
    assert sess.findtext(f"{mon}in-rpcs") == "3"
    assert sess.findtext(f"{mon}in-bad-rpcs") == "2"
    assert sess.findtext(f"{mon}out-rpc-errors") == "2"
    transport = sess.find(f"{mon}transport")
    assert transport is not None and transport.text == "ncm:netconf-ssh"
    assert transport.nsmap["ncm"] == mon[1:-1]
    stats = state.find(f"{mon}statistics")
    assert stats is not None and stats.findtext(f"{mon}in-sessions") == "1"
    caps = [c.text for c in state.iter(f"{mon}capability")]
    assert BASE_11 in caps
