"""Compute capacity, reservations and capacity-change notifications (ETSI NFV IFA
005/006 subset, seed 003) over NETCONF with ncclient, on two libvirt test-driver hosts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree
from ncclient.operations.rpc import RPCError

from conftest import connect
from conftest import test_host_uri as host_uri
from escnc.ns import ESC

pytestmark = pytest.mark.timeout(120)

NS = {"e": ESC}
E = f"{{{ESC}}}"


def iso(seconds_from_now: float) -> str:
    t = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def call(m, xml: str) -> etree._Element:  # type: ignore[no-untyped-def]
    reply = m.dispatch(etree.fromstring(xml))
    return etree.fromstring(reply.xml.encode())


def capacity(m, rtype: str, zone: str = "", period: str = "") -> dict[str, dict[str, int]]:  # type: ignore[no-untyped-def]
    z = f"<zoneId>{zone}</zoneId>" if zone else ""
    reply = call(
        m,
        f'<queryComputeCapacity xmlns="{ESC}">{z}<resourceDescriptor>'
        f"<computeResourceTypeId>{rtype}</computeResourceTypeId></resourceDescriptor>{period}"
        "</queryComputeCapacity>",
    )
    out = {}
    for zone_el in reply.iterfind(".//e:zone", NS):
        info = zone_el.find("e:capacityInformation", NS)
        assert info is not None
        assert zone_el.findtext("e:computeResourceTypeId", namespaces=NS) == rtype
        out[zone_el.findtext("e:zoneId", namespaces=NS) or ""] = {
            c.tag.split("}")[1]: int(c.text or 0) for c in info
        }
    return out


def reserve_pool(
    m, cores: int, instances: int, mem: int, zone: str = "", extra: str = ""
) -> etree._Element:  # type: ignore[no-untyped-def]
    z = f"<zoneId>{zone}</zoneId>" if zone else ""
    reply = call(
        m,
        f'<createComputeReservation xmlns="{ESC}">{extra}{z}<computePoolReservation>'
        f"<numCpuCores>{cores}</numCpuCores><numVcInstances>{instances}</numVcInstances>"
        f"<virtualMemSize>{mem}</virtualMemSize></computePoolReservation>"
        "</createComputeReservation>",
    )
    data = reply.find(".//e:reservationData", NS)
    assert data is not None
    return data


def query(m, *ids: str) -> list[etree._Element]:  # type: ignore[no-untyped-def]
    filters = "".join(
        f"<queryReservationFilter><reservationId>{i}</reservationId></queryReservationFilter>"
        for i in ids
    )
    reply = call(m, f'<queryComputeReservation xmlns="{ESC}">{filters}</queryComputeReservation>')
    return reply.findall(".//e:reservationData", NS)


def terminate(m, *ids: str) -> list[str]:  # type: ignore[no-untyped-def]
    body = "".join(f"<reservationId>{i}</reservationId>" for i in ids)
    reply = call(
        m, f'<terminateComputeReservation xmlns="{ESC}">{body}</terminateComputeReservation>'
    )
    return [e.text or "" for e in reply.iterfind(".//e:reservationId", NS)]


def config(image: str, dep: str = "d1", instances: int = 1, group_extra: str = "") -> str:
    return f"""<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
<esc_datamodel xmlns="{ESC}">
  <images><image><name>img</name><src>{image}</src></image></images>
  <flavors><flavor><name>small</name><vcpus>1</vcpus><memory_mb>512</memory_mb></flavor></flavors>
  <tenants><tenant><name>t1</name><deployments><deployment><name>{dep}</name>
    <vm_group><name>g1</name><image>img</image><flavor>small</flavor>
      <bootup_time>30</bootup_time><recovery_wait_time>0</recovery_wait_time>
      <scaling><min_active>{instances}</min_active><max_active>{instances}</max_active>
        <elastic>true</elastic></scaling>{group_extra}
    </vm_group>
  </deployment></deployments></tenant></tenants>
