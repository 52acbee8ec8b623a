"""The datastore's state and the types its parts share.

The :class:`~escnc.datastore.store.Datastore` is built in layers, one module each:
groupcommit.py (the lock, queued durable writes, listener delivery), validating.py
(unit lookup, incremental validation), committing.py (turning changed units into a
commit: authorization, persistence, history, rollback), candidate.py (candidate
datastore, copy-on-write overlay, confirmed commit), follow.py (a standby re-reading
what the leader writes: reload, follow, take_over) and store.py (the public API).
:class:`DatastoreState` declares the attributes they share (set in Datastore.__init__).
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from lxml import etree

from escnc.cluster.errors import NotLeader
from escnc.datastore.edit import (
    ROOT_LISTS,
    EntryIndex,
    UnitKey,
)
from escnc.datastore.persistence import Store, Write
from escnc.datastore.rwlock import RWLock
from escnc.datastore.schema import Schema, SNode
from escnc.errors import RpcError, RpcErrors
from escnc.services import CommitEvent, CommitListener, ConfigValidator
from escnc.settings import Settings

log = logging.getLogger("escnc.datastore.store")
_TRIM_UNITS = 1000  # a commit of this many units gives the freed heap back after it
UNIT_LAYOUT = "2"  # meta unit_layout: root list entries are units of their own

DATASTORES = ("running", "candidate", "startup")
ConfirmedCommitListener = Callable[[str, int, str, int, "str | None"], None]
# (operation "replace"|"delete", session_id, username): startup was written by a
# session (copy-config / delete-config), for RFC 6470 netconf-config-change
StartupListener = Callable[[str, int, str], None]
# Unit changes of one write: key -> (old serialized unit or None, new or None)
UnitChanges = dict[UnitKey, tuple[bytes | None, bytes | None]]
_PARSER = etree.XMLParser(remove_blank_text=True, resolve_entities=False, huge_tree=True)


class WriteAuthorizer(Protocol):
    """Access control for writes by sessions (NACM, installed by operations/authorize.py).

    ``applies`` says whether the user is subject to it at all (cheap); ``check``
    raises an RpcError when a change is not permitted (nothing has been changed
    for good then: the datastore undoes the edit)."""

    def applies(self, session_id: int, username: str) -> bool: ...
    def check(
        self, session_id: int, username: str, operation: str, changes: UnitChanges
    ) -> None: ...


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def unit_path(key: UnitKey) -> str:
    base = "/esc:esc_datamodel"
    if key[0] == "r":
        return base
    if key[0] == "e":
        entry = ROOT_LISTS[key[1]].split("}")[1]
        return f"{base}/esc:{key[1]}/esc:{entry}[esc:name='{key[2]}']"
    path = f"{base}/esc:tenants/esc:tenant[esc:name='{key[1]}']"
    if key[0] == "d":
        path += f"/esc:deployments/esc:deployment[esc:name='{key[2]}']"
    return path


class _Unrepresentable(Exception):
    """The overlay cannot be applied to running (its tenant is gone)."""


@dataclass
class _Pending:
    """A confirmed commit waiting for its confirming commit."""

    session_id: int
    username: str
    persist: str | None
    rollback_id: int | None  # history id of the first confirmed commit (undo it and later)
    timer: threading.Timer | None = None


@dataclass
class _Queued:
    """A commit applied in memory, waiting for its durable write."""

    version: int
    write: Write
    event: CommitEvent | None


def _write_failed(exc: BaseException | None) -> Exception:
    """What a commit whose write failed raises: a fence's refusal as itself (a new
    NotLeader for each waiting thread; operations/ maps it to not-leader), anything
    else as operation-failed."""
    if isinstance(exc, NotLeader):
        return NotLeader(str(exc), exc.leader)
    return RpcError("operation-failed", f"the datastore could not be written: {exc}")


def _raise_collected(errors: list[RpcError]) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise RpcErrors(errors)


class DatastoreState:
    """The attributes the datastore layers share (see Datastore.__init__)."""

    settings: Settings
    schema: Schema
    incremental: bool
    overlay_candidate: bool
    _lock: RWLock
    _store: Store
    _index: EntryIndex
    _listeners: list[CommitListener]
    _validators: list[ConfigValidator]
    _cc_listeners: list[ConfirmedCommitListener]
    _startup_listeners: list[StartupListener]
    _authorizer: WriteAuthorizer | None
    _locks: dict[str, tuple[int, str]]
    _candidate: etree._Element | None
    _candidate_index: EntryIndex
    _cand_dirty: set[UnitKey] | None
    _overlay: dict[UnitKey, bytes | None] | None
    _pending: _Pending | None
    _closed: bool
    _q: threading.Condition
    _queue: list[_Queued]
    _version: int
    _durable: int
    _lost: list[tuple[int, int]]
    _broken: BaseException | None
    _to_notify: deque[tuple[int, CommitEvent]]
    _flush_lock: threading.Lock
    _notify_lock: threading.Lock
    _tls: threading.local
    _entry_sn: dict[str, SNode]
    _prunable: set[str]
    _next_hid: int
    _units: dict[UnitKey, bytes]
    _seq: dict[UnitKey, int]
    _running: etree._Element
    _next_seq: int
    _startup: etree._Element
    _reload_listeners: list[Callable[[int], None]]
    _follow_stop: threading.Event | None
    _follower: threading.Thread | None
