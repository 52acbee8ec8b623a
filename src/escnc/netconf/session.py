"""One NETCONF session on an SSH channel: hello, RPC loop, outbound queue.

Threads: the connection thread runs :meth:`NetconfSession.run` (reads, parses and
answers RPCs in order); a writer thread drains the outbound queue, so replies and
notifications from other threads interleave without blocking anyone.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import paramiko
from lxml import etree

from escnc.errors import RpcError
from escnc.netconf import framing
from escnc.netconf.framing import FrameReader, Framing, FramingError, MessageTooBig
from escnc.netconf.hello import (
    BadHello,
    build_server_hello,
    parse_client_hello,
)
from escnc.netconf.rpc import process_message
from escnc.netconf.sessions import (
    Counters,
    SessionInfo,
    SessionManager,
    TerminationReason,
    now_iso,
)
from escnc.ns import BASE_11, NOTIF, qn
from escnc.rpc.capabilities import server_capabilities

if TYPE_CHECKING:
    from escnc.services import Services

log = logging.getLogger(__name__)

_RECV_SIZE = 256 * 1024
# how often a blocked read wakes up to look at deadlines
_POLL = 5.0
# how long a closing session waits for queued output to drain
_FLUSH_TIMEOUT = 2.0


class _FlushMark:
    """Queued by a close from another thread: everything before it has been written."""

    def __init__(self) -> None:
        self.done = threading.Event()
# A successful subscription makes the session exempt from the idle timeout
# (ietf-netconf-server idle-timeout semantics).
_SUBSCRIBE_OPS = {
    qn(NOTIF, "create-subscription"),
    qn("urn:ietf:params:xml:ns:yang:ietf-subscribed-notifications", "establish-subscription"),
}


class NetconfSession:
    def __init__(
        self,
        services: Services,
        manager: SessionManager,
        transport: paramiko.Transport,
        channel: paramiko.Channel,
        username: str,
        source: tuple[str, int],
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.manager = manager
        self.transport = transport
        self.channel = channel
        self.username = username
        self.source_host, self.source_port = source[0], int(source[1])
        self.client_capabilities: frozenset[str] = frozenset()
        self.login_time = now_iso()
        self.counters = Counters()
        self.framing = Framing.EOM
        self.subscribed = False

        self._out: queue.SimpleQueue[bytes | _FlushMark | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reader_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()  # one message on the wire at a time
        self._in_rpc = False
        self._after_reply: list[Callable[[], None]] = []
        self._close_callbacks: list[Callable[[], None]] = []
        self._callbacks_done = False
        self._ending = False  # no more output accepted
        self._flush_mark: _FlushMark | None = None
        self._close_after_reply = False
        self._reason: TerminationReason | None = None
        self._killed_by: int | None = None
        self._ended = threading.Event()
        self.session_id = manager.allocate(self)

    # --- SessionHandle ---------------------------------------------------------------

    def send_notification(self, notification: etree._Element | bytes) -> None:
        data = (
            notification
            if isinstance(notification, bytes)
            else etree.tostring(notification, encoding="utf-8")
        )
        with self._lock:
            if self._ending:
                return
            self.counters.out_notifications += 1
            self._out.put(framing.encode(data, self.framing))

    def close(self) -> None:
        """End the session: after the current reply when called from inside an RPC.

        From another thread (e.g. the event layer after a subscription-terminated
        notification) the output queued so far is written first, for at most
        ``_FLUSH_TIMEOUT`` seconds (a client that does not read cannot hold it).
        Blocks the caller until then."""
        if threading.current_thread() is self._reader_thread:
            self._close_after_reply = True
        else:
            self.terminate("other")

    def add_close_callback(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if not self._callbacks_done:
                self._close_callbacks.append(callback)
                return
        callback()  # already over: run it now, as promised

    # --- used by SessionManager ------------------------------------------------------

    def info(self) -> SessionInfo:
        return SessionInfo(
            session_id=self.session_id,
            username=self.username,
            source_host=self.source_host,
            source_port=self.source_port,
            login_time=self.login_time,
            counters=Counters(**vars(self.counters)),
            killed_by=self._killed_by,
            termination_reason=self._reason,
        )

    def terminate(
        self, reason: TerminationReason, killed_by: int | None = None, flush: bool = True
    ) -> None:
        """End the session from another thread (close, kill-session, server stop).

        With ``flush`` the output already queued is written first (bounded by
        ``_FLUSH_TIMEOUT``); nothing queued after this call is sent."""
        writer = self._writer
        with self._lock:
            if self._reason is None:
                self._reason = reason
                self._killed_by = killed_by
            mark = self._flush_mark  # another thread's terminate is flushing already
            first = mark is None
            if (
                first
                and flush
                and not self._ending  # else the reader's _finish flushes on its own
                and writer is not None
                and writer.is_alive()
                and threading.current_thread() is not writer
            ):
                mark = self._flush_mark = _FlushMark()
                self._out.put(mark)
            self._ending = True
        if flush and mark is not None:
            if mark.done.wait(_FLUSH_TIMEOUT):
                if first:
                    # EOF and close after the data; wakes the reader (recv returns b"")
                    try:
                        self.channel.close()
                    except Exception:  # the peer is already gone
                        pass
                return
            if first:
                log.info("session %d: client did not read its pending output; closing",
                         self.session_id)
        # Closing the transport wakes the reader (recv returns b"") and the writer.
        self.transport.close()

    def wait_ended(self, timeout: float) -> bool:
        return self._ended.wait(timeout)

    @property
    def pending_output(self) -> int:
        """Messages queued but not yet written (for subscriber back-pressure)."""
        return self._out.qsize()

    # --- the session loop ------------------------------------------------------------

    def run(self) -> None:
        self._reader_thread = threading.current_thread()
        self._writer = threading.Thread(
            target=self._write_loop, name=f"nc-writer-{self.session_id}", daemon=True
        )
        self._writer.start()
        caps = server_capabilities(self.services)
        try:
            # Written before anything else can be: the hello always comes first.
            self._write_now(framing.encode(build_server_hello(caps, self.session_id), Framing.EOM))
            self._read_loop()
        except Exception:
            log.exception("session %d: unexpected error", self.session_id)
            self._set_reason("other")
        finally:
            self._finish()

    def _set_reason(self, reason: TerminationReason) -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason

    def _read_loop(self) -> None:
        reader = FrameReader(self.settings.max_message_size)
        hello_done = False
        deadline = time.monotonic() + self.settings.hello_timeout
        while True:
            try:
                msg = reader.next_message()
            except MessageTooBig as exc:
                self._send_too_big(str(exc))
                self._end_with("other", f"framing error: {exc}")
                return
            except FramingError as exc:
                self._end_with("other", f"framing error: {exc}")
                return
            if msg is None:
                if self._reason is not None:
                    return
                timeout = deadline - time.monotonic() if deadline else _POLL
                if timeout <= 0:
                    self._end_with(
                        "timeout" if hello_done else "bad-hello",
                        "idle timeout" if hello_done else "no hello in time",
                    )
                    return
                self.channel.settimeout(min(timeout, _POLL))
                try:
                    data = self.channel.recv(_RECV_SIZE)
                except TimeoutError:
                    continue
                except (OSError, EOFError, paramiko.SSHException):
                    data = b""
                if not data:
                    self._set_reason("dropped")
                    return
                reader.feed(data)
                continue

            if not hello_done:
                try:
                    self.client_capabilities = parse_client_hello(msg)
                except BadHello as exc:
                    self._end_with("bad-hello", str(exc))
                    return
                hello_done = True
                if BASE_11 in self.client_capabilities:
                    self.framing = Framing.CHUNKED
                    reader.set_framing(Framing.CHUNKED)
                self.manager.started(self)
                log.info(
                    "session %d started: user %s from %s port %d (%s)",
                    self.session_id, self.username, self.source_host, self.source_port,
                    "base:1.1" if self.framing is Framing.CHUNKED else "base:1.0",
                )
            else:
                self._handle_rpc(msg)
                if self._close_after_reply:
                    self._set_reason("closed")
                    return
            idle = self.settings.idle_timeout
            deadline = time.monotonic() + idle if idle and not self.subscribed else 0.0

    def _handle_rpc(self, msg: bytes) -> None:
        self.counters.in_rpcs += 1
        self._in_rpc = True
        try:
            outcome = process_message(msg, self, self.services)
        finally:
            self._in_rpc = False
        if outcome.bad_rpc:
            self.counters.in_bad_rpcs += 1
        if outcome.errors:
            self.counters.out_rpc_errors += 1
            for err in outcome.errors:
                if err.tag == "access-denied":
                    continue  # escnc.nacm logged it, with the path
                log.info(
                    "session %d user %s: %s -> rpc-error %s/%s: %s",
                    self.session_id, self.username,
                    etree.QName(outcome.operation).localname if outcome.operation else "-",
                    err.type, err.tag, err.message,
                )
        elif outcome.operation in _SUBSCRIBE_OPS:
            self.subscribed = True
        self._send_reply(outcome.reply)
        self._run_after_reply()

    def _send_too_big(self, message: str) -> None:
        from escnc.netconf.rpc import _failed

        err = RpcError("too-big", message, type="rpc")
        self.counters.out_rpc_errors += 1
        self._send_reply(_failed(None, [err], bad=True).reply)

    def _end_with(self, reason: TerminationReason, why: str) -> None:
        self._set_reason(reason)
        log.info("session %d user %s: ending: %s", self.session_id, self.username, why)

    def after_reply(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the reply to the RPC being handled has been sent
        (e.g. replayed notifications after create-subscription's <ok/>). Outside an
        RPC it runs at once."""
        if threading.current_thread() is self._reader_thread and self._in_rpc:
            self._after_reply.append(callback)
        else:
            callback()

    def _run_after_reply(self) -> None:
        callbacks, self._after_reply = self._after_reply, []
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("session %d: after-reply callback failed", self.session_id)

    def _send_reply(self, reply: bytes) -> None:
        data = framing.encode(reply, self.framing)
        with self._lock:
            if self._ending:
                return
            if not self._out.empty():
                # keep behind output already queued
                self._out.put(data)
                return
        # Nothing queued: write from this thread and save a thread hand-off per RPC.
        self._write_now(data)

    def _write_now(self, data: bytes) -> None:
        try:
            with self._send_lock:
                self.channel.sendall(data)
        except Exception as exc:
            log.debug("session %d: write failed: %s", self.session_id, exc)
            self.transport.close()

    def _write_loop(self) -> None:
        out = self._out
        try:
            while True:
                item = out.get()
                if item is None:
                    return
                if isinstance(item, _FlushMark):
                    with self._send_lock:  # a reply being written directly ends first
                        item.done.set()
                    continue
                batch = [item]
                stop: _FlushMark | None = None
                # Coalesce what is already queued into one write.
                while len(batch) < 64:
                    try:
                        nxt = out.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None or isinstance(nxt, _FlushMark):
                        with self._send_lock:
                            self.channel.sendall(b"".join(batch))
                            if nxt is not None:
                                nxt.done.set()
                        if nxt is None:
                            return
                        stop = nxt
                        break
                    batch.append(nxt)
                if stop is not None:
                    continue
                with self._send_lock:
                    self.channel.sendall(b"".join(batch) if len(batch) > 1 else item)
        except Exception as exc:  # peer gone: wake the reader so the session ends
            log.debug("session %d: write failed: %s", self.session_id, exc)
            self.transport.close()

    def _finish(self) -> None:
        with self._lock:
            self._ending = True
        reason = self._reason or "other"
        # Locks first, so a client that saw <ok/> to close-session or kill-session can
        # take them at once.
        release = getattr(self.services.datastore, "release_session", None)
        if release is not None:
            try:
                release(self.session_id)
            except Exception:
                log.exception("session %d: releasing datastore state failed", self.session_id)
        with self._lock:
            callbacks, self._close_callbacks = self._close_callbacks, []
            self._callbacks_done = True
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("session %d: close callback failed", self.session_id)
        self._out.put(None)
        if self._writer is not None:
            self._writer.join(_FLUSH_TIMEOUT)
        try:
            self.channel.close()
        except Exception:  # the peer is already gone
            pass
        self.transport.close()
        if self._writer is not None:
            self._writer.join(_FLUSH_TIMEOUT)
        info = self.info()
        info.termination_reason = reason
        self.manager.ended(self, info)
        log.info(
            "session %d ended: user %s from %s, reason %s%s",
            self.session_id, self.username, self.source_host, reason,
            f" (killed by session {self._killed_by})" if self._killed_by else "",
        )
        self._ended.set()
