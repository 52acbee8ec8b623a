"""The HTTP(S) listener of ``escnc serve``: Starlette app on uvicorn, in its own thread.

Routes come from route factories (``routes(ctx) -> list[Route]``): every module of
``escnc.http`` that defines ``routes`` (in name order), then any passed in
``extra_routes`` -- how another package mounts its endpoints (docs/http.md).
"""

from __future__ import annotations

import asyncio
import datetime
import importlib
import ipaddress
import logging
import os
import pkgutil
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from escnc.http.auth import BasicAuth
from escnc.http.context import HttpContext, RouteFactory
from escnc.http.health import install_metrics

if TYPE_CHECKING:
    from escnc.events.callbacks import CallbackTracker
    from escnc.services import Services

log = logging.getLogger(__name__)


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"listen address {value!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def ensure_certificate(state_dir: Path) -> tuple[Path, Path]:
    """A self-signed pair in the state dir (made on first start, private)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = state_dir / "https-cert.pem", state_dir / "https-key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, socket.gethostname()[:64])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.DNSName(socket.gethostname()[:63]),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    for path, data in (
        (key_path, key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())),
        (cert_path, cert.public_bytes(serialization.Encoding.PEM)),
    ):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    log.info("generated a self-signed HTTPS certificate in %s", cert_path)
    return cert_path, key_path


def build_app(ctx: HttpContext, extra_routes: Sequence[RouteFactory] = ()) -> Starlette:
    import escnc.http as pkg

    routes: list[BaseRoute] = []
    factories: list[RouteFactory] = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"escnc.http.{info.name}")
        factory = getattr(module, "routes", None)
        if callable(factory):
            factories.append(factory)
    # health first: its fixed paths must win over /ESCManager/v0/{tenant}/...
    factories.sort(key=lambda f: f.__module__ != "escnc.http.health")
    for factory in [*factories, *extra_routes]:
        routes += factory(ctx)
    return Starlette(routes=routes)


class HttpServer:
    def __init__(self, services: Services, callbacks: CallbackTracker,
                 extra_routes: Sequence[RouteFactory] = ()) -> None:
        """``callbacks``: the ESC REST callback outbox (app.py runs it, for NETCONF's
        capacity notificationUrl too)."""
        self.services = services
        self.ctx = HttpContext(
            services, BasicAuth(services.users, services.settings, services.auth_penalty),
            callbacks,
        )
        self.ctx.metrics = install_metrics(self.ctx)
        self.app = build_app(self.ctx, extra_routes)
        self._servers: list[tuple[uvicorn.Server, threading.Thread]] = []
        self.ports: dict[str, int] = {}

    def start(self) -> None:
        st = self.services.settings
        if st.http_listen:
            self._listen("http", st.http_listen, None, None)
        if st.https_listen:
            if st.https_cert and st.https_key:
                cert, key = Path(st.https_cert), Path(st.https_key)
            else:
                cert, key = ensure_certificate(st.state_dir)
            self._listen("https", st.https_listen, cert, key)

    def _listen(self, scheme: str, where: str, cert: Path | None, key: Path | None) -> None:
        host, port = parse_listen(where)
        if cert is None and host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("plain HTTP on %s: passwords (HTTP Basic) cross the network in "
                        "clear; use https_listen", host)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # inherited by accepted sockets: without it a response written in two parts
        # waits for the client's delayed ACK (~40 ms per request on loopback)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
        self.ports[scheme] = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="off", access_log=False,
            ssl_certfile=str(cert) if cert else None, ssl_keyfile=str(key) if key else None,
            timeout_keep_alive=30, limit_concurrency=256, timeout_graceful_shutdown=3,
        )
        server = uvicorn.Server(config)

        def run() -> None:
            asyncio.run(server.serve(sockets=[sock]))

        thread = threading.Thread(target=run, name=f"escnc-{scheme}", daemon=True)
        thread.start()
        self._servers.append((server, thread))
        log.info("escnc %s listening on %s port %d", scheme.upper(), host, self.ports[scheme])

    def stop(self) -> None:
        for server, _thread in self._servers:
            server.should_exit = True
        for _server, thread in self._servers:
            thread.join(10.0)
