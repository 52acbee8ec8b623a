"""Capacity, reservations and capacity notifications (seed 003: OPNFV Promise / ETSI
NFV IFA 005) over NETCONF with ncclient, on two libvirt test-driver hosts (16 CPUs,
32 GiB, a 100 GiB storage pool each) with the reconcile tick on and no overcommit."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from ncclient.operations.rpc import RPCError

import capacity_seed as seed
from conftest import connect
from escnc.engine.clock import ManualClock
from escnc.ns import ESC
from netconf_helpers import wait_for

pytestmark = pytest.mark.timeout(120)

NS = {"e": ESC}
E = f"{{{ESC}}}"
NODE = """<node><memory>33554432</memory>
<pool type='dir'><name>data</name><target><path>/nonexistent-escnc-data</path></target></pool>
</node>
"""


def iso(seconds_from_now: float, now: float | None = None) -> str:
    base = datetime.fromtimestamp(now, UTC) if now is not None else datetime.now(UTC)
    return (base + timedelta(seconds=seconds_from_now)).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the seed's JSON over NETCONF ---------------------------------------------------------


def to_xml(parent: etree._Element, data: dict[str, Any]) -> None:
    for key, value in data.items():
        for item in value if isinstance(value, list) else [value]:
            el = etree.SubElement(parent, E + key)
            if isinstance(item, dict):
                to_xml(el, item)
            else:
                el.text = str(item)


def to_json(el: etree._Element) -> Any:
    if not len(el):
        text = el.text or ""
        return int(text) if text.isdigit() else text
    out: dict[str, Any] = {}
    for child in el:
        key = etree.QName(child).localname
        value = to_json(child)
        if key in out:
            out[key] = (out[key] if isinstance(out[key], list) else [out[key]]) + [value]
        else:
            out[key] = value
    return out


def rpc(m, name: str, body: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The seed's JSON ``body`` as RPC ``name``; the reply's data as JSON."""
    el = etree.Element(E + name, nsmap={None: ESC})  # type: ignore[dict-item]
    to_xml(el, body)
    reply = etree.fromstring(m.dispatch(el).xml.encode())
    data = to_json(reply)
    return data if isinstance(data, dict) else {}


def with_id(payload: dict[str, Any], rid: str) -> dict[str, Any]:
    """A seed payload naming reservation ``rid`` instead of the seed's example id."""
    out = copy.deepcopy(payload)
    if "reservationId" in out:
        out["reservationId"] = rid
    for f in out.get("queryReservationFilter", []):
        f["reservationId"] = rid
    return out


def info(m, kind: str, rtype: str, zone: str = "") -> dict[str, int]:  # type: ignore[no-untyped-def]
    body: dict[str, Any] = {"resourceDescriptor": {f"{kind}ResourceTypeId": rtype}}
    if zone:
        body["zoneId"] = zone
    got = rpc(m, f"query{kind.capitalize()}Capacity", body)["capacityInformation"]
    return {k: int(v) for k, v in got.items()}


def config(image: str, dep: str = "d1", instances: int = 1, group: str = "",
           flavor: str = "<vcpus>1</vcpus><memory_mb>512</memory_mb>") -> str:
    return f"""<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
<esc_datamodel xmlns="{ESC}">
  <images><image><name>img</name><src>{image}</src></image></images>
  <flavors><flavor><name>f1</name>{flavor}</flavor></flavors>
  <tenants><tenant><name>t1</name><deployments><deployment><name>{dep}</name>
    <vm_group><name>g1</name><image>img</image><flavor>f1</flavor>
      <bootup_time>30</bootup_time><recovery_wait_time>0</recovery_wait_time>
      <scaling><min_active>{instances}</min_active><max_active>{instances}</max_active>
        <elastic>true</elastic></scaling>{group}
    </vm_group>
  </deployment></deployments></tenant></tenants>
</esc_datamodel></config>"""


