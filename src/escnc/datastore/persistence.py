"""SQLite persistence of running/startup units and the rollback history.

One row per unit (datastore root, tenant, deployment) so a small edit writes a
small transaction. WAL + synchronous=FULL: a commit is on disk when ``write``
(or ``write_batch``, several commits in one transaction and one fsync: group
commit) returns, before the client sees <ok/>. ``durable=False`` (the explicit
``durable_commits`` opt-out) uses synchronous=NORMAL: the commit is in the OS when
``write`` returns (kill -9 safe), fsynced at WAL checkpoints only. History ids are assigned by the
caller (``next_history_id``) so a commit knows its id before it is written.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from escnc.datastore.edit import UnitKey

_SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    ds TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, xml BLOB NOT NULL,
    PRIMARY KEY (ds, key));
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, username TEXT NOT NULL,
    session_id INTEGER NOT NULL, nchanges INTEGER NOT NULL, undo TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
"""


def encode_key(key: UnitKey) -> str:
    return json.dumps(list(key))


def decode_key(text: str) -> UnitKey:
    return tuple(json.loads(text))


@dataclass(frozen=True)
class UnitRow:
    key: UnitKey
    seq: int
    xml: bytes


History = tuple[str, str, int, int, list[tuple[UnitKey, int, "bytes | None"]]]


@dataclass
class Write:
    """One commit's worth of changes to one datastore."""

    ds: str
    upserts: list[UnitRow]
    deletes: list[UnitKey]
    history: History | None = None  # (time, username, session id, nchanges, undo)
    hid: int | None = None  # the history id to insert (None: AUTOINCREMENT)
    keep: int = 20
    meta: dict[str, str | None] | None = None
    replace_all: bool = False
    clear_history: bool = False  # the unit layout changed: old undo data is unusable


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    time: str
    username: str
    session_id: int
    nchanges: int
    # (unit key, seq, previous xml or None when the unit did not exist)
    undo: list[tuple[UnitKey, int, bytes | None]]


class Store:
    def __init__(self, path: Path, durable: bool = True) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def load(self, ds: str) -> list[UnitRow] | None:
        rows = self._db.execute(
            "SELECT key, seq, xml FROM units WHERE ds=? ORDER BY seq", (ds,)
        ).fetchall()
        if not rows:
            return None
        return [UnitRow(decode_key(k), s, bytes(x)) for k, s, x in rows]

    def next_history_id(self) -> int:
        """The id the next history entry gets (AUTOINCREMENT never reuses ids)."""
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='history'").fetchone()
        top = self._db.execute("SELECT max(id) FROM history").fetchone()
        return max(int(row[0]) if row else 0, int(top[0] or 0)) + 1

    def write(
        self,
        ds: str,
        upserts: list[UnitRow],
        deletes: list[UnitKey],
        history: History | None = None,
        keep: int = 20,
        meta: dict[str, str | None] | None = None,
        replace_all: bool = False,
    ) -> int | None:
        """Apply one commit atomically and durably; returns the history id, if any."""
        w = Write(ds, upserts, deletes, history, None, keep, meta, replace_all)
        return self.write_batch([w])[0]

    def write_batch(self, writes: list[Write]) -> list[int | None]:
        """Apply several commits, in order, in one durable transaction (one fsync)."""
        hids: list[int | None] = []
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                for w in writes:
                    hids.append(self._apply(cur, w))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return hids

    @staticmethod
    def _apply(cur: sqlite3.Cursor, w: Write) -> int | None:
        hid = None
        ds = w.ds
        if w.replace_all:
            cur.execute("DELETE FROM units WHERE ds=?", (ds,))
        if w.clear_history:
            cur.execute("DELETE FROM history")
        if w.upserts:
            cur.executemany(
                "INSERT OR REPLACE INTO units(ds, key, seq, xml) VALUES (?,?,?,?)",
                [(ds, encode_key(u.key), u.seq, u.xml) for u in w.upserts],
            )
        if w.deletes:
            cur.executemany(
                "DELETE FROM units WHERE ds=? AND key=?", [(ds, encode_key(k)) for k in w.deletes]
            )
        if w.history is not None:
            time, user, sid, n, undo = w.history
            blob = json.dumps(
                [[list(k), s, None if x is None else x.decode("utf-8")] for k, s, x in undo]
            )
            cur.execute(
                "INSERT INTO history(id, time, username, session_id, nchanges, undo) "
                "VALUES (?,?,?,?,?,?)",
                (w.hid, time, user, sid, n, blob),
            )
            hid = cur.lastrowid
            cur.execute(
                "DELETE FROM history WHERE id NOT IN "
                "(SELECT id FROM history ORDER BY id DESC LIMIT ?)",
                (w.keep,),
            )
        for k, v in (w.meta or {}).items():
            if v is None:
                cur.execute("DELETE FROM meta WHERE k=?", (k,))
            else:
                cur.execute("INSERT OR REPLACE INTO meta(k, v) VALUES (?,?)", (k, v))
        return hid

    def history(self) -> list[HistoryEntry]:
        rows = self._db.execute(
            "SELECT id, time, username, session_id, nchanges, undo FROM history ORDER BY id DESC"
        ).fetchall()
        out = []
        for hid, time, user, sid, n, blob in rows:
            undo = [
                (tuple(k), s, None if x is None else x.encode("utf-8"))
                for k, s, x in json.loads(blob)
            ]
            out.append(HistoryEntry(hid, time, user, sid, n, undo))
        return out

    def get_meta(self, k: str) -> str | None:
        row = self._db.execute("SELECT v FROM meta WHERE k=?", (k,)).fetchone()
        return None if row is None else str(row[0])
