"""Following escEvent notifications until an operation's terminal event (``--wait``),
with per-VM progress and "still waiting" lines on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from escnc.cli.common import (
    _PARSER,
    EXIT_CONNECT,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_TIMEOUT,
    CliError,
    RpcFailed,
    local,
)


@dataclass
class Waiter:
    """Follows escEvent notifications until the terminal event of one operation."""

    terminal: set[str]
    match: Callable[[dict[str, str]], bool]
    started: float = field(default_factory=time.monotonic)
    vms: dict[str, str] = field(default_factory=dict)
    failed: bool = False
    done: bool = False
    # False: a FAILURE is recorded, but waiting goes on until a terminal event (an
    # undeploy reports FAILUREs of single VMs and still ends with SERVICE_UNDEPLOYED)
    stop_on_failure: bool = True
    # after the terminal event, also wait for these (VM name -> event type)
    then: dict[str, str] = field(default_factory=dict)
    last: str = ""
    _terminal_seen: bool = False

    def feed(self, event: etree._Element) -> None:
        info = event_fields(event)
        if not self.match(info):
            return
        elapsed = time.monotonic() - self.started
        vm = info.get("generated_vmname") or info.get("vmname") or ""
        if vm:
            self.vms[vm] = info.get("type", "")
        who = "/".join(x for x in (info.get("tenant"), info.get("depname")) if x)
        print(
            f"[{elapsed:7.1f}s] {info.get('type', '?'):<26} {info.get('status', ''):<8}"
            f" {who}{' ' + vm if vm else ''}: {info.get('status_message', '')}",
            file=sys.stderr,
            flush=True,
        )
        self.last = info.get("type", "")
        if vm and self.then.get(vm) == info.get("type"):
            del self.then[vm]
        if info.get("status") == "FAILURE":
            self.failed = True
            if self.stop_on_failure or info.get("type") in self.terminal:
                self.done = True
        elif info.get("type") in self.terminal:
            self._terminal_seen = True
        if self._terminal_seen and not self.then:
            self.done = True

    def summary(self) -> None:
        if self.vms:
            print("VM progress:", file=sys.stderr)
            for vm, last in sorted(self.vms.items()):
                print(f"  {vm}: {last}", file=sys.stderr)


def event_fields(event: etree._Element) -> dict[str, str]:
    """Flatten an escEvent: status, depname, tenant, vmname, generated_vmname, type ..."""
    out: dict[str, str] = {}
    for el in event.iter():
        if not isinstance(el.tag, str) or len(el):
            continue
        name = local(el.tag)
        if name in out:
            continue
        parent = el.getparent()
        if parent is not None and local(parent.tag) == "vm_target":
            name = "target_" + name
        out[name] = (el.text or "").strip()
    return out


def subscribe(m: Any, stream: str = "escEvent", start_time: str | None = None) -> None:
    reply = m.create_subscription(stream_name=stream, start_time=start_time)
    if not reply.ok:
        raise RpcFailed(reply)


PROGRESS_EVERY = 15.0  # seconds between "still waiting" lines


def follow(m: Any, waiter: Waiter, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + PROGRESS_EVERY
    while not waiter.done:
        now = time.monotonic()
        if now >= next_note:
            expected = ", ".join(f"{vm} {t}" for vm, t in sorted(waiter.then.items()))
            print(f"[{now - waiter.started:7.1f}s] still waiting"
                  f"{' (last event ' + waiter.last + ')' if waiter.last else ''}"
                  f"{'; expecting ' + expected if expected else ''}",
                  file=sys.stderr, flush=True)
            next_note = now + PROGRESS_EVERY
        left = deadline - time.monotonic()
        if left <= 0:
            waiter.summary()
            print(f"escnc-cli: gave up waiting after {timeout:.0f} s", file=sys.stderr)
            return EXIT_TIMEOUT
        notif = m.take_notification(block=True, timeout=min(left, 1.0))
        if notif is None:
            if not m.connected:
                raise CliError("the server closed the session", EXIT_CONNECT)
            continue
        root = etree.fromstring(notif.notification_xml.encode(), _PARSER)
        for body in root:
            if local(body.tag) == "escEvent":
                waiter.feed(body)
    waiter.summary()
    return EXIT_FAILURE if waiter.failed else EXIT_OK
