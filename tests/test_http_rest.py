"""ESC's REST API (/ESCManager/v0) end to end on loopback: the seed payloads verbatim
through httpx and curl, callbacks to a real receiver, the same escEvents over NETCONF
and over Callback-ESC-Events with matching transaction ids; refusals."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lxml import etree

from conftest import PASSWORD, USER, add_user, connect
from conftest import test_host_uri as host_uri
from esc_events import Events, etype, types
from escnc.ns import ESC, NC
from http_helpers import CallbackReceiver, Received, client, payload
from test_day2_netconf import config_xml

pytestmark = pytest.mark.timeout(300)

E = f"{{{ESC}}}"
V0 = "/ESCManager/v0"
XML = {"Content-Type": "application/xml"}


@pytest.fixture
def srv(server_factory, tmp_path: Path):  # type: ignore[no-untyped-def]
    hosts = tmp_path / "hosts2"
    return server_factory(
        vims={"Host-23": host_uri(hosts, "Host-23"), "Host-24": host_uri(hosts, "Host-24")},
        snapshot_poll_secs=0.01,
        volume_poll_secs=0.01,
        reconcile_interval=1.0,  # the periodic reconcile on, as in production
        http_listen="127.0.0.1:0",
        url_allow_loopback=True,  # the callback receiver is on loopback
        callback_retry_base=0.05,
    )


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    r = CallbackReceiver()
    yield r
    r.close()


@pytest.fixture
def http(srv) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with client(srv.http_ports["http"]) as c:
        yield c


@pytest.fixture
def ev(srv) -> Iterator[Events]:  # type: ignore[no-untyped-def]
    with connect(srv) as m:
        yield Events(m)


@pytest.fixture
def image(tmp_path: Path) -> str:
    path = tmp_path / "img.qcow2"
    path.write_bytes(b"\0" * 4096)
    return str(path)


def deploy(srv, ev: Events, image: str) -> str:  # type: ignore[no-untyped-def]
    with connect(srv) as m:
        m.edit_config(target="running", config=config_xml("small", 1, image))
    got = ev.until("SERVICE_ALIVE")
    assert got[-1].findtext(f"{E}status") == "SUCCESS"
    (vm,) = {e.findtext(f"{E}vm_source/{E}generated_vmname") for e in got} - {None}
    return str(vm)


def call(http: httpx.Client, receiver: CallbackReceiver, path: str, body: bytes,
         content_type: str = "application/xml", method: str = "POST") -> str:
    """A request with both callback headers, as in the seeds; its transaction id."""
    r = http.request(method, V0 + path, content=body, headers={
        "Content-Type": content_type,
        "Callback": receiver.url("/callback"),
        "Callback-ESC-Events": receiver.url("/event"),
    })
    assert 200 <= r.status_code < 300, r.text
    txn = r.headers["ESC-Transaction-Id"]
    assert txn
    return txn


def outcome(receiver: CallbackReceiver, txn: str) -> Received:
    (got,) = receiver.wait_for("/callback", txn)
    return got


def same_events(receiver: CallbackReceiver, txn: str, netconf: list[etree._Element],
                last: str) -> list[str]:
    """The request's events at Callback-ESC-Events are those NETCONF saw (in order)."""
    got = receiver.wait_for("/event", txn, event=last)
    assert [r.txn for r in got] == [txn] * len(got)
    assert [r.event_type for r in got] == types(netconf)
    for r, nc_ev in zip(got, netconf, strict=True):
        assert r.event_status == nc_ev.findtext(f"{E}status")
    return [r.event_type for r in got]


