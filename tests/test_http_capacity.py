"""The seed's capacity and reservation endpoints (seed 003) on escnc's HTTP server,
through httpx with the seed's payloads: the same answers as the protocol-neutral
mapping (operations/capacity_rest.py) and NETCONF, the seed's JSON types, NACM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

import capacity_seed as seed
from conftest import connect
from escnc.operations import capacity_rest as api
from http_helpers import client
from test_capacity import CAPACITY_SETTINGS, vims  # noqa: F401 (the fixture)

pytestmark = pytest.mark.timeout(120)
ESC = "http://www.cisco.com/esc/esc"


@pytest.fixture
def srv(server_factory, vims):  # type: ignore[no-untyped-def]  # noqa: F811
    return server_factory(vims=vims, http_listen="127.0.0.1:0", **CAPACITY_SETTINGS)


def _ints_where_the_seed_has_ints(seed_value: Any, got: Any, where: str = "") -> list[str]:
    if isinstance(seed_value, list):
        return _ints_where_the_seed_has_ints(seed_value[0], got[0] if isinstance(
            got, list) else got, where) if seed_value else []
    if isinstance(seed_value, dict) and isinstance(got, dict):
        return [e for k in seed_value if k in got
                for e in _ints_where_the_seed_has_ints(seed_value[k], got[k], f"{where}/{k}")]
    if isinstance(seed_value, int) and not isinstance(seed_value, bool):
        return [] if isinstance(got, int) else [f"{where}: {got!r} is not a number"]
    return []


def test_every_seed_example_over_http(srv) -> None:  # type: ignore[no-untyped-def]
    mgr = srv.services.engine.capacity
    with client(srv.http_ports["http"]) as http:
        for kind, sub, sub_resp, query, query_resp in (
            ("compute", seed.COMPUTE_SUBSCRIBE, seed.COMPUTE_SUBSCRIBE_RESPONSE,
             seed.COMPUTE_QUERY, seed.COMPUTE_QUERY_RESPONSE),
            ("network", seed.NETWORK_SUBSCRIBE, seed.NETWORK_SUBSCRIBE_RESPONSE,
             seed.NETWORK_QUERY, seed.NETWORK_QUERY_RESPONSE),
            ("storage", seed.STORAGE_SUBSCRIBE, seed.STORAGE_SUBSCRIBE_RESPONSE,
             seed.STORAGE_QUERY, seed.STORAGE_QUERY_RESPONSE),
        ):
            r = http.post(f"/capacity/{kind}/subscribe", json=sub)
            assert r.status_code == 201, r.text
            assert seed.same_shape(sub_resp, r.json()) == [], (kind, r.json())
            sid = r.json()["capacityChangeSubscriptionId"]
            # a GET with the seed's body, as the seed shows it
            r = http.request("GET", f"/capacity/{kind}/query", content=json.dumps(query))
            assert r.status_code == 200, r.text
            got = r.json()
            assert seed.same_shape(query_resp, got) == [], (kind, got)
            assert _ints_where_the_seed_has_ints(query_resp, got) == [], (kind, got)
            assert got == api.query_capacity(mgr, kind, json.loads(json.dumps(query)))
            assert http.delete(f"/capacity/{kind}/subscribe/{sid}").status_code == 200
            assert http.delete(f"/capacity/{kind}/subscribe/{sid}").status_code == 404

        for kind, create, resp, q in (
            ("compute", seed.COMPUTE_CREATE_POOL, seed.COMPUTE_CREATE_POOL_RESPONSE,
             seed.COMPUTE_QUERY_RESERVATION),
            ("compute", seed.COMPUTE_CREATE_CONTAINERS, seed.COMPUTE_CREATE_CONTAINERS_RESPONSE,
             seed.COMPUTE_QUERY_RESERVATION),
            ("network", seed.NETWORK_CREATE, seed.NETWORK_RESERVATION,
             seed.NETWORK_QUERY_RESERVATION),
            ("storage", seed.STORAGE_CREATE, seed.STORAGE_RESERVATION,
             seed.STORAGE_QUERY_RESERVATION),
        ):
            body = dict(create, zoneId=seed.ZONE) if kind == "compute" and (
                "computePoolReservation" in create) else create
            r = http.post(f"/reservation/{kind}/create", json=body)
            assert r.status_code == 201, r.text
            made = r.json()
            assert seed.same_shape(resp, made) == [], (kind, made)
            assert isinstance(made["reservationData"], dict)  # one reservation: an object
            assert _ints_where_the_seed_has_ints(resp, made) == [], (kind, made)
            rid = made["reservationData"]["reservationId"]
            filt = {"queryReservationFilter": [{"reservationId": rid}]}
            r = http.request("GET", f"/reservation/{kind}/query", content=json.dumps(filt))
            assert r.status_code == 200 and r.json() == made, (r.text, made)
            # query parameters work as well as the seed's GET body
            r = http.get(f"/reservation/{kind}/query", params={"reservationId": rid})
            assert r.status_code == 200, r.text
            r = http.post(f"/reservation/{kind}/update",
                          json={"reservationId": rid, "stopTime": "2030-01-01T00:00:00Z"})
            assert r.status_code == 201, r.text
            assert r.json()["reservationData"]["stopTime"] == "2030-01-01T00:00:00Z"
            r = http.delete(f"/reservation/{kind}/{rid}")
            assert r.status_code == 200, r.text
            assert r.json()["reservationData"]["reservationStatus"] == "terminated"
            del q

    # the same reservations seen over NETCONF
    with connect(srv) as m:
        reply = m.dispatch(etree.fromstring(f'<queryComputeReservation xmlns="{ESC}"/>'))
        assert reply.ok and "terminated" in reply.xml


def test_errors_and_login(srv) -> None:  # type: ignore[no-untyped-def]
    port = srv.http_ports["http"]
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/capacity/compute/query").status_code == 401
    with client(port) as http:
        r = http.request("GET", "/capacity/gpu/query", content="{}")
        assert r.status_code == 404, r.text
        r = http.request("GET", "/capacity/compute/query", content="{not json")
        assert r.status_code == 400, r.text
        # YANG validation, as over NETCONF: an unknown resource type
        r = http.request("GET", "/capacity/compute/query", content=json.dumps(
            {"resourceDescriptor": {"computeResourceTypeId": "unicorns"}}))
        assert r.status_code == 400, r.text
        assert r.json()["error"]["errors"][0]["error-tag"] == "invalid-value"
        assert http.delete("/reservation/compute/no-such-id").status_code == 404


def test_nacm_applies_as_over_netconf(srv) -> None:  # type: ignore[no-untyped-def]
    from conftest import add_user

    add_user(Path(srv.settings.state_dir), "bob", "bob-password-1")
    rules = """<config><nacm xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-acm">
      <groups><group><name>viewers</name><user-name>bob</user-name></group></groups>
      <rule-list><name>viewers</name><group>viewers</group>
        <rule><name>no-reservations</name><module-name>escnc</module-name>
          <rpc-name>createComputeReservation</rpc-name><access-operations>exec</access-operations>
          <action>deny</action></rule>
      </rule-list></nacm></config>"""
    with connect(srv) as m:
        m.edit_config(target="running", config=rules)
    with client(srv.http_ports["http"], "bob", "bob-password-1") as http:
        r = http.post("/reservation/compute/create", json=seed.COMPUTE_CREATE_POOL)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["errors"][0]["error-tag"] == "access-denied"
        r = http.request("GET", "/capacity/compute/query",
                         content=json.dumps(seed.COMPUTE_QUERY))
        assert r.status_code == 200, r.text
