"""RESTCONF query parameters on writes and streams through httpx on loopback:
``insert``/``point`` (RFC 8040 4.8.5, 4.8.6) and YANG Patch insert/move (RFC 8072) on
NACM's ordered-by user rule-list, ``filter`` on an event stream (RFC 8040 4.8.4)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from http_helpers import client

pytestmark = pytest.mark.timeout(120)

JSON = "application/yang-data+json"
NACM = "/restconf/data/ietf-netconf-acm:nacm"
DATA = "/restconf/data/escnc:esc_datamodel"


@pytest.fixture
def http(server_factory) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    srv = server_factory(http_listen="127.0.0.1:0")
    with client(srv.http_ports["http"]) as c:
        yield c


def rule_list(name: str) -> str:
    return json.dumps({"ietf-netconf-acm:rule-list": [{"name": name, "group": ["nobody"]}]})


def order(http: httpx.Client) -> list[str]:
    r = http.get(NACM, headers={"Accept": JSON}, params={"content": "config"})
    assert r.status_code == 200, r.text
    return [e["name"] for e in r.json()["ietf-netconf-acm:nacm"].get("rule-list", [])]


def post(http: httpx.Client, name: str, **params: str) -> httpx.Response:
    return http.post(NACM, params=params, content=rule_list(name),
                     headers={"Content-Type": JSON, "Accept": JSON})


def tag(r: httpx.Response) -> str:
    return str(r.json()["ietf-restconf:errors"]["error"][0]["error-tag"])


def test_insert_and_point_on_post_and_put(http) -> None:  # type: ignore[no-untyped-def]
    for name in ("a", "b"):
        assert post(http, name).status_code == 201
    assert post(http, "c", insert="first").status_code == 201
    assert order(http) == ["c", "a", "b"]
    r = post(http, "d", insert="after", point="/ietf-netconf-acm:nacm/rule-list=c")
    assert r.status_code == 201, r.text
    assert post(http, "e", insert="before", point="/ietf-netconf-acm:nacm/rule-list=b"
                ).status_code == 201
    assert post(http, "f", insert="last").status_code == 201
    assert order(http) == ["c", "d", "a", "e", "b", "f"]
    # PUT creates at a place, and moves an existing entry
    r = http.put(f"{NACM}/rule-list=g", params={"insert": "first"}, content=rule_list("g"),
                 headers={"Content-Type": JSON})
    assert r.status_code == 201, r.text
    r = http.put(f"{NACM}/rule-list=b", content=rule_list("b"), headers={"Content-Type": JSON},
                 params={"insert": "before", "point": "/ietf-netconf-acm:nacm/rule-list=d"})
    assert r.status_code == 204, r.text
    assert order(http) == ["g", "c", "b", "d", "a", "e", "f"]
    # errors: nothing changes
    assert tag(post(http, "x", insert="after", point="/ietf-netconf-acm:nacm/rule-list=zz")
               ) == "invalid-value"
    r = post(http, "x", insert="before")
    assert r.status_code == 400 and tag(r) == "invalid-value"
    r = post(http, "x", insert="first", point="/ietf-netconf-acm:nacm/rule-list=a")
    assert r.status_code == 400
    r = post(http, "x", insert="middle")
    assert r.status_code == 400 and tag(r) == "invalid-value"
    r = http.post(f"{DATA}/tenants", params={"insert": "first"}, headers={
        "Content-Type": JSON, "Accept": JSON},
        content=json.dumps({"escnc:tenant": [{"name": "t"}]}))
    assert r.status_code == 400 and tag(r) == "invalid-value"  # not ordered-by user
    assert order(http) == ["g", "c", "b", "d", "a", "e", "f"]


def test_yang_patch_insert_and_move(http) -> None:  # type: ignore[no-untyped-def]
    yp = {"Content-Type": "application/yang-patch+json", "Accept": JSON}
    for name in ("a", "b", "c"):
        assert post(http, name).status_code == 201

    def patch(*edits: dict[str, object]) -> httpx.Response:
        body = {"ietf-yang-patch:yang-patch": {"patch-id": "p", "edit": [
            {"edit-id": str(i), **e} for i, e in enumerate(edits)]}}
        return http.patch(NACM, headers=yp, content=json.dumps(body))

    def value(name: str) -> dict[str, object]:
        return json.loads(rule_list(name))  # type: ignore[no-any-return]

    r = patch({"operation": "insert", "target": "/rule-list=n", "where": "before",
               "point": "/rule-list=b", "value": value("n")},
              {"operation": "move", "target": "/rule-list=c", "where": "first"},
              {"operation": "insert", "target": "/rule-list=z", "where": "first",
               "value": value("z")})
    assert r.status_code == 200, r.text
    assert order(http) == ["z", "c", "a", "n", "b"]
    r = patch({"operation": "move", "target": "/rule-list=z", "where": "after",
               "point": "/rule-list=b"})
    assert r.status_code == 200, r.text
    assert order(http) == ["c", "a", "n", "b", "z"]
    # all or nothing: a bad point, a missing entry to move, where without before's point
    r = patch({"operation": "move", "target": "/rule-list=a", "where": "last"},
              {"operation": "move", "target": "/rule-list=c", "where": "after",
               "point": "/rule-list=nosuch"})
    assert r.status_code == 400 and tag(r) == "invalid-value"
    r = patch({"operation": "move", "target": "/rule-list=nosuch", "where": "first"})
    assert r.status_code == 404
    r = patch({"operation": "insert", "target": "/rule-list=q", "where": "before",
               "value": value("q")})
    assert r.status_code == 400
    r = patch({"operation": "merge", "target": "/rule-list=a", "where": "first",
               "value": value("a")})
    assert r.status_code == 400
    assert order(http) == ["c", "a", "n", "b", "z"]


def test_stream_filter(http) -> None:  # type: ignore[no-untyped-def]
    for name in ("drop1", "keep1", "drop2", "keep2"):
        assert http.post(f"{DATA}/tenants", headers={"Content-Type": JSON}, content=json.dumps(
            {"escnc:tenant": [{"name": name}]})).status_code == 201
    select = ("/ietf-netconf-notifications:netconf-config-change"
              "[contains(ietf-netconf-notifications:edit/ietf-netconf-notifications:target,"
              " 'keep')]")
    seen: list[str] = []
    with http.stream("GET", "/restconf/streams/NETCONF",
                     params={"start-time": "1970-01-01T00:00:00Z", "filter": select}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                seen.append(line)
            if "keep2" in line:
                break
    text = "\n".join(seen)
    assert "keep1" in text and "keep2" in text
    assert "drop" not in text
    # a bad XPath is refused before the stream starts; so is an overlong one
    for bad in ("/ietf-netconf-notifications:netconf-config-change[", "nosuchprefix:x",
                "a" * 5000):
        r = http.get("/restconf/streams/NETCONF", params={"filter": bad},
                     headers={"Accept": JSON})
        assert r.status_code == 400, bad
        assert tag(r) == "invalid-value"
