"""Protocol conformance: RFC 6241 operations and Appendix A error semantics, RFC 6242
framing, RFC 6243 with-defaults, RFC 5277 subscriptions, RFC 6470 base notifications,
RFC 6022 monitoring and RFC 8525 yang-library, through the full app on loopback with
a raw client (exact bytes) and ncclient.

Each case names the RFC clause it checks. Where the RFC leaves the error-tag open,
the test pins what Netopeer2 (libnetconf2 + sysrepo) answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lxml import etree

from escnc.app import Server
from escnc.ns import BASE_10, BASE_11, ESC, NC, NOTIF
from netconf_helpers import EOM, RawClient, errors

WD = "urn:ietf:params:xml:ns:yang:ietf-netconf-with-defaults"
NCN = "urn:ietf:params:xml:ns:yang:ietf-netconf-notifications"
NCEV = "urn:ietf:params:xml:ns:netmod:notification"

BASE = (
    f'<esc_datamodel xmlns="{ESC}">'
    "<images><image><name>img</name><src>/var/lib/escnc/x.qcow2</src></image>"
    "<image><name>img2</name><src>/var/lib/escnc/y.qcow2</src>"
    "<disk_format>qcow2</disk_format></image></images>"
    "<flavors><flavor><name>f</name><vcpus>1</vcpus><memory_mb>256</memory_mb></flavor></flavors>"
    "<tenants><tenant><name>t1</name></tenant></tenants></esc_datamodel>"
)


def edit(body: str, target: str = "running", extra: str = "") -> str:
    return (
        f"<edit-config><target><{target}/></target>{extra}"
        f"<config>{body}</config></edit-config>"
    )


def tenant(name: str, op: str | None = None, desc: str | None = None) -> str:
    attr = f' xmlns:nc="{NC}" nc:operation="{op}"' if op else ""
    d = f"<description>{desc}</description>" if desc else ""
    return (
        f'<esc_datamodel xmlns="{ESC}"><tenants><tenant{attr}><name>{name}</name>{d}'
        "</tenant></tenants></esc_datamodel>"
    )


def ok(reply: etree._Element) -> bool:
    return reply.find(f"{{{NC}}}ok") is not None


def one_error(reply: etree._Element) -> dict[str, str]:
    errs = errors(reply)
    assert len(errs) == 1, etree.tostring(reply)
    return errs[0]


def tenants(c: RawClient, source: str = "running") -> list[str]:
    reply = c.rpc(f"<get-config><source><{source}/></source></get-config>")
    return [t.findtext(f"{{{ESC}}}name") or "" for t in reply.iter(f"{{{ESC}}}tenant")]


@pytest.fixture
def clients(server: Server) -> Iterator[Callable[..., RawClient]]:
    made: list[RawClient] = []

    def make(caps: tuple[str, ...] = (BASE_10, BASE_11)) -> RawClient:
        c = RawClient(server.port)
        c.hello(caps)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def a(clients: Callable[..., RawClient]) -> RawClient:
    c = clients()
    assert ok(c.rpc(edit(BASE)))
    return c


# ---------------------------------------------------------------- RFC 6241 7.2 edit-config


def test_url_target_is_operation_not_supported(a: RawClient) -> None:
    # no :url capability: <url> in <target> (7.2) and in <source> (7.3)
    e = one_error(a.rpc("<edit-config><target><url>file:///x</url></target><config/></edit-config>"))
    assert (e["error-type"], e["error-tag"], e["info:bad-element"]) == (
        "protocol", "operation-not-supported", "url")
    e = one_error(a.rpc("<copy-config><target><startup/></target>"
                        "<source><url>file:///x</url></source></copy-config>"))
    assert e["error-tag"] == "operation-not-supported"


def test_missing_target_and_config(a: RawClient) -> None:
    e = one_error(a.rpc(f"<edit-config><config>{BASE}</config></edit-config>"))
    assert (e["error-type"], e["error-tag"], e["info:bad-element"]) == (
        "protocol", "missing-element", "target")
    e = one_error(a.rpc("<edit-config><target><running/></target></edit-config>"))
    assert (e["error-tag"], e["info:bad-element"]) == ("missing-element", "config")


def test_default_operation_none_missing_parent_is_data_missing(a: RawClient) -> None:
    e = one_error(a.rpc(edit(tenant("zz", desc="x"),
                             extra="<default-operation>none</default-operation>")))
    assert (e["error-type"], e["error-tag"]) == ("application", "data-missing")
    assert "tenant[esc:name='zz']" in e["error-path"]
    assert tenants(a) == ["t1"]


def test_create_delete_remove(a: RawClient) -> None:
    e = one_error(a.rpc(edit(tenant("t1", "create"))))
    assert (e["error-type"], e["error-tag"]) == ("application", "data-exists")
    assert e["error-path"] == "/esc:esc_datamodel/esc:tenants/esc:tenant[esc:name='t1']"
    e = one_error(a.rpc(edit(tenant("nope", "delete"))))
    assert (e["error-type"], e["error-tag"]) == ("application", "data-missing")
    assert "nope" in e["error-path"]
    assert ok(a.rpc(edit(tenant("nope", "remove"))))  # 7.2: remove of nothing is ok
    assert ok(a.rpc(edit(tenant("t1", "delete"))))
    assert tenants(a) == []


def test_unknown_namespace_and_element_in_config(a: RawClient) -> None:
    e = one_error(a.rpc(edit('<foo xmlns="urn:example:unknown"/>')))
    assert e["error-tag"] == "unknown-namespace"
    assert (e["info:bad-element"], e["info:bad-namespace"]) == ("foo", "urn:example:unknown")
    e = one_error(a.rpc(edit(f'<esc_datamodel xmlns="{ESC}"><bogus/></esc_datamodel>')))
    assert (e["error-tag"], e["info:bad-element"]) == ("unknown-element", "bogus")


def test_bad_operation_attribute(a: RawClient) -> None:
    e = one_error(a.rpc(edit(tenant("t1", "frob"))))
    assert (e["error-type"], e["error-tag"]) == ("protocol", "bad-attribute")
    assert (e["info:bad-attribute"], e["info:bad-element"]) == ("operation", "tenant")


def test_validate_inline_config(a: RawClient) -> None:
    assert ok(a.rpc(f"<validate><source><config>{BASE}</config></source></validate>"))
    # Appendix A unknown-namespace: error-info names the element and the namespace
    e = one_error(a.rpc('<validate><source><config><x xmlns="urn:example:zz"/></config>'
                        "</source></validate>"))
    assert e["error-tag"] == "unknown-namespace"
    assert (e["info:bad-element"], e["info:bad-namespace"]) == ("x", "urn:example:zz")


@pytest.mark.parametrize(
    "rpc",
    [
        "<get-config><source><running/></source><bogus/></get-config>",
        "<get><bogus/></get>",
        "<lock><target><running/></target><bogus/></lock>",
        "<edit-config><target><running/></target><config/><bogus/></edit-config>",
        "<commit><bogus/></commit>",
        "<close-session><bogus/></close-session>",
    ],
)
def test_unknown_parameter_in_base_operation(a: RawClient, rpc: str) -> None:
    # the operation's input (ietf-netconf YANG) has no such child: unknown-element
    e = one_error(a.rpc(rpc))
    assert (e["error-type"], e["error-tag"], e["info:bad-element"]) == (
        "protocol", "unknown-element", "bogus")


def test_parameter_in_foreign_namespace_is_unknown_namespace(a: RawClient) -> None:
    e = one_error(a.rpc('<get-config><source><running/></source><x xmlns="urn:example:zz"/>'
                        "</get-config>"))
    assert e["error-tag"] == "unknown-namespace"
    assert (e["info:bad-element"], e["info:bad-namespace"]) == ("x", "urn:example:zz")


# ---------------------------------------------------------------- RFC 6241 7.5/7.6 locks


def test_lock_unlock_errors(a: RawClient, clients: Callable[..., RawClient]) -> None:
    b = clients()
    e = one_error(a.rpc("<unlock><target><running/></target></unlock>"))
    assert (e["error-type"], e["error-tag"]) == ("protocol", "operation-failed")
    assert ok(a.rpc("<lock><target><running/></target></lock>"))
    e = one_error(b.rpc("<lock><target><running/></target></lock>"))
    assert (e["error-type"], e["error-tag"], e["info:session-id"]) == (
        "protocol", "lock-denied", str(a.session_id))
    e = one_error(b.rpc(edit(tenant("t2"))))
    assert (e["error-type"], e["error-tag"]) == ("protocol", "in-use")
    e = one_error(b.rpc("<unlock><target><running/></target></unlock>"))
    assert e["error-tag"] == "operation-failed"
    # the holder may lock again: still lock-denied (7.5: already held)
    e = one_error(a.rpc("<lock><target><running/></target></lock>"))
    assert e["error-tag"] == "lock-denied"
    # close-session while holding the lock releases it (7.8)
    assert ok(a.rpc("<close-session/>"))
    assert a.closed_by_server()
    assert ok(b.rpc("<lock><target><running/></target></lock>"))


def test_candidate_lock_and_modified_candidate(
    a: RawClient, clients: Callable[..., RawClient]
) -> None:
    b = clients()
    assert ok(a.rpc("<lock><target><candidate/></target></lock>"))
    for rpc in (edit(tenant("t2"), "candidate"), "<discard-changes/>",
                "<copy-config><target><candidate/></target><source><running/></source>"
                "</copy-config>",
                "<delete-config><target><candidate/></target></delete-config>"):
        assert one_error(b.rpc(rpc))["error-tag"] == "in-use", rpc
    assert ok(a.rpc("<unlock><target><candidate/></target></unlock>"))
    assert ok(a.rpc(edit(tenant("t2"), "candidate")))
    # 7.5: no lock on a candidate with uncommitted changes
    e = one_error(b.rpc("<lock><target><candidate/></target></lock>"))
    assert e["error-tag"] == "lock-denied" and "info:session-id" in e
    assert ok(a.rpc("<discard-changes/>"))
    assert ok(b.rpc("<lock><target><candidate/></target></lock>"))


# ---------------------------------------------------------------- RFC 6241 8.4 confirmed commit


def test_confirmed_commit_without_persist_binds_to_session(
    a: RawClient, clients: Callable[..., RawClient]
) -> None:
    b = clients()
    assert ok(a.rpc(edit(tenant("t2"), "candidate")))
    assert ok(a.rpc("<commit><confirmed/><confirm-timeout>60</confirm-timeout></commit>"))
    assert tenants(b) == ["t1", "t2"]
    # 8.4.1: without <persist> the confirming commit must come from the same session
    assert errors(b.rpc("<commit/>"))
    assert errors(b.rpc("<cancel-commit/>"))
    assert ok(a.rpc("<commit/>"))
    assert tenants(b) == ["t1", "t2"]
    e = one_error(a.rpc("<cancel-commit/>"))  # nothing pending any more
    assert e["error-tag"] == "operation-failed"


def test_confirmed_commit_with_persist_any_session(
    a: RawClient, clients: Callable[..., RawClient]
) -> None:
    b = clients()
    assert ok(a.rpc(edit(tenant("t2"), "candidate")))
    assert ok(a.rpc("<commit><confirmed/><persist>p1</persist></commit>"))
    a.close()  # 8.4.1: with persist, the session's end does not roll back
    assert tenants(b) == ["t1", "t2"]
    # cancel-commit from another session needs the persist-id (8.4.4.1)
    assert errors(b.rpc("<cancel-commit/>"))
    e = one_error(b.rpc("<cancel-commit><persist-id>wrong</persist-id></cancel-commit>"))
    assert (e["error-tag"], e["info:bad-element"]) == ("invalid-value", "persist-id")
    assert ok(b.rpc("<cancel-commit><persist-id>p1</persist-id></cancel-commit>"))
    assert tenants(b) == ["t1"]


def test_confirmed_commit_rolled_back_when_session_ends(
    a: RawClient, clients: Callable[..., RawClient]
) -> None:
    b = clients()
    assert ok(a.rpc(edit(tenant("t2"), "candidate")))
    assert ok(a.rpc("<commit><confirmed/></commit>"))
    assert ok(a.rpc("<close-session/>"))
    assert a.closed_by_server()
    assert tenants(b) == ["t1"]


# ---------------------------------------------------------------- :startup, copy/delete-config


def test_copy_running_to_startup_survives_restart(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    state = tmp_path / "restart"
    srv = server_factory(state_dir=state)
    c = RawClient(srv.port)
    c.hello()
    assert ok(c.rpc(edit(BASE)))
    assert ok(c.rpc("<delete-config><target><startup/></target></delete-config>"))
    assert tenants(c, "startup") == []
    assert ok(c.rpc("<copy-config><target><startup/></target><source><running/></source>"
                    "</copy-config>"))
    e = one_error(c.rpc("<delete-config><target><running/></target></delete-config>"))
    assert e["error-type"] == "protocol"
    c.close()
    srv.stop()
    srv2 = server_factory(state_dir=state)
    c2 = RawClient(srv2.port)
    c2.hello()
    assert tenants(c2, "startup") == ["t1"]
    assert tenants(c2, "running") == ["t1"]
    c2.close()


# ---------------------------------------------------------------- RFC 6243 with-defaults


def _images(reply: etree._Element) -> dict[str, str | None]:
    # configuration images only (not esc_datamodel/opdata/images)
    return {
        (i.findtext(f"{{{ESC}}}name") or ""): i.findtext(f"{{{ESC}}}disk_format")
        for i in reply.iterfind(f".//{{{ESC}}}esc_datamodel/{{{ESC}}}images/{{{ESC}}}image")
    }


@pytest.mark.parametrize("op", ["get-config", "get"])
def test_with_defaults_modes(a: RawClient, op: str) -> None:
    src = "<source><running/></source>" if op == "get-config" else ""
    flt = f'<filter type="subtree"><esc_datamodel xmlns="{ESC}"><images/></esc_datamodel></filter>'

    def read(mode: str | None) -> etree._Element:
        wd = f'<with-defaults xmlns="{WD}">{mode}</with-defaults>' if mode else ""
        return a.rpc(f"<{op}>{src}{flt}{wd}</{op}>")

    # basic-mode explicit: what the client set, default-valued or not
    assert _images(read(None)) == {"img": None, "img2": "qcow2"}
    assert _images(read("explicit")) == {"img": None, "img2": "qcow2"}
    assert _images(read("report-all")) == {"img": "qcow2", "img2": "qcow2"}
    assert _images(read("trim")) == {"img": None, "img2": None}
    e = one_error(read("frob"))
    assert (e["error-tag"], e["info:bad-element"]) == ("invalid-value", "with-defaults")


# ---------------------------------------------------------------- RFC 6241 7.8/7.9 sessions


def test_kill_session_errors(a: RawClient) -> None:
    for sid in ("0", "999", str(a.session_id)):
        e = one_error(a.rpc(f"<kill-session><session-id>{sid}</session-id></kill-session>"))
        assert (e["error-type"], e["error-tag"], e["info:bad-element"]) == (
            "protocol", "invalid-value", "session-id"), sid


def test_prefixed_rpc_and_attributes_echoed(a: RawClient) -> None:
    a.send_message(
        f'<nc:rpc xmlns:nc="{NC}" xmlns:ex="urn:example:x" message-id="77" ex:user="u">'
        "<nc:get-config><nc:source><nc:running/></nc:source></nc:get-config></nc:rpc>".encode()
    )
    reply = a.read_xml()
    assert reply.tag == f"{{{NC}}}rpc-reply"
    assert reply.get("message-id") == "77"
    assert reply.get("{urn:example:x}user") == "u"
    assert reply.find(f"{{{NC}}}data") is not None


# ---------------------------------------------------------------- RFC 6242 framing


def test_malformed_message_only_for_base11(clients: Callable[..., RawClient]) -> None:
    bad = f'<rpc xmlns="{NC}" message-id="1"><get>'.encode()
    c11 = clients()
    c11.send_message(bad)
    e = one_error(c11.read_xml())
    assert (e["error-type"], e["error-tag"]) == ("rpc", "malformed-message")
    # Appendix A: malformed-message "MUST NOT be sent to old clients"
    c10 = clients((BASE_10,))
    c10.send_message(bad)
    e = one_error(c10.read_xml())
    assert (e["error-type"], e["error-tag"]) == ("rpc", "operation-failed")
    # the session goes on
    assert c10.rpc("<get-config><source><running/></source></get-config>").find(
        f"{{{NC}}}data") is not None


def test_eom_message_on_base11_session_ends_it(clients: Callable[..., RawClient]) -> None:
    c = clients()
    c.send_raw(f'<rpc xmlns="{NC}" message-id="1"><get/></rpc>'.encode() + EOM)
    assert c.closed_by_server()


# ---------------------------------------------------------------- RFC 5277 / RFC 6470


def _notifications(c: RawClient, count: int) -> list[etree._Element]:
    return [c.read_xml() for _ in range(count)]


def test_subscription_replay_from_before_log_creation(clients: Callable[..., RawClient]) -> None:
    c = clients()
    assert ok(c.rpc(f'<create-subscription xmlns="{NOTIF}"><startTime>2000-01-01T00:00:00Z'
                    "</startTime><stopTime>2999-01-01T00:00:00Z</stopTime>"
                    "</create-subscription>"))
    first, done = _notifications(c, 2)
    assert first.find(f"{{{NCN}}}netconf-session-start") is not None
    assert done.find(f"{{{NCEV}}}replayComplete") is not None
    e = one_error(c.rpc(f'<create-subscription xmlns="{NOTIF}"/>'))
    assert (e["error-type"], e["error-tag"]) == ("protocol", "in-use")


def test_subscription_time_errors(clients: Callable[..., RawClient]) -> None:
    c = clients()
    e = one_error(c.rpc(f'<create-subscription xmlns="{NOTIF}"><stopTime>2020-01-01T00:00:00Z'
                        "</stopTime></create-subscription>"))
    assert (e["error-tag"], e["info:bad-element"]) == ("missing-element", "startTime")
    e = one_error(c.rpc(f'<create-subscription xmlns="{NOTIF}"><startTime>2999-01-01T00:00:00Z'
                        "</startTime></create-subscription>"))
    assert (e["error-tag"], e["info:bad-element"]) == ("bad-element", "startTime")
    e = one_error(c.rpc(f'<create-subscription xmlns="{NOTIF}"><startTime>2020-01-02T00:00:00Z'
                        "</startTime><stopTime>2020-01-01T00:00:00Z</stopTime>"
                        "</create-subscription>"))
    assert (e["error-tag"], e["info:bad-element"]) == ("bad-element", "stopTime")


def test_config_change_for_startup(a: RawClient, clients: Callable[..., RawClient]) -> None:
    # RFC 6470: netconf-config-change covers <running> and <startup>
    s = clients()
    assert ok(s.rpc(f'<create-subscription xmlns="{NOTIF}"/>'))
    assert ok(a.rpc("<copy-config><target><startup/></target><source><running/></source>"
                    "</copy-config>"))
    got = s.read_xml()
    change = got.find(f"{{{NCN}}}netconf-config-change")
    assert change is not None, etree.tostring(got)
    assert change.findtext(f"{{{NCN}}}datastore") == "startup"
    assert change.findtext(f"{{{NCN}}}changed-by/{{{NCN}}}session-id") == str(a.session_id)


# ---------------------------------------------------------------- RFC 7950 5.6.4 / RFC 8525


def test_yang_library_capability(a: RawClient) -> None:
    assert a.server_hello is not None
    caps = [c.text or "" for c in a.server_hello.iter(f"{{{NC}}}capability")]
    lib = [c for c in caps if c.startswith("urn:ietf:params:netconf:capability:yang-library:1.0")]
    assert len(lib) == 1
    # the revision parameter is the revision of ietf-yang-library the server implements
    assert "revision=2019-01-04" in lib[0] and "module-set-id=" in lib[0]


# ---------------------------------------------------------------- RFC 6241 8.9 :xpath


def test_xpath_undefined_prefix_is_invalid_value_even_on_empty_datastore(
    clients: Callable[..., RawClient],
) -> None:
    c = clients()  # running is empty: the error must not depend on the data
    e = one_error(c.rpc('<get-config><source><running/></source>'
                        '<filter type="xpath" select="/zz:foo"/></get-config>'))
    assert (e["error-tag"], e["info:bad-attribute"]) == ("invalid-value", "select")


# ---------------------------------------------------------------- RFC 6470 contents


class Subscriber:
    """A subscribed raw client: RPC replies and notifications interleave (:interleave)."""

    def __init__(self, c: RawClient) -> None:
        self.c = c
        self.pending: list[etree._Element] = []
        assert ok(self.rpc(f'<create-subscription xmlns="{NOTIF}"/>'))

    def rpc(self, body: str) -> etree._Element:
        self.c.send_message(f'<rpc xmlns="{NC}" message-id="9">{body}</rpc>'.encode())
        while True:
            msg = self.c.read_xml()
            if msg.tag == f"{{{NC}}}rpc-reply":
                return msg
            self.pending.append(msg)

    def next_body(self, local: str) -> etree._Element:
        for _ in range(50):
            n = self.pending.pop(0) if self.pending else self.c.read_xml()
            body = n.find(f"{{{NCN}}}{local}")
            if body is not None:
                return body
        raise AssertionError(f"no {local}")


def test_session_end_reasons_and_killed_by(clients: Callable[..., RawClient]) -> None:
    s = Subscriber(clients())
    victim = clients()
    start = s.next_body("netconf-session-start")
    assert start.findtext(f"{{{NCN}}}session-id") == str(victim.session_id)
    assert start.findtext(f"{{{NCN}}}username") == "admin"
    assert start.findtext(f"{{{NCN}}}source-host") == "127.0.0.1"
    assert ok(s.rpc(f"<kill-session><session-id>{victim.session_id}</session-id></kill-session>"))
    end = s.next_body("netconf-session-end")
    assert end.findtext(f"{{{NCN}}}session-id") == str(victim.session_id)
    assert end.findtext(f"{{{NCN}}}termination-reason") == "killed"
    assert end.findtext(f"{{{NCN}}}killed-by") == str(s.c.session_id)
    closer = clients()
    assert ok(closer.rpc("<close-session/>"))
    s.next_body("netconf-session-start")
    end = s.next_body("netconf-session-end")
    assert end.findtext(f"{{{NCN}}}session-id") == str(closer.session_id)
    assert end.findtext(f"{{{NCN}}}termination-reason") == "closed"
    assert end.find(f"{{{NCN}}}killed-by") is None


def test_confirmed_commit_notification_contents(
    a: RawClient, clients: Callable[..., RawClient]
) -> None:
    s = Subscriber(clients())
    assert ok(a.rpc(edit(tenant("t2"), "candidate")))
    assert ok(a.rpc("<commit><confirmed/><confirm-timeout>30</confirm-timeout></commit>"))
    start = s.next_body("netconf-confirmed-commit")
    assert start.findtext(f"{{{NCN}}}confirm-event") == "start"
    assert start.findtext(f"{{{NCN}}}timeout") == "30"
    assert start.findtext(f"{{{NCN}}}session-id") == str(a.session_id)
    assert ok(a.rpc("<commit/>"))
    done = s.next_body("netconf-confirmed-commit")
    assert done.findtext(f"{{{NCN}}}confirm-event") == "complete"
    assert done.find(f"{{{NCN}}}timeout") is None


def test_yang_library_features_and_import_only(a: RawClient) -> None:
    yl = "urn:ietf:params:xml:ns:yang:ietf-yang-library"
    reply = a.rpc(f'<get><filter type="subtree"><yang-library xmlns="{yl}"/>'
                  f'<modules-state xmlns="{yl}"/></filter></get>')
    mset = reply.find(f".//{{{yl}}}module-set")
    assert mset is not None
    mods = {m.findtext(f"{{{yl}}}name"): m for m in mset.iterfind(f"{{{yl}}}module")}
    imports = [m.findtext(f"{{{yl}}}name") for m in mset.iterfind(f"{{{yl}}}import-only-module")]
    # NACM is enforced (escnc.nacm), so ietf-netconf-acm is implemented
    assert "ietf-netconf-acm" in mods and "ietf-netconf-acm" not in imports
    feats = {f.text for f in mods["ietf-netconf"].iterfind(f"{{{yl}}}feature")}
    assert {"candidate", "confirmed-commit", "validate", "startup", "xpath"} <= feats
    assert "url" not in feats
    state = {m.findtext(f"{{{yl}}}name"): m
             for m in reply.iterfind(f".//{{{yl}}}modules-state/{{{yl}}}module")}
    assert state["ietf-netconf-acm"].findtext(f"{{{yl}}}conformance-type") == "implement"
    assert a.server_hello is not None
    caps = [c.text or "" for c in a.server_hello.iter(f"{{{NC}}}capability")]
    base = [c for c in caps if "module=ietf-netconf&" in c]
    assert len(base) == 1 and "features=" in base[0] and "candidate" in base[0]
