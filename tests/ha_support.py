"""Two (or more) ``escnc serve`` processes on one PostgreSQL, for the active/standby
tests and bench/failover_bench.py: start a node, read its cluster opdata, a TCP proxy
that cuts one node's database connections (the network, not the process)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from lxml import etree
from ncclient import manager

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
ESC = "http://www.cisco.com/esc/esc"
E = f"{{{ESC}}}"
USER, PASSWORD = "admin", "admin-pw"
CLUSTER_FILTER = (f'<filter type="subtree"><esc_datamodel xmlns="{ESC}"><opdata><cluster/>'
                  '</opdata></esc_datamodel></filter>')
TENANT = (f'<config><esc_datamodel xmlns="{ESC}"><tenants><tenant><name>{{}}</name>'
          '</tenant></tenants></esc_datamodel></config>')


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class Node:
    """One ``escnc serve`` process with its own state directory."""

    def __init__(self, root: Path, name: str, database: str, *, lease: float = 3.0,
                 deadline: float = 2.0, retry: float = 0.25, http: bool = True,
                 vim: str = "", extra: str = "") -> None:
        """``vim``: the default host's URI (default: a test-driver host file of this
        node's own); ``extra``: more top-level TOML settings."""
        self.name = name
        self.state = root / name
        self.state.mkdir(parents=True, exist_ok=True)
        if not vim:
            hosts = root / f"{name}-hosts"
            hosts.mkdir(exist_ok=True)
            (hosts / "host.xml").write_text("<node></node>\n")
            vim = f"test://{hosts / 'host.xml'}"
        self.log = self.state / "escnc.log"
        config = self.state / "escnc.toml"
        config.write_text(
            f'state_dir = "{self.state}"\nlisten = "127.0.0.1:0"\ndatabase = "{database}"\n'
            f'node_name = "{name}"\nlease_duration = {lease}\nrenew_deadline = {deadline}\n'
            f'lease_retry = {retry}\nlog_file = "{self.log}"\nreconcile_interval = 1.0\n'
            + ('http_listen = "127.0.0.1:0"\n' if http else "") + extra
            + f'[vims]\ndefault = "{vim}"\n')
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        subprocess.run([sys.executable, "-m", "escnc.cli.server", "user", "add", USER,
                        "--password-stdin", "--state-dir", str(self.state),
                        "--database", database],
                       input=PASSWORD + "\n", text=True, check=True, env=env,
                       capture_output=True, timeout=60)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "escnc.cli.server", "serve", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        self.port = self.http_port = 0
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("escnc: serving NETCONF on"):
                self.port = int(line.split()[4].rsplit(":", 1)[1])
            elif line.startswith("escnc: serving HTTP on"):
                self.http_port = int(line.split()[4].rsplit(":", 1)[1])
                break
            if self.port and not http:
                break
        assert self.port, f"node {name} did not start"
        self.address = f"127.0.0.1:{self.port}"

    def connect(self) -> manager.Manager:
        return manager.connect(host="127.0.0.1", port=self.port, username=USER,
                               password=PASSWORD, hostkey_verify=False, allow_agent=False,
                               look_for_keys=False, timeout=30)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


def cluster(m: manager.Manager) -> dict[str, str]:
    """This node's opdata/cluster leaves (members left out)."""
    reply = etree.fromstring(str(m.get(filter=CLUSTER_FILTER)).encode())
    c = reply.find(f".//{E}cluster")
    if c is None:
        return {}
    return {etree.QName(el).localname: el.text or "" for el in c if len(el) == 0}


def role(node: Node) -> str:
    try:
        with node.connect() as m:
            return cluster(m).get("role", "") + "/" + cluster(m).get("engine", "")
    except Exception:
        return ""


class CutProxy:
    """TCP proxy in front of PostgreSQL; ``cut()`` drops every connection and refuses
    new ones (what a node sees when its network to the database goes); ``freeze()``
    keeps the connections but forwards nothing any more, either way (a call on them
    hangs: only the elector's watchdog ends the term); ``restore()`` drops what was
    frozen and lets new connections through again."""

    def __init__(self, dsn: str) -> None:
        parts = urlsplit(dsn)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.sock = socket.create_server(("127.0.0.1", 0))
        port = self.sock.getsockname()[1]
        user = f"{parts.username}@" if parts.username else ""
        self.dsn = urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.open = True
        self.frozen = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            if self.frozen:  # held, never answered
                with self._lock:
                    self._conns.append(client)
                continue
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self.frozen:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.open = False
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def freeze(self) -> None:
        self.frozen = True

    def restore(self) -> None:
        if self.frozen:
            self.cut()
        self.frozen = False
        self.open = True

    def close(self) -> None:
        self.cut()
        self.sock.close()
