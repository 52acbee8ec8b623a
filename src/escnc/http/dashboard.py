"""The operators' dashboard: ``/`` shows deployments, VM groups and VMs with their
states and hosts, per-host capacity as bars, and the escEvent stream live (SSE).

Read-only. Every datastore read is a NETCONF ``get`` run through the request layer as
the logged-in user (HTTP Basic, as everywhere), so NACM prunes what the user may not
read exactly as for a NETCONF or RESTCONF get; the event stream is the RESTCONF SSE
machinery (escnc.http.sse) with the same NACM filter. Everything from the datastore is
HTML-escaped; the page runs one script file served here (no inline script or handler:
the Content-Security-Policy forbids both).
"""

from __future__ import annotations

import json
from html import escape
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import quote

from lxml import etree
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from escnc.events.esc_event import ESC_STREAM
from escnc.http.auth import Unauthorized
from escnc.http.context import Timeout
from escnc.http.sse import event_stream
from escnc.ns import ESC, NC, qn

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from escnc.events.log import StoredEvent
    from escnc.http.context import HttpContext

E = f"{{{ESC}}}"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
           "X-Frame-Options": "DENY"}
REPLAY = 100  # events of the log the page starts with
_MAX_TENANT = 256

# what the page shows: the tenants (config) and the state of deployments and hosts
_FILTER = (f'<esc_datamodel xmlns="{ESC}"><tenants><tenant><name/></tenant></tenants>'
           "<opdata><hosts/><tenants/></opdata></esc_datamodel>")


def _t(el: etree._Element, path: str) -> str:
    return el.findtext("/".join(E + p for p in path.split("/"))) or ""


def _int(el: etree._Element, path: str) -> int:
    text = _t(el, path)
    return int(text) if text.isdigit() else 0


def _state_class(state: str) -> str:
    for word in ("ALIVE", "ACTIVE", "ERROR", "STOPPED", "DEPLOYING", "UNDEPLOYING"):
        if word in state:
            return f"st-{word.lower()}"
    return "st-other"


class Dashboard:
    def __init__(self, ctx: HttpContext) -> None:
        self.ctx = ctx
        static = resources.files("escnc.http") / "static"
        self.assets = {name: (static / name).read_bytes()
                       for name in ("dashboard.js", "dashboard.css", "favicon.svg")}

    async def _user(self, request: Request) -> str | Response:
        try:
            return await self.ctx.auth.username(request)
        except Unauthorized as exc:
            return PlainTextResponse(f"401 {exc}\n", 401, headers={
                "WWW-Authenticate": 'Basic realm="escnc"', **HEADERS})

    async def _data(self, user: str) -> etree._Element:
        op = etree.Element(qn(NC, "get"), nsmap={None: NC})  # type: ignore[dict-item]
        flt = etree.SubElement(op, qn(NC, "filter"))
        flt.set("type", "subtree")
        flt.append(etree.fromstring(_FILTER))
        done = await self.ctx.run(user, op)
        if done.errors:
            raise _Failed("; ".join(e.message for e in done.errors))
        result = done.result
        items = [result] if isinstance(result, etree._Element) else list(result or [])
        data = items[0] if items else etree.Element(qn(NC, "data"))
        # reservations held now (the capacity model; an RPC, so NACM's exec rules apply:
        # a user who may not run it sees no reserved figures)
        query = etree.Element(qn(ESC, "queryComputeReservation"),
                              nsmap={None: ESC})  # type: ignore[dict-item]
        held = await self.ctx.run(user, query)
        if not held.errors:
            found = held.result
            box = etree.SubElement(data, qn(ESC, "reservations"))
            for el in [found] if isinstance(found, etree._Element) else list(found or []):
                box.append(el)
        return data

    @staticmethod
    def _tenant(request: Request) -> str:
        return request.query_params.get("tenant", "")[:_MAX_TENANT]

    # -- pages ---------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        user = await self._user(request)
        if isinstance(user, Response):
            return user
        tenant = self._tenant(request)
        try:
            data = await self._data(user)
        except (_Failed, Timeout) as exc:
            return PlainTextResponse(f"500 {exc}\n", 500, headers=HEADERS)
        tenants = sorted({_t(t, "name") for t in data.iterfind(
            f"{E}esc_datamodel/{E}tenants/{E}tenant")} | {_t(t, "name") for t in data.iterfind(
            f"{E}esc_datamodel/{E}opdata/{E}tenants/{E}tenant")})
        options = [f'<option value=""{"" if tenant else " selected"}>all tenants</option>']
        options += [f'<option value="{escape(name)}"{" selected" if name == tenant else ""}>'
                    f"{escape(name)}</option>" for name in tenants]
        after = max(0, self.ctx.services.events.head - REPLAY)
        html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>escnc dashboard</title>
