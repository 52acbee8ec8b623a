"""A real, throw-away PostgreSQL server for tests (Debian's ``postgresql`` package).

:class:`PgServer` runs ``initdb`` in a fresh directory under /tmp and starts
``postgres`` on a free loopback port (and a unix socket in that directory), trust
authentication, loopback only. As root, PostgreSQL refuses to run, so both run as the
``postgres`` user the Debian package creates (``nobody`` when it does not exist), via
``runuser`` -- no systemd, no cluster manager. Every wait is bounded.

``ESCNC_TEST_POSTGRES=postgresql://...`` uses an existing server instead (its user must
be allowed to create databases).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

START_TIMEOUT = 60.0


class PgUnavailable(RuntimeError):
    """PostgreSQL is not installed or did not start (the reason is the message)."""


def pg_bindir() -> Path:
    """Directory of initdb/postgres/pg_ctl: $PG_BINDIR, PATH, or Debian's versioned dir."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parent.parent.name) if
                        Path(p).parent.parent.name.isdigit() else 0)
    if not candidates:
        raise PgUnavailable("initdb not found (apt-get install postgresql)")
    return Path(candidates[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> list[str]:
    """Command prefix that runs the server as a non-root user (PostgreSQL's rule)."""
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        runuser = shutil.which("runuser")
        if runuser is None:
            raise PgUnavailable("running as root and runuser is not installed")
        return [runuser, "-u", name, "--"]
    raise PgUnavailable("running as root and there is no postgres or nobody user")


class PgServer:
    """One PostgreSQL cluster in a temporary directory; :meth:`stop` removes it."""

    def __init__(self) -> None:
        self.bindir = pg_bindir()
        self.prefix = _run_as()
        # not pytest's tmp_path: /tmp/pytest-of-root is 0700, the server user must enter
        self.dir = Path(tempfile.mkdtemp(prefix="escnc-pg-"))
        self.data = self.dir / "data"
        self.port = 0
        self.user = "escnc"
        self.log = self.dir / "postgres.log"
        if self.prefix:
            user = self.prefix[2]
            shutil.chown(self.dir, user=user)
        self._started = False

    def _cmd(self, *args: str, timeout: float = START_TIMEOUT) -> None:
        result = subprocess.run([*self.prefix, *args], capture_output=True, text=True,
                                timeout=timeout, check=False)
        if result.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise PgUnavailable(f"{args[0]} failed: {result.stderr.strip()}\n{tail}")

    def start(self) -> PgServer:
        try:
            self._cmd(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user,
                      "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync")
            last: Exception | None = None
            for _ in range(3):  # a free port can be taken between probe and bind
                self.port = _free_port()
                opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} "
                        f"-c unix_socket_directories={self.dir} -c fsync=off "
                        "-c synchronous_commit=off -c full_page_writes=off "
                        "-c max_connections=200")
                try:
                    self._cmd(str(self.bindir / "pg_ctl"), "start", "-D", str(self.data),
                              "-w", "-t", str(int(START_TIMEOUT)), "-l", str(self.log),
                              "-o", opts, timeout=START_TIMEOUT + 10)
                    self._started = True
                    atexit.register(self.stop)  # also when the session ends abnormally
                    return self
                except PgUnavailable as exc:
                    last = exc
            raise PgUnavailable(str(last))
        except (OSError, subprocess.SubprocessError) as exc:
            self.stop()
            raise PgUnavailable(f"cannot run PostgreSQL: {exc}") from exc
        except PgUnavailable:
            self.stop()
            raise

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its DSN."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        import psycopg

        name = dsn.rsplit("/", 1)[1]
        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _is_ours(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return str(self.data).encode() in cmdline

    def stop(self) -> None:
        if self._started:
            self._started = False
            pid = self._postmaster_pid()
            with contextlib.suppress(PgUnavailable, OSError, subprocess.SubprocessError):
                self._cmd(str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data),
                          "-m", "immediate", "-w", "-t", "30", timeout=40)
            # never leave a server behind: pg_ctl failed or timed out -> SIGKILL it
            # (only if that pid is still our postmaster, not a reused pid)
            if pid is not None and self._is_ours(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline and self._is_ours(pid):
                        time.sleep(0.05)
        shutil.rmtree(self.dir, ignore_errors=True)


class ExternalPg:
    """An existing server named by ESCNC_TEST_POSTGRES (same interface as PgServer)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    def dsn(self, dbname: str = "postgres") -> str:
        base = self._dsn.rsplit("/", 1)[0]
        return f"{base}/{dbname}"

    create_database = PgServer.create_database
    drop_database = PgServer.drop_database

    def stop(self) -> None:
        pass


def wait_for(predicate: object, timeout: float = 10.0, interval: float = 0.01) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` (a bound, not an assertion of speed)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():  # type: ignore[operator]
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
