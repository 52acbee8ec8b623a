"""Hosts that hang: a libvirt URI to a loopback port that accepts TCP and never answers.

The server listens at once, get-config and edit-config keep working, opdata shows
the host as disconnected -- whether the host comes from the operator's settings
(``qemu+tcp://``, not checked by the URI policy) or from a ``vim_connector`` a
client commits (``qemu+ssh://``, which the policy allows).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from ncclient.operations import RPCError

import conftest
from conftest import add_user, connect, make_settings
from engine_support import E, config, deployment, nc_edit, nc_events, nc_opdata, nc_rpc
from escnc.app import Server
from escnc.ns import ESC
from netconf_helpers import wait_for


class SilentListener:
    """Accepts TCP connections on loopback and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentListener]:
    listener = SilentListener()
    yield listener
    listener.close()  # a libvirt open still waiting on it fails now


def start_in_thread(srv: Server) -> threading.Event:
    started = threading.Event()

    def run() -> None:
        srv.start()
        started.set()

    threading.Thread(target=run, daemon=True).start()
    return started


def hosts(m) -> dict[str, dict[str, str]]:  # type: ignore[no-untyped-def]
    found = {}
    for h in nc_opdata(m).iter(f"{E}host"):
        found[h.findtext(f"{E}name") or ""] = {
            "connected": h.findtext(f"{E}connected") or "",
            "status_message": h.findtext(f"{E}status_message") or "",
        }
    return found


FLAVOR = f"""<esc_datamodel xmlns="{ESC}"><flavors><flavor><name>f{{n}}</name>
<vcpus>1</vcpus><memory_mb>64</memory_mb></flavor></flavors></esc_datamodel>"""


def test_a_hanging_settings_host_does_not_hold_the_server(
    tmp_path: Path, silent: SilentListener
) -> None:
    state = tmp_path / "state"
    add_user(state)
    settings = make_settings(state, reconcile_interval=1.0)
    settings.vims = {
        "default": conftest.test_host_uri(tmp_path / "hosts"),
        "hang": f"qemu+tcp://127.0.0.1:{silent.port}/system",
    }
    srv = Server(settings)
    started = start_in_thread(srv)
    try:
        # the hang is endless: before the fix start() returned only when the listener closed
        assert started.wait(60), "the server did not start while one host hangs"
        with connect(srv) as m:
            nc_edit(m, FLAVOR.format(n=1))
            assert "<name>f1</name>" in m.get_config(source="running").data_xml
            seen = hosts(m)
            assert seen["default"]["connected"] == "true"
            assert seen["hang"]["connected"] == "false"
            assert seen["hang"]["status_message"].startswith(("connecting", "no answer"))
            nc_edit(m, FLAVOR.format(n=2))  # still answers after a reconcile pass or two
            assert srv.services is not None and srv.services.engine.wait_ticks(2)
            assert "<name>f2</name>" in m.get_config(source="running").data_xml
            assert hosts(m)["hang"]["connected"] == "false"
    finally:
        silent.close()
        if started.wait(60):
            srv.stop()


def test_a_hanging_vim_connector_commit_returns_at_once(
    server: Server, silent: SilentListener
) -> None:
    """Committing a vim_connector does not open it on the session's thread."""
    connector = f"""<esc_datamodel xmlns="{ESC}"><vim_connectors><vim_connector>
        <name>hang</name><uri>qemu+ssh://127.0.0.1:{silent.port}/system</uri>
        </vim_connector></vim_connectors></esc_datamodel>"""
    with connect(server) as m:
        done = threading.Event()

        def commit() -> None:
            nc_edit(m, connector)
            done.set()

        threading.Thread(target=commit, daemon=True).start()
        # before the fix the commit listener opened the host: the reply never came
        assert done.wait(60), "edit-config did not answer while its vim_connector hangs"
        with connect(server) as other:
            nc_edit(other, FLAVOR.format(n=3))
            assert "<name>f3</name>" in other.get_config(source="running").data_xml
            seen = hosts(other)
        assert seen["hang"]["connected"] == "false"
        assert seen["hang"]["status_message"].startswith(("connecting", "no answer"))


# -- host identity: one libvirtd is one VIM ---------------------------------------------


def connector(name: str, uri: str) -> str:
    return f"""<esc_datamodel xmlns="{ESC}"><vim_connectors><vim_connector>
        <name>{name}</name><uri>{uri}</uri></vim_connector></vim_connectors></esc_datamodel>"""


def test_a_vim_connector_with_the_uri_of_another_vim_is_refused(server: Server) -> None:
    uri = server.settings.vims["default"]
    with connect(server) as m:
        with pytest.raises(RPCError) as info:
            nc_edit(m, connector("again", uri))
        assert info.value.tag == "invalid-value"
        assert "already registered as VIM default" in str(info.value)
        assert "again" not in m.get_config(source="running").data_xml
        nc_edit(m, connector("second", "test:///default"))
        with pytest.raises(RPCError, match="already registered as VIM second"):
            nc_edit(m, connector("third", "test:///default"))


def _session_libvirtd() -> bool:
    import libvirt

    try:
        conn = libvirt.open("qemu:///session")
    except libvirt.libvirtError:
        return False
    try:
        return "<uuid>" in conn.getCapabilities()  # a host UUID to tell one daemon by
    finally:
        conn.close()


@pytest.mark.skipif(not _session_libvirtd(), reason="no qemu:///session libvirtd here")
def test_the_same_libvirtd_under_another_uri_is_not_used(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """qemu+unix:///session (the operator's) and qemu:///session (a client's) are
    one daemon, one host UUID: the second is refused, and placing VMs on it too."""
    srv = server_factory(
        vims={"default": "qemu+unix:///session"}, reconcile_interval=1.0
    )
    with connect(srv) as m:
        nc_edit(m, connector("twin", "qemu:///session"))  # not opened on this thread
        assert srv.services is not None
        registry = srv.services.vims
        assert wait_for(lambda: registry.get("twin").idle.is_set(), 30)
        seen = hosts(m)
        assert seen["default"]["connected"] == "true"
        assert seen["twin"]["connected"] == "false"
        assert "same libvirtd as host default" in seen["twin"]["status_message"]
        placed = deployment(extra_group="<locator><vim_id>twin</vim_id></locator>")
        with pytest.raises(RPCError, match="same libvirtd as VIM default"):
            nc_edit(m, config(tmp_path, placed))
        assert "<deployment>" not in m.get_config(source="running").data_xml



def test_a_disconnected_migration_target_is_reported_as_such(
    server_factory, silent: SilentListener, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    """Not "not allowed by the placement rules": the target is not connected."""
    srv = server_factory(
        vims={
            "default": conftest.test_host_uri(tmp_path / "hosts"),
            "hang": f"qemu+tcp://127.0.0.1:{silent.port}/system",
        },
        reconcile_interval=1.0,
    )
    pinned = deployment(extra_group="<locator><vim_id>default</vim_id></locator>")
    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, config(tmp_path, pinned))
        seen = nc_events(m, "SERVICE_ALIVE")
        assert seen[-1].findtext(f"{E}status") == "SUCCESS"
        (vm,) = [v.findtext(f"{E}name") for v in nc_opdata(m).iter(f"{E}vm_instance")]
        with pytest.raises(RPCError) as info:
            nc_rpc(m, "vmMigrate", vmName=vm, migrationType="live", host="hang")
        message = str(info.value)
        assert "host [hang] is not connected (connecting" in message
        assert "placement" not in message
