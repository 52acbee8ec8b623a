"""Capacity notifications and opdata as YANG-shaped XML (module escnc).

* ``capacityChangeNotification``: the seed's notification body (zoneId,
  notificationId, capacityChangeTime, resourceDescriptor, capacityInformation) plus
  the subscription's id, on the escEvent stream (stored, so replayable);
* ``reservationStatusChange``: a reservation became active or expired, or was
  terminated.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from lxml import etree

from escnc.engine.capacity.model import TYPE_LEAF, Amount, format_time
from escnc.engine.capacity.records import Reservation
from escnc.ns import ESC

log = logging.getLogger(__name__)
STREAM = "escEvent"


def q(name: str) -> str:
    return f"{{{ESC}}}{name}"


def leaf(parent: etree._Element, name: str, value: object) -> etree._Element:
    el = etree.SubElement(parent, q(name))
    el.text = str(value)
    return el


def capacity_notification(
    sid: str, kind: str, zone: str, rtype: str, info: Mapping[str, int], when: float
) -> etree._Element:
    root = etree.Element(q("capacityChangeNotification"), nsmap={None: ESC})  # type: ignore[dict-item]
    leaf(root, "capacityChangeSubscriptionId", sid)
    if zone:
        leaf(root, "zoneId", zone)
    leaf(root, "notificationId", str(uuid.uuid4()))
    leaf(root, "capacityChangeTime", format_time(when))
    leaf(etree.SubElement(root, q("resourceDescriptor")), TYPE_LEAF[kind], rtype)
    ci = etree.SubElement(root, q("capacityInformation"))
    for key in ("available", "reserved", "total", "allocated"):
        leaf(ci, key, info[key])
    return root


def publish(bus: Any, body: etree._Element, key: str | None = None) -> None:
    if bus is None:
        return
    try:
        if key is None:
            bus.publish(STREAM, body)
        else:
            bus.publish(STREAM, body, key=key)
    except Exception:  # a closing bus: the figures are still there to query
        log.exception("cannot publish %s", body.tag)


def reservation_key(r: Reservation, status: str) -> str:
    """The idempotency key of the event announcing ``status`` (engine/outbox.py): the
    times are part of it, since an updated reservation may reach a status again."""
    return f"reservation/{r.id}/{status}/{r.start}/{r.stop}"


def publish_reservation(bus: Any, r: Reservation, status: str, when: float) -> None:
    root = etree.Element(q("reservationStatusChange"), nsmap={None: ESC})  # type: ignore[dict-item]
    leaf(root, "reservationId", r.id)
    leaf(root, "reservationKind", r.kind)
    leaf(root, "reservationStatus", status)
    leaf(root, "changeTime", format_time(when))
    log.info("reservation %s (%s) is %s", r.id, r.kind, status)
    publish(bus, root, reservation_key(r, status))


def amount_leaves(parent: etree._Element, kind: str, amount: Amount) -> None:
    if kind == "compute":
        leaf(parent, "numCpuCores", amount.vcpus)
        leaf(parent, "numVcInstances", amount.instances)
        leaf(parent, "virtualMemSize", -(-amount.memory_mb // 1024))
    elif kind == "storage":
        leaf(parent, "storageSize", -(-amount.storage_mb // 1024))
        leaf(parent, "numSnapshots", amount.snapshots)
        leaf(parent, "numVolumes", amount.volumes)
    else:
        leaf(parent, "numPublicIps", amount.public_ips)


def opdata(
    reservations: list[Reservation], consumed: Mapping[str, Amount], now: float
) -> list[etree._Element]:
    if not reservations:
        return []
    root = etree.Element(q("esc_datamodel"), nsmap={None: ESC})  # type: ignore[dict-item]
    container = etree.SubElement(etree.SubElement(root, q("opdata")), q("reservations"))
    for r in reservations:
        el = etree.SubElement(container, q("reservation"))
        leaf(el, "reservationId", r.id)
        leaf(el, "kind", r.kind)
        leaf(el, "status", r.status(now))
        if r.zone:
            leaf(el, "zoneId", r.zone)
        leaf(el, "startTime", format_time(r.start))
        if r.stop is not None:
            leaf(el, "stopTime", format_time(r.stop))
        amount_leaves(etree.SubElement(el, q("resources")), r.kind, r.amount)
        amount_leaves(etree.SubElement(el, q("consumed")), r.kind, consumed.get(r.id, Amount()))
        for ip in r.public_ips:
            leaf(el, "publicIps", ip)
    return [root]