def where(srv, vm: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [h for h in ("Host-23", "Host-24")
            if vm in [d.name() for d in srv.services.vims.get(h).connection().listAllDomains()]]


def test_service_and_vm_operations_seed_payloads(srv, http, receiver, ev, image) -> None:  # type: ignore[no-untyped-def]
    vm = deploy(srv, ev, image)
    txn = call(http, receiver, "/t1/deployments/service/d1", payload("service_stop.xml"))
    netconf = ev.until("SERVICE_STOPPED")
    assert same_events(receiver, txn, netconf, "SERVICE_STOPPED")[-1] == "SERVICE_STOPPED"
    done = outcome(receiver, txn)
    assert done.headers["esc-status-code"] == "200"
    assert done.headers["esc-status-message"]
    assert etree.fromstring(done.body).findtext(f"{E}operation") == "stop"

    txn = call(http, receiver, "/t1/deployments/service/d1", payload("service_start.xml"))
    netconf = ev.until("SERVICE_STARTED")
    same_events(receiver, txn, netconf, "SERVICE_STARTED")
    assert outcome(receiver, txn).headers["esc-status-code"] == "200"

    txn = call(http, receiver, f"/t1/deployments/vm/{vm}", payload("vm_stop.xml"))
    netconf = ev.until("VM_STOPPED")
    same_events(receiver, txn, netconf, "VM_STOPPED")
    outcome(receiver, txn)
    txn = call(http, receiver, f"/t1/deployments/vm/{vm}", payload("vm_start.xml"))
    netconf = ev.until("VM_ALIVE")
    assert same_events(receiver, txn, netconf, "VM_ALIVE")[-1] == "VM_ALIVE"
    assert outcome(receiver, txn).headers["esc-status-code"] == "200"


def test_migrate_resize_seed_payloads(srv, http, receiver, ev, image) -> None:  # type: ignore[no-untyped-def]
    vm = deploy(srv, ev, image)
    assert where(srv, vm) == ["Host-23"]  # so the seeds' <host>Host-24</host> moves it
    # cold migration waits for a confirm or revert, like a resize
    txn = call(http, receiver, f"/t1/deployments/migrate-vm/{vm}", payload("migrate_cold.xml"))
    netconf = ev.until("VM_VERIFY_RESIZE")
    same_events(receiver, txn, netconf, "VM_VERIFY_RESIZE")
    outcome(receiver, txn)
    txn = call(http, receiver, f"/t1/deployments/vm/{vm}", payload("revert_resize.xml"))
    netconf = ev.until("VM_REVERT_RESIZE_COMPLETE")
    same_events(receiver, txn, netconf, "VM_REVERT_RESIZE_COMPLETE")
    assert outcome(receiver, txn).headers["esc-status-code"] == "200"
    assert where(srv, vm) == ["Host-23"]
    ev.until("VM_ALIVE")  # monitoring again: after the request's terminal event
    # live migration, both callback headers (the seed's curl)
    txn = call(http, receiver, f"/t1/deployments/migrate-vm/{vm}", payload("migrate_live.xml"))
    netconf = ev.until("VM_MIGRATE_COMPLETE")
    assert "VM_MIGRATE_INIT" in same_events(receiver, txn, netconf, "VM_MIGRATE_COMPLETE")
    assert outcome(receiver, txn).headers["esc-status-code"] == "200"
    assert where(srv, vm) == ["Host-24"]
    # resize by a PUT of the deployment with a new flavor, then confirm_resize
    model = etree.fromstring(config_xml("large", 1, image)).find(f"{E}esc_datamodel")
    assert model is not None
    body = _only_tenants(etree.tostring(model))
    txn = call(http, receiver, "/deployments/d1", body, method="PUT")
    netconf = ev.until("VM_VERIFY_RESIZE")
    assert "SERVICE_UPDATED" in types(netconf)
    outcome(receiver, txn)
    txn = call(http, receiver, f"/SystemAdminTenantId/deployments/vm/{vm}",
               payload("confirm_resize.xml"))
    netconf = ev.until("VM_CONFIRM_RESIZE_COMPLETE")
    same_events(receiver, txn, netconf, "VM_CONFIRM_RESIZE_COMPLETE")
    assert outcome(receiver, txn).headers["esc-status-code"] == "200"


def _only_tenants(model_xml: bytes) -> bytes:
    """The esc_datamodel with only its tenants (a deployment update, as in the seed)."""
    model = etree.fromstring(model_xml)
    for child in list(model):
        if child.tag != f"{E}tenants":
            model.remove(child)
    return etree.tostring(model)


def test_snapshots_seed_flow(srv, http, receiver, ev, image) -> None:  # type: ignore[no-untyped-def]
    vm = deploy(srv, ev, image)
    txn = call(http, receiver, f"/t1/deployments/snapshot-vm/{vm}", payload("snapshot.json"),
               "application/json")
    netconf = ev.until("VM_BACKUP_COMPLETE")
    same_events(receiver, txn, netconf, "VM_BACKUP_COMPLETE")
    done = outcome(receiver, txn)
    assert done.headers["esc-status-code"] == "200"
    # a JSON request is answered in JSON: ESC's callback message shape
    assert json.loads(done.body) == {"snapshot_operation": {"operation": "snapshot",
                                                            "name": "my-snapshot-name"}}
    (last,) = [g for g in receiver.got if g.txn == txn and g.path == "/event"][-1:]
    message = json.loads(last.body)
    assert message["escTransactionId"] == txn and message["eventType"] == "VM_BACKUP_COMPLETE"
    assert message["escEvent"]["vm_source"]["generated_vmname"] == vm
    # the seed's list: XML, filtered by tenant and VM
    r = http.get(f"{V0}/snapshots", params={"internalTenantId": "t1", "generatedVMName": vm},
                 headers={"Accept": "application/xml"})
    assert r.status_code == 200
    snaps = etree.fromstring(r.content)
    assert snaps.tag == f"{{{NC}}}snapshots"
    (snap,) = snaps
    assert snap.findtext(f"{{{NC}}}name") == "my-snapshot-name"
    assert snap.findtext(f"{{{NC}}}created_from_generated_vm_name") == vm
    snap_id = snap.findtext(f"{{{NC}}}id")
    assert snap_id
    for params in ({"internalTenantId": "other"}, {"generatedVMName": "nope"}):
        assert len(etree.fromstring(http.get(f"{V0}/snapshots", params=params).content)) == 0
    js = http.get(f"{V0}/snapshots", headers={"Accept": "application/json"}).json()
    assert js["snapshots"]["snapshot"]["id"] == snap_id
    # a volume from the snapshot: JSON seed, answered 202, reported by callbacks only
    r = http.post(f"{V0}/snapshots/{snap_id}/volumes",
                  content=payload("volume_from_volume_snapshot.json"),
                  headers={"Content-Type": "application/json",
                           "Callback": receiver.url("/callback"),
                           "Callback-ESC-Events": receiver.url("/event")})
    assert r.status_code == 202, r.text
    txn = r.headers["ESC-Transaction-Id"]
    got = receiver.wait_for("/event", txn, event="VM_VOLUME_CREATED_EVENT")
    assert [g.event_type for g in got] == ["VM_VOLUME_ACCEPTED_EVENT", "VM_VOLUME_CREATED_EVENT"]
    ev.until("VM_VOLUME_CREATED_EVENT")
    outcome(receiver, txn)
    vols = etree.fromstring(http.get(f"{V0}/volumes").content)
    assert [v.findtext(f"{{{NC}}}name") for v in vols] == [
        "my-bootable-volume-from-snapshot-volume"]
    # delete by name, as the seed's curl does (headers in lower case too)
    r = http.delete(f"{V0}/snapshots/my-snapshot-name",
                    headers={"callback": receiver.url("/callback"),
                             "Callback-ESC-Events": receiver.url("/event")})
    assert r.status_code == 200, r.text
    txn = r.headers["ESC-Transaction-Id"]
    netconf = ev.until("VM_SNAPSHOT_DELETED")
    same_events(receiver, txn, netconf, "VM_SNAPSHOT_DELETED")
    outcome(receiver, txn)
    assert len(etree.fromstring(http.get(f"{V0}/snapshots").content)) == 0


def test_curl_service_operation(srv, receiver, ev, image) -> None:  # type: ignore[no-untyped-def]
    deploy(srv, ev, image)
    port = srv.http_ports["http"]
    out = subprocess.run(
        ["curl", "-s", "-i", "-u", f"{USER}:{PASSWORD}", "-X", "POST",
         f"http://127.0.0.1:{port}{V0}/t1/deployments/service/d1",
         "-H", "Content-Type: application/xml",
         "-H", f"Callback: {receiver.url('/callback')}",
         "--data-binary", f"@{Path(__file__).parent / 'data/rest/service_stop.xml'}"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    status_line, *rest = out.splitlines()
    assert " 202" in status_line, out
    txn = next((line.split(":", 1)[1].strip() for line in rest
                if line.lower().startswith("esc-transaction-id:")), None)
    assert txn, out
    ev.until("SERVICE_STOPPED")
    assert outcome(receiver, txn).headers["esc-status-code"] == "200"


def test_refusals(srv, http, receiver, ev, image) -> None:  # type: ignore[no-untyped-def]
    port = srv.http_ports["http"]
    # no or bad credentials: 401 with a challenge
    r = httpx.post(f"http://127.0.0.1:{port}{V0}/t1/deployments/service/d1",
                   content=payload("service_stop.xml"), headers=XML)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    with client(port, password="wrong") as bad:
        assert bad.get(f"{V0}/deployments").status_code == 401
    # health needs no login
    assert httpx.get(f"http://127.0.0.1:{port}/health").json() == {"status": "alive"}
    vm = deploy(srv, ev, image)
    # malformed XML
    r = http.post(f"{V0}/t1/deployments/service/d1", content=b"<service_operation>", headers=XML)
    assert r.status_code == 400 and "malformed XML" in r.text
    # unknown tenant / deployment / VM: 404, nothing happens, no callback
    for path in ("/nosuch/deployments/service/d1", "/t1/deployments/service/nosuch"):
        r = http.post(V0 + path, content=payload("service_stop.xml"),
                      headers={**XML, "Callback": receiver.url("/callback")})
        assert r.status_code == 404, r.text
        assert "does not exist" in r.text
    r = http.post(f"{V0}/t1/deployments/vm/nope", content=payload("vm_stop.xml"), headers=XML)
    assert r.status_code == 404
    # an operation the state refuses
    r = http.post(f"{V0}/t1/deployments/service/d1", content=payload("service_start.xml"),
                  headers=XML)
    assert r.status_code == 500 and "operation-not-allowed-in-state" in r.text
    # YANG validation of the RPC input (same as NETCONF): a bad migrationType
    bad = payload("migrate_live.xml").replace(b"live", b"sideways")
    r = http.post(f"{V0}/t1/deployments/migrate-vm/{vm}", content=bad, headers=XML)
    assert r.status_code == 400, r.text
    # a callback URI the outbound policy refuses
    r = http.post(f"{V0}/t1/deployments/service/d1", content=payload("service_stop.xml"),
                  headers={**XML, "Callback": "file:///etc/passwd"})
    assert r.status_code == 400 and "callback URI refused" in r.text
    # body too big
    r = http.post(f"{V0}/t1/deployments/service/d1", content=b"x" * (5 * 1024 * 1024),
                  headers=XML)
    assert r.status_code == 413
    assert receiver.got == []
    assert where(srv, vm)  # still there, still running
    assert http.get(f"{V0}/deployments/d1").status_code == 200
    assert http.get(f"{V0}/deployments/nope").status_code == 404


def test_nacm_denied_is_403(srv, http, ev, image) -> None:  # type: ignore[no-untyped-def]
    deploy(srv, ev, image)
    add_user(srv.settings.state_dir, "bob", "bob-pw")
    nacm = ('<nacm xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-acm">'
            "<enable-nacm>true</enable-nacm><write-default>deny</write-default></nacm>")
    with connect(srv) as m:  # admin: the recovery user
        m.edit_config(target="running", config=f'<config xmlns="{NC}">{nacm}</config>')
    with client(srv.http_ports["http"], "bob", "bob-pw") as bob:
        r = bob.post(f"{V0}/t1/deployments/service/d1", content=payload("service_stop.xml"),
                     headers=XML)
        assert r.status_code == 403, r.text
        assert "access-denied" in r.text
        r = bob.delete(f"{V0}/deployments/d1")
        assert r.status_code == 403, r.text
    # admin still may: the same request passes
    r = http.post(f"{V0}/t1/deployments/service/d1", content=payload("service_stop.xml"),
                  headers=XML)
    assert r.status_code == 202
    ev.until("SERVICE_STOPPED")


def test_resources_and_deployment_lifecycle(srv, http, receiver, ev, image) -> None:  # type: ignore[no-untyped-def]
    r = http.post(f"{V0}/tenants/t9", content=b'<tenant xmlns="urn:ietf:params:xml:ns:netconf:'
                  b'base:1.0"><name>t9</name><description>nine</description></tenant>',
                  headers={**XML, "Callback": receiver.url("/callback")})
    assert r.status_code == 201, r.text
    done = outcome(receiver, r.headers["ESC-Transaction-Id"])
    assert etree.fromstring(done.body).findtext(f"{E}event_type") == "CREATE_TENANT"
    assert http.post(f"{V0}/tenants/t9", headers=XML).status_code == 409  # exists
    r = http.get(f"{V0}/tenants/t9", headers={"Accept": "application/json"})
    assert r.json()["tenant"]["description"] == "nine"
    r = http.post(f"{V0}/flavors/f1", json={"vcpus": 1, "memory_mb": 256})
    assert r.status_code == 201, r.text
    assert "f1" in http.get(f"{V0}/flavors").text
    r = http.post(f"{V0}/flavors/f2", json={"vcpus": "many", "memory_mb": 256})
    assert r.status_code == 400, r.text  # YANG type check, as over NETCONF
    # deploy over REST, undeploy over REST; callbacks when each ends
    model = etree.fromstring(config_xml("small", 1, image)).find(f"{E}esc_datamodel")
    assert model is not None  # image, flavors and the deployment in one body
    txn = call(http, receiver, "/deployments/d1", etree.tostring(model))
    netconf = ev.until("SERVICE_ALIVE")
    same_events(receiver, txn, netconf, "SERVICE_ALIVE")
    assert outcome(receiver, txn).headers["esc-status-code"] == "200"
    dep = etree.fromstring(http.get(f"{V0}/deployments/d1").content)
    assert dep.findtext(f"{{{NC}}}name") == "d1"
    r = http.delete(f"{V0}/deployments/d1", headers={"Callback": receiver.url("/callback")})
    assert r.status_code == 200, r.text
    ev.until("SERVICE_UNDEPLOYED")
    assert outcome(receiver, r.headers["ESC-Transaction-Id"]).headers[
        "esc-status-code"] == "200"
    assert [etype(e) for e in netconf][-1] == "SERVICE_ALIVE"
