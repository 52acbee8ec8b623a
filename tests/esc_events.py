"""escEvent notifications as a NETCONF client sees them: one collector for the tests
that subscribe over ncclient (resource events -- CREATE_IMAGE, DELETE_IMAGE... -- are
kept apart, as most tests wait for deployment events)."""

from __future__ import annotations

import time

from lxml import etree

from conftest import is_resource_event
from escnc.ns import ESC

NS = {"e": ESC}


def etype(ev: etree._Element) -> str:
    return ev.findtext("e:event/e:type", namespaces=NS) or ""


def types(events: list[etree._Element]) -> list[str]:
    return [etype(e) for e in events]


class Events:
    """escEvent notifications of one NETCONF session, in arrival order."""

    def __init__(self, m) -> None:  # type: ignore[no-untyped-def]
        self.m = m
        m.create_subscription(stream_name="escEvent")
        self.seen: list[etree._Element] = []  # every deployment event taken so far
        self.resources: list[etree._Element] = []  # CREATE_IMAGE, DELETE_IMAGE...

    def _take(self, timeout: float) -> etree._Element | None:
        """The next deployment event within ``timeout`` (None: none came)."""
        n = self.m.take_notification(block=True, timeout=timeout)
        if n is None:
            return None
        ev = etree.fromstring(n.notification_xml.encode()).find(".//e:escEvent", NS)
        if ev is not None and is_resource_event(ev):
            self.resources.append(ev)
            return None
        return ev

    def until(self, last: str, timeout: float = 30.0, count: int = 1) -> list[etree._Element]:
        """Collect events until ``last`` has arrived ``count`` times; return them."""
        got: list[etree._Element] = []
        deadline = time.monotonic() + timeout
        while sum(1 for e in got if etype(e) == last) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {last}; got {types(got)}"
            ev = self._take(min(remaining, 0.5))
            if ev is not None:
                got.append(ev)
        self.seen += got
        return got

    def quiet(self, seconds: float) -> list[etree._Element]:
        """Whatever arrives within ``seconds`` (to show that nothing more does)."""
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ev = self._take(min(left, 0.2))
            if ev is not None:
                got.append(ev)
        self.seen += got
        return got
