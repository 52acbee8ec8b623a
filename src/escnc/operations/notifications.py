"""RFC 5277 notifications: create-subscription, the netconf/streams list, and the
RFC 6470 base notifications (config change, session start/end, confirmed commit)
published on the NETCONF stream."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lxml import etree

from escnc.events import base
from escnc.events.esc_event import NETCONF_STREAM
from escnc.events.subscriptions import Subscriptions
from escnc.nacm import Nacm, Principal
from escnc.ns import ESC, MONITORING, NC_NOTIF_BASE, NC_NOTIFICATIONS, NOTIF, qn
from escnc.operations.authorize import deployment_chain
from escnc.services import Change

if TYPE_CHECKING:
    from collections.abc import Callable

    from escnc.events.log import StoredEvent
    from escnc.rpc.dispatch import RpcContext, RpcRegistry, SessionHandle
    from escnc.services import CommitEvent, Services

log = logging.getLogger(__name__)

CAP_NOTIFICATION = "urn:ietf:params:netconf:capability:notification:1.0"
CAP_INTERLEAVE = "urn:ietf:params:netconf:capability:interleave:1.0"


def streams_state(services: Services) -> list[etree._Element]:
    """``<netconf xmlns="urn:ietf:params:xml:ns:netmod:notification"><streams>``."""
    bus = services.events
    root = etree.Element(qn(NC_NOTIFICATIONS, "netconf"), nsmap={None: NC_NOTIFICATIONS})  # type: ignore[dict-item]
    streams = etree.SubElement(root, qn(NC_NOTIFICATIONS, "streams"))
    for name, description in bus.streams.items():
        stream = etree.SubElement(streams, qn(NC_NOTIFICATIONS, "stream"))
        etree.SubElement(stream, qn(NC_NOTIFICATIONS, "name")).text = name
        etree.SubElement(stream, qn(NC_NOTIFICATIONS, "description")).text = description
        etree.SubElement(stream, qn(NC_NOTIFICATIONS, "replaySupport")).text = "true"
        etree.SubElement(
            stream, qn(NC_NOTIFICATIONS, "replayLogCreationTime")
        ).text = bus.log_creation_time
    return [root]


_ESC_EVENT = qn(ESC, "escEvent")
_CONFIG_CHANGE = qn(NC_NOTIF_BASE, "netconf-config-change")
_SESSION_EVENTS = (qn(NC_NOTIF_BASE, "netconf-session-start"),
                   qn(NC_NOTIF_BASE, "netconf-session-end"))


def event_resources(nacm: Nacm, body: etree._Element) -> list[list[etree._Element]]:
    """The data nodes a notification is about, which its receiver must be able to
    read: an escEvent's deployment (or tenant), every target of a config change,
    the session entry of a session start/end (other users' sessions are private)."""
    if body.tag == _ESC_EVENT:
        tenant = (body.findtext(qn(ESC, "tenant")) or "").strip()
        if not tenant:
            return []
        dep = (body.findtext(qn(ESC, "depname")) or "").strip()
        return [deployment_chain(tenant, dep or None)]
    if body.tag == _CONFIG_CHANGE:
        out = []
        for target in body.iterfind(f"{{{NC_NOTIF_BASE}}}edit/{{{NC_NOTIF_BASE}}}target"):
            chain = nacm.chain_of(target.text or "", target.nsmap)
            if chain:
                out.append(chain)
        return out
    if body.tag in _SESSION_EVENTS:
        session = etree.Element(qn(MONITORING, "session"))
        etree.SubElement(session, qn(MONITORING, "username")).text = (
            body.findtext(qn(NC_NOTIF_BASE, "username")) or ""
        )
        return [[etree.Element(qn(MONITORING, "netconf-state")),
                 etree.Element(qn(MONITORING, "sessions")), session]]
    return []


def event_authorizer(
    services: Services,
) -> Callable[[SessionHandle], Callable[[StoredEvent], bool] | None]:
    """Per subscribing session: may this event be delivered (RFC 8341 3.4.6)?
    Decided per event, so rules changed during a subscription apply at once."""

    def for_session(session: SessionHandle) -> Callable[[StoredEvent], bool] | None:
        nacm = services.nacm
        if nacm is None:
            return None
        who = Principal(session.username, session.session_id)

        def allowed(event: StoredEvent) -> bool:
            if nacm.view(who) is None:
                return True
            body = event.body_element()
            q = etree.QName(body)
            return bool(
                nacm.notification_allowed(
                    who, q.namespace or "", q.localname, event_resources(nacm, body)
                )
            )

        return allowed

    return for_session


class BaseNotifier:
    """Turns datastore and session callbacks into RFC 6470 notifications."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def _publish(self, body: etree._Element) -> None:
        try:
            self.services.events.publish(NETCONF_STREAM, body)
        except Exception:  # a closed bus at shutdown must not break a commit/session
            log.exception("could not publish %s", body.tag)

    def _source_host(self, session_id: int) -> str | None:
        sessions = self.services.sessions
        if session_id == 0 or sessions is None:
            return None
        getter = getattr(sessions, "get", None)
        session = getter(session_id) if getter is not None else None
        if session is not None and getattr(session, "source_host", None):
            return str(session.source_host)
        for info in getattr(sessions, "list", list)():
            if getattr(info, "session_id", None) == session_id:
                return getattr(info, "source_host", None) or None
        return None

    def on_commit(self, event: CommitEvent) -> None:
        self._publish(
            base.config_change(
                username=event.username,
                session_id=event.session_id,
                source_host=self._source_host(event.session_id),
                datastore=event.datastore,
                edits=event.changes,
            )
        )

    def on_session(self, kind: str, info: Any) -> None:
        username = str(getattr(info, "username", ""))
        session_id = int(getattr(info, "session_id", 0))
        source_host = getattr(info, "source_host", None) or None
        if kind == "start":
            self._publish(
                base.session_start(
                    username=username, session_id=session_id, source_host=source_host
                )
            )
        elif kind == "end":
            self._publish(
                base.session_end(
                    username=username,
                    session_id=session_id,
                    source_host=source_host,
                    termination_reason=getattr(info, "termination_reason", None) or "other",
                    killed_by=getattr(info, "killed_by", None),
                )
            )

    def on_startup(self, operation: str, session_id: int, username: str) -> None:
        """copy-config / delete-config wrote <startup> (RFC 6470 covers it too)."""
        self._publish(
            base.config_change(
                username=username,
                session_id=session_id,
                source_host=self._source_host(session_id),
                datastore="startup",
                edits=[Change(operation, "/esc:esc_datamodel", {"esc": ESC})],
            )
        )

    def on_confirmed_commit(
        self, kind: str, session_id: int, username: str, timeout: int | None,
        persist_id: str | None = None,
    ) -> None:
        self._publish(
            base.confirmed_commit(
                confirm_event=kind,
                username=username,
                session_id=session_id,
                source_host=self._source_host(session_id),
                timeout=timeout,
            )
        )


def register(registry: RpcRegistry, services: Services) -> None:
    if services.events is None:
        return
    subscriptions = Subscriptions(
        services.events, services.settings, authorize=event_authorizer(services)
    )

    def create_subscription(ctx: RpcContext, request: etree._Element) -> None:
        subscriptions.create(ctx.session, request)

    registry.register(NOTIF, "create-subscription", create_subscription)
    services.state_providers.append(lambda: streams_state(services))
    for cap in (CAP_NOTIFICATION, CAP_INTERLEAVE):
        if cap not in services.capabilities:
            services.capabilities.append(cap)

    notifier = BaseNotifier(services)
    hooks = (
        (services.datastore, "add_commit_listener", notifier.on_commit),
        (services.datastore, "add_confirmed_commit_listener", notifier.on_confirmed_commit),
        (services.datastore, "add_startup_listener", notifier.on_startup),
        (services.sessions, "add_session_listener", notifier.on_session),
    )
    for component, method, callback in hooks:
        add = getattr(component, method, None)
        if add is None:
            log.warning("RFC 6470: %s.%s missing; those notifications are off",
                        type(component).__name__, method)
            continue
        add(callback)
    # lets tests and the bus owner reach the subscriptions (e.g. to close them)
    services.events.subscriptions = subscriptions
