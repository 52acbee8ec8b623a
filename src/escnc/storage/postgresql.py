"""PostgreSQL backend on psycopg 3: autocommit connections, explicit transactions.

Connections are opened with a bounded connect timeout and TCP keepalives plus
``tcp_user_timeout``, so a dead network ends a blocked call with an error instead of
hanging for the kernel's default (minutes): the cluster lease depends on noticing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from escnc.storage.base import (
    POSTGRESQL,
    Connection,
    StorageClosed,
    StorageError,
    StorageUnavailable,
)

log = logging.getLogger(__name__)


def _translate(exc: Exception) -> StorageError:
    import psycopg

    if isinstance(exc, psycopg.OperationalError):  # lost connection, server gone
        return StorageUnavailable(str(exc))
    if isinstance(exc, psycopg.InterfaceError):
        return StorageClosed(str(exc))
    return StorageError(str(exc))


def redact(dsn: str) -> str:
    """The DSN without its password (for logs)."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


class PgConnection(Connection):
    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self.raw.transaction():
            yield


class PostgresStorage:
    dialect = POSTGRESQL

    def __init__(self, dsn: str, *, connect_timeout: float = 10.0,
                 network_timeout: float = 10.0, application_name: str = "escnc") -> None:
        """``network_timeout``: how long unacknowledged data may sit on a dead TCP
        connection before the call fails (keepalives + tcp_user_timeout)."""
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise ValueError("a PostgreSQL URL starts with postgresql://")
        self.dsn = dsn
        self.connect_timeout = max(1, int(connect_timeout))
        self.network_timeout = max(1.0, float(network_timeout))
        self.application_name = application_name

    def _params(self) -> dict[str, Any]:
        idle = max(1, int(self.network_timeout / 3))
        return {
            "autocommit": True,
            "connect_timeout": self.connect_timeout,
            "application_name": self.application_name,
            "keepalives": 1,
            "keepalives_idle": idle,
            "keepalives_interval": idle,
            "keepalives_count": 3,
            "tcp_user_timeout": int(self.network_timeout * 1000),
        }

    def connect(self) -> Connection:
        import psycopg

        try:
            raw = psycopg.connect(self.dsn, **self._params())
        except psycopg.Error as exc:
            raise StorageUnavailable(f"cannot connect to {redact(self.dsn)}: {exc}") from exc
        return PgConnection(raw, POSTGRESQL, _translate)

    def describe(self) -> str:
        return redact(self.dsn)

    def listen(self, channel: str, stop: threading.Event,
               deliver: Callable[[str | None], None], poll: float = 1.0) -> None:
        """LISTEN on ``channel`` until ``stop``: ``deliver(payload)`` per NOTIFY, and
        ``deliver(None)`` after every (re)connect and every ``poll`` seconds, so the
        caller re-reads what it follows (a notification sent while this node was
        disconnected is lost; the state in the table is not). Blocks."""
        import psycopg
        from psycopg import sql

        while not stop.is_set():
            try:
                with psycopg.connect(self.dsn, **self._params()) as raw:
                    raw.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    deliver(None)
                    while not stop.is_set():
                        for note in raw.notifies(timeout=poll):
                            deliver(note.payload)
                            if stop.is_set():
                                break
                        deliver(None)
            except psycopg.Error as exc:
                log.warning("LISTEN %s on %s failed (retrying): %s", channel,
                            redact(self.dsn), exc)
                stop.wait(poll)
            except Exception:  # a failing deliver must not end the listening
                log.exception("LISTEN %s: delivery failed", channel)
                stop.wait(poll)
