"""The protocol layer inside the full escnc app: locks held by dead or killed sessions,
monitoring and yang-library through <get>, get-schema for every module, netconf-console2
and base:1.0 clients doing real datastore work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree
from ncclient.devices.default import DefaultDeviceHandler
from ncclient.operations import RPCError

from conftest import PASSWORD, USER, connect
from escnc.app import Server
from escnc.ns import BASE_10, ESC, MONITORING, NC, NOTIF, YANG_LIBRARY
from netconf_helpers import RawClient, errors, wait_for

M = f"{{{MONITORING}}}"
FLAVOR = (
    f'<config xmlns="{NC}"><esc_datamodel xmlns="{ESC}"><flavors><flavor><name>{{name}}</name>'
    "<vcpus>2</vcpus><memory_mb>512</memory_mb><root_disk_mb>1024</root_disk_mb></flavor>"
    "</flavors></esc_datamodel></config>"
)


def lock_rpc(target: str = "running") -> str:
    return f'<lock xmlns="{NC}"><target><{target}/></target></lock>'


def netconf_state(srv: Server) -> etree._Element:
    with connect(srv) as m:
        reply = m.get(filter=("subtree", f'<netconf-state xmlns="{MONITORING}"/>'))
    state = etree.fromstring(reply.xml.encode()).find(f".//{M}netconf-state")
    assert state is not None
    return state


class Base10Handler(DefaultDeviceHandler):
    _BASE_CAPABILITIES = [BASE_10, "urn:ietf:params:netconf:capability:candidate:1.0"]


def test_kill_session_releases_lock(server: Server) -> None:
    a = RawClient(server.port)
    a.hello()
    b = RawClient(server.port)
    b.hello()
    assert a.rpc(lock_rpc()).find(f"{{{NC}}}ok") is not None
    denied = errors(b.rpc(lock_rpc()))
    assert [(e["error-tag"], e["info:session-id"]) for e in denied] == [
        ("lock-denied", str(a.session_id))
    ]
    reply = b.rpc(f'<kill-session xmlns="{NC}"><session-id>{a.session_id}</session-id>'
                  "</kill-session>")
    assert reply.find(f"{{{NC}}}ok") is not None
    # released synchronously: the very next lock succeeds
    assert b.rpc(lock_rpc()).find(f"{{{NC}}}ok") is not None
    assert a.closed_by_server()
    a.close()
    b.close()


@pytest.mark.parametrize("how", ["drop", "mid-message", "close-session"])
def test_lock_of_ended_session_released(server: Server, how: str) -> None:
    a = RawClient(server.port)
    a.hello()
    assert a.rpc(lock_rpc("candidate")).find(f"{{{NC}}}ok") is not None
    if how == "drop":
        a.close()
    elif how == "mid-message":
        a.send_raw(b"\n#500\n<rpc xmlns=")
        a.close()
    else:
        a.rpc(f'<close-session xmlns="{NC}"/>')
    b = RawClient(server.port)
    b.hello()
    assert wait_for(lambda: not errors(b.rpc(lock_rpc("candidate"))), timeout=10)
    b.close()
    a.close()


def test_monitoring_through_get(server: Server) -> None:
    holder = RawClient(server.port)
    holder.hello()
    holder.rpc(lock_rpc())
    state = netconf_state(server)
    sessions = {s.findtext(f"{M}session-id"): s for s in state.iter(f"{M}session")}
    assert str(holder.session_id) in sessions
    assert sessions[str(holder.session_id)].findtext(f"{M}username") == USER
    stores = {d.findtext(f"{M}name"): d for d in state.iter(f"{M}datastore")}
    assert {"running", "candidate", "startup"} <= set(stores)
    lock = stores["running"].find(f"{M}locks/{M}global-lock")
    assert lock is not None
    assert lock.findtext(f"{M}locked-by-session") == str(holder.session_id)
    assert stores["candidate"].find(f"{M}locks") is None
    schemas = [s.findtext(f"{M}identifier") for s in state.iter(f"{M}schema")]
    assert "escnc" in schemas and "ietf-netconf-monitoring" in schemas
    holder.close()


def test_get_schema_every_module(server: Server) -> None:
    state = netconf_state(server)
    assert server.services is not None
    schema = server.services.schema
    with connect(server) as m:
        for s in state.iter(f"{M}schema"):
            ident, version = s.findtext(f"{M}identifier"), s.findtext(f"{M}version")
            reply = m.get_schema(ident, version)
            text = etree.fromstring(reply.xml.encode()).findtext(f".//{M}data")
            assert text == schema.module_text(ident, version)
            assert f"module {ident}" in (text or "") or f"submodule {ident}" in (text or "")
        with pytest.raises(RPCError) as exc:
            m.get_schema("no-such-module")
        assert exc.value.tag == "invalid-value"


def test_yang_library_through_get(server: Server) -> None:
    with connect(server) as m:
        reply = m.get(filter=("subtree", f'<yang-library xmlns="{YANG_LIBRARY}"/>'))
        caps = list(m.server_capabilities)
    lib = etree.fromstring(reply.xml.encode()).find(f".//{{{YANG_LIBRARY}}}yang-library")
    assert lib is not None
    names = [n.text for n in lib.iterfind(f"{{{YANG_LIBRARY}}}module-set/"
                                          f"{{{YANG_LIBRARY}}}module/{{{YANG_LIBRARY}}}name")]
    assert "escnc" in names
    content_id = lib.findtext(f"{{{YANG_LIBRARY}}}content-id")
    assert any(c.endswith(f"module-set-id={content_id}") for c in caps)


def test_base10_client_edits_and_reads(server: Server) -> None:
    with connect(server, device_params={"handler": Base10Handler}) as m:
        m.edit_config(target="running", config=FLAVOR.format(name="f10"))
        reply = m.get_config("running", filter=("subtree", f'<esc_datamodel xmlns="{ESC}"/>'))
        assert "f10" in reply.xml
        assert server.services is not None
        (info,) = server.services.sessions.list()
        session = server.services.sessions.get(info.session_id)
        assert session.framing.value == "1.0"


def netconf_console(srv: Server, *args: str) -> str:
    cmd = [sys.executable, "-m", "netconf_console.main", "--host", "127.0.0.1",
           "--port", str(srv.port), "-u", USER, "-p", PASSWORD, *args]
    exe = Path(sys.executable).with_name("netconf-console2")
    if exe.exists():
        cmd = [str(exe), *cmd[3:]]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr + out.stdout
    return out.stdout


def test_netconf_console2(server: Server, tmp_path: Path) -> None:
    edit = tmp_path / "edit.xml"
    edit.write_text(
        f'<esc_datamodel xmlns="{ESC}"><flavors><flavor><name>nc2</name><vcpus>1</vcpus>'
        "<memory_mb>256</memory_mb><root_disk_mb>512</root_disk_mb></flavor></flavors>"
        "</esc_datamodel>"
    )
    netconf_console(server, "--edit-config", str(edit))
    out = netconf_console(server, "--get-config")
    assert "<name>nc2</name>" in out
    rpc = tmp_path / "rpc.xml"
    rpc.write_text(f'<get-schema xmlns="{MONITORING}"><identifier>escnc</identifier></get-schema>')
    out = netconf_console(server, "--rpc", str(rpc))
    assert "module escnc" in out


def test_subscribed_session_exempt_from_idle_timeout(
    server_factory,  # type: ignore[no-untyped-def]
) -> None:
    srv = server_factory(idle_timeout=0.5)
    sub = RawClient(srv.port)
    sub.hello()
    reply = sub.rpc(f'<create-subscription xmlns="{NOTIF}"/>')
    assert reply.find(f"{{{NC}}}ok") is not None, etree.tostring(reply)
    idle = RawClient(srv.port)
    idle.hello()
    assert idle.closed_by_server(timeout=5)
    assert srv.services.sessions.get(sub.session_id) is not None
    sub.close()
    idle.close()


def test_rpc_input_validated_before_handler(server: Server) -> None:
    c = RawClient(server.port)
    c.hello()
    reply = c.rpc(f'<vmAction xmlns="{ESC}"><actionType>EXPLODE</actionType>'
                  "<vmName>x</vmName></vmAction>")
    (err,) = errors(reply)
    assert err["error-tag"] == "invalid-value"
    assert "actionType" in err["error-path"]  # from the YANG input check, with error-path
    c.close()