<link rel="stylesheet" href="/dashboard/static/dashboard.css">
<link rel="icon" href="/dashboard/static/favicon.svg" type="image/svg+xml">
</head>
<body data-tenant="{escape(tenant)}" data-after="{after}">
<header><h1>escnc</h1>
<form id="filter" method="get" action="/"><label>Tenant
<select id="tenant" name="tenant">{"".join(options)}</select></label>
<noscript><button type="submit">show</button></noscript></form>
<span class="user">{escape(user)}</span>
<span id="live" class="live-off">connecting</span></header>
<main>
<div id="state">{render_state(data, tenant)}</div>
<section class="events"><h2>Events</h2><ol id="events"></ol></section>
</main>
<script src="/dashboard/static/dashboard.js"></script>
</body></html>
"""
        return Response(html, media_type="text/html; charset=utf-8", headers=HEADERS)

    async def state(self, request: Request) -> Response:
        """The page's state part alone (the script reloads it after events)."""
        user = await self._user(request)
        if isinstance(user, Response):
            return user
        try:
            data = await self._data(user)
        except (_Failed, Timeout) as exc:
            return PlainTextResponse(f"500 {exc}\n", 500, headers=HEADERS)
        return Response(render_state(data, self._tenant(request)),
                        media_type="text/html; charset=utf-8", headers=HEADERS)

    async def events(self, request: Request) -> Response:
        """escEvents as SSE: ``id:`` the log sequence number (a reconnecting EventSource
        sends it back as Last-Event-ID and misses nothing), ``data:`` the event's fields
        as JSON; from ``?after=SEQ`` (replay), only ``?tenant=``'s if given."""
        user = await self._user(request)
        if isinstance(user, Response):
            return user
        tenant = self._tenant(request)
        last = request.headers.get("last-event-id") or request.query_params.get("after", "")
        if last and not last.isdigit():
            return PlainTextResponse("400 after must be an event number\n", 400,
                                     headers=HEADERS)
        start = min(int(last), self.ctx.services.events.head) + 1 if last else None

        def render(event: StoredEvent) -> bytes | None:
            fields = esc_event_fields(event)
            if fields is None or (tenant and fields.get("tenant") != tenant):
                return None
            return (f"id: {event.seq}\nevent: escEvent\n"
                    f"data: {json.dumps(fields)}\n\n").encode()

        response = event_stream(self.ctx, user, ESC_STREAM, start, render)
        response.headers.update({k: v for k, v in HEADERS.items() if k != "Cache-Control"})
        return response

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = self.assets.get(name)
        if body is None:
            return PlainTextResponse("404\n", 404, headers=HEADERS)
        kind = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8",
                "svg": "image/svg+xml"}[name.rpartition(".")[2]]
        return Response(body, media_type=kind,
                        headers={**HEADERS, "Cache-Control": "max-age=300"})

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.page, methods=["GET"]),
            Route("/dashboard/state", self.state, methods=["GET"]),
            Route("/dashboard/events", self.events, methods=["GET"]),
            Route("/dashboard/static/{name}", self.asset, methods=["GET"]),
        ]


class _Failed(Exception):
    pass


def esc_event_fields(event: StoredEvent) -> dict[str, str] | None:
    """The escEvent of a notification as flat fields (None: not an escEvent)."""
    try:
        root = etree.fromstring(event.body)
    except etree.XMLSyntaxError:
        return None
    ev = root if root.tag == f"{E}escEvent" else root.find(f".//{E}escEvent")
    if ev is None:
        return None
    return {
        "time": event.event_time, "type": _t(ev, "event/type"), "status": _t(ev, "status"),
        "status_code": _t(ev, "status_code"), "message": _t(ev, "status_message"),
        "tenant": _t(ev, "tenant"), "deployment": _t(ev, "depname"),
        "vm_group": _t(ev, "vm_group"),
        "vm": _t(ev, "vm_source/generated_vmname") or _t(ev, "vm_source/vmname"),
        "host": _t(ev, "vm_source/hostname"),
    }


def _bar(label: str, used: int, total: int, unit: str) -> str:
    pct = f"{100 * used // total}%" if total else "?"
    return (f'<div class="bar"><span class="bar-label">{escape(label)}</span>'
            f'<meter min="0" max="{max(total, 1)}" value="{min(used, max(total, 1))}" '
            f'high="{max(total, 1) * 0.8:.0f}" optimum="0">{used}/{total}</meter>'
            f'<span class="bar-figure">{used} / {total}{" " + escape(unit) if unit else ""} '
            f"({pct})</span></div>")


