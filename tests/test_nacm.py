"""RFC 8341 NACM end to end: real ncclient sessions on loopback against a real escnc
with the worked multi-tenant example of docs/access-control.md loaded verbatim."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lxml import etree
from ncclient.operations import RPCError

from conftest import USER, add_user, connect, is_resource_event
from engine_support import config, deployment
from escnc.app import Server
from escnc.ns import ESC

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "nacm-tenants.xml"
DOC = ROOT / "docs" / "access-control.md"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
NACM = "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"
NCM = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"
E = f"{{{ESC}}}"
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "audrey": "audrey-pw", "oscar": "oscar-pw"}
TENANTS = (
    "<tenants><tenant><name>tenant-a</name><description>A</description></tenant>"
    "<tenant><name>tenant-b</name><description>B</description></tenant></tenants>"
)


def base_config(tmp: Path) -> str:
    empty = "<tenants><tenant><name>t1</name><deployments></deployments></tenant></tenants>"
    cfg = config(tmp, "")
    assert empty in cfg
    return cfg.replace(empty, TENANTS)


def tenant_deployment(tenant: str, name: str, first_ip: int) -> str:
    dep = deployment(name=name)
    # each deployment its own addresses
    dep = dep.replace("10.9.0.10", f"10.9.0.{first_ip}")
    return (f'<esc_datamodel xmlns="{ESC}"><tenants><tenant><name>{tenant}</name>'
            f"<deployments>{dep}</deployments></tenant></tenants></esc_datamodel>")


def edit(m, xml: str, target: str = "running", **kw: object) -> None:  # type: ignore[no-untyped-def]
    m.edit_config(target=target, config=f'<config xmlns="{NC}">{xml}</config>', **kw)


def as_user(srv: Server, user: str):  # type: ignore[no-untyped-def]
    return connect(srv, user, PASSWORDS[user])


def denied(call: Callable[[], object]) -> RPCError:
    with pytest.raises(RPCError) as info:
        call()
    err = info.value
    assert err.tag == "access-denied", err
    return err


def rpc(m, name: str, **leaves: str):  # type: ignore[no-untyped-def]
    body = "".join(f"<{k}>{v}</{k}>" for k, v in leaves.items())
    return m.dispatch(etree.fromstring(f'<{name} xmlns="{ESC}">{body}</{name}>'))


def running(srv: Server) -> bytes:
    return etree.tostring(srv.services.datastore.running_xml())  # type: ignore[union-attr]


def counters(m) -> dict[str, int]:  # type: ignore[no-untyped-def]
    flt = f'<nacm xmlns="{NACM}"/>'
    data = etree.fromstring(m.get(filter=("subtree", flt)).data_xml.encode())
    return {
        name: int(data.findtext(f".//{{{NACM}}}{name}") or -1)
        for name in ("denied-operations", "denied-data-writes", "denied-notifications")
    }


def data_of(reply) -> etree._Element:  # type: ignore[no-untyped-def]
    return etree.fromstring(reply.data_xml.encode())


def tenant_names(data: etree._Element, opdata: bool = False) -> list[str]:
    path = f"{E}esc_datamodel/" + (f"{E}opdata/" if opdata else "") + f"{E}tenants/{E}tenant"
    return [t.findtext(f"{E}name") or "" for t in data.iterfind(path)]


def load_example(m) -> None:  # type: ignore[no-untyped-def]
    edit(m, EXAMPLE.read_text())


@pytest.fixture
def srv(server_factory: Callable[..., Server], tmp_path: Path) -> Server:
    state = tmp_path / "state0"
    for user, password in PASSWORDS.items():
        add_user(state, user, password)
    s = server_factory(state_dir=state, reconcile_interval=1.0, snapshot_poll_secs=0.01)
    with connect(s) as adm:
        edit(adm, base_config(tmp_path))
        load_example(adm)
    return s


class Events:
    """escEvents of one subscribed session."""

    def __init__(self, m) -> None:  # type: ignore[no-untyped-def]
        self.m = m
        self.seen: list[etree._Element] = []
        self.replay_done = False

    def pump(self, timeout: float) -> None:
        n = self.m.take_notification(block=True, timeout=timeout)
        if n is None:
            return
        root = etree.fromstring(n.notification_xml.encode())
        if root.find("{urn:ietf:params:xml:ns:netmod:notification}replayComplete") is not None:
            self.replay_done = True
        ev = root.find(f".//{E}escEvent")
        if ev is not None:
            self.seen.append(ev)

    def until(self, want: str, depname: str, timeout: float = 30.0) -> list[etree._Element]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in self.seen:
                kind = ev.findtext(f"{E}event/{E}type")
                if kind == want and ev.findtext(f"{E}depname") == depname:
                    out = self.seen
                    self.seen = []
                    self.all.extend(out)
                    return out
            self.pump(0.2)
        raise AssertionError(f"no {want} for {depname}: {[self.kind(e) for e in self.seen]}")

    def until_replayed(self, timeout: float = 30.0) -> list[etree._Element]:
        deadline = time.monotonic() + timeout
        while not self.replay_done and time.monotonic() < deadline:
            self.pump(0.2)
        assert self.replay_done
        return self.seen

    all: list[etree._Element]

    @staticmethod
    def kind(ev: etree._Element) -> str:
        return f"{ev.findtext(f'{E}tenant')}/{ev.findtext(f'{E}event/{E}type')}"


def subscribed(m, **kw: object) -> Events:  # type: ignore[no-untyped-def]
    m.create_subscription(stream_name="escEvent", **kw)
    ev = Events(m)
    ev.all = []
    return ev


def vm_of(m, tenant: str) -> str:  # type: ignore[no-untyped-def]
    flt = f'<esc_datamodel xmlns="{ESC}"><opdata><tenants/></opdata></esc_datamodel>'
    data = data_of(m.get(filter=("subtree", flt)))
    for ten in data.iterfind(f".//{E}opdata/{E}tenants/{E}tenant"):
        if ten.findtext(f"{E}name") == tenant:
            name = ten.findtext(f".//{E}vm_instance/{E}name")
            if name:
                return name
    raise AssertionError(f"no VM in {tenant}")


def vm_state(m, vm: str) -> str:  # type: ignore[no-untyped-def]
    flt = f'<esc_datamodel xmlns="{ESC}"><opdata><tenants/></opdata></esc_datamodel>'
    data = data_of(m.get(filter=("subtree", flt)))
    for inst in data.iterfind(f".//{E}vm_instance"):
        if inst.findtext(f"{E}name") == vm:
            return inst.findtext(f"{E}state") or ""
    return ""


# ---------------------------------------------------------------------------------------


def test_doc_shows_the_example_verbatim() -> None:
    doc = DOC.read_text()
    blocks = re.findall(r"```xml\n(.*?)```", doc, re.S)
    assert EXAMPLE.read_text() in blocks


def test_tenant_deploys_operates_backs_up_undeploys_only_its_own(srv: Server) -> None:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    with connect(srv) as adm, as_user(srv, "alice") as alice:
        adm_ev = subscribed(adm)
        edit(adm, tenant_deployment("tenant-b", "dep-b", 40))
        adm_ev.until("SERVICE_ALIVE", "dep-b")
        vm_b = vm_of(adm, "tenant-b")

        ev = subscribed(alice)
        edit(alice, tenant_deployment("tenant-a", "dep-a", 20))
        ev.until("SERVICE_ALIVE", "dep-a")
        vm_a = vm_of(alice, "tenant-a")
        with pytest.raises(AssertionError):
            vm_of(alice, "tenant-b")  # another tenant's VMs are not in its opdata

        rpc(alice, "vmAction", actionType="STOP", vmName=vm_a)
        ev.until("VM_STOPPED", "dep-a")
        rpc(alice, "vmAction", actionType="START", vmName=vm_a)
        ev.until("VM_ALIVE", "dep-a")
        rpc(alice, "serviceAction", actionType="REBOOT", tenantName="tenant-a", depName="dep-a")
        ev.until("SERVICE_REBOOTED", "dep-a")
        rpc(alice, "vmBackupAction", vmName=vm_a, backupName="nightly-a", actionType="SNAPSHOT")
        ev.until("VM_BACKUP_COMPLETE", "dep-a")
        rpc(alice, "snapshotAction", actionType="DELETE", snapshot="nightly-a")
        ev.until("VM_SNAPSHOT_DELETED", "dep-a")

        # the other tenant's VM and deployment: exec is permitted, update access to
        # tenant-b's deployment is not
        before = counters(adm)
        for call in (
            lambda: rpc(alice, "vmAction", actionType="STOP", vmName=vm_b),
            lambda: rpc(alice, "vmBackupAction", vmName=vm_b, backupName="x"),
            lambda: rpc(alice, "vmMigrate", vmName=vm_b, migrationType="cold"),
            lambda: rpc(alice, "recoveryVmAction", actionType="DO", vmName=vm_b),
            lambda: rpc(alice, "serviceAction", actionType="STOP", tenantName="tenant-b",
                        depName="dep-b"),
        ):
            err = denied(call)
            assert err.path == ("/esc:esc_datamodel/esc:tenants/esc:tenant[esc:name='tenant-b']"
                                "/esc:deployments/esc:deployment[esc:name='dep-b']")
            assert err.type == "application"
        assert counters(adm)["denied-data-writes"] == before["denied-data-writes"] + 5
        assert vm_state(adm, vm_b) == "VM_ALIVE_STATE"

        edit(alice, f'<esc_datamodel xmlns="{ESC}" xmlns:nc="{NC}"><tenants><tenant>'
                    "<name>tenant-a</name><deployments><deployment nc:operation=\"delete\">"
                    "<name>dep-a</name></deployment></deployments></tenant></tenants>"
                    "</esc_datamodel>")
        ev.until("SERVICE_UNDEPLOYED", "dep-a")
        assert ev.all and {e.findtext(f"{E}tenant") for e in ev.all} == {"tenant-a"}
        # while admin (the recovery user) saw both tenants' events
        adm_ev.until("SERVICE_UNDEPLOYED", "dep-a")
        assert {e.findtext(f"{E}tenant") for e in adm_ev.all} >= {"tenant-a", "tenant-b"}

    # replay: only the tenant's own events; the recovery user's replay has both
    with as_user(srv, "alice") as alice, connect(srv) as adm:
        mine = subscribed(alice, start_time=start.isoformat()).until_replayed()
        kinds = [Events.kind(e) for e in mine]
        assert "tenant-a/SERVICE_ALIVE" in kinds and "tenant-a/SERVICE_UNDEPLOYED" in kinds
        # image registrations concern no tenant (and images are readable to all)
        assert all(is_resource_event(e) for e in mine if not e.findtext(f"{E}tenant"))
        assert {e.findtext(f"{E}tenant") for e in mine if e.findtext(f"{E}tenant")} == {
            "tenant-a"}
        everything = subscribed(adm, start_time=start.isoformat()).until_replayed()
        assert "tenant-b/SERVICE_ALIVE" in [Events.kind(e) for e in everything]
        assert counters(adm)["denied-notifications"] > 0


def test_tenant_denied_everything_else_nothing_changes(srv: Server) -> None:
    with connect(srv) as adm, as_user(srv, "alice") as alice:
        before = counters(adm)
        snapshot = running(srv)
        other = (f'<esc_datamodel xmlns="{ESC}"><tenants><tenant><name>tenant-b</name>'
                 "<description>mine now</description></tenant></tenants></esc_datamodel>")
        err = denied(lambda: edit(alice, other))
        assert err.type == "application"
        assert err.path == (
            "/esc:esc_datamodel/esc:tenants/esc:tenant[esc:name='tenant-b']/esc:description")
        denied(lambda: edit(alice, tenant_deployment("tenant-b", "dep-x", 60)))
        denied(lambda: edit(alice, f'<esc_datamodel xmlns="{ESC}" xmlns:nc="{NC}"><tenants>'
                                   '<tenant nc:operation="delete"><name>tenant-b</name></tenant>'
                                   "</tenants></esc_datamodel>"))
        err = denied(lambda: edit(alice, f'<esc_datamodel xmlns="{ESC}"><vim_connectors>'
                                         "<vim_connector><name>evil</name><uri>test:///default</uri>"
                                         "</vim_connector></vim_connectors></esc_datamodel>"))
        assert err.path.startswith("/esc:esc_datamodel/esc:vim_connectors")
        err = denied(lambda: edit(alice, f'<esc_datamodel xmlns="{ESC}"><images><image>'
                                         "<name>img2</name><src>/tmp/x.qcow2</src></image>"
                                         "</images></esc_datamodel>"))
        assert err.path == "/esc:esc_datamodel/esc:images/esc:image[esc:name='img2']"
        denied(lambda: edit(alice, f'<esc_datamodel xmlns="{ESC}" xmlns:nc="{NC}"><images>'
                                   '<image nc:operation="delete"><name>img</name></image>'
                                   "</images></esc_datamodel>"))
        err = denied(lambda: edit(alice, f'<nacm xmlns="{NACM}"><groups><group><name>tenant-b'
                                         "</name><user-name>alice</user-name></group></groups>"
                                         "</nacm>"))
        assert err.path.startswith("/nacm:nacm")
        # replace at the top would delete what alice cannot see
        denied(lambda: edit(alice, f'<esc_datamodel xmlns="{ESC}"><tenants><tenant>'
                                   "<name>tenant-a</name></tenant></tenants></esc_datamodel>",
                            default_operation="replace"))
        # the candidate is checked too, and stays clean
        denied(lambda: edit(alice, other, target="candidate"))
        assert b"mine now" not in etree.tostring(data_of(adm.get_config(source="candidate")))
        # protocol operations: kill-session, delete-config (default-deny-all), lock
        err = denied(lambda: alice.dispatch(etree.fromstring(
            f'<kill-session xmlns="{NC}"><session-id>{adm.session_id}</session-id>'
            "</kill-session>")))
        assert err.type == "protocol" and err.path == "/nc:rpc/nc:kill-session"
        denied(lambda: alice.delete_config(target="startup"))
        denied(lambda: alice.lock(target="running"))
        # copy-config copies only what alice can read: into startup it would delete
        # tenant-b there
        denied(lambda: alice.copy_config(source="running", target="startup"))
        # a reservation is shared capacity
        denied(lambda: rpc(alice, "createComputeReservation", startTime="2030-01-01T00:00:00Z"))

        assert running(srv) == snapshot
        after = counters(adm)
        assert after["denied-operations"] == before["denied-operations"] + 4
        assert after["denied-data-writes"] == before["denied-data-writes"] + 10
        assert adm.connected  # not killed
        # and a permitted edit still works
        edit(alice, f'<esc_datamodel xmlns="{ESC}"><tenants><tenant><name>tenant-a</name>'
                    "<description>ours</description></tenant></tenants></esc_datamodel>")
        assert b"ours" in running(srv)


def test_reads_show_own_tenant_sessions_and_no_nacm(srv: Server) -> None:
    with connect(srv) as adm, as_user(srv, "alice") as alice, as_user(srv, "bob") as bob:
        cfg = data_of(alice.get_config(source="running"))
        assert tenant_names(cfg) == ["tenant-a"]
        assert cfg.find(f".//{E}images/{E}image") is not None  # read-default permit
        assert cfg.find(f"{{{NACM}}}nacm") is None  # default-deny-all
        assert tenant_names(data_of(bob.get_config(source="running"))) == ["tenant-b"]
        assert tenant_names(data_of(adm.get_config(source="running"))) == ["tenant-a", "tenant-b"]

        full = data_of(alice.get())
        assert tenant_names(full) == ["tenant-a"]
        assert full.find(f"{{{NACM}}}nacm") is None
        users = [u.text for u in full.iterfind(f".//{{{NCM}}}session/{{{NCM}}}username")]
        assert users == ["alice"]
        assert len(data_of(adm.get()).findall(f".//{{{NCM}}}session")) == 3

        # filters cannot probe what alice cannot read
        flt = (f'<esc_datamodel xmlns="{ESC}"><tenants><tenant><name>tenant-b</name>'
               "</tenant></tenants></esc_datamodel>")
        assert len(data_of(alice.get_config(source="running", filter=("subtree", flt)))) == 0
        xp = "/esc:esc_datamodel/esc:tenants/esc:tenant[esc:description='B']"
        reply = alice.get(filter=("xpath", ({"esc": ESC}, xp)))
        assert len(data_of(reply)) == 0
        reply = adm.get(filter=("xpath", ({"esc": ESC}, xp)))
        assert tenant_names(data_of(reply)) == ["tenant-b"]
        flt = f'<esc_datamodel xmlns="{ESC}"><tenants/></esc_datamodel>'
        assert tenant_names(data_of(alice.get_config(source="running",
                                                     filter=("subtree", flt)))) == ["tenant-a"]


def test_auditor_reads_everything_changes_nothing(srv: Server) -> None:
    with connect(srv) as adm, as_user(srv, "audrey") as audrey:
        snapshot = running(srv)
        full = data_of(audrey.get())
        assert tenant_names(full) == ["tenant-a", "tenant-b"]
        assert full.find(f"{{{NACM}}}nacm/{{{NACM}}}rule-list") is not None
        assert len(full.findall(f".//{{{NCM}}}session")) == 2
        denied(lambda: edit(audrey, f'<esc_datamodel xmlns="{ESC}"><tenants><tenant>'
                                    "<name>tenant-a</name><description>x</description>"
                                    "</tenant></tenants></esc_datamodel>"))
        err = denied(lambda: rpc(audrey, "vmAction", actionType="STOP", vmName="any"))
        assert err.path == "/nc:rpc/esc:vmAction"
        denied(lambda: audrey.lock(target="running"))
        assert running(srv) == snapshot
        assert adm.connected


def test_recovery_user_admin_group_and_nacm_disabled(srv: Server) -> None:
    victim = as_user(srv, "alice")
    with connect(srv) as adm, as_user(srv, "oscar") as oscar:
        # the recovery user (admin) and the admins group change anything
        edit(adm, f'<esc_datamodel xmlns="{ESC}"><tenants><tenant><name>tenant-b</name>'
                  "<description>by admin</description></tenant></tenants></esc_datamodel>")
        edit(oscar, f'<esc_datamodel xmlns="{ESC}"><tenants><tenant><name>tenant-a</name>'
                    "<description>by oscar</description></tenant></tenants></esc_datamodel>")
        assert data_of(oscar.get_config(source="running")).find(f"{{{NACM}}}nacm") is not None
        oscar.lock(target="running")
        oscar.unlock(target="running")
        oscar.dispatch(etree.fromstring(
            f'<kill-session xmlns="{NC}"><session-id>{victim.session_id}</session-id>'
            "</kill-session>"))
        deadline = time.monotonic() + 10
        while victim.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not victim.connected

    with connect(srv) as adm, as_user(srv, "alice") as alice:
        edit(adm, f'<nacm xmlns="{NACM}"><enable-nacm>false</enable-nacm></nacm>')
        edit(alice, f'<esc_datamodel xmlns="{ESC}"><tenants><tenant><name>tenant-b</name>'
                    "<description>by alice</description></tenant></tenants></esc_datamodel>")
        assert tenant_names(data_of(alice.get_config(source="running"))) == [
            "tenant-a", "tenant-b"]
        assert data_of(alice.get_config(source="running")).find(f"{{{NACM}}}nacm") is not None
        # and back on: alice is a tenant user again
        edit(adm, f'<nacm xmlns="{NACM}"><enable-nacm>true</enable-nacm></nacm>')
        assert tenant_names(data_of(alice.get_config(source="running"))) == ["tenant-a"]


def test_a_rule_path_nacm_cannot_use_is_refused(srv: Server) -> None:
    with connect(srv) as adm:
        bad = (f'<nacm xmlns="{NACM}"><rule-list><name>tenant-a</name><rule><name>bad</name>'
               "<path>/nosuch:thing</path><action>permit</action></rule></rule-list></nacm>")
        with pytest.raises(RPCError) as info:
            edit(adm, bad)
        assert info.value.tag == "invalid-value"
        assert "rule-list[nacm:name='tenant-a']" in (info.value.path or "")


@pytest.fixture
def plain(server_factory: Callable[..., Server], tmp_path: Path) -> Iterator[Server]:
    """A server with no /nacm at all: RFC defaults (write-default deny)."""
    state = tmp_path / "plain"
    add_user(state, "alice", "alice-pw")
    yield server_factory(state_dir=state)


def test_rfc_defaults_without_nacm_config(plain: Server, tmp_path: Path) -> None:
    with connect(plain) as adm, as_user(plain, "alice") as alice:
        assert USER == "admin"
        edit(adm, base_config(tmp_path))
        assert tenant_names(data_of(alice.get_config(source="running"))) == [
            "tenant-a", "tenant-b"]  # read-default permit
        denied(lambda: edit(alice, f'<esc_datamodel xmlns="{ESC}"><tenants><tenant>'
                                   "<name>tenant-a</name><description>x</description>"
                                   "</tenant></tenants></esc_datamodel>"))  # write-default deny
        alice.dispatch(etree.fromstring(f'<get-schema xmlns="{NCM}"><identifier>escnc'
                                        "</identifier></get-schema>"))  # exec-default permit


def test_cli_prints_access_denied(srv: Server, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    payload = tmp_path / "other.xml"
    payload.write_text(f'<esc_datamodel xmlns="{ESC}"><tenants><tenant><name>tenant-b</name>'
                       "<description>x</description></tenant></tenants></esc_datamodel>")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCNC_")}
    env.update(ESCNC_HOST="127.0.0.1", ESCNC_PORT=str(srv.port), ESCNC_USER="alice",
               ESCNC_PASSWORD=PASSWORDS["alice"])
    done = subprocess.run(
        [sys.executable, "-m", "escnc.cli.client", "edit-config", str(payload)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=env,
    )
    assert done.returncode == 1
    assert "escnc-cli: access denied:" in done.stderr
    assert "tenant[esc:name='tenant-b']" in done.stderr


def _netconf_bodies(m, seconds: float) -> list[etree._Element]:  # type: ignore[no-untyped-def]
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        n = m.take_notification(block=True, timeout=min(left, 0.2))
        if n is not None:
            root = etree.fromstring(n.notification_xml.encode())
            out.extend(el for el in root if etree.QName(el).localname != "eventTime")
    return out


def test_netconf_stream_hides_other_tenants_changes_and_sessions(srv: Server) -> None:
    ncn = "urn:ietf:params:xml:ns:yang:ietf-netconf-notifications"
    with as_user(srv, "alice") as alice, connect(srv) as adm:
        alice.create_subscription()  # the NETCONF stream: RFC 6470 events too
        edit(adm, f'<esc_datamodel xmlns="{ESC}"><tenants><tenant><name>tenant-b</name>'
                  "<description>secret change</description></tenant></tenants>"
                  "</esc_datamodel>")
        edit(alice, f'<esc_datamodel xmlns="{ESC}"><tenants><tenant><name>tenant-a</name>'
                    "<description>my change</description></tenant></tenants></esc_datamodel>")
        with as_user(srv, "bob"):
            pass
        got = _netconf_bodies(alice, 1.5)
        changes = [b for b in got if b.tag == f"{{{ncn}}}netconf-config-change"]
        targets = [t.text or "" for b in changes for t in b.iter(f"{{{ncn}}}target")]
        assert targets and all("tenant-b" not in t for t in targets)
        assert any("tenant-a" in t for t in targets)
        sessions = [b.findtext(f"{{{ncn}}}username") for b in got
                    if etree.QName(b).localname.startswith("netconf-session")]
        assert "bob" not in sessions
    with connect(srv) as adm:
        assert counters(adm)["denied-notifications"] >= 3  # change, bob's start and end


def test_candidate_commit_checks_every_change(srv: Server) -> None:
    with connect(srv) as adm, as_user(srv, "alice") as alice:
        edit(alice, f'<esc_datamodel xmlns="{ESC}"><tenants><tenant><name>tenant-a</name>'
                    "<description>via candidate</description></tenant></tenants>"
                    "</esc_datamodel>", target="candidate")
        alice.commit()
        assert b"via candidate" in running(srv)
        # the candidate is shared: with another tenant's change in it, alice's commit
        # would write that change too
        edit(adm, f'<esc_datamodel xmlns="{ESC}"><tenants><tenant><name>tenant-b</name>'
                  "<description>pending b</description></tenant></tenants>"
                  "</esc_datamodel>", target="candidate")
        snapshot = running(srv)
        err = denied(lambda: alice.commit())
        assert "tenant-b" in (err.path or "")
        assert running(srv) == snapshot
        adm.commit()
        assert b"pending b" in running(srv)
