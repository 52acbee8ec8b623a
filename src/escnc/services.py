"""The services every layer is handed, and the contracts between the layers.

``app.build_services`` creates one of each; operation modules, the engine and the
protocol layer reach each other only through this container and the Protocols below.
Each component keeps its own SQLite file in ``settings.state_dir``
(``datastore.sqlite3``, ``events.sqlite3``, ``engine.sqlite3``, ``users.sqlite3``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from lxml import etree

if TYPE_CHECKING:
    from escnc.rpc.dispatch import RpcRegistry
    from escnc.settings import Settings


@dataclass(frozen=True)
class Change:
    """One edit inside a commit, for RFC 6470 netconf-config-change and the engine."""

    operation: str  # create | delete | merge | replace | remove
    target: str  # instance-identifier, e.g. /esc:esc_datamodel/esc:tenants/esc:tenant[esc:name='a']
    nsmap: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CommitEvent:
    """Handed to commit listeners after running changed durably."""

    old: etree._Element  # previous running, as a <data> element (do not modify)
    new: etree._Element  # new running, as a <data> element (do not modify)
    changes: tuple[Change, ...]
    session_id: int  # 0 for the system (engine writes, confirmed-commit rollback)
    username: str
    datastore: str = "running"


# Semantic check run on a proposed running/candidate tree before it is accepted;
# raises RpcError/RpcErrors. The engine registers one (images, flavors, VIMs, max_active).
ConfigValidator = Callable[[etree._Element], None]
CommitListener = Callable[[CommitEvent], None]
# Returns top-level data nodes (e.g. <netconf-state>, <esc_datamodel><opdata/>) for <get>.
StateProvider = Callable[[], list[etree._Element]]


class DatastoreAPI(Protocol):
    def running_xml(self) -> etree._Element: ...
    def add_commit_listener(self, listener: CommitListener) -> None: ...
    def add_validator(
        self, validator: ConfigValidator, whole_lists: Collection[str] = ()
    ) -> None: ...
    def system_edit(self, config: etree._Element, username: str = "escnc") -> None:
        """Merge ``config`` (a <config> element, nc:operation attributes allowed) into
        running (and startup), validated and durable, as the system (session 0)."""
    def release_session(self, session_id: int) -> None: ...
    def locks(self) -> dict[str, tuple[int, str]]:
        """datastore name -> (holder session id, ISO time it was locked)."""


class EventBusAPI(Protocol):
    def publish(self, stream: str, body: etree._Element, key: str | None = None) -> int:
        """Append durably to the event log, then deliver. Returns the sequence number
        (0: an event with idempotency ``key`` was published before, nothing is)."""
    def logged_keys(self, keys: list[str]) -> set[str]: ...
    def adopt_keys(self, keys: list[str]) -> None: ...
    def forget_keys(self, prefix: str) -> int: ...
    def add_listener(self, listener: Callable[[Any], None]) -> None: ...


class EngineAPI(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


class SessionManagerAPI(Protocol):
    def kill(self, session_id: int, by_session: int) -> None: ...


@dataclass
class Services:
    settings: Settings
    registry: RpcRegistry
    schema: Any = None  # escnc.datastore.schema.Schema
    datastore: Any = None  # DatastoreAPI
    events: Any = None  # EventBusAPI
    sessions: Any = None  # SessionManagerAPI
    users: Any = None  # escnc.rpc.users.UserStore
    vims: Any = None  # escnc.vim.hosts.HostRegistry
    engine: Any = None  # EngineAPI
    day2: Any = None  # escnc.engine.maintenance.Maintenance (built by app.build_maintenance)
    nacm: Any = None  # escnc.nacm.Nacm, access control (set by operations/authorize.py)
    auth_penalty: Any = None  # escnc.rpc.auth.AuthPenalty, one for SSH and HTTP Basic
    # active/standby (docs/ha.md): the fence every write request checks (None: a single
    # node, nothing to check) and the cluster's status for opdata (escnc.leadership)
    fence: Any = None  # escnc.cluster.Fence
    cluster: Any = None  # escnc.leadership.Leadership
    state_providers: list[StateProvider] = field(default_factory=list)
    # observe(operation Clark name, outcome "ok"/error-tag, seconds): every request of
    # every northbound (escnc.rpc.request.execute); the HTTP metrics register one
    rpc_observers: list[Callable[[str, str, float], None]] = field(default_factory=list)
    # capabilities advertised in <hello> beyond base and YANG modules
    capabilities: list[str] = field(default_factory=list)
