"""ICMP echo without a process per ping: one raw socket and one receiver thread.

``Pinger.ping(address, callback, timeout)`` sends one echo request and returns at
once; the receiver thread calls ``callback(True)`` when the matching echo reply
arrives and ``callback(False)`` at the timeout. Thousands of pings in flight cost one
thread and a dict entry each, and a dead host never blocks anybody.

Raw ICMP sockets need root (or CAP_NET_RAW); :func:`shared_pinger` returns None
when the socket cannot be opened and callers fall back to the ``ping`` command.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

ECHO_REQUEST = 8
ECHO_REPLY = 0


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int, payload: bytes = b"escnc-monitor") -> bytes:
    header = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq)
    csum = _checksum(header + payload)
    return struct.pack("!BBHHH", ECHO_REQUEST, 0, csum, ident, seq) + payload


class Pinger:
    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self._sock.setblocking(False)
        # bursts of replies (and, on loopback, our own requests) must not be dropped
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._ident = (os.getpid() ^ id(self)) & 0xFFFF
        self._seqs = itertools.count()
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[str, Callable[[bool], None]]] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._closed = False
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="icmp-pinger", daemon=True)
        self._thread.start()

    def ping(self, address: str, callback: Callable[[bool], None], timeout: float = 1.0) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            seq = next(self._seqs) & 0xFFFF
            stale = self._pending.pop(seq, None)  # 65,536 pings ago: long expired
            self._pending[seq] = (address, callback)
            heapq.heappush(self._deadlines, (deadline, seq))
            earliest = self._deadlines[0][1] == seq
            self.sent += 1
        if stale is not None:
            stale[1](False)
        try:
            self._sock.sendto(echo_request(self._ident, seq), (address, 0))
        except OSError as exc:
            log.debug("ping %s: %s", address, exc)
            with self._lock:
                entry = self._pending.pop(seq, None)
            if entry is not None:
                callback(False)
            return
        if earliest:
            os.write(self._wake_w, b"x")

    def ping_sync(self, address: str, timeout: float = 1.0) -> bool:
        done = threading.Event()
        result: list[bool] = []

        def cb(ok: bool) -> None:
            result.append(ok)
            done.set()

        self.ping(address, cb, timeout)
        done.wait(timeout + 1.0)
        return bool(result and result[0])

    def close(self) -> None:
        self._closed = True
        os.write(self._wake_w, b"x")

    def _run(self) -> None:
        while not self._closed:
            with self._lock:
                wait = self._deadlines[0][0] - time.monotonic() if self._deadlines else 1.0
            try:
                ready, _, _ = select.select(
                    [self._sock.fileno(), self._wake_r], [], [], max(0.0, wait)
                )
            except OSError:
                return
            replies: list[Callable[[bool], None]] = []
            if self._sock.fileno() in ready:
                replies = self._receive()
            if self._wake_r in ready:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
            expired = []
            now = time.monotonic()
            with self._lock:
                while self._deadlines and self._deadlines[0][0] <= now:
                    _, seq = heapq.heappop(self._deadlines)
                    entry = self._pending.pop(seq, None)
                    if entry is not None:
                        expired.append(entry[1])
            for cb in replies:
                self._call(cb, True)
            for cb in expired:
                self._call(cb, False)

    def _receive(self) -> list[Callable[[bool], None]]:
        done: list[Callable[[bool], None]] = []
        while True:
            try:
                data, (source, _port) = self._sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return done
            except OSError:
                return done
            ihl = (data[0] & 0x0F) * 4
            if len(data) < ihl + 8:
                continue
            kind, _code, _csum, ident, seq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if kind != ECHO_REPLY or ident != self._ident:
                continue
            with self._lock:
                entry = self._pending.get(seq)
                if entry is None or entry[0] != source:
                    continue
                del self._pending[seq]
            done.append(entry[1])

    @staticmethod
    def _call(cb: Callable[[bool], None], ok: bool) -> None:
        try:
            cb(ok)
        except Exception:
            log.exception("ping callback failed")


_shared: Pinger | None = None
_shared_failed = False
_shared_lock = threading.Lock()


def shared_pinger() -> Pinger | None:
    """The process's pinger, or None without the privilege to open a raw ICMP socket."""
    global _shared, _shared_failed
    with _shared_lock:
        if _shared is None and not _shared_failed:
            try:
                _shared = Pinger()
            except OSError as exc:
                _shared_failed = True
                log.info("no raw ICMP socket (%s): pinging with the ping command", exc)
        return _shared