def _reserved(data: etree._Element) -> dict[str, tuple[int, int, int]]:
    """Zone -> (reservations, vCPUs, memory MiB) of the pool reservations active now."""
    out: dict[str, tuple[int, int, int]] = {}
    for r in data.iterfind(f"{E}reservations/{E}reservationData"):
        if _t(r, "reservationStatus") != "active":
            continue
        for pool in r.iterfind(f"{E}computePoolReserved"):
            zone = _t(pool, "zoneId")
            count, cores, mem = out.get(zone, (0, 0, 0))
            out[zone] = (count + 1, cores + _int(pool, "numCpuCores"),
                         mem + _int(pool, "virtualMemSize"))
    return out


def render_state(data: etree._Element, tenant: str = "") -> str:
    """Hosts with capacity bars, then deployments with their groups and VMs."""
    out = ['<section class="hosts"><h2>Hosts</h2>']
    reserved = _reserved(data)
    hosts = list(data.iterfind(f"{E}esc_datamodel/{E}opdata/{E}hosts/{E}host"))
    if not hosts:
        out.append('<p class="empty">no host visible</p>')
    for h in hosts:
        name = _t(h, "name")
        connected = _t(h, "connected") == "true"
        out.append(f'<article class="host" data-host="{escape(name)}"><h3>{escape(name)} '
                   f'<small>{escape(_t(h, "hostname"))}</small> '
                   f'<span class="{"st-alive" if connected else "st-error"}">'
                   f'{"connected" if connected else "disconnected"}</span></h3>')
        if connected:
            vcpus, memory = _int(h, "vcpus_total"), _int(h, "memory_total_mb")
            out.append(_bar("vCPUs", _int(h, "vcpus_used"), vcpus, ""))
            out.append(_bar("memory", _int(h, "memory_used_mb"), memory, "MiB"))
            if name in reserved:
                count, cores, mem = reserved[name]
                out.append(f'<p class="reserved">{count} reservation(s) held</p>')
                out.append(_bar("reserved vCPUs", cores, vcpus, ""))
                out.append(_bar("reserved memory", mem, memory, "MiB"))
        out.append("</article>")
    out.append('</section><section class="deployments"><h2>Deployments</h2>')
    count = 0
    for t in data.iterfind(f"{E}esc_datamodel/{E}opdata/{E}tenants/{E}tenant"):
        tname = _t(t, "name")
        if tenant and tname != tenant:
            continue
        for d in t.iterfind(f"{E}deployments/{E}deployment"):
            count += 1
            dname = _t(d, "name")
            state = _t(d, "state")
            key = quote(f"{tname}/{dname}", safe="/")
            out.append(
                f'<article class="deployment" data-deployment="{escape(key)}">'
                f"<h3>{escape(dname)} <small>tenant {escape(tname)}</small> "
                f'<span class="dep-state {_state_class(state)}">{escape(state)}</span></h3>')
            if _t(d, "status_message"):
                out.append(f'<p class="message">{escape(_t(d, "status_message"))}</p>')
            out.append('<table><thead><tr><th>VM group</th><th>VM</th><th>state</th>'
                       "<th>host</th><th>flavor</th><th>addresses</th></tr></thead><tbody>")
            for g in d.iterfind(f"{E}vm_group"):
                for v in g.iterfind(f"{E}vm_instance"):
                    vstate = _t(v, "state")
                    ips = ", ".join(i.findtext(f"{E}ip_address") or "" for i in
                                    v.iterfind(f"{E}interfaces/{E}interface"))
                    out.append(
                        f'<tr data-vm="{escape(_t(v, "name"))}"><td>{escape(_t(g, "name"))}</td>'
                        f'<td class="vm-name">{escape(_t(v, "name"))}</td>'
                        f'<td class="vm-state {_state_class(vstate)}">{escape(vstate)}</td>'
                        f'<td>{escape(_t(v, "host"))}</td><td>{escape(_t(v, "flavor"))}</td>'
                        f"<td>{escape(ips)}</td></tr>")
            out.append("</tbody></table></article>")
    if not count:
        out.append('<p class="empty">no deployment visible</p>')
    out.append("</section>")
    return "".join(out)


def routes(ctx: HttpContext) -> list[BaseRoute]:
    return Dashboard(ctx).routes()
