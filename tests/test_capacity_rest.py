"""The seed's REST shapes (seed 003), protocol-neutral: operations/capacity_rest.py
called with the seed's JSON payloads on a running server's capacity manager (the
HTTP face mounts these functions; NETCONF is tests/test_capacity.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

import capacity_seed as seed
from escnc.engine.capacity.events import capacity_notification
from escnc.engine.clock import ManualClock
from escnc.operations import capacity_rest as api
from test_capacity import CAPACITY_SETTINGS, vims  # noqa: F401 (the fixture)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def mgr(server_factory, vims):  # type: ignore[no-untyped-def]  # noqa: F811
    return server_factory(vims=vims, **CAPACITY_SETTINGS).services.engine.capacity


def wire(data: Any) -> Any:
    """What a JSON client sends (the payloads go through json as they would)."""
    return json.loads(json.dumps(data))


def test_every_seed_example_through_the_rest_mapping(mgr) -> None:  # type: ignore[no-untyped-def]
    for kind, sub, sub_resp, query, query_resp in (
        ("compute", seed.COMPUTE_SUBSCRIBE, seed.COMPUTE_SUBSCRIBE_RESPONSE,
         seed.COMPUTE_QUERY, seed.COMPUTE_QUERY_RESPONSE),
        ("network", seed.NETWORK_SUBSCRIBE, seed.NETWORK_SUBSCRIBE_RESPONSE,
         seed.NETWORK_QUERY, seed.NETWORK_QUERY_RESPONSE),
        ("storage", seed.STORAGE_SUBSCRIBE, seed.STORAGE_SUBSCRIBE_RESPONSE,
         seed.STORAGE_QUERY, seed.STORAGE_QUERY_RESPONSE),
    ):
        got = api.subscribe_capacity(mgr, kind, wire(sub))
        assert seed.same_shape(sub_resp, got) == [], kind
        got = api.query_capacity(mgr, kind, wire(query))
        assert seed.same_shape(query_resp, got) == [], kind
        assert json.loads(json.dumps(got)) == got

    created = api.create_reservation(mgr, "compute", wire(seed.COMPUTE_CREATE_POOL))
    assert seed.same_shape(seed.COMPUTE_CREATE_POOL_RESPONSE, created) == []
    assert created["reservationData"]["computePoolReserved"]["zoneId"] == seed.ZONE
    rid = created["reservationData"]["reservationId"]
    got = api.create_reservation(mgr, "compute", wire(seed.COMPUTE_CREATE_CONTAINERS))
    assert seed.same_shape(seed.COMPUTE_CREATE_CONTAINERS_RESPONSE, got) == []
    q = wire(seed.COMPUTE_QUERY_RESERVATION)
    q["queryReservationFilter"][0]["reservationId"] = rid
    got = api.query_reservation(mgr, "compute", q)
    assert seed.same_shape(seed.COMPUTE_QUERY_RESERVATION_RESPONSE, got) == []
    got = api.update_reservation(mgr, "compute", dict(seed.COMPUTE_UPDATE, reservationId=rid))
    assert seed.same_shape(seed.COMPUTE_UPDATE_RESPONSE, got) == []
    assert got["reservationData"]["startTime"] == "2015-09-14T16:00:00Z"
    got = api.terminate_reservation(mgr, "compute", rid)
    assert got["reservationData"]["reservationStatus"] == "terminated"

    got = api.create_reservation(mgr, "network", wire(seed.NETWORK_CREATE))
    assert seed.same_shape(seed.NETWORK_RESERVATION, got) == []
    assert got["reservationData"]["networkReserved"] == {"publicIps": ["10.2.91.60", "10.2.91.61"]}
    nid = got["reservationData"]["reservationId"]
    got = api.query_reservation(mgr, "network", None, {"reservationId": nid})  # query parameter
    assert seed.same_shape(seed.NETWORK_RESERVATION, got) == []
    got = api.update_reservation(mgr, "network", dict(seed.NETWORK_UPDATE, reservationId=nid))
    assert seed.same_shape(seed.NETWORK_RESERVATION, got) == []

    got = api.create_reservation(mgr, "storage", wire(seed.STORAGE_CREATE))
    assert seed.same_shape(seed.STORAGE_RESERVATION, got) == []
    sid = got["reservationData"]["reservationId"]
    got = api.update_reservation(mgr, "storage", dict(seed.STORAGE_UPDATE, reservationId=sid))
    assert seed.same_shape(seed.STORAGE_RESERVATION, got) == []
    assert got["reservationData"]["storagePoolReserved"]["storageSize"] == 10  # GiB
    got = api.terminate_reservation(mgr, "storage", sid)
    assert got["reservationData"]["reservationStatus"] == "terminated"


def test_the_seed_status_codes(mgr) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(api.CapacityRequestError) as exc:  # 400: resourceDescriptor missing
        api.subscribe_capacity(mgr, "compute", {"zoneId": "12345"})
    assert (exc.value.status, exc.value.field) == (400, "resourceDescriptor")
    with pytest.raises(api.CapacityRequestError) as exc:  # 404: resource zone unknown
        api.query_capacity(mgr, "compute", dict(seed.COMPUTE_QUERY, zoneId="99999"))
    assert exc.value.status == 404 and "resource zone 99999 unknown" in exc.value.message
    with pytest.raises(api.CapacityRequestError) as exc:  # 404: reservation id unknown
        api.query_reservation(mgr, "storage", seed.STORAGE_QUERY_RESERVATION)
    assert exc.value.status == 404 and "vvvv-wwww-xxxx does not exist" in exc.value.message
    with pytest.raises(api.CapacityRequestError) as exc:
        api.create_reservation(mgr, "compute", {"computePoolReservation": {"numCpuCores": "x"}})
    assert exc.value.status == 400 and exc.value.field == "computePoolReservation/numCpuCores"
    with pytest.raises(api.CapacityRequestError) as exc:
        api.create_reservation(mgr, "compute", {"computePoolReservation": {"numCpuCores": 10**20}})
    assert exc.value.status == 400 and "out of range" in exc.value.message
    with pytest.raises(api.CapacityRequestError) as exc:
        api.create_reservation(mgr, "compute", {"computePoolReservation": {"numCpuCores": 999}})
    assert exc.value.status == 409 and exc.value.tag == "resource-denied"
    with pytest.raises(api.CapacityRequestError) as exc:
        api.query_capacity(mgr, "gpu", seed.COMPUTE_QUERY)
    assert exc.value.status == 404
    # a GET without body: query parameters
    got = api.query_capacity(mgr, "compute", None, {"computeResourceTypeId": "vcpus",
                                                    "zoneId": "hostA", "limit": "10"})
    assert got["capacityInformation"]["total"] == 16


def test_notification_body_is_the_seeds(mgr) -> None:  # type: ignore[no-untyped-def]
    for kind, want in (("compute", seed.COMPUTE_NOTIFICATION),
                       ("network", seed.NETWORK_NOTIFICATION),
                       ("storage", seed.STORAGE_NOTIFICATION)):
        rtype = next(iter(want["resourceDescriptor"].values()))
        el = capacity_notification("sub", kind, want.get("zoneId", ""), rtype,
                                   want["capacityInformation"], time.time())
        got = api.notification_body(el)
        assert seed.same_shape(want, got) == [], kind
        assert got["capacityInformation"] == want["capacityInformation"]
        assert got["resourceDescriptor"] == want["resourceDescriptor"]


def test_routes_cover_the_seed_endpoints() -> None:
    paths = {(method, path) for method, path, _f, _s in api.ROUTES}
    for kind in ("compute", "network", "storage"):
        for want in (
            ("GET", "/capacity/{kind}/query"),
            ("POST", "/capacity/{kind}/subscribe"),
            ("POST", "/reservation/{kind}/create"),
            ("GET", "/reservation/{kind}/query"),
            ("POST", "/reservation/{kind}/update"),
            ("DELETE", "/reservation/{kind}/{id}"),
        ):
            assert want in paths, (kind, want)
    statuses = {path: status for _m, path, _f, status in api.ROUTES}
    assert statuses["/reservation/{kind}/create"] == 201  # the seed's 201 CREATED


def test_capacity_settings_from_the_config_file(tmp_path: Path) -> None:
    from escnc.cli.server import CliError, load_config
    from escnc.settings import Settings

    conf = tmp_path / "escnc.toml"
    conf.write_text(
        'public_ip_ranges = ["10.2.91.60-10.2.91.79"]\n'
        "[overcommit]\nvcpus = 4\nmemory = 1.5\n"
        '[capacity_zones]\n"12345" = ["hostA", "hostB"]\n'
        "[capacity_limits]\nvolumes = 10\n"
    )
    s = load_config(conf, Settings(state_dir=tmp_path))
    assert s.overcommit == {"vcpus": 4.0, "memory": 1.5}
    assert s.capacity_zones == {"12345": ["hostA", "hostB"]}
    assert s.public_ip_ranges == ["10.2.91.60-10.2.91.79"]
    assert s.capacity_limits == {"volumes": 10}
    conf.write_text('[overcommit]\nvcpus = "lots"\n')
    with pytest.raises(CliError) as exc:
        load_config(conf, Settings(state_dir=tmp_path))
    assert "overcommit.vcpus must be a number" in str(exc.value)


def test_rows_of_the_compute_only_version_still_load(tmp_path: Path) -> None:
    from escnc.engine.capacity.records import RecordStore

    store = RecordStore(tmp_path / "reservations.sqlite3")
    old_r = {"id": "r1", "zone": "hostA", "start": 0.0, "stop": None, "created": 0.0,
             "amount": {"instances": 1, "vcpus": 2, "memory_mb": 512},
             "containers": [], "terminated": False}
    old_s = {"id": "s1", "zone": "", "types": ["vcInstances"], "created": 0.0,
             "thresholds": [{"capacity_info": "used", "condition": "gt", "value": 3}]}
    store._put("reservations", "r1", json.dumps(old_r))
    store._put("subscriptions", "s1", json.dumps(old_s))
    [r] = store.reservations()
    assert (r.kind, r.amount.vcpus, r.status(1.0)) == ("compute", 2, "active")
    [s] = store.subscriptions()
    assert s.kind == "compute" and s.thresholds[0].capacity_info == "allocated"
    store.close()


def test_a_past_period_sees_the_reservations_that_held_then(mgr) -> None:  # type: ignore[no-untyped-def]
    body = {
        "startTime": "2015-09-21T01:00:00Z",
        "zoneId": "hostA",
        "computePoolReservation": {"numCpuCores": 3, "numVcInstances": 1},
    }
    rid = api.create_reservation(mgr, "compute", body)["reservationData"]["reservationId"]
    stop = time.time() + 3600
    update = {"reservationId": rid, "stopTime": api.format_time(stop)}
    api.update_reservation(mgr, "compute", update)
    mgr.clock = ManualClock(start=stop + 60)  # it has expired
    q = {"zoneId": "hostA", "resourceDescriptor": {"computeResourceTypeId": "vcpus"}}
    assert api.query_capacity(mgr, "compute", q)["capacityInformation"]["reserved"] == 0
    q["timePeriod"] = {"startTime": "2016-01-01T00:00:00Z", "stopTime": "2016-01-02T00:00:00Z"}
    assert api.query_capacity(mgr, "compute", q)["capacityInformation"]["reserved"] == 3
