"""ESC REST callbacks: durable, retried, bounded delivery of a request's outcome and events.

A transaction is stored (``state_dir/callbacks.sqlite3``, or the cluster's
PostgreSQL database) *before* its request is answered, with the event-log sequence
number it starts after and what ends it (the terminal escEvent types of the request,
and the tenant/deployment/VM/snapshot they concern). :class:`CallbackTracker` reads
the escEvent stream from the event log with a cursor kept in the same database: each
matching event becomes a queued delivery to ``Callback-ESC-Events`` and the terminal
one the outcome delivery to ``Callback``, in the same database transaction that moves
the cursor -- so a kill -9 of escnc at any point loses no callback and queues none
twice (after a restart the tracker resumes at the cursor; the event log holds what
was published meanwhile).

A sender thread POSTs queued deliveries in order per transaction, outside every
lock, with exponential backoff between failed attempts, at most
``callback_max_attempts`` times; then the delivery is marked failed (and logged).
Every URL is checked by the injected ``check_url`` (the outbound URL policy) when the
request is accepted and again, resolved, right before each attempt.

Capacity notifications ride the same outbox: with a :class:`Notifier`, each
``capacityChangeNotification`` whose subscription has a notificationUrl becomes a
delivery of kind ``notification`` (its "transaction" is ``capacity:<subscription>``,
which keeps them in order per subscriber), queued with the cursor move like the rest.
While a subscriber has a URL the tracker resumes at the cursor after a restart.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lxml import etree

from escnc.events.esc_event import ESC_STREAM
from escnc.ns import ESC
from escnc.storage import Connection, Migration, Storage
from escnc.storage.component import (
    Component,
    FencedStore,
    WriteFence,
    component_storage,
    ddl,
    sqlite_tables,
)
from escnc.xmlutil import to_json_value

if TYPE_CHECKING:
    from escnc.events.bus import EventBus
    from escnc.events.log import StoredEvent

log = logging.getLogger(__name__)

E = f"{{{ESC}}}"
# sender: one POST
Sender = Callable[[str, dict[str, str], bytes], int]
# check_url(url, resolve): raise ValueError with the reason when the policy refuses it
UrlCheck = Callable[[str, bool], None]
# the cursor moves at least every this many events even when they queue nothing,
# so a restart does not reread the whole log
_IDLE_CURSOR_EVERY = 256


class Notifier(Protocol):
    """Where an event goes besides transactions (capacity notificationUrl)."""

    def target(self, ev: etree._Element) -> tuple[str, str, dict[str, str], bytes] | None:
        """(group, url, headers, body) of the POST ``ev`` calls for, or None."""

    def active(self) -> bool:
        """Whether some event may call for a POST (a subscriber has a URL)."""



def _schema_v1(conn: Connection) -> None:
    """The outbox tables. A callbacks.sqlite3 of an escnc from before the storage
    interface (txn, delivery, cursor) keeps its transactions, queued deliveries, their
    ids and the cursor, under the new (prefixed) names."""
    found = sqlite_tables(conn)
    for old in ("txn", "delivery", "cursor"):
        new = f"callback_{old}"
        if old in found and new not in found:
            conn.execute(f"ALTER TABLE {old} RENAME TO {new}")
    conn.execute("DROP INDEX IF EXISTS delivery_pending")
    ddl(conn,
        "CREATE TABLE IF NOT EXISTS callback_txn (id TEXT PRIMARY KEY, created {double} NOT NULL,"
        " after_seq {bigint} NOT NULL, spec TEXT NOT NULL, state TEXT NOT NULL,"
        " status_code INTEGER, status_message TEXT)")
    ddl(conn,
        "CREATE TABLE IF NOT EXISTS callback_delivery (id {serial}, txn TEXT NOT NULL,"
        " kind TEXT NOT NULL, url TEXT NOT NULL, headers TEXT NOT NULL, body {blob} NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0, next_at {double} NOT NULL,"
        " state TEXT NOT NULL, last_error TEXT NOT NULL DEFAULT '')")
    conn.execute("CREATE INDEX IF NOT EXISTS callback_delivery_pending"
                 " ON callback_delivery(state, txn, id)")
    conn.execute("CREATE TABLE IF NOT EXISTS callback_cursor (k INTEGER PRIMARY KEY"
                 " CHECK (k = 0), seq {bigint} NOT NULL)")


MIGRATIONS = (Migration(1, run=_schema_v1),)


@dataclass
class Transaction:
    """What one accepted request waits for."""

    tenant: str = ""
    deployment: str = ""
    vm: str = ""  # generated VM name
    terminal: tuple[str, ...] = ()  # escEvent types that end it; () = ended at once
    callback: str = ""  # outcome URI (the Callback header)
    events: str = ""  # escEvent URI (Callback-ESC-Events)
    resource: str = ""  # body of the outcome callback (the request's resource)
    content_type: str = "application/xml"
    created: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def spec(self) -> str:
        return json.dumps({k: v for k, v in vars(self).items() if k != "id"})

    @classmethod
    def load(cls, txn_id: str, spec: str) -> Transaction:
        data = json.loads(spec)
        data["terminal"] = tuple(data.get("terminal", ()))
        return cls(id=txn_id, **data)

    def matches(self, ev: etree._Element) -> bool:
        if not (self.vm or self.deployment or self.tenant):
            return False  # about nothing in particular: no event is its
        if self.vm:
            names = {ev.findtext(f"{E}vm_source/{E}generated_vmname") or "",
                     ev.findtext(f"{E}vm_target/{E}generated_vmname") or ""}
            if self.vm not in names:
                return False
        if self.deployment and (ev.findtext(f"{E}depname") or "") != self.deployment:
            return False
        return not (self.tenant and (ev.findtext(f"{E}tenant") or "") != self.tenant)


@dataclass(frozen=True)
class DeliveryInfo:
    id: int
    txn: str
    kind: str  # outcome | event | notification
    url: str
    attempts: int
    state: str  # pending | delivered | failed
    last_error: str


class CallbackStore(FencedStore):
    """The durable outbox (component ``callbacks``: callbacks.sqlite3, mode 0600, or
    the cluster's PostgreSQL database). Every write is one fenced transaction."""

    def __init__(self, path: Path | None = None, *, database: str | None = None,
                 storage: Storage | None = None, fence: WriteFence | None = None) -> None:
        storage = component_storage("CallbackStore", path, database, storage, private=True)
        self.storage = storage
        self._db = Component(storage, "callbacks", MIGRATIONS, fence=fence)

    def close(self) -> None:
        self._db.close()

    def cursor_seq(self) -> int | None:
        with self._db.read() as conn:
            row = conn.execute("SELECT seq FROM callback_cursor WHERE k = 0").fetchone()
        return None if row is None else int(row[0])

    def open_transactions(self) -> list[tuple[Transaction, int]]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT id, spec, after_seq FROM callback_txn WHERE state = 'open'"
                " ORDER BY created"
            ).fetchall()
        return [(Transaction.load(r[0], r[1]), int(r[2])) for r in rows]

    def add(self, txn: Transaction, after_seq: int) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO callback_txn(id, created, after_seq, spec, state)"
                " VALUES (?, ?, ?, ?, 'open')",
                (txn.id, time.time(), after_seq, txn.spec()),
            )
            # a cursor exists from the first transaction on: events after it are read
            conn.execute(
                "INSERT INTO callback_cursor(k, seq) VALUES (0, ?) ON CONFLICT (k) DO NOTHING",
                (after_seq,),
            )

    def drop(self, txn_id: str) -> None:
        """The request was refused after all: nothing to report."""
        with self._db.write() as conn:
            conn.execute("DELETE FROM callback_txn WHERE id = ?", (txn_id,))

    def advance(
        self,
        seq: int | None,
        deliveries: list[tuple[str, str, str, dict[str, str], bytes]],
        closed: list[tuple[str, int, str]],
    ) -> None:
        """Queue ``deliveries`` (txn, kind, url, headers, body), close transactions
        (id, status code, message) and move the cursor to ``seq`` (None: leave it),
        atomically."""
        now = time.time()
        with self._db.write() as conn:
            for txn, kind, url, headers, body in deliveries:
                conn.execute(
                    "INSERT INTO callback_delivery(txn, kind, url, headers, body, next_at,"
                    " state) VALUES (?, ?, ?, ?, ?, ?, 'pending')",
                    (txn, kind, url, json.dumps(headers), body, now),
                )
            for txn_id, code, message in closed:
                conn.execute(
                    "UPDATE callback_txn SET state = 'done', status_code = ?,"
                    " status_message = ? WHERE id = ?",
                    (code, message, txn_id),
                )
            if seq is not None:
                conn.execute(
                    "INSERT INTO callback_cursor(k, seq) VALUES (0, ?)"
                    " ON CONFLICT (k) DO UPDATE SET seq = excluded.seq", (seq,))

    def due(self, now: float, limit: int = 32) -> list[tuple[int, str, dict[str, str], bytes, int]]:
        """The first pending delivery of each transaction, if due: (id, url, headers,
        body, attempts). Later ones of a transaction wait for it (order is kept)."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT d.id, d.url, d.headers, d.body, d.attempts, d.next_at"
                " FROM callback_delivery d WHERE d.id IN (SELECT MIN(id) FROM"
                " callback_delivery WHERE state = 'pending' GROUP BY txn)"
                " ORDER BY d.id LIMIT ?",
                (limit,),
            ).fetchall()
        return [(int(r[0]), r[1], json.loads(r[2]), bytes(r[3]), int(r[4]))
                for r in rows if float(r[5]) <= now]

    def next_due(self) -> float | None:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT MIN(next_at) FROM callback_delivery WHERE state = 'pending'"
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def attempted(self, delivery_id: int, ok: bool, error: str, next_at: float | None) -> None:
        with self._db.write() as conn:
            if ok:
                conn.execute(
                    "UPDATE callback_delivery SET state = 'delivered', attempts = attempts + 1,"
                    " last_error = '' WHERE id = ?", (delivery_id,))
            elif next_at is None:
                conn.execute(
                    "UPDATE callback_delivery SET state = 'failed', attempts = attempts + 1,"
                    " last_error = ? WHERE id = ?", (error, delivery_id))
            else:
                conn.execute(
                    "UPDATE callback_delivery SET attempts = attempts + 1, last_error = ?,"
                    " next_at = ? WHERE id = ?", (error, next_at, delivery_id))

    def deliveries(self, txn_id: str | None = None, limit: int = 1000) -> list[DeliveryInfo]:
        sql = ("SELECT id, txn, kind, url, attempts, state, last_error"
               " FROM callback_delivery")
        args: tuple[Any, ...] = ()
        if txn_id is not None:
            sql += " WHERE txn = ?"
            args = (txn_id,)
        with self._db.read() as conn:
            rows = conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [DeliveryInfo(int(r[0]), r[1], r[2], r[3], int(r[4]), r[5], r[6])
                for r in reversed(rows)]

    def counts(self) -> dict[str, int]:
        with self._db.read() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM callback_delivery GROUP BY state")
            return {str(s): int(n) for s, n in rows}


def _headers(txn: Transaction, code: int, message: str, content_type: str) -> dict[str, str]:
    return {
        "ESC-Transaction-Id": txn.id,
        "ESC-Status-Code": str(code),
        "ESC-Status-Message": message.replace("\r", " ").replace("\n", " ")[:1000],
        "Content-Type": content_type,
    }


class CallbackTracker:
    """Turns escEvents into queued deliveries, and sends them."""

    def __init__(
        self,
        store: CallbackStore,
        bus: EventBus,
        send: Sender,
        check_url: UrlCheck,
        *,
        max_attempts: int = 8,
        retry_base: float = 1.0,
        retry_max: float = 300.0,
        transaction_timeout: float = 86_400.0,
        notifier: Notifier | None = None,
    ) -> None:
        self.notifier = notifier
        self._idle = 0
        self.store = store
        self.bus = bus
        self._send = send
        self.check_url = check_url
        self.max_attempts = max(1, max_attempts)
        self.retry_base = max(0.01, retry_base)
        self.retry_max = max(self.retry_base, retry_max)
        # a request whose terminal event never comes still gets an outcome (504)
        self.transaction_timeout = transaction_timeout
        self._lock = threading.Lock()  # one event at a time, in order
        self._open: dict[str, tuple[Transaction, int]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._consumer: Any = None
        self._sender: threading.Thread | None = None
        self.delivered = 0
        self.failed = 0

    def start(self) -> None:
        for txn, after in self.store.open_transactions():
            self._open[txn.id] = (txn, after)
        cursor = self.store.cursor_seq()
        if cursor is None:  # from now on events are read from a stored cursor
            self.store.advance(self.bus.head, [], [])
        waiting = bool(self._open) or (self.notifier is not None and self.notifier.active())
        # resume where the last run stopped only when someone still waits for events
        start = (cursor if cursor is not None and waiting else self.bus.head) + 1
        self._consumer = self.bus.consume(self._on_event, stream=ESC_STREAM, start_seq=start)
        self._sender = threading.Thread(target=self._send_loop, name="esc-callbacks",
                                        daemon=True)
        self._sender.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._consumer is not None:
            self._consumer.close()
        if self._sender is not None:
            self._sender.join(5.0)

    # -- accepting ------------------------------------------------------------------

    def begin(self, txn: Transaction) -> None:
        """Store ``txn`` before its request runs (events after this point are its)."""
        with self._lock:
            after = self.bus.head
            self.store.add(txn, after)
            self._open[txn.id] = (txn, after)

    def abandon(self, txn: Transaction) -> None:
        with self._lock:
            self._open.pop(txn.id, None)
            self.store.drop(txn.id)

    def finish_now(self, txn: Transaction, code: int, message: str) -> None:
        """A request whose work is done when it is answered (no events to wait for)."""
        with self._lock:
            self._open.pop(txn.id, None)
            deliveries = []
            if txn.callback:
                deliveries.append((txn.id, "outcome", txn.callback,
                                   _headers(txn, code, message, txn.content_type),
                                   txn.resource.encode()))
            # the cursor stays: events up to it may still be due to other transactions
            self.store.advance(None, deliveries, [(txn.id, code, message)])
        self._wake.set()

    # -- events ---------------------------------------------------------------------

    def _on_event(self, event: StoredEvent) -> None:
        with self._lock:
            deliveries: list[tuple[str, str, str, dict[str, str], bytes]] = []
            closed: list[tuple[str, int, str]] = []
            notify = self.notifier is not None and b"capacityChangeNotification" in event.body
            if self._open or notify:
                try:
                    ev = etree.fromstring(event.body)
                except etree.XMLSyntaxError:
                    ev = None
                if ev is not None and ev.tag == f"{E}escEvent":
                    self._match(event, ev, deliveries, closed)
                elif ev is not None and self.notifier is not None:
                    self._notify(ev, deliveries)
            # The cursor moves with what the event queued; an event that queued nothing
            # is read again after a restart and queues nothing again (a write only every
            # _IDLE_CURSOR_EVERY such events).
            self._idle += 1
            if deliveries or closed or self._idle >= _IDLE_CURSOR_EVERY:
                self.store.advance(event.seq, deliveries, closed)
                self._idle = 0
        if deliveries:
            self._wake.set()

    def _notify(self, ev: etree._Element,
                deliveries: list[tuple[str, str, str, dict[str, str], bytes]]) -> None:
        assert self.notifier is not None
        try:
            target = self.notifier.target(ev)
        except Exception:  # a malformed notification must not stop the stream
            log.exception("cannot route %s", ev.tag)
            return
        if target is not None:
            group, url, headers, body = target
            deliveries.append((group, "notification", url, headers, body))

    def _match(self, event: StoredEvent, ev: etree._Element,
               deliveries: list[tuple[str, str, str, dict[str, str], bytes]],
               closed: list[tuple[str, int, str]]) -> None:
        etype = ev.findtext(f"{E}event/{E}type") or ""
        try:
            code = int(ev.findtext(f"{E}status_code") or "200")
        except ValueError:
            code = 500
        message = ev.findtext(f"{E}status_message") or ""
        for txn_id, (txn, after) in list(self._open.items()):
            if event.seq <= after or not txn.matches(ev):
                continue
            if txn.events:
                if "json" in txn.content_type:
                    # ESC's JSON callback message, with the escEvent itself
                    body = json.dumps({
                        "escTransactionId": txn.id, "eventType": etype, "message": message,
                        "statusCode": str(code), "escEvent": to_json_value(ev),
                    }).encode()
                else:
                    body = event.body
                deliveries.append((txn_id, "event", txn.events,
                                   _headers(txn, code, message, txn.content_type), body))
            if etype in txn.terminal:
                if txn.callback:
                    deliveries.append((txn_id, "outcome", txn.callback,
                                       _headers(txn, code, message, txn.content_type),
                                       txn.resource.encode()))
                closed.append((txn_id, code, message))
                del self._open[txn_id]

    # -- sending --------------------------------------------------------------------

    def _expire(self) -> None:
        if self.transaction_timeout <= 0:
            return
        limit = time.time() - self.transaction_timeout
        with self._lock:
            old = [txn for txn, _after in self._open.values() if txn.created < limit]
            if not old:
                return
            message = f"no outcome within {self.transaction_timeout:g} s"
            deliveries = [(t.id, "outcome", t.callback, _headers(t, 504, message,
                                                                   t.content_type),
                           t.resource.encode()) for t in old if t.callback]
            for t in old:
                del self._open[t.id]
            self.store.advance(None, deliveries, [(t.id, 504, message) for t in old])
        log.warning("%d callback transaction(s) ended without their terminal event", len(old))

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._expire()
                self._send_due()
            except Exception:
                log.exception("callback sender failed; retrying")
            nxt = self.store.next_due()
            wait = 5.0 if nxt is None else max(0.0, min(5.0, nxt - time.time()))
            self._wake.wait(wait)
            self._wake.clear()

    def _send_due(self) -> None:
        for delivery_id, url, headers, body, attempts in self.store.due(time.time()):
            if self._stop.is_set():
                return
            error = ""
            try:
                self.check_url(url, True)
                status = self._send(url, headers, body)
                if not 200 <= status < 300:
                    error = f"HTTP status {status}"
            except Exception as exc:  # refused by policy, unreachable, timeout
                error = str(exc) or type(exc).__name__
            if not error:
                self.store.attempted(delivery_id, True, "", None)
                self.delivered += 1
                continue
            tried = attempts + 1
            if tried >= self.max_attempts:
                self.store.attempted(delivery_id, False, error, None)
                self.failed += 1
                log.warning("callback %d to %s failed for good after %d attempts: %s",
                            delivery_id, url, tried, error)
            else:
                delay = min(self.retry_max, self.retry_base * 2 ** (tried - 1))
                self.store.attempted(delivery_id, False, error, time.time() + delay)
                log.info("callback %d to %s failed (%s); retry in %.1f s",
                         delivery_id, url, error, delay)