</esc_datamodel></config>"""


def wait_event(m, want: str, timeout: float = 30.0) -> etree._Element:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        n = m.take_notification(block=True, timeout=0.5)
        if n is None:
            continue
        ev = etree.fromstring(n.notification_xml.encode()).find(".//e:escEvent", NS)
        if ev is None:
            continue
        etype = ev.findtext("e:event/e:type", namespaces=NS)
        seen.append(etype)
        if etype == want:
            return ev
    raise AssertionError(f"no {want}: {seen}")


def capacity_events(m, seconds: float) -> list[etree._Element]:  # type: ignore[no-untyped-def]
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        n = m.take_notification(block=True, timeout=0.2)
        if n is None:
            continue
        ev = etree.fromstring(n.notification_xml.encode()).find(".//e:escEvent", NS)
        if ev is not None and ev.findtext("e:event/e:type", namespaces=NS) == (
            "COMPUTE_CAPACITY_CHANGE"
        ):
            out.append(ev)
    return out


def opdata_reservations(m) -> dict[str, etree._Element]:  # type: ignore[no-untyped-def]
    flt = f'<esc_datamodel xmlns="{ESC}"><opdata><reservations/></opdata></esc_datamodel>'
    data = etree.fromstring(m.get(filter=("subtree", flt)).data_xml.encode())
    return {
        r.findtext("e:reservationId", namespaces=NS) or "": r
        for r in data.iterfind(".//e:reservations/e:reservation", NS)
    }


@pytest.fixture
def vims(tmp_path: Path) -> dict[str, str]:
    d = tmp_path / "hosts2"
    return {"hostA": host_uri(d, "hostA"), "hostB": host_uri(d, "hostB")}


@pytest.fixture
def srv(server_factory, vims):  # type: ignore[no-untyped-def]
    return server_factory(vims=vims, capacity_poll_secs=0.1, reconcile_interval=1.0)


@pytest.fixture
def nc(srv) -> Iterator:  # type: ignore[no-untyped-def]
    with connect(srv) as m:
        yield m


@pytest.fixture
def image(tmp_path: Path) -> str:
    path = tmp_path / "img.qcow2"
    path.write_bytes(b"\0" * 4096)
    return str(path)


def test_capacity_matches_libvirt_and_follows_a_deploy(srv, nc, image) -> None:  # type: ignore[no-untyped-def]
    info = srv.services.vims.get("hostA").connection().getInfo()  # [model, MiB, cpus, ...]
    mem = capacity(nc, "memory")
    assert set(mem) == {"hostA", "hostB"}
    assert mem["hostA"] == {"total": info[1], "allocated": 0, "reserved": 0, "available": info[1]}
    assert capacity(nc, "vcpus", "hostB")["hostB"]["total"] == info[2]
    assert capacity(nc, "vcInstances", "hostA")["hostA"]["available"] == info[2]

    nc.create_subscription(stream_name="escEvent")
    nc.edit_config(target="running", config=config(image))
    wait_event(nc, "SERVICE_ALIVE")
    assert capacity(nc, "memory", "hostA")["hostA"] == {
        "total": info[1],
        "allocated": 512,
        "reserved": 0,
        "available": info[1] - 512,
    }
    cpus = capacity(nc, "vcpus", "hostA")["hostA"]
    assert cpus["allocated"] == 1 and cpus["available"] == info[2] - 1
    assert capacity(nc, "vcInstances")["hostB"]["allocated"] == 0


def test_reservation_create_query_update_terminate(nc) -> None:  # type: ignore[no-untyped-def]
    data = reserve_pool(nc, 2, 2, 2048, "hostA", extra=f"<stopTime>{iso(3600)}</stopTime>")
    rid = data.findtext("e:reservationId", namespaces=NS) or ""
    assert len(rid) == 36
    assert data.findtext("e:reservationStatus", namespaces=NS) == "active"
    assert data.findtext("e:computePoolReserved/e:zoneId", namespaces=NS) == "hostA"
    assert data.findtext("e:computePoolReserved/e:virtualMemSize", namespaces=NS) == "2048"
    mem = capacity(nc, "memory", "hostA")["hostA"]
    assert mem["reserved"] == 2048 and mem["available"] == mem["total"] - 2048
    assert capacity(nc, "vcInstances", "hostA")["hostA"]["reserved"] == 2
    # a period after the reservation's stopTime sees no reservation
    later = f"<timePeriod><startTime>{iso(7200)}</startTime></timePeriod>"
    assert capacity(nc, "memory", "hostA", later)["hostA"]["reserved"] == 0

    [got] = query(nc, rid)
    assert got.findtext("e:computePoolReserved/e:numCpuCores", namespaces=NS) == "2"
    stop = iso(7200)
    reply = call(
        nc,
        f'<updateComputeReservation xmlns="{ESC}"><reservationId>{rid}</reservationId>'
        f"<stopTime>{stop}</stopTime></updateComputeReservation>",
    )
    assert reply.findtext(".//e:reservationData/e:stopTime", namespaces=NS) == stop
    op = opdata_reservations(nc)[rid]
    assert op.findtext("e:status", namespaces=NS) == "active"
    assert op.findtext("e:zoneId", namespaces=NS) == "hostA"
    assert op.findtext("e:resources/e:virtualMemSize", namespaces=NS) == "2048"
    assert op.findtext("e:stopTime", namespaces=NS) == stop

    # containers, zone chosen by escnc (the seed's second example)
    reply = call(
        nc,
        f"""<createComputeReservation xmlns="{ESC}"><startTime>{iso(-5)}</startTime>
        <virtualizationContainerReservation><containerId>myContainer</containerId>
          <containerFlavor><flavorId>myFlavor</flavorId>
            <virtualCpu><numVirtualCpu>2</numVirtualCpu><cpuArchitecture>x86</cpuArchitecture>
            </virtualCpu>
            <virtualMemory><numaEnabled>False</numaEnabled><virtualMemSize>16</virtualMemSize>
            </virtualMemory>
            <virtualStorage><typeOfStorage>volume</typeOfStorage><sizeOfStorage>16</sizeOfStorage>
            </virtualStorage></containerFlavor>
        </virtualizationContainerReservation></createComputeReservation>""",
    )
    vc = reply.find(".//e:virtualizationContainerReserved", NS)
    assert vc is not None and vc.findtext("e:containerId", namespaces=NS) == "myContainer"
    assert vc.findtext("e:zoneId", namespaces=NS) == "hostB"  # the one with most room
    assert vc.findtext("e:containerFlavor/e:virtualCpu/e:numVirtualCpu", namespaces=NS) == "2"
    rid2 = reply.findtext(".//e:reservationId", namespaces=NS) or ""
    assert capacity(nc, "vcpus", "hostB")["hostB"]["reserved"] == 2

    assert len(query(nc)) == 2
    assert terminate(nc, rid, rid2) == [rid, rid2]
    [got] = query(nc, rid)
    assert got.findtext("e:reservationStatus", namespaces=NS) == "terminated"
    assert capacity(nc, "memory", "hostA")["hostA"]["reserved"] == 0
    assert opdata_reservations(nc)[rid2].findtext("e:status", namespaces=NS) == "terminated"

    with pytest.raises(RPCError) as exc:
        reserve_pool(nc, 1, 1, 10**6, "hostA")
    assert exc.value.tag == "resource-denied" and "zone hostA cannot hold" in str(exc.value)
    with pytest.raises(RPCError) as exc:
        reserve_pool(nc, 100, 1, 1)
    assert exc.value.tag == "resource-denied" and "no zone can hold" in str(exc.value)


def test_deployment_needs_unreserved_capacity_or_its_reservation(srv, nc, image) -> None:  # type: ignore[no-untyped-def]
    total = capacity(nc, "memory", "hostA")["hostA"]["total"]
    ra = reserve_pool(nc, 2, 2, total - 256, "hostA").findtext("e:reservationId", namespaces=NS)
    rb = reserve_pool(nc, 2, 2, total, "hostB").findtext("e:reservationId", namespaces=NS)
    with pytest.raises(RPCError) as exc:
        nc.edit_config(target="running", config=config(image))
    msg = str(exc.value)
    assert exc.value.tag == "invalid-value"
    assert "not enough capacity outside reservations" in msg and "hostA" in msg, msg
    with pytest.raises(RPCError) as exc:
        nc.edit_config(
            target="running",
            config=config(image, group_extra="<reservation_id>nope</reservation_id>"),
        )
    assert "reservation nope of vm_group g1 does not exist" in str(exc.value)

    nc.create_subscription(stream_name="escEvent")
    nc.edit_config(
        target="running", config=config(image, group_extra=f"<reservation_id>{rb}</reservation_id>")
    )
    alive = wait_event(nc, "SERVICE_ALIVE")
    assert alive.findtext("e:status", namespaces=NS) == "SUCCESS"
    vm = srv.services.engine.store.vms("t1", "d1")[0]
    assert vm.host == "hostB"  # the reservation's zone, not the default host
    op = opdata_reservations(nc)[rb or ""]
    assert op.findtext("e:consumed/e:virtualMemSize", namespaces=NS) == "512"
    assert op.findtext("e:consumed/e:numVcInstances", namespaces=NS) == "1"
    mem = capacity(nc, "memory", "hostB")["hostB"]
    assert mem == {"total": total, "allocated": 512, "reserved": total - 512, "available": 0}

    # a migration cannot take hostA's reserved capacity (only 256 MiB left outside it)
    with pytest.raises(RPCError) as exc:
        call(
            nc,
            f'<vmMigrate xmlns="{ESC}"><vmName>{vm.generated_name}</vmName>'
            "<migrationType>cold</migrationType></vmMigrate>",
        )
    assert "no host can take" in str(exc.value)
    assert terminate(nc, ra or "") == [ra]


def test_reservation_survives_restart(server_factory, vims, tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "st"
    s1 = server_factory(state_dir=state, vims=vims, reconcile_interval=1.0)
    with connect(s1) as m:
        rid = reserve_pool(m, 1, 1, 100, "hostB").findtext("e:reservationId", namespaces=NS)
    s1.stop()
    s2 = server_factory(state_dir=state, vims=vims, reconcile_interval=1.0)
    with connect(s2) as m:
        [got] = query(m, rid or "")
        assert got.findtext("e:reservationStatus", namespaces=NS) == "active"
        assert capacity(m, "memory", "hostB")["hostB"]["reserved"] == 100


def test_reservation_expires_at_stop_time(nc) -> None:  # type: ignore[no-untyped-def]
    data = reserve_pool(nc, 1, 1, 300, "hostA", extra=f"<stopTime>{iso(2)}</stopTime>")
    rid = data.findtext("e:reservationId", namespaces=NS) or ""
    assert capacity(nc, "memory", "hostA")["hostA"]["reserved"] == 300
    time.sleep(2.6)
    [got] = query(nc, rid)
    assert got.findtext("e:reservationStatus", namespaces=NS) == "expired"
    assert capacity(nc, "memory", "hostA")["hostA"]["reserved"] == 0
    assert opdata_reservations(nc)[rid].findtext("e:status", namespaces=NS) == "expired"
    with pytest.raises(RPCError) as exc:
        call(
            nc,
            f'<updateComputeReservation xmlns="{ESC}"><reservationId>{rid}</reservationId>'
            f"<stopTime>{iso(60)}</stopTime></updateComputeReservation>",
        )
    assert "is expired" in str(exc.value)


def test_threshold_notification_fires_once_when_crossed(nc) -> None:  # type: ignore[no-untyped-def]
    m = nc
    reply = call(
        m,
        f"""<subscribeComputeCapacity xmlns="{ESC}"><zoneId>hostA</zoneId>
        <resourceDescriptor><computeResourceTypeId>vcInstances</computeResourceTypeId>
        </resourceDescriptor>
        <threshold><capacity_info>available</capacity_info><condition>lt</condition>
          <value>15</value></threshold></subscribeComputeCapacity>""",
    )
    sid = reply.findtext(".//e:capacityChangeSubscriptionId", namespaces=NS)
    assert sid and reply.findtext(".//e:created", namespaces=NS)
    m.create_subscription(stream_name="escEvent")
    reserve_pool(m, 1, 1, 10, "hostB")  # other zone: nothing
    reserve_pool(m, 1, 1, 10, "hostA")  # available 15: not below 15
    assert capacity_events(m, 0.6) == []
    rid = reserve_pool(m, 1, 1, 10, "hostA").findtext("e:reservationId", namespaces=NS)
    [ev] = capacity_events(m, 1.0)
    assert ev.findtext("e:status", namespaces=NS) == "SUCCESS"
    msg = ev.findtext("e:status_message", namespaces=NS) or ""
    assert "zone hostA vcInstances" in msg and "available 14" in msg and sid in msg, msg
    reserve_pool(m, 1, 1, 10, "hostA")  # still below: no second event
    assert capacity_events(m, 0.6) == []
    terminate(m, rid or "")
    assert capacity_events(m, 0.4) == []  # 14 -> 15 is not a crossing downwards
    call(
        m,
        f'<unsubscribeComputeCapacity xmlns="{ESC}"><capacityChangeSubscriptionId>{sid}'
        "</capacityChangeSubscriptionId></unsubscribeComputeCapacity>",
    )


def test_bad_input_gets_precise_rpc_errors(nc) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RPCError) as exc:
        query(nc, "no-such-id")
    assert exc.value.tag == "data-missing" and "reservation no-such-id does not exist" in str(
        exc.value
    )
    with pytest.raises(RPCError) as exc:
        terminate(nc, "no-such-id")
    assert exc.value.tag == "data-missing"
    with pytest.raises(RPCError) as exc:
        call(
            nc,
            f'<updateComputeReservation xmlns="{ESC}"><reservationId>x</reservationId>'
            "</updateComputeReservation>",
        )
    assert exc.value.tag == "data-missing" and "reservation x does not exist" in str(exc.value)
    with pytest.raises(RPCError) as exc:
        reserve_pool(
            nc, 1, 1, 1, extra=f"<startTime>{iso(100)}</startTime><stopTime>{iso(50)}</stopTime>"
        )
    assert exc.value.tag == "invalid-value"
    assert "stopTime" in str(exc.value) and "is not after startTime" in str(exc.value)
    assert exc.value.path == "/esc:createComputeReservation/esc:stopTime"
    with pytest.raises(RPCError) as exc:
        capacity(nc, "gpus")
    assert exc.value.tag == "invalid-value"
    assert exc.value.path.endswith("esc:resourceDescriptor/esc:computeResourceTypeId")
    assert "compute-resource-type" in str(exc.value)
    with pytest.raises(RPCError) as exc:
        capacity(nc, "memory", "hostZ")
    assert exc.value.tag == "data-missing" and "resource zone hostZ unknown" in str(exc.value)
    with pytest.raises(RPCError) as exc:
        reserve_pool(nc, 0, 0, 0, "hostA")
    assert "reserves nothing" in str(exc.value)
    with pytest.raises(RPCError) as exc:
        call(nc, f'<createComputeReservation xmlns="{ESC}"/>')
    assert exc.value.tag in ("missing-element", "data-missing")
