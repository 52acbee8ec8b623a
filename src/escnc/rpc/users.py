"""NETCONF users: scrypt-hashed passwords and authorized OpenSSH public keys (component
``users``: users.sqlite3, mode 0600, or the cluster's PostgreSQL database).

There is no default user or password: an empty store lets nobody in.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import paramiko

from escnc.storage import Connection, Migration, Storage
from escnc.storage.component import (
    Component,
    FencedStore,
    WriteFence,
    component_storage,
    sqlite_tables,
)
from escnc.storage.sqlite import SqliteStorage

# scrypt cost: 2**14 * 8 * 128 B = 16 MiB and tens of ms per check (RFC 7914 interactive).
_N, _R, _P = 2**14, 8, 1
_SALT_BYTES = 16
_DKLEN = 32

def _schema_v1(conn: Connection) -> None:
    """users, user_keys (``pos``: the order keys were added in, which SQLite's rowid
    gave before) and a change counter. A users.sqlite3 of an escnc from before the
    storage interface keeps its users, hashes and keys."""
    found = sqlite_tables(conn)
    conn.execute("CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY,"
                 " password_hash TEXT)")
    if "user_keys" in found:
        conn.execute("ALTER TABLE user_keys ADD COLUMN pos INTEGER NOT NULL DEFAULT 0")
        conn.execute("UPDATE user_keys SET pos = rowid")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS user_keys (name TEXT NOT NULL REFERENCES users(name)"
        " ON DELETE CASCADE, key_type TEXT NOT NULL, key_blob TEXT NOT NULL,"
        " comment TEXT NOT NULL DEFAULT '', pos {bigint} NOT NULL,"
        " PRIMARY KEY (name, key_type, key_blob))")
    # bumped by every write, whichever process or node made it (what version() reads)
    conn.execute("CREATE TABLE users_version (id INTEGER PRIMARY KEY CHECK (id = 1),"
                 " n {bigint} NOT NULL)")
    conn.execute("INSERT INTO users_version(id, n) VALUES (1, 0)")


MIGRATIONS = (Migration(1, run=_schema_v1),)


class UserError(ValueError):
    """Bad user name, unknown user or unparsable public key."""


@dataclass(frozen=True)
class UserInfo:
    name: str
    has_password: bool
    public_keys: tuple[str, ...]


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    salt = os.urandom(_SALT_BYTES)
    digest = _scrypt(password, salt, n, r, p)
    salt_b64, digest_b64 = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"scrypt${n}${r}${p}${salt_b64}${digest_b64}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_b64)
        expected = base64.b64decode(digest_b64)
        digest = _scrypt(password, salt, int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=_DKLEN, maxmem=256 * 1024 * 1024
    )


def parse_public_key(line: str) -> tuple[str, str, str]:
    """Split and check an OpenSSH public key line: ``type base64 [comment]``."""
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise UserError(f"not an OpenSSH public key line: {line[:40]!r}")
    key_type, blob = parts[0], parts[1]
    try:
        raw = base64.b64decode(blob, validate=True)
        paramiko.PKey.from_type_string(key_type, raw)
    except Exception as exc:  # paramiko raises several types for bad keys
        raise UserError(f"invalid {key_type} public key: {exc}") from exc
    return key_type, blob, parts[2] if len(parts) > 2 else ""


class UserStore(FencedStore):
    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 database: str | None = None, storage: Storage | None = None,
                 fence: WriteFence | None = None) -> None:
        """The SQLite file ``path`` (created 0600), or ``database`` (postgresql://),
        or ``storage``. ``fence`` checks every write."""
        self.path = Path(path) if path is not None else None
        storage = component_storage("UserStore", self.path, database, storage, private=True)
        if isinstance(storage, SqliteStorage):
            try:
                os.chmod(storage.path, 0o600)  # also a file an older escnc created
            except OSError:
                pass
        self.storage = storage
        # checked from every SSH transport thread: pooled readers, one writer
        self._db = Component(storage, "users", MIGRATIONS, fence=fence, max_idle=8)
        self._cache_key = os.urandom(32)
        self._verified: dict[str, tuple[str, bytes]] = {}
        self._verified_lock = threading.Lock()
        self._writes = 0  # own commits

    def add_user(
        self, name: str, password: str | None = None, public_keys: Iterable[str] = ()
    ) -> None:
        """Create ``name`` or replace its password and keys."""
        if not name or any(c.isspace() or not c.isprintable() for c in name):
            raise UserError(f"invalid user name {name!r}")
        if password == "":
            raise UserError("empty password")
        keys = [parse_public_key(k) for k in public_keys]
        pw_hash = hash_password(password) if password is not None else None
        with self._db.write() as conn:
            conn.execute("DELETE FROM user_keys WHERE name = ?", (name,))
            conn.execute(
                "INSERT INTO users(name, password_hash) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET password_hash = excluded.password_hash",
                (name, pw_hash),
            )
            for pos, (key_type, blob, comment) in enumerate(keys):
                conn.execute(
                    "INSERT INTO user_keys(name, key_type, key_blob, comment, pos) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (name, key_type, blob, comment, pos),
                )
            conn.execute("UPDATE users_version SET n = n + 1 WHERE id = 1")
            self._writes += 1

    def remove_user(self, name: str) -> None:
        with self._db.write() as conn:
            # explicit, not ON DELETE CASCADE: SQLite enforces that per connection only
            conn.execute("DELETE FROM user_keys WHERE name = ?", (name,))
            cur = conn.execute("DELETE FROM users WHERE name = ?", (name,))
            removed = cur.rowcount
            conn.execute("UPDATE users_version SET n = n + 1 WHERE id = 1")
            self._writes += 1
        with self._verified_lock:
            self._verified.pop(name, None)
        if removed == 0:
            raise UserError(f"no such user {name!r}")

    def list_users(self) -> list[UserInfo]:
        with self._db.read() as conn:
            users = conn.execute(
                "SELECT name, password_hash IS NOT NULL FROM users ORDER BY name"
            ).fetchall()
            keys = conn.execute(
                "SELECT name, key_type, key_blob, comment FROM user_keys ORDER BY name, pos"
            ).fetchall()
        by_user: dict[str, list[str]] = {}
        for name, key_type, blob, comment in keys:
            by_user.setdefault(name, []).append(f"{key_type} {blob} {comment}".rstrip())
        return [UserInfo(n, bool(h), tuple(by_user.get(n, ()))) for n, h in users]

    def version(self) -> tuple[int, int]:
        """Changes whenever the store changed, through this object or another process
        or node (every write bumps the counter row in its transaction)."""
        with self._db.read() as conn:
            row = conn.execute("SELECT n FROM users_version WHERE id = 1").fetchone()
        return (int(row[0]) if row else 0, self._writes)

    def names(self) -> frozenset[str]:
        with self._db.read() as conn:
            return frozenset(r[0] for r in conn.execute("SELECT name FROM users"))

    def has_users(self) -> bool:
        with self._db.read() as conn:
            return conn.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None

    def check_password(self, name: str, password: str) -> bool:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT password_hash FROM users WHERE name = ?", (name,)
            ).fetchone()
        if row is None or row[0] is None:
            # Same cost as a real check, so timing does not reveal which users exist.
            verify_password(password, _dummy_hash())
            return False
        stored = row[0]
        # Verified-password cache: a keyed HMAC (random per process) of recently accepted
        # passwords, so reconnecting clients do not pay scrypt (~50 ms) on every login.
        # Failures always pay the full cost, which keeps guessing slow.
        tag = hmac.new(self._cache_key, password.encode("utf-8"), hashlib.sha256).digest()
        with self._verified_lock:
            cached = self._verified.get(name)
        if cached is not None and cached[0] == stored and hmac.compare_digest(cached[1], tag):
            return True
        if not verify_password(password, stored):
            return False
        with self._verified_lock:
            self._verified[name] = (stored, tag)
        return True

    def check_key(self, name: str, key: paramiko.PKey) -> bool:
        blob = base64.b64encode(key.asbytes()).decode()
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT key_blob FROM user_keys WHERE name = ?", (name,)
            ).fetchall()
        return any(hmac.compare_digest(blob, r[0]) for r in rows)

    def close(self) -> None:
        self._db.close()


@functools.cache
def _dummy_hash() -> str:
    return hash_password(base64.b64encode(os.urandom(12)).decode())
