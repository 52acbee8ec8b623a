"""RFC 6022 ietf-netconf-monitoring: the netconf-state tree and get-schema."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lxml import etree

from escnc.errors import RpcError
from escnc.ns import MONITORING, qn
from escnc.rpc.capabilities import server_capabilities
from escnc.rpc.dispatch import RpcContext, RpcRegistry

if TYPE_CHECKING:
    from escnc.services import Services

CAPABILITY = f"{MONITORING}?module=ietf-netconf-monitoring&revision=2010-10-04"
_CANDIDATE = "urn:ietf:params:netconf:capability:candidate:1.0"
_STARTUP = "urn:ietf:params:netconf:capability:startup:1.0"


def _sub(parent: etree._Element, name: str, text: object = None) -> etree._Element:
    el = etree.SubElement(parent, qn(MONITORING, name))
    if text is not None:
        el.text = str(text)
    return el


def schema_modules(services: Services) -> list[Any]:
    modules = getattr(services.schema, "modules", None)
    return list(modules()) if modules is not None else []


def netconf_state(services: Services) -> etree._Element:
    # "ncm" is declared too: transport and format are identityrefs.
    nsmap = {None: MONITORING, "ncm": MONITORING}
    root = etree.Element(qn(MONITORING, "netconf-state"), nsmap=nsmap)  # type: ignore[arg-type]
    caps = _sub(root, "capabilities")
    for cap in server_capabilities(services):
        _sub(caps, "capability", cap)

    locks_fn = getattr(services.datastore, "locks", None)
    locks: dict[str, tuple[int, str]] = dict(locks_fn()) if locks_fn is not None else {}
    names = ["running"]
    if _CANDIDATE in services.capabilities or "candidate" in locks:
        names.append("candidate")
    if _STARTUP in services.capabilities or "startup" in locks:
        names.append("startup")
    stores = _sub(root, "datastores")
    for name in names:
        ds = _sub(stores, "datastore")
        _sub(ds, "name", name)
        if name in locks:
            holder, since = locks[name]
            glock = _sub(_sub(ds, "locks"), "global-lock")
            _sub(glock, "locked-by-session", holder)
            _sub(glock, "locked-time", since)

    modules = schema_modules(services)
    if modules:
        schemas = _sub(root, "schemas")
        for m in modules:
            s = _sub(schemas, "schema")
            _sub(s, "identifier", m.name)
            _sub(s, "version", m.revision or "")
            _sub(s, "format", "ncm:yang")
            _sub(s, "namespace", m.namespace)
            _sub(s, "location", "NETCONF")

    manager = services.sessions
    if manager is not None:
        sessions = _sub(root, "sessions")
        for info in manager.list():
            s = _sub(sessions, "session")
            _sub(s, "session-id", info.session_id)
            _sub(s, "transport", "ncm:netconf-ssh")
            _sub(s, "username", info.username)
            _sub(s, "source-host", info.source_host)
            _sub(s, "login-time", info.login_time)
            c = info.counters
            _sub(s, "in-rpcs", c.in_rpcs)
            _sub(s, "in-bad-rpcs", c.in_bad_rpcs)
            _sub(s, "out-rpc-errors", c.out_rpc_errors)
            _sub(s, "out-notifications", c.out_notifications)
        st = manager.stats()
        stats = _sub(root, "statistics")
        _sub(stats, "netconf-start-time", st.netconf_start_time)
        _sub(stats, "in-bad-hellos", st.in_bad_hellos)
        _sub(stats, "in-sessions", st.in_sessions)
        _sub(stats, "dropped-sessions", st.dropped_sessions)
        _sub(stats, "in-rpcs", st.counters.in_rpcs)
        _sub(stats, "in-bad-rpcs", st.counters.in_bad_rpcs)
        _sub(stats, "out-rpc-errors", st.counters.out_rpc_errors)
        _sub(stats, "out-notifications", st.counters.out_notifications)
    return root


def get_schema(ctx: RpcContext, request: etree._Element) -> etree._Element:
    ident_el = request.find(qn(MONITORING, "identifier"))
    identifier = (ident_el.text or "").strip() if ident_el is not None else ""
    if not identifier:
        raise RpcError(
            "missing-element", "get-schema needs an identifier", type="protocol",
            info={"bad-element": "identifier"},
        )
    version_el = request.find(qn(MONITORING, "version"))
    version = (version_el.text or "").strip() or None if version_el is not None else None
    format_el = request.find(qn(MONITORING, "format"))
    if format_el is not None:
        fmt = (format_el.text or "").strip().rpartition(":")[2]
        if fmt != "yang":
            raise RpcError(
                "invalid-value", f"schema format {fmt!r} is not supported (only yang)",
                type="protocol", info={"bad-element": "format"},
            )
    schema = ctx.services.schema
    module_text = getattr(schema, "module_text", None)
    if module_text is None:
        raise RpcError("invalid-value", f"no schema {identifier!r}", type="protocol",
                       info={"bad-element": "identifier"})
    text = module_text(identifier, version)
    data = etree.Element(qn(MONITORING, "data"), nsmap={None: MONITORING})  # type: ignore[dict-item]
    data.text = text
    return data


def register(registry: RpcRegistry, services: Services) -> None:
    registry.register(MONITORING, "get-schema", get_schema)
    if services.nacm is not None:
        # other users' sessions are hidden unless a NACM rule lets the user read them
        services.nacm.add_private_entries(
            [qn(MONITORING, "netconf-state"), qn(MONITORING, "sessions"),
             qn(MONITORING, "session")],
            lambda el: (el.findtext(qn(MONITORING, "username")) or "").strip(),
        )
    services.state_providers.append(lambda: [netconf_state(services)])
    module_caps = getattr(services.schema, "module_capabilities", None)
    listed = module_caps() if module_caps is not None else []
    if not any("module=ietf-netconf-monitoring" in c for c in [*listed, *services.capabilities]):
        services.capabilities.append(CAPABILITY)
