"""Notifications in the full escnc app: YANG validity of the bodies, the streams list
in <get>, and RFC 6470 config-change / confirmed-commit from real edits."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from yangson.datatype import IntegralType
from yangson.enumerations import ContentType, ValidationScope
from yangson.schemanode import InternalNode, LeafListNode, ListNode

from conftest import connect
from engine_support import config, deployment
from escnc.app import Server
from escnc.errors import RpcError, RpcErrors
from escnc.events import base
from escnc.events.esc_event import EscEvent, VmRef
from escnc.ns import ESC, NC, NC_NOTIF_BASE, NC_NOTIFICATIONS
from escnc.services import Change

B = f"{{{NC_NOTIF_BASE}}}"
E = f"{{{ESC}}}"
FLAVOR = (f'<config xmlns="{NC}"><esc_datamodel xmlns="{ESC}"><flavors><flavor>'
          "<name>{name}</name><vcpus>1</vcpus><memory_mb>512</memory_mb><root_disk_mb>1024</root_disk_mb>"
          "</flavor></flavors></esc_datamodel></config>")


def seed_event() -> etree._Element:
    """The VM_BACKUP_CREATED example of ../shared/seeds (without vim_project_id)."""
    return EscEvent(
        type="VM_BACKUP_CREATED", status_code=202, status_message="Snapshot is now active.",
        depname="snapshot-deployment-name", tenant="snapshot-tenant",
        tenant_id="7d61b5de73874f88a458d486759a9b83",
        depid="ae0bea05-9630-4d17-a9e7-926f1f625dc7", vm_group="snapshot-group",
        vm_source=VmRef(
            vmid="1773914c-20cd-4f50-b337-1e46be2cf295",
            vmname="new-deployment-n_new-gr_0_af0148e2-e74c-4be7-b8c1-49bd53def6ba",
            generated_vmname="new-deployment-n_new-gr_0_af0148e2-e74c-4be7-b8c1-49bd53def6ba",
            vim_id="default_openstack_vim", vim_project="snapshot-tenant",
            hostid="95503baadeccce2d33e5d924322390aee9d30c6ed24043284bf46984",
            hostname="pf-ucs-27", interfaces=[(0, "net", "10.0.0.5", "52:54:00:12:34:56")],
        ),
    ).to_xml()


def to_raw(el: etree._Element, node: Any, module: str | None = None) -> dict[str, Any]:
    """XML under a yangson schema node -> yangson raw (RFC 7951 JSON) object."""
    out: dict[str, Any] = {}
    for child in el:
        name = etree.QName(child).localname
        sn = node.get_child(name, module or node.ns)
        assert sn is not None, f"{name} is not in the YANG model"
        key = f"{module}:{name}" if module else name
        if isinstance(sn, ListNode):
            out.setdefault(key, []).append(to_raw(child, sn))
        elif isinstance(sn, InternalNode):
            out[key] = to_raw(child, sn)
        else:
            value: Any = child.text or ""
            if isinstance(sn.type, IntegralType):
                value = int(value)
            out[key] = [*out.get(key, []), value] if isinstance(sn, LeafListNode) else value
    return out


def test_escevent_body_is_valid_yang(server: Server) -> None:
    assert server.services is not None
    dm = server.services.schema.dm
    notif = dm.schema.get_child("escEvent", "escnc")
    for body in (seed_event(), EscEvent(type="VM_ALIVE").to_xml()):
        inst = dm.from_raw(to_raw(body, notif, "escnc"), "escnc:escEvent")
        inst.validate(ValidationScope.syntax, ContentType.all)


def test_bodies_pass_schema_validate_notification(server: Server) -> None:
    assert server.services is not None
    schema = server.services.schema
    schema.validate_notification(seed_event())
    schema.validate_notification(base.session_start(username="a", session_id=1,
                                                    source_host="127.0.0.1"))
    schema.validate_notification(base.config_change(
        username="a", session_id=1,
        edits=[Change("merge", "/esc:esc_datamodel/esc:flavors", {"esc": ESC})]))
    schema.validate_notification(etree.fromstring(base.replay_complete())[1])
    # and the check is real: a session-id that is not a number is refused
    bad = base.session_start(username="a", session_id=1, source_host="127.0.0.1")
    for el in bad.iter(f"{{{NC_NOTIF_BASE}}}session-id"):
        el.text = "not-a-number"
    with pytest.raises((RpcError, RpcErrors)):
        schema.validate_notification(bad)


def test_streams_in_get(server: Server) -> None:
    ns = f"{{{NC_NOTIFICATIONS}}}"
    with connect(server) as m:
        reply = m.get(filter=("subtree", f'<netconf xmlns="{NC_NOTIFICATIONS}"/>'))
    data = etree.fromstring(reply.xml.encode())
    names = [s.findtext(f"{ns}name") for s in data.iter(f"{ns}stream")]
    assert sorted(names) == ["NETCONF", "escEvent"]
    assert all(s.findtext(f"{ns}replaySupport") == "true" for s in data.iter(f"{ns}stream"))


def next_base(m: Any, localname: str, limit: int = 50) -> etree._Element:
    for _ in range(limit):
        n = m.take_notification(block=True, timeout=10)
        assert n is not None, f"no {localname}"
        body = etree.fromstring(n.notification_xml.encode())[1]
        if body.tag == B + localname:
            return body
    raise AssertionError(f"no {localname}")


def test_config_change_from_edit_config(server: Server) -> None:
    with connect(server) as sub, connect(server) as editor:
        sub.create_subscription()
        editor.edit_config(target="running", config=FLAVOR.format(name="f-first"))
        first = next_base(sub, "netconf-config-change")
        editor.edit_config(target="running", config=FLAVOR.format(name="f-change"))
        change = next_base(sub, "netconf-config-change")
    assert [e.findtext(f"{B}target") for e in first.iter(f"{B}edit")] == ["/esc:esc_datamodel"]
    assert change.findtext(f"{B}changed-by/{B}username") == "admin"
    assert change.findtext(f"{B}changed-by/{B}session-id") == str(editor.session_id)
    assert change.findtext(f"{B}changed-by/{B}source-host") == "127.0.0.1"
    assert change.findtext(f"{B}datastore") == "running"
    edits = list(change.iter(f"{B}edit"))
    assert edits, etree.tostring(change)
    targets = [e.findtext(f"{B}target") or "" for e in edits]
    assert any("f-change" in t for t in targets), targets
    assert {e.findtext(f"{B}operation") for e in edits} <= {
        "merge", "create", "replace", "delete", "remove"}


def test_confirmed_commit_notifications(server: Server) -> None:
    with connect(server) as sub, connect(server) as editor:
        sub.create_subscription()
        editor.edit_config(target="candidate", config=FLAVOR.format(name="f-confirm"))
        editor.commit(confirmed=True, timeout="60")
        start = next_base(sub, "netconf-confirmed-commit")
        editor.commit()
        done = next_base(sub, "netconf-confirmed-commit")
    assert start.findtext(f"{B}confirm-event") == "start"
    assert start.findtext(f"{B}timeout") == "60"
    assert start.findtext(f"{B}session-id") == str(editor.session_id)
    assert done.findtext(f"{B}confirm-event") == "complete"


def test_parallel_deployments_ordered_with_one_terminal_event(
    server: Server, tmp_path: Path
) -> None:
    """Engine events of parallel deployments: per-deployment order, exactly one
    SERVICE_ALIVE each, and a later replay shows the very same sequence."""
    names = [f"par{i}" for i in range(3)]
    xml = config(tmp_path, "".join(deployment(n, group="g") for n in names))
    with connect(server) as m:
        m.create_subscription(stream_name="escEvent")
        m.edit_config(target="running", config=f'<config xmlns="{NC}">{xml}</config>')
        live: list[tuple[str, str, str]] = []
        deadline = time.monotonic() + 60
        while sum(t == "SERVICE_ALIVE" for _, t, _ in live) < len(names):
            assert time.monotonic() < deadline, live
            n = m.take_notification(block=True, timeout=1)
            if n is None:
                continue
            note = etree.fromstring(n.notification_xml.encode())
            ev = note[1]
            live.append((ev.findtext(f"{E}depname") or "", ev.findtext(f"{E}event/{E}type") or "",
                         note[0].text or ""))
    for name in names:
        seq = [t for d, t, _ in live if d == name]
        assert seq == ["VM_DEPLOYED", "VM_ALIVE", "SERVICE_ALIVE"], (name, seq)
    with connect(server) as m:
        m.create_subscription(stream_name="escEvent", start_time=live[0][2])
        replayed = []
        while True:
            note = etree.fromstring(m.take_notification(timeout=10).notification_xml.encode())
            if note[1].tag != f"{E}escEvent":
                break
            replayed.append((note[1].findtext(f"{E}depname") or "",
                             note[1].findtext(f"{E}event/{E}type") or "", note[0].text or ""))
    assert replayed[: len(live)] == live
