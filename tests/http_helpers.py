"""HTTP test helpers: a real callback receiver (what an ESC REST client runs) and
clients for escnc's HTTP northbound."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from lxml import etree

from conftest import PASSWORD, USER
from escnc.ns import ESC

PAYLOADS = Path(__file__).parent / "data" / "rest"
E = f"{{{ESC}}}"


def payload(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def txn(self) -> str:
        return self.headers.get("esc-transaction-id", "")

    @property
    def event_type(self) -> str:
        if self.body.startswith(b"{"):  # ESC's JSON callback message
            return str(json.loads(self.body)["eventType"])
        return etree.fromstring(self.body).findtext(f"{E}event/{E}type") or ""

    @property
    def event_status(self) -> str:
        if self.body.startswith(b"{"):
            return str(json.loads(self.body)["escEvent"]["status"])
        return etree.fromstring(self.body).findtext(f"{E}status") or ""


class CallbackReceiver:
    """Records every POST; answers ``status`` (a list pops one per request, then 200)."""

    def __init__(self, port: int = 0) -> None:
        self.got: list[Received] = []
        self.statuses: list[int] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with receiver._cond:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    if status < 300:
                        receiver.got.append(Received(
                            self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    receiver._cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, path: str, txn: str, *, event: str | None = None,
                 timeout: float = 60.0) -> list[Received]:
        """Everything of ``txn`` at ``path`` once one (of type ``event``) arrived."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                mine = [r for r in self.got if r.path == path and r.txn == txn]
                if mine and (event is None or any(r.event_type == event for r in mine)):
                    return mine
                left = deadline - time.monotonic()
                assert left > 0, f"no callback at {path} for {txn}: {self.got}"
                self._cond.wait(left)

    def wait_quiet(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the next callback (a poll step, not an assertion)."""
        with self._cond:
            self._cond.wait(seconds)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def client(port: int, user: str = USER, password: str = PASSWORD) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=(user, password),
                        timeout=30)