def take(m, tag: str, timeout: float = 20.0) -> etree._Element:  # type: ignore[no-untyped-def]
    """The next notification whose body is ``tag`` (an escnc element name)."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        n = m.take_notification(block=True, timeout=0.3)
        if n is None:
            continue
        root = etree.fromstring(n.notification_xml.encode())
        body = root.find(f".//{E}{tag}")
        if body is not None:
            return body
        seen.append([etree.QName(c).localname for c in root])
    raise AssertionError(f"no {tag}: {seen}")


def quiet(m, tag: str, seconds: float) -> list[etree._Element]:  # type: ignore[no-untyped-def]
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        n = m.take_notification(block=True, timeout=min(left, 0.2))
        if n is not None:
            body = etree.fromstring(n.notification_xml.encode()).find(f".//{E}{tag}")
            if body is not None:
                out.append(body)
    return out


@pytest.fixture
def vims(tmp_path: Path) -> dict[str, str]:
    d = tmp_path / "hosts2"
    d.mkdir()
    out = {}
    for name in ("hostA", "hostB"):
        (d / f"{name}.xml").write_text(NODE)
        out[name] = f"test://{d / name}.xml"
    return out


CAPACITY_SETTINGS: dict[str, Any] = {
    "capacity_poll_secs": 0.1,
    "reconcile_interval": 1.0,
    "overcommit": {},
    "capacity_zones": {seed.ZONE: ["hostA", "hostB"]},
    "public_ip_ranges": [seed.PUBLIC_RANGE],
}


@pytest.fixture
def srv(server_factory, vims):  # type: ignore[no-untyped-def]
    return server_factory(vims=vims, **CAPACITY_SETTINGS)


@pytest.fixture
def nc(srv) -> Iterator:  # type: ignore[no-untyped-def]
    with connect(srv) as m:
        yield m


@pytest.fixture
def image(tmp_path: Path) -> str:
    path = tmp_path / "img.qcow2"
    path.write_bytes(b"\0" * 4096)
    return str(path)


# -- every seed example -------------------------------------------------------------------


def test_every_seed_example_gets_the_seed_shape_over_netconf(nc) -> None:  # type: ignore[no-untyped-def]
    m = nc
    got = rpc(m, "subscribeComputeCapacity", seed.COMPUTE_SUBSCRIBE)
    assert seed.same_shape(seed.COMPUTE_SUBSCRIBE_RESPONSE, got) == []
    got = rpc(m, "queryComputeCapacity", seed.COMPUTE_QUERY)
    assert seed.same_shape(seed.COMPUTE_QUERY_RESPONSE, got) == []
    # zone 12345 is both hosts: 16 CPUs each, one vcInstance per CPU
    assert got["zoneId"] == 12345  # (all-digit leaves read back as numbers)
    assert got["capacityInformation"] == {
        "available": 32, "reserved": 0, "total": 32, "allocated": 0
    }

    # 20 cores do not fit on one 16-CPU host: the pool spans zone 12345
    got = rpc(m, "createComputeReservation", seed.COMPUTE_CREATE_POOL)
    assert seed.same_shape(seed.COMPUTE_CREATE_POOL_RESPONSE, got) == []
    pool = got["reservationData"]
    assert pool["computePoolReserved"] == {
        "numCpuCores": 20, "numVcInstances": 5, "virtualMemSize": 10, "zoneId": 12345
    }
    assert pool["reservationStatus"] == "active"  # the seed's startTime has passed
    rid = pool["reservationId"]
    assert info(m, "compute", "numCpuCores", "12345")["reserved"] == 20
    assert info(m, "compute", "virtualMemSize", "12345")["reserved"] == 10  # GiB

    got = rpc(m, "createComputeReservation", seed.COMPUTE_CREATE_CONTAINERS)
    assert seed.same_shape(seed.COMPUTE_CREATE_CONTAINERS_RESPONSE, got) == []
    vc = got["reservationData"]["virtualizationContainerReserved"]
    assert vc["containerFlavor"] == seed.CONTAINER_FLAVOR
    rid2 = got["reservationData"]["reservationId"]

    got = rpc(m, "queryComputeReservation", with_id(seed.COMPUTE_QUERY_RESERVATION, rid))
    assert seed.same_shape(seed.COMPUTE_QUERY_RESERVATION_RESPONSE, got) == []
    assert got["reservationData"]["reservationId"] == rid
    got = rpc(m, "updateComputeReservation", with_id(seed.COMPUTE_UPDATE, rid))
    assert seed.same_shape(seed.COMPUTE_UPDATE_RESPONSE, got) == []
    assert got["reservationData"]["startTime"] == "2015-09-14T16:00:00Z"
    got = rpc(m, "terminateComputeReservation", {"reservationId": [rid, rid2]})
    assert [r["reservationStatus"] for r in got["reservationData"]] == ["terminated"] * 2
    assert info(m, "compute", "numCpuCores", "12345")["reserved"] == 0

    got = rpc(m, "subscribeNetworkCapacity", seed.NETWORK_SUBSCRIBE)
    assert seed.same_shape(seed.NETWORK_SUBSCRIBE_RESPONSE, got) == []
    got = rpc(m, "queryNetworkCapacity", seed.NETWORK_QUERY)
    assert seed.same_shape(seed.NETWORK_QUERY_RESPONSE, got) == []
    assert got["capacityInformation"]["total"] == 20  # 10.2.91.60-79
    got = rpc(m, "createNetworkReservation", seed.NETWORK_CREATE)
    assert seed.same_shape(seed.NETWORK_RESERVATION, got) == []
    assert got["reservationData"]["networkReserved"]["publicIps"] == ["10.2.91.60", "10.2.91.61"]
    nid = got["reservationData"]["reservationId"]
    assert info(m, "network", "publicIps")["reserved"] == 2
    got = rpc(m, "queryNetworkReservation", with_id(seed.NETWORK_QUERY_RESERVATION, nid))
    assert seed.same_shape(seed.NETWORK_RESERVATION, got) == []
    got = rpc(m, "updateNetworkReservation", with_id(seed.NETWORK_UPDATE, nid))
    assert seed.same_shape(seed.NETWORK_RESERVATION, got) == []
    assert got["reservationData"]["startTime"] == "2015-09-21T16:00:00Z"

    got = rpc(m, "subscribeStorageCapacity", seed.STORAGE_SUBSCRIBE)
    assert seed.same_shape(seed.STORAGE_SUBSCRIBE_RESPONSE, got) == []
    got = rpc(m, "queryStorageCapacity", seed.STORAGE_QUERY)
    assert seed.same_shape(seed.STORAGE_QUERY_RESPONSE, got) == []
    got = rpc(m, "createStorageReservation", seed.STORAGE_CREATE)
    assert seed.same_shape(seed.STORAGE_RESERVATION, got) == []
    sp = got["reservationData"]["storagePoolReserved"]
    assert (sp["storageSize"], sp["numSnapshots"], sp["numVolumes"]) == (10, 3, 2)
    sid = got["reservationData"]["reservationId"]
    assert info(m, "storage", "storageSize", sp["zoneId"])["reserved"] == 10
    assert info(m, "storage", "numVolumes", sp["zoneId"])["reserved"] == 2
    got = rpc(m, "queryStorageReservation", with_id(seed.STORAGE_QUERY_RESERVATION, sid))
    assert seed.same_shape(seed.STORAGE_RESERVATION, got) == []
    got = rpc(m, "updateStorageReservation", with_id(seed.STORAGE_UPDATE, sid))
    assert seed.same_shape(seed.STORAGE_RESERVATION, got) == []

    # a reservation is found under its own kind only
    with pytest.raises(RPCError) as exc:
        rpc(m, "queryComputeReservation", with_id(seed.COMPUTE_QUERY_RESERVATION, sid))
    assert exc.value.tag == "data-missing" and f"compute reservation {sid}" in str(exc.value)


# -- placement honours reservations -------------------------------------------------------


def test_compute_reservation_is_honoured_by_placement_and_migration(srv, nc, image) -> None:  # type: ignore[no-untyped-def]
    m = nc
    pool = {"numCpuCores": 16, "numVcInstances": 1, "virtualMemSize": 1}
    ra = rpc(m, "createComputeReservation", {"zoneId": "hostA", "computePoolReservation": pool})[
        "reservationData"
    ]["reservationId"]
    pool = {"numCpuCores": 16, "numVcInstances": 2, "virtualMemSize": 2}
    rb = rpc(m, "createComputeReservation", {"zoneId": "hostB", "computePoolReservation": pool})[
        "reservationData"
    ]["reservationId"]
    with pytest.raises(RPCError) as exc:
        m.edit_config(target="running", config=config(image, instances=2))
    msg = str(exc.value)
    assert exc.value.tag == "invalid-value"
    assert "not enough capacity for 2 VM(s)" in msg, msg
    assert "zone hostA: vcpus 1 needed, 0 available outside reservations" in msg, msg
    assert "zone hostB: vcpus 1 needed, 0 available outside reservations" in msg, msg
    with pytest.raises(RPCError) as exc:
        m.edit_config(target="running",
                      config=config(image, group="<reservation_id>nope</reservation_id>"))
    assert "reservation nope of vm_group g1 does not exist" in str(exc.value)

    m.create_subscription(stream_name="escEvent")
    m.edit_config(target="running", config=config(
        image, instances=2, group=f"<reservation_id>{rb}</reservation_id>"))
    alive = take(m, "escEvent")
    while alive.findtext("e:event/e:type", namespaces=NS) != "SERVICE_ALIVE":
        alive = take(m, "escEvent")
    assert alive.findtext("e:status", namespaces=NS) == "SUCCESS"
    vms = srv.services.engine.store.vms("t1", "d1")
    assert {v.host for v in vms} == {"hostB"}  # the reservation's zone
    cpus = info(m, "compute", "vcpus", "hostB")
    assert cpus == {"total": 16, "allocated": 2, "reserved": 14, "available": 0}

    # a migration cannot take hostA's reserved capacity
    with pytest.raises(RPCError) as exc:
        m.dispatch(etree.fromstring(
            f'<vmMigrate xmlns="{ESC}"><vmName>{vms[0].generated_name}</vmName>'
            "<migrationType>cold</migrationType></vmMigrate>"))
    assert "no host can take" in str(exc.value), str(exc.value)
    rpc(m, "terminateComputeReservation", {"reservationId": ra})
    # a reservation its VMs consume is not terminated unless forced
    with pytest.raises(RPCError) as exc:
        m.dispatch(etree.fromstring(
            f'<terminateComputeReservation xmlns="{ESC}"><reservationId>{rb}</reservationId>'
            "</terminateComputeReservation>"))
    assert exc.value.tag == "in-use"
    assert all(v.generated_name in str(exc.value) for v in vms), str(exc.value)
    got = rpc(m, "terminateComputeReservation", {"reservationId": rb, "force": "true"})
    assert got["reservationData"]["reservationStatus"] == "terminated"


def test_network_reservation_keeps_its_addresses_for_its_group(srv, nc, image) -> None:  # type: ignore[no-untyped-def]
    m = nc
    nid = rpc(m, "createNetworkReservation", {"networkReservation": {"numPublicIps": 2}})[
        "reservationData"
    ]["reservationId"]
    pool = "".join(f"<ip_address>10.2.91.{60 + i}</ip_address>" for i in range(4))
    interfaces = (
        "<interfaces><interface><nicid>0</nicid><network>pub</network></interface></interfaces>"
    )
    scaling_pool = (
        "<static_ip_address_pool><network>pub</network><gateway>10.2.91.1</gateway>"
        f"<netmask>255.255.255.0</netmask>{pool}</static_ip_address_pool>"
    )

    def cfg(dep: str, extra: str) -> str:
        xml = config(image, dep=dep, group=extra).replace(
            "<bootup_time>", interfaces + "<bootup_time>"
        ).replace("<elastic>true</elastic>", "<elastic>true</elastic>" + scaling_pool)
        return xml.replace(
            "<tenants>",
            "<networks><network><name>pub</name><subnet><name>s</name><address>10.2.91.0"
            "</address><netmask>255.255.255.0</netmask><gateway>10.2.91.1</gateway></subnet>"
            "</network></networks><tenants>",
        )

    m.create_subscription(stream_name="escEvent")
    m.edit_config(target="running", config=cfg("plain", ""))
    m.edit_config(target="running", config=cfg("owner", f"<reservation_id>{nid}</reservation_id>"))
    ips = {}
    for _ in range(600):  # up to 30 s on a loaded machine
        vms = srv.services.engine.store.vms("t1")
        ips = {v.deployment: v.interfaces[0][2] for v in vms if v.interfaces}
        if len(ips) == 2:
            break
        time.sleep(0.05)
    assert ips == {"plain": "10.2.91.62", "owner": "10.2.91.60"}
    net = info(m, "network", "publicIps")
    assert net == {"total": 20, "allocated": 2, "reserved": 1, "available": 17}


def test_storage_reservation_is_honoured_by_placement(srv, nc, image) -> None:  # type: ignore[no-untyped-def]
    m = nc
    mgr = srv.services.engine.capacity
    mgr.refresh()  # read the hosts now (the capacity thread does it every poll)
    zones = {}
    for host in ("hostA", "hostB"):
        free = info(m, "storage", "storageSize", host)["available"]
        assert free >= 100  # the node's 100 GiB pool (and escnc's own, once defined)
        zones[host] = rpc(m, "createStorageReservation", {
            "zoneId": host, "storagePoolReservation": {"storageSize": free}})[
            "reservationData"]["reservationId"]
    disk = "<vcpus>1</vcpus><memory_mb>256</memory_mb><root_disk_mb>2048</root_disk_mb>"
    with pytest.raises(RPCError) as exc:
        m.edit_config(target="running", config=config(image, flavor=disk))
    assert "storage 2048 MiB needed, 0 MiB available outside reservations" in str(exc.value) \
        or "storage 2048 MiB needed" in str(exc.value), str(exc.value)
    m.edit_config(target="running", config=config(
        image, flavor=disk, group=f"<reservation_id>{zones['hostB']}</reservation_id>"))
    for _ in range(600):  # up to 30 s on a loaded machine
        vms = srv.services.engine.store.vms("t1", "d1")
        if vms:
            break
        time.sleep(0.05)
    assert [v.host for v in vms] == ["hostB"]


# -- overcommit admission -----------------------------------------------------------------


def test_overcommit_admission_refuses_what_the_host_cannot_hold(  # type: ignore[no-untyped-def]
    server_factory, image
) -> None:
    srv = server_factory(reconcile_interval=1.0, overcommit={})  # one host: 16 CPUs, 3 GiB
    big = "<vcpus>64</vcpus><memory_mb>1024</memory_mb>"
    with connect(srv) as m:
        with pytest.raises(RPCError) as exc:
            m.edit_config(target="running", config=config(image, flavor=big))
        msg = str(exc.value)
        assert exc.value.tag == "invalid-value"
        assert "host default: vcpus 64 needed, 16 available" in msg, msg
        assert "/esc:vm_group[esc:name='g1']" in (exc.value.path or ""), exc.value.path
        assert srv.services.engine.store.vms() == []
        # scale-out and resize go through the same admission
        m.create_subscription(stream_name="escEvent")
        small = "<vcpus>4</vcpus><memory_mb>256</memory_mb>"
        m.edit_config(target="running", config=config(image, instances=4, flavor=small))
        with pytest.raises(RPCError) as exc:
            m.edit_config(target="running", config=config(image, instances=5, flavor=small))
        assert "vcpus 4 needed, 0 available" in str(exc.value), str(exc.value)
        resize = config(image, instances=4, flavor=small).replace(
            "</flavor></flavors>",
            "</flavor><flavor><name>f2</name><vcpus>5</vcpus><memory_mb>256</memory_mb>"
            "</flavor></flavors>",
        ).replace("<flavor>f1</flavor>", "<flavor>f2</flavor>")
        with pytest.raises(RPCError) as exc:
            m.edit_config(target="running", config=resize)
        assert "cannot be resized to flavor f2: host default: vcpus 1 needed, 0 available" in str(
            exc.value), str(exc.value)
    srv2 = server_factory(reconcile_interval=1.0, overcommit={"vcpus": 4.0})
    with connect(srv2) as m:
        m.edit_config(target="running", config=config(image, flavor=big))  # 64 = 16 x 4
        # accepted: the deploy job places the VM
        assert wait_for(lambda: len(srv2.services.engine.store.vms()) == 1, 20)


def test_admission_counts_vms_whose_flavor_the_edit_does_not_name(  # type: ignore[no-untyped-def]
    server_factory, image
) -> None:
    """An edit is validated on a tree pruned to what it references: the VMs of another
    deployment, whose flavor this edit does not name, still take their capacity."""
    srv = server_factory(reconcile_interval=1.0, overcommit={})  # one host: 16 CPUs
    first = config(image, dep="d1", instances=3, flavor="<vcpus>5</vcpus><memory_mb>64</memory_mb>")
    second = (
        f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><esc_datamodel xmlns="{ESC}">'
        "<flavors><flavor><name>f9</name><vcpus>2</vcpus><memory_mb>64</memory_mb></flavor>"
        "</flavors><tenants><tenant><name>t1</name><deployments><deployment><name>d2</name>"
        "<vm_group><name>g1</name><image>img</image><flavor>f9</flavor>"
        "<bootup_time>30</bootup_time><recovery_wait_time>0</recovery_wait_time>"
        "<scaling><min_active>1</min_active><max_active>1</max_active></scaling>"
        "</vm_group></deployment></deployments></tenant></tenants></esc_datamodel></config>"
    )
    with connect(srv) as m:
        m.edit_config(target="running", config=first)  # 15 of 16 vCPUs
        with pytest.raises(RPCError) as exc:
            m.edit_config(target="running", config=second)  # 2 more do not fit
        assert "vcpus 2 needed, 1 available" in str(exc.value), str(exc.value)


# -- notifications and the clock ----------------------------------------------------------


def test_threshold_crossing_sends_the_seed_notification_once_and_replays(srv, nc) -> None:  # type: ignore[no-untyped-def]
    m = nc
    sub = dict(seed.COMPUTE_SUBSCRIBE, zoneId="hostA")
    sub["threshold"] = [{"capacity_info": "available", "condition": "lt", "value": 15}]
    sid = rpc(m, "subscribeComputeCapacity", sub)["capacityChangeSubscriptionId"]
    m.create_subscription(stream_name="escEvent")
    one = {"numCpuCores": 1, "numVcInstances": 1, "virtualMemSize": 1}
    rpc(m, "createComputeReservation", {"zoneId": "hostB", "computePoolReservation": one})
    rpc(m, "createComputeReservation", {"zoneId": "hostA", "computePoolReservation": one})
    assert quiet(m, "capacityChangeNotification", 0.6) == []  # 15: not below 15
    rid = rpc(m, "createComputeReservation", {"zoneId": "hostA", "computePoolReservation": one})[
        "reservationData"]["reservationId"]
    body = take(m, "capacityChangeNotification")
    got = to_json(body)
    assert seed.same_shape(seed.COMPUTE_NOTIFICATION, got) == [
        "/capacityChangeSubscriptionId unexpected"
    ]
    assert got["zoneId"] == "hostA" and got["capacityChangeSubscriptionId"] == sid
    assert got["resourceDescriptor"] == {"computeResourceTypeId": "vcInstances"}
    assert got["capacityInformation"] == {
        "available": 14, "reserved": 2, "total": 16, "allocated": 0
    }
    rpc(m, "createComputeReservation", {"zoneId": "hostA", "computePoolReservation": one})
    assert quiet(m, "capacityChangeNotification", 0.6) == []  # still below: no second one
    rpc(m, "terminateComputeReservation", {"reservationId": rid})
    assert quiet(m, "capacityChangeNotification", 0.4) == []  # 14 -> 15 is no crossing down
    rpc(m, "unsubscribeComputeCapacity", {"capacityChangeSubscriptionId": sid})
    with pytest.raises(RPCError) as exc:
        rpc(m, "unsubscribeComputeCapacity", {"capacityChangeSubscriptionId": sid})
    assert exc.value.tag == "data-missing"

    with connect(srv) as late:  # replay: the notification is stored
        late.create_subscription(stream_name="escEvent", start_time="2000-01-01T00:00:00Z")
        again = to_json(take(late, "capacityChangeNotification"))
        assert again["notificationId"] == got["notificationId"]


def test_reservation_lifecycle_follows_the_clock(srv, nc) -> None:  # type: ignore[no-untyped-def]
    m = nc
    mgr = srv.services.engine.capacity
    clock = ManualClock(start=time.time())
    mgr.clock = clock
    now = clock.now()
    body = {
        "startTime": iso(3600, now),
        "stopTime": iso(7200, now),
        "zoneId": "hostA",
        "computePoolReservation": {"numCpuCores": 2, "numVcInstances": 1, "virtualMemSize": 1},
    }
    data = rpc(m, "createComputeReservation", body)["reservationData"]
    rid = data["reservationId"]
    assert data["reservationStatus"] == "initialized"
    m.create_subscription(stream_name="escEvent")
    clock.advance(3601)
    change = to_json(take(m, "reservationStatusChange"))
    assert (change["reservationId"], change["reservationStatus"]) == (rid, "active")
    got = rpc(m, "queryComputeReservation", {"queryReservationFilter": {"reservationId": rid}})
    assert got["reservationData"]["reservationStatus"] == "active"
    clock.advance(3600)
    change = to_json(take(m, "reservationStatusChange"))
    assert (change["reservationId"], change["reservationStatus"]) == (rid, "expired")
    assert info(m, "compute", "vcpus", "hostA")["reserved"] == 0
    with pytest.raises(RPCError) as exc:
        rpc(m, "updateComputeReservation", {"reservationId": rid, "stopTime": iso(9000, now)})
    assert "is expired" in str(exc.value)


def test_reservation_survives_restart(server_factory, vims, tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "st"
    s1 = server_factory(state_dir=state, vims=vims, **CAPACITY_SETTINGS)
    pool = {"numCpuCores": 1, "numVcInstances": 1, "virtualMemSize": 1}
    with connect(s1) as m:
        rid = rpc(m, "createComputeReservation", {
            "zoneId": "hostB", "computePoolReservation": pool})["reservationData"]["reservationId"]
    s1.stop()
    s2 = server_factory(state_dir=state, vims=vims, **CAPACITY_SETTINGS)
    with connect(s2) as m:
        got = rpc(m, "queryComputeReservation", {"queryReservationFilter": {"reservationId": rid}})
        assert got["reservationData"]["reservationStatus"] == "active"
        assert info(m, "compute", "memory", "hostB")["reserved"] == 1024


def test_a_reservation_status_lost_by_a_kill_is_announced_once(  # type: ignore[no-untyped-def]
    server_factory, vims, tmp_path
) -> None:
    """The manager saves a reservation's new status, then publishes it under a key: a
    kill -9 in between leaves the saved status and no event (made here by deleting the
    event and its key from the log); each restart publishes what the log lacks, once."""
    import sqlite3

    state = tmp_path / "st"
    s1 = server_factory(state_dir=state, vims=vims, **CAPACITY_SETTINGS)
    pool = {"numCpuCores": 1, "numVcInstances": 1, "virtualMemSize": 1}
    with connect(s1) as m:
        m.create_subscription(stream_name="escEvent")
        rid = rpc(m, "createComputeReservation", {
            "zoneId": "hostB", "computePoolReservation": pool})["reservationData"]["reservationId"]
        change = to_json(take(m, "reservationStatusChange"))
        assert (change["reservationId"], change["reservationStatus"]) == (rid, "active")
    s1.stop()
    db = sqlite3.connect(state / "events.sqlite3")
    with db:
        assert db.execute("DELETE FROM event_keys WHERE event_key LIKE ?",
                          (f"reservation/{rid}/%",)).rowcount == 1
        for seq, body in db.execute("SELECT seq, body FROM events").fetchall():
            if rid.encode() in bytes(body):
                db.execute("DELETE FROM events WHERE seq = ?", (seq,))
    db.close()

    def announced() -> int:
        db = sqlite3.connect(state / "events.sqlite3")
        try:
            rows = db.execute("SELECT body FROM events").fetchall()
        finally:
            db.close()
        return sum(b"reservationStatusChange" in bytes(r[0]) and rid.encode() in bytes(r[0])
                   for r in rows)

    assert announced() == 0
    for _ in range(2):  # the first restart publishes it, the second does not repeat it
        srv = server_factory(state_dir=state, vims=vims, **CAPACITY_SETTINGS)
        srv.stop()
        assert announced() == 1


def test_bad_input_gets_precise_rpc_errors(nc) -> None:  # type: ignore[no-untyped-def]
    m = nc
    with pytest.raises(RPCError) as exc:
        rpc(m, "queryComputeReservation", {"queryReservationFilter": {"reservationId": "nope"}})
    assert exc.value.tag == "data-missing" and "reservation nope does not exist" in str(exc.value)
    with pytest.raises(RPCError) as exc:
        rpc(m, "createComputeReservation", {
            "startTime": iso(100), "stopTime": iso(50),
            "computePoolReservation": {"numCpuCores": 1}})
    assert exc.value.tag == "invalid-value" and "is not after startTime" in str(exc.value)
    assert exc.value.path == "/esc:createComputeReservation/esc:stopTime"
    with pytest.raises(RPCError) as exc:
        info(m, "compute", "gpus")
    assert exc.value.tag == "invalid-value"
    with pytest.raises(RPCError) as exc:
        info(m, "compute", "memory", "hostZ")
    assert exc.value.tag == "data-missing" and "resource zone hostZ unknown" in str(exc.value)
    assert exc.value.path == "/esc:queryComputeCapacity/esc:zoneId"
    with pytest.raises(RPCError) as exc:
        rpc(m, "createComputeReservation", {"zoneId": "hostA", "computePoolReservation": {
            "numCpuCores": 0}})
    assert "reserves nothing" in str(exc.value)
    with pytest.raises(RPCError) as exc:
        rpc(m, "createComputeReservation", {"zoneId": "hostA", "computePoolReservation": {
            "numCpuCores": 17}})
    assert exc.value.tag == "resource-denied"
    assert "zone hostA cannot hold the reservation: vcpus 17 needed, 16 available" in str(
        exc.value)
    with pytest.raises(RPCError) as exc:
        rpc(m, "createNetworkReservation", {"networkReservation": {"numPublicIps": 21}})
    assert exc.value.tag == "resource-denied" and "21 public address(es) requested, 20" in str(
        exc.value)
    with pytest.raises(RPCError) as exc:
        rpc(m, "createComputeReservation", {})
    assert exc.value.tag == "missing-element"
    with pytest.raises(RPCError) as exc:
        rpc(m, "subscribeStorageCapacity", {"resourceDescriptor": [
            {"storageResourceTypeId": "volumes"}], "threshold": [
            {"condition": "between", "value": 1}]})
    assert exc.value.tag == "invalid-value"
