"""Active/standby with two ``escnc serve`` processes on one real PostgreSQL (issue 18,
docs/ha.md): the standby serves reads and refuses writes naming the leader (NETCONF
rpc-error, HTTP 503); kill -9 of the leader and a cut of its database connection hand
the lead over, the old leader's engine stopping before the new one's starts. And a
single node without a database has no elector and no fence to ask."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from lxml import etree
from ncclient.operations.rpc import RPCError

from escnc.app import Server
from ha_support import (
    ESC,
    PASSWORD,
    SRC,
    TENANT,
    USER,
    CutProxy,
    Node,
    cluster,
    role,
    wait_until,
)

LEASE = 3.0  # lease_duration of the test nodes (renew_deadline 2, retry 0.25)


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.stop()


def start(nodes: list[Node], root: Path, name: str, dsn: str) -> Node:
    node = Node(root, name, dsn, lease=LEASE)
    nodes.append(node)
    return node


def leader_and_standby(nodes: list[Node], root: Path, dsn: str,
                       first_dsn: str | None = None) -> tuple[Node, Node]:
    a = start(nodes, root, "a", first_dsn or dsn)
    assert wait_until(lambda: role(a) == "leader/running", 30), role(a)
    b = start(nodes, root, "b", dsn)
    assert wait_until(lambda: role(b) == "standby/stopped", 30), role(b)
    return a, b


def not_leader(exc: RPCError) -> str:
    """The leader an rpc-error names (asserting it is a not-leader error)."""
    assert exc.tag == "operation-failed" and exc.type == "application", exc.xml
    root = exc.xml if isinstance(exc.xml, etree._Element) else etree.fromstring(exc.xml)
    assert root.findtext("{urn:ietf:params:xml:ns:netconf:base:1.0}error-app-tag") \
        == "not-leader"
    return root.findtext(f".//{{{ESC}}}leader") or ""


def edit(node: Node, tenant: str) -> None:
    with node.connect() as m:
        m.edit_config(target="running", config=TENANT.format(tenant))


@pytest.mark.postgresql
def test_the_standby_serves_reads_and_refuses_writes_naming_the_leader(
        pg_dsn: str, tmp_path: Path, nodes: list[Node]) -> None:
    a, b = leader_and_standby(nodes, tmp_path, pg_dsn)
    with b.connect() as m:
        # notifications on the standby: the leader's commit arrives from the shared log
        m.create_subscription()
        edit(a, "t-on-leader")
        while True:
            note = m.take_notification(block=True, timeout=10)
            assert note is not None, "the leader's config change did not reach the standby"
            if "netconf-config-change" in note.notification_xml:
                break
    with b.connect() as m:
        with pytest.raises(RPCError) as refused:
            m.edit_config(target="running", config=TENANT.format("t-on-standby"))
        assert not_leader(refused.value) == a.address
        action = (f'<vmAction xmlns="{ESC}"><actionType>STOP</actionType>'
                  '<vmName>nope</vmName></vmAction>')
        with pytest.raises(RPCError) as refused:
            m.dispatch(etree.fromstring(action))
        assert not_leader(refused.value) == a.address
        # reads: get-config (the leader's commits, followed from the shared database)
        # and get (the cluster opdata) are served
        assert wait_until(lambda: "t-on-leader" in str(m.get_config(source="running")), 10)
        state = cluster(m)
        assert state["role"] == "standby" and state["leader"] == a.address
        assert state["engine"] == "stopped"
    def members(node: Node) -> set[str]:
        with node.connect() as m:
            data = etree.fromstring(str(m.get(filter=(
                f'<filter type="subtree"><esc_datamodel xmlns="{ESC}"><opdata><cluster>'
                '<member/></cluster></opdata></esc_datamodel></filter>'))).encode())
        return {f"{n.findtext(f'{{{ESC}}}node')}={n.findtext(f'{{{ESC}}}role')}"
                for n in data.iter(f"{{{ESC}}}member")}

    # the heartbeats, as each node's elector last read them
    both = {"a=leader", "b=standby"}
    assert wait_until(lambda: members(a) == both and members(b) == both, 10), members(a)
    # escnc status prints the role
    for node, line in ((a, "role: leader (node a, engine running); leader "),
                       (b, "role: standby (node b, engine stopped); leader ")):
        shown = subprocess.run(
            [sys.executable, "-m", "escnc.cli.server", "status", "--port", str(node.port),
             "--user", USER], capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "ESCNC_PASSWORD": PASSWORD, "PYTHONPATH": str(SRC)})
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert f"{line}{a.address}, token 1" in shown.stdout, shown.stdout
        assert "  member a  leader" in shown.stdout and "  member b  standby" in shown.stdout
    # HTTP: a write gets 503 naming the leader, with Retry-After; a read is served
    url = f"http://127.0.0.1:{b.http_port}/restconf/data/escnc:esc_datamodel/tenants"
    body = {"escnc:tenant": [{"name": "t-http"}]}
    with httpx.Client(auth=(USER, PASSWORD), timeout=30) as http:
        answer = http.post(url, json=body, headers={"Accept": "application/yang-data+json"})
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"].isdigit()
        error = answer.json()["ietf-restconf:errors"]["error"][0]
        assert error["error-app-tag"] == "not-leader"
        assert error["error-info"]["leader"] == a.address
        # (the standby's own datastore has no tenants yet: opdata is what it has)
        read = http.get(f"http://127.0.0.1:{b.http_port}/restconf/data/"
                        "escnc:esc_datamodel/opdata/cluster",
                        headers={"Accept": "application/yang-data+json"})
        assert read.status_code == 200 and "standby" in read.text, read.text
        leader_url = f"http://127.0.0.1:{a.http_port}/restconf/data/escnc:esc_datamodel/tenants"
        assert http.post(leader_url, json=body,
                         headers={"Accept": "application/yang-data+json"}).status_code \
            in (200, 201, 204)


@pytest.mark.postgresql
def test_kill9_of_the_leader_hands_the_lead_to_the_standby(
        pg_dsn: str, tmp_path: Path, nodes: list[Node]) -> None:
    a, b = leader_and_standby(nodes, tmp_path, pg_dsn)
    edit(a, "before")
    # a stream of edits, each acknowledged one remembered; the leader dies in the middle
    acked: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        m = a.connect()
        for i in range(100_000):
            if stop.is_set():
                break
            try:
                m.edit_config(target="running", config=TENANT.format(f"s{i}"))
            except Exception:
                return  # the session died with the leader (no close-session to send)
            acked.append(f"s{i}")
        m.close_session()

    writer = threading.Thread(target=stream, daemon=True)
    writer.start()
    assert wait_until(lambda: len(acked) >= 20, 30), acked
    a.kill9()
    killed = time.monotonic()
    stop.set()  # (an edit in flight may wait out ncclient's timeout: joined below)
    accepted: list[float] = []

    def write() -> bool:
        try:
            edit(b, "after")
        except RPCError as exc:
            not_leader(exc)  # only not-leader is expected meanwhile
            return False
        accepted.append(time.monotonic())
        return True

    assert wait_until(write, LEASE + 15, interval=0.1)
    # a standby waits lease_duration from the last renewal it saw, then one poll
    assert accepted[0] - killed < LEASE + 10
    with b.connect() as m:
        state = cluster(m)
        assert state["role"] == "leader" and state["engine"] == "running"
        assert state["token"] == "2" and state["leader"] == b.address
        # every edit acknowledged by the old leader is in the new leader's running
        names = {e.text for e in etree.fromstring(
            str(m.get_config(source="running")).encode()).iter(f"{{{ESC}}}name")}
    writer.join(60)
    missing = [t for t in ["before", "after", *acked] if t not in names]
    assert not missing, f"{len(missing)} acknowledged edits lost: {missing[:5]}"


def changed(state: dict[str, str]) -> datetime:
    return datetime.fromisoformat(state["engine_changed"].replace("Z", "+00:00"))


@pytest.mark.postgresql
@pytest.mark.parametrize("how", ["cut", "freeze"])
def test_a_leader_cut_from_the_database_stops_before_the_standby_starts(
        pg_dsn: str, tmp_path: Path, nodes: list[Node], how: str) -> None:
    """cut: the leader's renewal fails at once; freeze: it hangs (the watchdog ends the
    term at the renew deadline). Either way its engine stops before the standby's
    starts, by the opdata timestamps of the two nodes (one machine, one clock)."""
    proxy = CutProxy(pg_dsn)
    try:
        a, b = leader_and_standby(nodes, tmp_path, pg_dsn, first_dsn=proxy.dsn)
        with a.connect() as on_a:  # opened before the cut (a session start logs an event)
            assert cluster(on_a)["role"] == "leader"  # (answered: that event is written)
            proxy.cut() if how == "cut" else proxy.freeze()
            assert wait_until(lambda: cluster(on_a).get("engine") == "stopped", LEASE + 5)
            stopped = cluster(on_a)
            assert stopped["role"] == "standby"
            assert wait_until(lambda: role(b) == "leader/running", LEASE + 15), role(b)
            with b.connect() as on_b:
                started = cluster(on_b)
            assert changed(stopped) < changed(started), (stopped, started)
            # the old leader, cut off, refuses writes too
            with pytest.raises(RPCError) as refused:
                on_a.edit_config(target="running", config=TENANT.format("split-brain"))
            not_leader(refused.value)
        edit(b, "on-the-new-leader")
        # the database comes back, the new leader dies: the old one leads again, with
        # an engine of its new term
        proxy.restore()
        assert wait_until(lambda: role(a) == "standby/stopped", LEASE + 10), role(a)
        b.kill9()
        assert wait_until(lambda: role(a) == "leader/running", LEASE + 15), role(a)
        with a.connect() as m:
            assert cluster(m)["token"] == "3"
            m.edit_config(target="running", config=TENANT.format("third-term"))
    finally:
        proxy.close()


def test_a_single_node_has_no_elector(tmp_path: Path, server: Server) -> None:
    from escnc.cluster import SingleNodeFence

    assert server.leadership is None and server.services is not None
    assert isinstance(server.services.fence, SingleNodeFence)
    assert server.services.cluster is None and server.services.engine.started
    names = {t.name for t in threading.enumerate()}
    assert not names & {"cluster-elector", "cluster-watchdog", "leader-term"}
    from conftest import connect

    with connect(server) as m:
        m.edit_config(target="running", config=TENANT.format("single"))
        data = etree.fromstring(str(m.get(filter=(
            f'<filter type="subtree"><esc_datamodel xmlns="{ESC}"><opdata>'
            '<system_status/><cluster/></opdata></esc_datamodel></filter>'))).encode())
    assert data.find(f".//{{{ESC}}}cluster") is None
    assert data.findtext(f".//{{{ESC}}}status") == "ACTIVE"


@pytest.mark.postgresql
def test_the_engine_stops_within_the_lease_with_a_hypervisor_call_hanging(
        pg_dsn: str, tmp_path: Path, server_factory, monkeypatch: pytest.MonkeyPatch,
        ) -> None:  # type: ignore[no-untyped-def]
    """In one process: the leader's database is cut while one of its jobs is inside a
    VM creation that does not return; its engine still stops (within the budget of
    what is left of the lease) before the standby's engine starts; the job ends once
    the call returns."""
    from conftest import connect
    from engine_support import config, deployment
    from escnc.engine.vmops import VmOps

    entered, release = threading.Event(), threading.Event()
    original = VmOps.create

    def hanging_create(self, *args, **kw):  # type: ignore[no-untyped-def]
        entered.set()
        release.wait(60)  # a libvirt call under way: no cancel reaches it
        return original(self, *args, **kw)

    monkeypatch.setattr(VmOps, "create", hanging_create)
    timings = {"lease_duration": LEASE, "renew_deadline": 2.0, "lease_retry": 0.25}
    proxy = CutProxy(pg_dsn)
    try:
        a = server_factory(tmp_path / "a", database=proxy.dsn, node_name="a", **timings)
        assert wait_until(lambda: a.leadership.engine == "running", 30)
        b = server_factory(tmp_path / "b", database=pg_dsn, node_name="b", **timings)
        with connect(a) as m:
            m.edit_config(target="running", config=(
                '<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">'
                f"{config(tmp_path, deployment(min_active=2, max_active=2))}</config>"))
        assert entered.wait(30), "the deployment did not reach the VM creation"
        engine = a.services.engine
        proxy.cut()
        assert wait_until(lambda: b.leadership.engine == "running", LEASE + 15)
        # a's engine had stopped first, though its job is still inside the call
        assert a.leadership.engine == "stopped"
        assert a.leadership.engine_changed_ms < b.leadership.engine_changed_ms
        assert engine.jobs.counts()[1] == 1 and not engine.started
        release.set()
        # the call returns, the cancelled job ends (the call itself was not fenced:
        # docs/ha.md, the bound)
        assert wait_until(lambda: engine.jobs.counts() == (0, 0), 30)
    finally:
        release.set()
        proxy.close()
