"""Operator endpoints of the HTTP northbound: health, readiness, Prometheus metrics
(parsed by prometheus-client's own parser), the OpenAPI document, HTTPS with the
self-signed pair made on first start, and extra routers (how issue 17 mounts its own)."""

from __future__ import annotations

import json
import ssl
import stat
from pathlib import Path

import httpx
import pytest
from lxml import etree
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Route

from conftest import PASSWORD, USER, add_user, connect, make_settings
from escnc.app import Server
from escnc.http.context import HttpContext
from escnc.http.esc_rest import PREFIX
from http_helpers import client

pytestmark = pytest.mark.timeout(120)


def test_health_readiness_metrics_openapi(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv = server_factory(http_listen="127.0.0.1:0")
    base = f"http://127.0.0.1:{srv.http_ports['http']}"
    assert httpx.get(f"{base}/health").json() == {"status": "alive"}
    ready = httpx.get(f"{base}/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "hosts": [{"name": "default", "connected": True}]}
    assert httpx.get(f"{base}/metrics").status_code == 401
    with connect(srv) as m:
        m.get_config(source="running")
    with client(srv.http_ports["http"]) as http:
        assert http.post(f"{PREFIX}/tenants/tx").status_code == 201  # an edit over HTTP
        assert http.post(f"{PREFIX}/tenants/tx").status_code == 409
        text = http.get("/metrics").text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        rpcs = {(s.labels["operation"], s.labels["outcome"]): s.value
                for s in families["escnc_rpcs"].samples if s.name == "escnc_rpcs_total"}
        assert rpcs[("get-config", "ok")] >= 1  # NETCONF's and HTTP's, one counter
        assert rpcs[("edit-config", "ok")] == 1
        assert rpcs[("edit-config", "data-exists")] == 1
        hist = [s for s in families["escnc_edit_seconds"].samples
                if s.name == "escnc_edit_seconds_count"]
        assert hist and hist[0].value == 2
        hosts = {s.labels["connected"]: s.value for s in families["escnc_hosts"].samples}
        assert hosts == {"true": 1.0, "false": 0.0}
        for name in ("escnc_netconf_sessions", "escnc_vms", "escnc_jobs",
                     "escnc_events_published", "escnc_events_delivered", "escnc_subscriber_lag",
                     "escnc_callback_deliveries"):
            assert name in families, name
        doc = http.get(f"{PREFIX}/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for path, method in [("/deployments/{deployment}", "put"),
                         ("/{tenant}/deployments/service/{deployment}", "post"),
                         ("/{tenant}/deployments/migrate-vm/{vm}", "post"),
                         ("/snapshots", "get"), ("/snapshots/{snapshot}", "delete"),
                         ("/snapshots/{snapshot}/volumes", "post"), ("/tenants/{name}", "get")]:
        assert method in paths[PREFIX + path], (path, method)
    op = paths[PREFIX + "/{tenant}/deployments/service/{deployment}"]["post"]
    assert {p["name"] for p in op["parameters"]} >= {"tenant", "deployment", "Callback",
                                                     "Callback-ESC-Events"}
    json.dumps(doc)  # serializable as served


def test_not_ready_without_a_connected_host(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    srv = server_factory(http_listen="127.0.0.1:0",
                         vims={"gone": f"test://{tmp_path}/missing.xml"})
    r = httpx.get(f"http://127.0.0.1:{srv.http_ports['http']}/health/ready")
    assert r.status_code == 503
    assert r.json() == {"status": "not-ready", "hosts": [{"name": "gone", "connected": False}]}


def test_https_self_signed_pair_and_extra_router(tmp_path: Path) -> None:
    state = tmp_path / "state"
    add_user(state)

    def routes(ctx: HttpContext) -> list[BaseRoute]:
        async def hello(request: Request) -> PlainTextResponse:
            user = await ctx.auth.username(request)
            return PlainTextResponse(f"hello {user}, {len(ctx.services.registry.names())} rpcs")

        return [Route("/extra/hello", hello, methods=["GET"])]

    srv = Server(make_settings(state, https_listen="127.0.0.1:0"), http_routes=[routes])
    srv.start()
    try:
        cert, key = state / "https-cert.pem", state / "https-key.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE(cert.stat().st_mode) == 0o600
        ctx = ssl.create_default_context(cafile=str(cert))
        port = srv.http_ports["https"]
        assert "http" not in srv.http_ports  # only what is configured listens
        with httpx.Client(base_url=f"https://localhost:{port}", verify=ctx,
                          auth=(USER, PASSWORD)) as https:
            r = https.get("/extra/hello")
            assert r.status_code == 200 and r.text.startswith("hello admin, ")
            r = https.get(f"{PREFIX}/tenants", headers={"Accept": "application/xml"})
            assert etree.fromstring(r.content).tag.endswith("tenants")
        with pytest.raises(httpx.ConnectError):  # not trusted without the pair
            httpx.get(f"https://localhost:{port}/health")
    finally:
        srv.stop()
    # the pair is kept: the same certificate on the next start
    before = cert.read_bytes()
    srv = Server(make_settings(state, https_listen="127.0.0.1:0"))
    srv.start()
    srv.stop()
    assert cert.read_bytes() == before


def test_escnc_serve_with_http_listen_in_the_config_file(tmp_path: Path) -> None:
    import os
    import re
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root / "src"))
    state = tmp_path / "served"
    add_user(state)
    host = tmp_path / "host.xml"
    host.write_text("<node></node>\n")
    cfg = tmp_path / "escnc.toml"
    cfg.write_text('http_listen = "127.0.0.1:0"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "escnc.cli.server", "serve", "--config", str(cfg),
         "--state-dir", str(state), "--listen", "127.0.0.1:0", "--vim",
         f"default=test://{host}", "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        assert "serving NETCONF" in proc.stdout.readline()
        line = proc.stdout.readline()
        m = re.search(r"serving HTTP on 127\.0\.0\.1:(\d+)", line)
        assert m, line
        with client(int(m.group(1))) as http:
            assert http.get(f"{PREFIX}/deployments").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    bad = tmp_path / "bad.toml"
    bad.write_text('http_listen = "nowhere"\n')
    r = subprocess.run(
        [sys.executable, "-m", "escnc.cli.server", "serve", "--config", str(bad),
         "--state-dir", str(tmp_path / "s2"), "--listen", "127.0.0.1:0", "--vim",
         "default=test:///default"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1 and "expected HOST:PORT" in r.stderr


def test_failed_http_logins_count_against_ssh_too(server_factory) -> None:  # type: ignore[no-untyped-def]
    """One failure penalty per source address for both northbounds: a password guesser
    gains nothing by alternating HTTP Basic and SSH."""
    import paramiko

    srv = server_factory(http_listen="127.0.0.1:0", auth_failure_delay=0.01,
                         auth_failure_delay_max=0.05)
    penalty = srv.services.auth_penalty
    assert penalty.delay("127.0.0.1") == pytest.approx(0.01)
    with client(srv.http_ports["http"], password="guess") as bad:
        for _ in range(2):
            assert bad.get(f"{PREFIX}/tenants").status_code == 401
    assert penalty.delay("127.0.0.1") == pytest.approx(0.04)  # 2 failures: 0.01 * 2**2
    with pytest.raises(paramiko.AuthenticationException):
        t = paramiko.Transport(("127.0.0.1", srv.port))
        try:
            t.connect(username=USER, password="guess")
        finally:
            t.close()
    assert penalty.delay("127.0.0.1") == pytest.approx(0.05)  # capped, after 3 failures
    with client(srv.http_ports["http"]) as good:
        assert good.get(f"{PREFIX}/tenants").status_code == 200


def test_request_time_limit_answers_503_without_waiting(tmp_path: Path) -> None:
    """http_request_timeout: the answer does not wait for an operation that hangs."""
    import threading

    from escnc.http.context import Timeout

    state = tmp_path / "state"
    add_user(state)
    release = threading.Event()
    finished = threading.Event()

    def routes(ctx: HttpContext) -> list[BaseRoute]:
        async def slow(request: Request) -> PlainTextResponse:
            try:
                await ctx.run("admin", etree.Element("{urn:test}hang"))
            except Timeout:
                return PlainTextResponse("timed out", 503)
            return PlainTextResponse("done")

        return [Route("/test/hang", slow, methods=["GET"])]

    srv = Server(make_settings(state, http_listen="127.0.0.1:0", http_request_timeout=0.2),
                 http_routes=[routes])
    srv.start()
    try:
        def hang(_ctx: object, _req: object) -> None:
            release.wait(60)
            finished.set()

        assert srv.services is not None
        srv.services.registry.register("urn:test", "hang", hang)
        r = httpx.get(f"http://127.0.0.1:{srv.http_ports['http']}/test/hang", timeout=30)
        assert r.status_code == 503 and not finished.is_set()
    finally:
        release.set()
        srv.stop()
    assert finished.wait(10)
