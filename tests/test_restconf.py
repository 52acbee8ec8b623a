"""RESTCONF (RFC 8040) on loopback through httpx and curl: CRUD in RFC 7951 JSON and
XML over the same YANG and NACM as NETCONF, RPCs, errors, SSE with replay."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator

import httpx
import pytest
from lxml import etree

from conftest import PASSWORD, USER, add_user, connect
from escnc.ns import ESC, NC
from http_helpers import client

pytestmark = pytest.mark.timeout(120)

JSON = "application/yang-data+json"
XML = "application/yang-data+xml"
DATA = "/restconf/data/escnc:esc_datamodel"
RC = "urn:ietf:params:xml:ns:yang:ietf-restconf"


@pytest.fixture
def srv(server_factory):  # type: ignore[no-untyped-def]
    return server_factory(http_listen="127.0.0.1:0")


@pytest.fixture
def http(srv) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with client(srv.http_ports["http"]) as c:
        yield c


def running_tenants(srv) -> dict[str, str]:  # type: ignore[no-untyped-def]
    with connect(srv) as m:
        flt = f'<esc_datamodel xmlns="{ESC}"><tenants/></esc_datamodel>'
        data = etree.fromstring(m.get_config(source="running", filter=("subtree", flt))
                                .data_xml.encode())
    return {t.findtext(f"{{{ESC}}}name") or "": t.findtext(f"{{{ESC}}}description") or ""
            for t in data.iter(f"{{{ESC}}}tenant")}


def test_discovery(http) -> None:  # type: ignore[no-untyped-def]
    r = http.get("/.well-known/host-meta")
    assert "rel='restconf' href='/restconf'" in r.text
    assert http.get("/restconf").json()["ietf-restconf:restconf"]["yang-library-version"]
    assert http.get("/restconf/yang-library-version").status_code == 200
    ops = http.get("/restconf/operations", headers={"Accept": JSON}).json()
    names = ops["ietf-restconf:operations"]
    assert "escnc:serviceAction" in names and "ietf-netconf:get-config" in names


def test_crud_json_and_xml(srv, http) -> None:  # type: ignore[no-untyped-def]
    # POST a child resource (JSON) -> 201 with Location
    r = http.post(f"{DATA}/tenants", headers={"Content-Type": JSON},
                  content=json.dumps({"escnc:tenant": [{"name": "a", "description": "A"}]}))
    assert r.status_code == 201, r.text
    assert r.headers["Location"].endswith(f"{DATA}/tenants")
    assert running_tenants(srv) == {"a": "A"}
    # the same again: data-exists -> 409, ietf-restconf:errors
    r = http.post(f"{DATA}/tenants", headers={"Content-Type": JSON, "Accept": JSON},
                  content=json.dumps({"escnc:tenant": [{"name": "a"}]}))
    assert r.status_code == 409
    (err,) = r.json()["ietf-restconf:errors"]["error"]
    assert err["error-tag"] == "data-exists"
    # GET in RFC 7951 JSON, with ETag
    r = http.get(f"{DATA}/tenants/tenant=a", headers={"Accept": JSON})
    assert r.status_code == 200
    assert r.json() == {"escnc:tenant": [{"name": "a", "description": "A"}]}
    etag = r.headers["ETag"]
    assert http.get(f"{DATA}/tenants/tenant=a", headers={"Accept": JSON,
                                                        "If-None-Match": etag}).status_code == 304
    # PUT (XML) creates -> 201, then replaces -> 204
    body = f'<tenant xmlns="{ESC}"><name>b</name><description>B</description></tenant>'
    r = http.put(f"{DATA}/tenants/tenant=b", headers={"Content-Type": XML}, content=body)
    assert r.status_code == 201, r.text
    r = http.put(f"{DATA}/tenants/tenant=b", headers={"Content-Type": XML},
                 content=body.replace(">B<", ">BB<"))
    assert r.status_code == 204, r.text
    # PATCH (plain merge, JSON)
    r = http.patch(f"{DATA}/tenants/tenant=a", headers={"Content-Type": JSON},
                   content=json.dumps({"escnc:tenant": [{"name": "a", "description": "A2"}]}))
    assert r.status_code == 204, r.text
    assert running_tenants(srv) == {"a": "A2", "b": "BB"}
    # GET XML of one node, and content=config
    r = http.get(f"{DATA}/tenants/tenant=b", headers={"Accept": XML},
                 params={"content": "config"})
    el = etree.fromstring(r.content)
    assert el.tag == f"{{{ESC}}}tenant" and el.findtext(f"{{{ESC}}}description") == "BB"
    assert r.headers["Last-Modified"].endswith(" GMT")
    # a body that is not the resource the URL names
    r = http.put(f"{DATA}/tenants/tenant=c", headers={"Content-Type": XML}, content=body)
    assert r.status_code == 400
    # YANG validation: a flavor with a bad number
    r = http.post(f"{DATA}/flavors", headers={"Content-Type": JSON},
                  content=json.dumps({"escnc:flavor": [{"name": "f", "vcpus": "x",
                                                        "memory_mb": 1}]}))
    assert r.status_code == 400
    # DELETE -> 204, again -> 404 data-missing
    assert http.delete(f"{DATA}/tenants/tenant=b").status_code == 204
    r = http.delete(f"{DATA}/tenants/tenant=b", headers={"Accept": XML})
    assert r.status_code == 404
    errs = etree.fromstring(r.content)
    assert errs.tag == f"{{{RC}}}errors"
    assert errs.findtext(f"{{{RC}}}error/{{{RC}}}error-tag") == "data-missing"
    assert running_tenants(srv) == {"a": "A2"}
    # bad paths
    assert http.get("/restconf/data/nosuch:thing").status_code == 400
    assert http.get(f"{DATA}/nothing").status_code == 404
    assert http.get(f"{DATA}/tenants/tenant").status_code == 400  # key missing
    # fields
    r = http.get(f"{DATA}/tenants", params={"fields": "tenant(name)"}, headers={"Accept": JSON})
    assert r.json() == {"escnc:tenants": {"tenant": [{"name": "a"}]}}
    r = http.get(f"{DATA}/tenants/tenant=a", params={"fields": "description"},
                 headers={"Accept": JSON})
    assert r.json() == {"escnc:tenant": [{"name": "a", "description": "A2"}]}  # key kept
    assert http.get(f"{DATA}/tenants", params={"fields": "tenant(name"}).status_code == 400
    # depth and state data
    r = http.get(DATA, params={"depth": "1"}, headers={"Accept": JSON})
    assert r.json() == {"escnc:esc_datamodel": {}}
    r = http.get(f"{DATA}/opdata/system_status", headers={"Accept": JSON})
    assert r.status_code == 200 and "status" in r.json()["escnc:system_status"]
    state = http.get(DATA, params={"content": "nonconfig"}, headers={"Accept": JSON}).json()
    assert "opdata" in state["escnc:esc_datamodel"]
    assert "tenants" not in state["escnc:esc_datamodel"]
    config = http.get(DATA, params={"content": "config"}, headers={"Accept": JSON}).json()
    assert "opdata" not in config["escnc:esc_datamodel"]
    assert config["escnc:esc_datamodel"]["tenants"]["tenant"] == [
        {"name": "a", "description": "A2"}]


def test_curl_and_auth_and_nacm(srv, http) -> None:  # type: ignore[no-untyped-def]
    port = srv.http_ports["http"]
    base = f"http://127.0.0.1:{port}"
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", f"{USER}:{PASSWORD}",
         "-X", "POST", "-H", f"Content-Type: {JSON}", f"{base}{DATA}/tenants",
         "--data", json.dumps({"escnc:tenant": [{"name": "viacurl"}]})],
        capture_output=True, text=True, check=True, timeout=30).stdout
    assert out == "201"
    out = subprocess.run(["curl", "-s", "-u", f"{USER}:{PASSWORD}", "-H", f"Accept: {JSON}",
                          f"{base}{DATA}/tenants/tenant=viacurl"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    assert json.loads(out) == {"escnc:tenant": [{"name": "viacurl"}]}
    assert httpx.get(f"{base}{DATA}").status_code == 401
    add_user(srv.settings.state_dir, "bob", "bob-pw")
    nacm = ('<nacm xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-acm">'
            "<enable-nacm>true</enable-nacm><write-default>deny</write-default></nacm>")
    with connect(srv) as m:
        m.edit_config(target="running", config=f'<config xmlns="{NC}">{nacm}</config>')
    with client(port, "bob", "bob-pw") as bob:
        r = bob.delete(f"{DATA}/tenants/tenant=viacurl", headers={"Accept": JSON})
        assert r.status_code == 403
        assert r.json()["ietf-restconf:errors"]["error"][0]["error-tag"] == "access-denied"
        assert bob.get(f"{DATA}/tenants/tenant=viacurl").status_code == 200  # read-default


def test_operations(http) -> None:  # type: ignore[no-untyped-def]
    r = http.post("/restconf/operations/escnc:serviceAction",
                  headers={"Content-Type": JSON, "Accept": JSON},
                  content=json.dumps({"escnc:input": {"actionType": "STOP",
                                                      "tenantName": "t", "depName": "d"}}))
    assert r.status_code == 404, r.text
    assert r.json()["ietf-restconf:errors"]["error"][0]["error-tag"] == "data-missing"
    r = http.post("/restconf/operations/escnc:serviceAction",
                  headers={"Content-Type": JSON},
                  content=json.dumps({"escnc:input": {"actionType": "SIDEWAYS",
                                                      "tenantName": "t", "depName": "d"}}))
    assert r.status_code == 400  # YANG enum check of the input, as over NETCONF
    ns = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"
    r = http.post("/restconf/operations/ietf-netconf-monitoring:get-schema",
                  headers={"Content-Type": XML, "Accept": XML},
                  content=f'<input xmlns="{ns}"><identifier>escnc</identifier></input>')
    assert r.status_code == 200, r.text
    assert b"module escnc" in r.content
    assert http.post("/restconf/operations/escnc:nosuch").status_code == 404


def test_sse_stream_with_replay(srv, http) -> None:  # type: ignore[no-untyped-def]
    streams = http.get("/restconf/data/ietf-restconf-monitoring:restconf-state/streams").json()
    names = [s["name"] for s in
             streams["ietf-restconf-monitoring:restconf-state"]["streams"]["stream"]]
    assert "NETCONF" in names and "escEvent" in names
    for name in ("first", "before"):  # the first creates esc_datamodel: its target
        http.post(f"{DATA}/tenants", headers={"Content-Type": JSON},
                  content=json.dumps({"escnc:tenant": [{"name": name}]}))
    seen: list[str] = []
    got_live = threading.Event()
    with http.stream("GET", "/restconf/streams/NETCONF",
                     params={"start-time": "1970-01-01T00:00:00Z"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            seen.append(line)
            if "before" in line and not got_live.is_set():
                got_live.set()  # replayed: now make a live change
                with client(srv.http_ports["http"]) as other:
                    other.post(f"{DATA}/tenants", headers={"Content-Type": JSON},
                               content=json.dumps({"escnc:tenant": [{"name": "after"}]}))
            if "after" in line:
                break
    text = "\n".join(seen)
    assert "netconf-config-change" in text
    assert text.index("before") < text.index("after")
    assert all(line.startswith("data: <notification") or not line.startswith("data: <")
               for line in seen)


def test_yang_patch_all_or_nothing(srv, http) -> None:  # type: ignore[no-untyped-def]
    yp = "application/yang-patch+json"
    http.post(f"{DATA}/tenants", headers={"Content-Type": JSON},
              content=json.dumps({"escnc:tenant": [{"name": "old", "description": "o"}]}))
    patch = {"ietf-yang-patch:yang-patch": {"patch-id": "p1", "edit": [
        {"edit-id": "1", "operation": "create", "target": "/tenants/tenant=n1",
         "value": {"escnc:tenant": [{"name": "n1", "description": "one"}]}},
        {"edit-id": "2", "operation": "merge", "target": "/tenants/tenant=old",
         "value": {"escnc:tenant": [{"name": "old", "description": "changed"}]}},
        {"edit-id": "3", "operation": "create", "target": "/flavors/flavor=f1",
         "value": {"escnc:flavor": [{"name": "f1", "vcpus": 1, "memory_mb": 64}]}},
    ]}}
    r = http.patch(DATA, headers={"Content-Type": yp}, content=json.dumps(patch))
    assert r.status_code == 200, r.text
    assert r.json() == {"ietf-yang-patch:yang-patch-status": {"patch-id": "p1", "ok": [None]}}
    assert running_tenants(srv) == {"old": "changed", "n1": "one"}
    # one bad edit (create of what exists): nothing of the patch happens
    bad = {"ietf-yang-patch:yang-patch": {"patch-id": "p2", "edit": [
        {"edit-id": "1", "operation": "delete", "target": "/tenants/tenant=n1"},
        {"edit-id": "2", "operation": "create", "target": "/tenants/tenant=old",
         "value": {"escnc:tenant": [{"name": "old"}]}},
    ]}}
    r = http.patch(DATA, headers={"Content-Type": yp}, content=json.dumps(bad))
    assert r.status_code == 409, r.text
    status = r.json()["ietf-yang-patch:yang-patch-status"]
    assert status["errors"]["error"][0]["error-tag"] == "data-exists"
    assert running_tenants(srv) == {"old": "changed", "n1": "one"}
    # XML form, relative to a resource URL
    xml = ('<yang-patch xmlns="urn:ietf:params:xml:ns:yang:ietf-yang-patch">'
           "<patch-id>p3</patch-id><edit><edit-id>1</edit-id><operation>remove</operation>"
           "<target>/tenant=n1</target></edit></yang-patch>")
    r = http.patch(f"{DATA}/tenants", headers={"Content-Type": "application/yang-patch+xml"},
                   content=xml)
    assert r.status_code == 200, r.text
    assert running_tenants(srv) == {"old": "changed"}
