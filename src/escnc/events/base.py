"""Bodies of the server's own notifications.

RFC 6470 (ietf-netconf-notifications): netconf-config-change, netconf-session-start,
netconf-session-end, netconf-confirmed-commit. RFC 5277 (nc-notifications):
replayComplete, notificationComplete. RFC 8639: subscription-terminated, sent to a
subscriber closed for falling too far behind.
"""

from __future__ import annotations

from collections.abc import Iterable

from lxml import etree

from escnc.events.log import StoredEvent, format_event_time, now_ms
from escnc.ns import NC_NOTIF_BASE, NC_NOTIFICATIONS, qn
from escnc.services import Change

SUBSCRIBED_NOTIFICATIONS = "urn:ietf:params:xml:ns:yang:ietf-subscribed-notifications"
TERMINATION_REASONS = ("closed", "killed", "dropped", "timeout", "bad-hello", "other")
CONFIRM_EVENTS = ("start", "cancel", "timeout", "extend", "complete")


def _el(parent: etree._Element, name: str, text: object = None) -> etree._Element:
    child = etree.SubElement(parent, qn(NC_NOTIF_BASE, name))
    if text is not None:
        child.text = str(text)
    return child


def _root(name: str) -> etree._Element:
    return etree.Element(qn(NC_NOTIF_BASE, name), nsmap={None: NC_NOTIF_BASE})  # type: ignore[dict-item]


def _session_parms(
    parent: etree._Element, username: str, session_id: int, source_host: str | None
) -> None:
    _el(parent, "username", username)
    _el(parent, "session-id", session_id)
    if source_host:
        _el(parent, "source-host", source_host)


def config_change(
    *,
    username: str,
    session_id: int,
    source_host: str | None = None,
    datastore: str = "running",
    edits: Iterable[Change] = (),
) -> etree._Element:
    """netconf-config-change; session 0 (the system) is reported as ``<server/>``."""
    root = _root("netconf-config-change")
    changed_by = _el(root, "changed-by")
    if session_id == 0:
        _el(changed_by, "server")
    else:
        _session_parms(changed_by, username, session_id, source_host)
    _el(root, "datastore", datastore if datastore in ("running", "startup") else "running")
    for change in edits:
        edit = _el(root, "edit")
        nsmap = {p: u for p, u in change.nsmap.items() if p}
        target = etree.SubElement(edit, qn(NC_NOTIF_BASE, "target"), nsmap=nsmap)
        target.text = change.target
        _el(edit, "operation", change.operation)
    return root


def session_start(*, username: str, session_id: int, source_host: str | None) -> etree._Element:
    root = _root("netconf-session-start")
    _session_parms(root, username, session_id, source_host)
    return root


def session_end(
    *,
    username: str,
    session_id: int,
    source_host: str | None,
    termination_reason: str = "closed",
    killed_by: int | None = None,
) -> etree._Element:
    root = _root("netconf-session-end")
    _session_parms(root, username, session_id, source_host)
    if termination_reason == "killed" and killed_by is not None:
        _el(root, "killed-by", killed_by)
    reason = termination_reason if termination_reason in TERMINATION_REASONS else "other"
    _el(root, "termination-reason", reason)
    return root


def confirmed_commit(
    *,
    confirm_event: str,
    username: str = "",
    session_id: int = 0,
    source_host: str | None = None,
    timeout: int | None = None,
) -> etree._Element:
    root = _root("netconf-confirmed-commit")
    # the session parameters are absent for a timeout (no session caused it)
    if confirm_event != "timeout":
        _session_parms(root, username, session_id, source_host)
    _el(root, "confirm-event", confirm_event)
    if confirm_event in ("start", "extend") and timeout is not None:
        _el(root, "timeout", timeout)
    return root


# -- subscription control notifications (not logged: they belong to one subscription) --


def control_notification(body: etree._Element) -> bytes:
    """A complete <notification> stamped now, for messages that are not logged."""
    ts = now_ms()
    return StoredEvent.make(0, "", ts, format_event_time(ts), etree.tostring(body)).notification


def replay_complete() -> bytes:
    return control_notification(etree.Element(qn(NC_NOTIFICATIONS, "replayComplete"),
                                              nsmap={None: NC_NOTIFICATIONS}))  # type: ignore[dict-item]


def notification_complete() -> bytes:
    return control_notification(etree.Element(qn(NC_NOTIFICATIONS, "notificationComplete"),
                                              nsmap={None: NC_NOTIFICATIONS}))  # type: ignore[dict-item]


def subscription_terminated(subscription_id: int, last_event_time: str | None) -> bytes:
    """RFC 8639 subscription-terminated (reason insufficient-resources): the subscriber
    fell too far behind. Resume with create-subscription startTime = last eventTime."""
    root = etree.Element(
        qn(SUBSCRIBED_NOTIFICATIONS, "subscription-terminated"),
        nsmap={None: SUBSCRIBED_NOTIFICATIONS, "sn": SUBSCRIBED_NOTIFICATIONS},  # type: ignore[dict-item]
    )
    etree.SubElement(root, qn(SUBSCRIBED_NOTIFICATIONS, "id")).text = str(subscription_id)
    etree.SubElement(root, qn(SUBSCRIBED_NOTIFICATIONS, "reason")).text = (
        "sn:insufficient-resources"
    )
    if last_event_time:
        # a comment keeps the body schema-valid while telling humans where to resume
        root.append(etree.Comment(f" resume with startTime {last_event_time} "))
    return control_notification(root)

