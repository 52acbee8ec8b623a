"""``/health`` (liveness), ``/health/ready`` (hosts connected), Prometheus ``/metrics``,
and the OpenAPI document of the ESC REST API (``/ESCManager/v0/openapi.json``).

Health answers without authentication (load balancers probe it) and says nothing
secret; metrics and OpenAPI need a login like everything else.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PCounter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from escnc.http.auth import Unauthorized
from escnc.http.payload import error_response

if TYPE_CHECKING:
    from escnc.http.context import HttpContext
    from escnc.services import Services

_EDITS = frozenset({"edit-config", "commit", "copy-config", "delete-config", "edit-data"})


class _State(Collector):
    """Gauges read from the services when scraped (nothing kept twice)."""

    def __init__(self, ctx: HttpContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        services = self.ctx.services
        sessions = GaugeMetricFamily("escnc_netconf_sessions", "live NETCONF sessions")
        sessions.add_metric([], len(services.sessions.list()) if services.sessions else 0)
        yield sessions
        hosts = GaugeMetricFamily("escnc_hosts", "configured hosts", labels=["connected"])
        up = [h.connected for h in services.vims.hosts()] if services.vims else []
        hosts.add_metric(["true"], sum(up))
        hosts.add_metric(["false"], len(up) - sum(up))
        yield hosts
        vms = GaugeMetricFamily("escnc_vms", "VMs by state", labels=["state"])
        store = getattr(services.engine, "store", None)
        for state, n in sorted(Counter(v.state for v in (store.vms() if store else [])).items()):
            vms.add_metric([state], n)
        yield vms
        jobs = GaugeMetricFamily("escnc_jobs", "engine jobs", labels=["state"])
        queue = getattr(services.engine, "jobs", None)
        queued, running = queue.counts() if queue is not None else (0, 0)
        jobs.add_metric(["queued"], queued)
        jobs.add_metric(["running"], running)
        yield jobs
        events = GaugeMetricFamily("escnc_events_published", "sequence number of the last "
                                   "event published (events published since the log began)")
        events.add_metric([], services.events.head if services.events else 0)
        yield events
        delivered = GaugeMetricFamily("escnc_events_delivered", "events delivered by the live "
                                      "consumers (subscriptions, SSE streams, callbacks)")
        delivered.add_metric([], sum(getattr(c, "delivered", 0) for c in
                                     (services.events.consumers() if services.events else [])))
        yield delivered
        lag = GaugeMetricFamily("escnc_subscriber_lag", "events the slowest consumer is behind")
        consumers = services.events.consumers() if services.events else []
        head = services.events.head if services.events else 0
        lag.add_metric([], max((head - getattr(c, "seq", head) for c in consumers),
                               default=0))
        yield lag
        tracker = self.ctx.callbacks
        cb = GaugeMetricFamily("escnc_callback_deliveries", "ESC REST callback deliveries",
                               labels=["state"])
        counts = tracker.store.counts() if tracker is not None else {}
        for state in ("pending", "delivered", "failed"):
            cb.add_metric([state], counts.get(state, 0))
        yield cb


def install_metrics(ctx: HttpContext) -> CollectorRegistry:
    """The registry of this server: RPC counters fed by every northbound, state gauges."""
    registry = CollectorRegistry()
    rpcs = PCounter("escnc_rpcs", "requests by operation and outcome",
                    ["operation", "outcome"], registry=registry)
    edits = Histogram("escnc_edit_seconds", "time to run a configuration write",
                      ["operation"], registry=registry,
                      buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

    def observe(operation: str, outcome: str, seconds: float) -> None:
        name = operation.rsplit("}", 1)[-1]
        rpcs.labels(name, outcome).inc()
        if name in _EDITS:
            edits.labels(name).observe(seconds)

    ctx.services.rpc_observers.append(observe)
    registry.register(_State(ctx))
    return registry


def readiness(services: Services) -> dict[str, Any]:
    hosts = [{"name": h.name, "connected": bool(h.connected)}
             for h in (services.vims.hosts() if services.vims else [])]
    ready = bool(hosts) and any(h["connected"] for h in hosts)
    return {"status": "ready" if ready else "not-ready", "hosts": hosts}


def openapi(prefix: str, paths: list[tuple[str, list[str]]]) -> dict[str, Any]:
    """OpenAPI 3.1 for the ESC REST API, from the routes actually mounted."""
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "escnc ESC REST API", "version": "v0"},
        "components": {"securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}},
        "security": [{"basic": []}],
        "paths": {},
    }
    for path, methods in paths:
        if not path.startswith(prefix):
            continue
        item = doc["paths"].setdefault(path, {})
        params = [{"name": p.strip("{}"), "in": "path", "required": True,
                   "schema": {"type": "string"}}
                  for p in path.split("/") if p.startswith("{")]
        for method in methods:
            if method == "HEAD":
                continue
            responses: dict[str, Any] = {"401": {"description": "not authenticated"},
                                         "403": {"description": "denied by NACM"}}
            if method == "GET":
                responses["200"] = {"description": "the resource (XML or JSON by Accept)"}
            else:
                responses["20x"] = {
                    "description": "accepted; the outcome goes to the Callback URI",
                    "headers": {"ESC-Transaction-Id": {"schema": {"type": "string"}}},
                }
                responses["400"] = {"description": "invalid request"}
            op: dict[str, Any] = {"parameters": list(params), "responses": responses,
                                  "operationId": f"{method.lower()}{path}"}
            if method != "GET":
                op["parameters"] += [
                    {"name": "Callback", "in": "header", "schema": {"type": "string"}},
                    {"name": "Callback-ESC-Events", "in": "header",
                     "schema": {"type": "string"}},
                ]
            item[method.lower()] = op
    return doc


def routes(ctx: HttpContext) -> list[BaseRoute]:
    registry = ctx.metrics

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def ready(_request: Request) -> Response:
        body = readiness(ctx.services)
        return JSONResponse(body, 200 if body["status"] == "ready" else 503)

    async def metrics(request: Request) -> Response:
        try:
            await ctx.auth.username(request)
        except Unauthorized as exc:
            return error_response(request, str(exc), 401,
                                  {"WWW-Authenticate": 'Basic realm="escnc"'})
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def callbacks(request: Request) -> Response:
        """The callback deliveries (newest 1000, or one transaction's): their state,
        attempts and last error -- what ESC REST callbacks did."""
        try:
            await ctx.auth.username(request)
        except Unauthorized as exc:
            return error_response(request, str(exc), 401,
                                  {"WWW-Authenticate": 'Basic realm="escnc"'})
        tracker = ctx.callbacks
        txn = request.query_params.get("transaction")
        rows = tracker.store.deliveries(txn) if tracker is not None else []
        return JSONResponse({"deliveries": [vars(r) for r in rows]})

    async def spec(request: Request) -> Response:
        from escnc.http.esc_rest import PREFIX

        paths = [(r.path, sorted(r.methods or ())) for r in request.app.routes
                 if isinstance(r, Route)]
        return Response(json.dumps(openapi(PREFIX, paths), indent=1),
                        media_type="application/json")

    return [Route("/health", health, methods=["GET"]),
            Route("/health/ready", ready, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/escnc/callbacks", callbacks, methods=["GET"]),
            Route("/ESCManager/v0/openapi.json", spec, methods=["GET"])]
