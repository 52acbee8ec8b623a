"""Capacity change subscriptions: thresholds on a zone's figures of one kind.

With thresholds, a subscription fires once each time a threshold's condition
becomes true (it was false at the previous evaluation); without, on every change
of the figures. Evaluations run on the capacity thread (after a VM or reservation
change, and every poll), from the host snapshot.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from escnc.engine.capacity import events
from escnc.engine.capacity.model import Figures
from escnc.engine.capacity.records import Subscription, Threshold
from escnc.engine.errors import Invalid, NotFound
from escnc.vim.source_policy import SourceRefused, callback_policy, parse_url

if TYPE_CHECKING:
    from escnc.engine.capacity.manager import CapacityManager


class SubscriptionSet:
    def __init__(self, mgr: CapacityManager) -> None:
        self.mgr = mgr
        self._lock = threading.Lock()
        self._eval_lock = threading.Lock()  # one evaluation at a time
        self._subs = {s.id: s for s in mgr.store.subscriptions()}
        self._last: dict[tuple[Any, ...], Any] = {}

    def reload(self) -> None:
        """Re-read the subscriptions from the store (a node that becomes leader)."""
        subs = {s.id: s for s in self.mgr.store.subscriptions()}
        with self._lock:
            self._subs = subs

    def all(self) -> list[Subscription]:
        with self._lock:
            return list(self._subs.values())

    def add(
        self,
        kind: str,
        zone: str,
        types: Iterable[str],
        thresholds: Iterable[Threshold],
        notification_url: str = "",
    ) -> Subscription:
        if zone and self.mgr.zones().members(zone) is None:
            raise NotFound(f"resource zone {zone} unknown")
        if notification_url:
            # the outbound URL policy of callbacks, now (spelling) and before each POST
            try:
                parse_url(callback_policy(self.mgr.engine.settings, "notificationUrl"),
                          notification_url)
            except SourceRefused as exc:
                raise Invalid(str(exc)) from None
        sub = Subscription(
            id=str(uuid.uuid4()),
            kind=kind,
            zone=zone,
            types=tuple(dict.fromkeys(types)),
            thresholds=tuple(thresholds),
            created=self.mgr.clock.now(),
            notification_url=notification_url,
        )
        with self._lock:
            self.mgr.store.put_subscription(sub)
            self._subs[sub.id] = sub
        self.evaluate(only=sub.id, baseline_only=True)
        return sub

    def remove(self, sid: str) -> None:
        with self._lock:
            if self._subs.pop(sid, None) is None:
                raise NotFound(f"subscription {sid} does not exist")
            self.mgr.store.delete_subscription(sid)

    def evaluate(self, only: str = "", baseline_only: bool = False) -> None:
        with self._eval_lock:
            subs = [s for s in self.all() if not only or s.id == only]
            figures: dict[tuple[str, str], Figures] = {}
            for sub in subs:
                key = (sub.kind, sub.zone)
                if key not in figures:
                    try:
                        figures[key] = self.mgr.figures(sub.kind, sub.zone)
                    except NotFound:  # its zone was removed from the settings
                        continue
                self._check(sub, figures[key], baseline_only)

    def _check(self, sub: Subscription, fig: Figures, baseline_only: bool) -> None:
        for rtype in sub.types:
            info = fig.info(rtype)
            checks: list[tuple[Any, Any]] = [
                ((sub.id, rtype, i), t.holds(info)) for i, t in enumerate(sub.thresholds)
            ] or [((sub.id, rtype), tuple(sorted(info.items())))]
            fired = False
            for key, now in checks:
                prev = self._last.get(key)
                self._last[key] = now
                if baseline_only or prev is None:
                    continue
                fired |= (now is True and prev is False) if sub.thresholds else now != prev
            if fired:  # one notification per type and evaluation
                body = events.capacity_notification(
                    sub.id, sub.kind, sub.zone, rtype, info, self.mgr.clock.now()
                )
                events.publish(self.mgr.engine.services.events, body)
