"""Wiring: build every component from Settings and run the NETCONF server.

Component constructors (each owned by its package):
  escnc.datastore.schema.Schema.load()                     YANG modules + yangson model
  escnc.rpc.users.UserStore(path)                      users, hashed passwords, keys
  escnc.datastore.store.Datastore(settings, schema)        running/candidate/startup
  escnc.events.bus.EventBus(settings)                      durable event log + delivery
  escnc.vim.hosts.HostRegistry(settings)                   libvirt connections
  escnc.engine.engine.Engine(services)                     reconciler and jobs
  escnc.netconf.sessions.SessionManager(services)          live sessions
  escnc.netconf.server.NetconfServer(services)             SSH listener
  escnc.engine.maintenance.Maintenance(services)           day-2 (migrate, snapshots, volumes)
  escnc.events.callbacks.CallbackTracker(...)              callback/notification outbox
  escnc.http.server.HttpServer(services, callbacks)        HTTP(S) listener, when set
Every module in escnc.operations with a ``register(registry, services)`` function
is registered automatically, in name order.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from escnc import statedir
from escnc.rpc.dispatch import RpcRegistry
from escnc.services import Services
from escnc.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from escnc.events.callbacks import CallbackTracker
    from escnc.http.context import RouteFactory
    from escnc.http.server import HttpServer
    from escnc.netconf.server import NetconfServer

log = logging.getLogger(__name__)


def needs_traversable_state_dir(settings: Settings) -> bool:
    """A local libvirtd's QEMU (its own user) must reach VM disks below the state dir."""
    return any(uri.split("?", 1)[0].startswith(("qemu:///", "qemu+unix:///"))
               for uri in settings.vims.values())


def build_services(settings: Settings, clock: Any = None) -> Services:
    """Build every component; the caller holds the state directory's lock. ``clock``:
    the engine's (engine/clock.py; tests pass a ManualClock)."""
    services = Services(settings=settings, registry=RpcRegistry())

    from escnc.cluster import FenceSlot, SingleNodeFence
    from escnc.datastore.schema import Schema
    from escnc.datastore.store import Datastore
    from escnc.engine.engine import Engine
    from escnc.engine.names import check_names
    from escnc.events.bus import EventBus
    from escnc.netconf.sessions import SessionManager
    from escnc.rpc.auth import AuthPenalty
    from escnc.rpc.users import UserStore
    from escnc.vim.hosts import HostRegistry

    services.schema = Schema.load()
    services.users = UserStore(settings.state_dir / "users.sqlite3", database=settings.database)
    # failed passwords per source address, for SSH and HTTP Basic alike
    services.auth_penalty = AuthPenalty(
        settings.auth_failure_delay, settings.auth_failure_delay_max
    )
    # a node of a cluster writes nothing until it is elected (the slot is bound to
    # its elector's fence when it joins, Server._start_cluster)
    cluster_fence = FenceSlot() if settings.database else None
    services.fence = cluster_fence
    services.datastore = Datastore(settings, services.schema, fence=cluster_fence)
    services.events = EventBus(settings)
    services.vims = HostRegistry(settings)
    services.engine = Engine(services, clock=clock)
    services.datastore.add_validator(check_names)
    services.day2 = build_maintenance(services)
    if settings.database:
        attach_cluster_hooks(services)
    else:
        services.fence = SingleNodeFence()  # always the leader
    services.sessions = SessionManager(services)

    import escnc.operations as ops_pkg

    for info in sorted(pkgutil.iter_modules(ops_pkg.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"escnc.operations.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(services.registry, services)
    statedir.make_files_private(settings.state_dir)
    return services


def build_maintenance(services: Services) -> Any:
    """Day-2 (migrate, resize confirm/revert, snapshots, volumes: engine/maintenance.py)
    and its hooks into the engine's resize and CONFIRM/REVERT_RESIZE actions."""
    from escnc.engine.maintenance import Maintenance

    manager = Maintenance(services)
    services.state_providers.append(manager.state)
    hooks = services.engine.hooks
    hooks.resize = lambda _engine, job, vm, old, new: manager.resize_hook(job, vm, old, new)
    hooks.vm_actions["CONFIRM_RESIZE"] = lambda _e, job, vm: manager.confirm_hook(job, vm)
    hooks.vm_actions["REVERT_RESIZE"] = lambda _e, job, vm: manager.revert_hook(job, vm)
    return manager


def fence_stores(services: Services, outbox: Outbox | None = None) -> None:
    """A cluster node's durable stores write only while it leads: each gets the
    node's fence (the slot bound to the elector's), checked first thing in every
    write transaction, so a replaced leader's late write commits nothing. Called
    for every engine a node builds (one per term) and its outbox."""
    fence = services.fence
    if not services.settings.database or fence is None:
        return
    engine = services.engine
    stores = [getattr(engine, "store", None),
              getattr(getattr(engine, "capacity", None), "store", None),
              getattr(services.day2, "store", None)]
    if outbox is not None:
        stores.append(outbox.tracker.store)
    for store in stores:
        if store is not None and hasattr(store, "fence"):
            store.fence = fence


def attach_cluster_hooks(services: Services) -> None:
    """Datastore hooks for a node of a cluster, installed once: the fence checked just
    before any commit is accepted (a term that ended since the request was admitted
    does not commit), and the engine's validator and commit listener delegating to
    whichever engine the current term runs (a standby's takes no commits)."""
    from escnc.engine.engine import Engine
    from escnc.rpc.standby import commit_fence

    ds = services.datastore

    def fence_check(tree: Any) -> None:
        if services.fence is not None:
            commit_fence(services.fence)(tree)

    def validate(tree: Any) -> None:
        services.engine.validate(tree)

    def on_commit(event: Any) -> None:
        if services.cluster is not None and services.cluster.working:
            services.engine.on_commit(event)

    ds.add_validator(fence_check)
    ds.add_validator(validate, whole_lists=Engine.VALIDATE_WHOLE)
    ds.add_commit_listener(on_commit)


def election_timings(settings: Settings) -> Any:
    """The lease timings of the settings (ValueError naming the settings if unusable)."""
    from escnc.cluster import ElectionTimings

    try:
        return ElectionTimings(settings.lease_duration, settings.renew_deadline,
                               settings.lease_retry)
    except ValueError:
        raise ValueError(
            "need 0 < lease_retry < renew_deadline < lease_duration, got "
            f"{settings.lease_retry}, {settings.renew_deadline}, {settings.lease_duration}"
        ) from None


class TermState:
    """What a node re-reads when it is elected, before its engine starts: the
    datastore (take_over() also settles what the previous leader left, e.g. a
    pending confirmed commit), the engine's VM and deployment records, reservations
    and capacity subscriptions, and the day-2 records -- whatever the previous
    leader wrote since this node last read them."""

    def __init__(self, services: Services, prepare: Callable[[], None]) -> None:
        self.services = services
        self.prepare = prepare  # builds the term's engine if the last one was stopped

    def reload(self) -> None:
        self.prepare()
        services = self.services
        services.datastore.take_over()
        engine = services.engine
        for item in (getattr(engine, "store", None), getattr(engine, "capacity", None),
                     getattr(services.day2, "store", None)):
            reload = getattr(item, "reload", None)
            if reload is not None:
                reload()


def callback_url_check(settings: Settings) -> Callable[[str, bool], None]:
    """The outbound URL policy (as for image URLs) for ESC REST callback URIs:
    raise ValueError saying why a URL is refused; with ``resolve``, every address the
    host resolves to must be allowed too."""
    from escnc.vim.fetch import FetchError, resolve
    from escnc.vim.source_policy import SourceRefused, callback_policy, parse_url

    policy = callback_policy(settings)

    def check(url: str, resolve_host: bool) -> None:
        try:
            parts = parse_url(policy, url)
            if resolve_host:
                resolve(policy, parts)
        except (SourceRefused, FetchError) as exc:
            raise ValueError(str(exc)) from None

    return check


class Outbox:
    """The ESC REST callback outbox (events/callbacks.py) with its HTTP client: POSTs
    ESC REST callbacks and capacity notifications (a notificationUrl subscribed over
    NETCONF is delivered with or without escnc's own HTTP listener)."""

    def __init__(self, services: Services) -> None:
        from escnc.events.callbacks import CallbackStore, CallbackTracker
        from escnc.operations.capacity_rest import CapacityNotifier

        st = services.settings
        self._timeout = st.callback_timeout
        # made at the first delivery: an httpx client with its SSL context is about
        # 10 MiB, and most servers deliver no callback
        self._client: Any = None  # httpx.Client
        self._client_lock = threading.Lock()
        capacity = getattr(services.engine, "capacity", None)
        self.tracker: CallbackTracker = CallbackTracker(
            CallbackStore(st.state_dir / "callbacks.sqlite3", database=st.database),
            services.events,
            self._post, callback_url_check(st), max_attempts=st.callback_max_attempts,
            retry_base=st.callback_retry_base, retry_max=st.callback_retry_max,
            transaction_timeout=st.callback_transaction_timeout,
            notifier=CapacityNotifier(capacity) if capacity is not None else None,
        )

    def _post(self, url: str, headers: dict[str, str], body: bytes) -> int:
        import httpx

        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self._timeout, follow_redirects=False)
            client = self._client
        return client.post(url, headers=headers, content=body).status_code

    def start(self) -> None:
        self.tracker.start()

    def stop(self) -> None:
        self.tracker.stop()
        self.tracker.store.close()
        with self._client_lock:
            if self._client is not None:
                self._client.close()


class Server:
    """The whole escnc server in one object (used by ``escnc serve`` and the tests).

    ``http_routes``: extra route factories for the HTTP northbound (docs/http.md)."""

    def __init__(
        self, settings: Settings, http_routes: Sequence[RouteFactory] = (), clock: Any = None
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.services: Services | None = None
        self._netconf: NetconfServer | None = None
        self._http: HttpServer | None = None
        self._outbox: Outbox | None = None
        self._http_routes = list(http_routes)
        self._state_lock: statedir.StateDirLock | None = None
        self._stopped = threading.Event()
        self.leadership: Any = None  # escnc.leadership.Leadership (with a database)
        self._spent = False  # the engine was stopped: a next term builds a new one

    def start(self) -> None:
        from escnc.netconf.server import NetconfServer

        if self.settings.database:
            election_timings(self.settings)  # before anything starts
        self._state_lock = statedir.prepare(
            self.settings.state_dir, traversable=needs_traversable_state_dir(self.settings)
        )
        try:
            self.services = build_services(self.settings, self._clock)
        except BaseException:
            self._state_lock.release()
            raise
        clustered = bool(self.settings.database)
        if not clustered:
            self.services.engine.start()  # a single node leads, always
        self._outbox = Outbox(self.services)
        if not clustered:
            self._outbox.start()
        fence_stores(self.services, self._outbox)
        self._netconf = NetconfServer(self.services)
        self._netconf.start()
        if self.settings.http_listen or self.settings.https_listen:
            from escnc.http.server import HttpServer

            self._http = HttpServer(self.services, self._outbox.tracker, self._http_routes)
            self._http.start()
        if clustered:
            self._start_cluster()
        log.info(
            "escnc listening on %s port %d (state %s)",
            self.settings.listen_host,
            self.port,
            self.settings.state_dir,
        )

    def _start_cluster(self) -> None:
        """Stand for election once the listeners are up (the address is known)."""
        from escnc.cluster import FenceSlot
        from escnc.leadership import Leadership, LeaderWork
        from escnc.storage.postgresql import PostgresStorage

        assert self.services is not None
        st = self.settings
        timings = election_timings(st)
        # bounded calls: a dead network must not outlast the renew deadline by much
        storage = PostgresStorage(
            st.database, application_name="escnc-elector",
            connect_timeout=min(10.0, st.renew_deadline / 2),
            network_timeout=min(10.0, st.renew_deadline / 2),
        )
        address = st.advertise_address or f"{st.listen_host}:{self.port}"
        self.leadership = Leadership(
            storage, LeaderWork(self._begin_term, self._end_term), address=address,
            node_id=st.node_name, timings=timings,
            reloadables=[TermState(self.services, self._fresh_engine)],
        )
        self.services.cluster = self.leadership
        slot = self.services.fence
        if isinstance(slot, FenceSlot):
            slot.bind(self.leadership.fence)  # the datastore's (and the stores') fence
        self.services.fence = self.leadership.fence
        # a standby's reads show the leader's commits (the leader ignores its own)
        self.services.datastore.follow()
        self.services.state_providers.append(self.leadership.opdata)
        self.leadership.start()

    def _begin_term(self, token: int) -> None:
        """A term starts (after the reloads): the engine -- it reconciles the
        hypervisors and resumes unfinished jobs -- then the callback outbox."""
        services = self.services
        assert services is not None and self._outbox is not None
        services.engine.start(attach=False)  # attach_cluster_hooks delegates
        self._outbox.start()

    def _end_term(self, reason: str, budget: float) -> None:
        """Stop everything the leader runs, the hypervisor calls first."""
        services = self.services
        assert services is not None
        old = services.engine
        old.stop(timeout=budget)
        if services.vims is not None:
            services.vims.close()
        if self._outbox is not None:
            self._outbox.stop()
            self._outbox = None
        self._spent = True  # the next term builds its own (_fresh_engine)

    def _fresh_engine(self) -> None:
        """At the start of a term after an earlier one (an engine does not restart):
        a new engine, host registry and outbox. Built here rather than when the last
        term ended, since a term often ends because the database went away, and the
        stores need it; a failure fails this term's start (the node resigns)."""
        from escnc.engine.engine import Engine
        from escnc.vim.hosts import HostRegistry

        services = self.services
        assert services is not None
        if not self._spent:
            return
        hooks = services.engine.hooks  # the day-2 hooks (build_maintenance)
        services.vims = HostRegistry(self.settings)
        services.engine = Engine(services, clock=self._clock)
        services.engine.hooks = hooks
        self._outbox = Outbox(services)
        fence_stores(services, self._outbox)
        if self._http is not None:
            self._http.ctx.callbacks = self._outbox.tracker
        self._spent = False

    @property
    def port(self) -> int:
        assert self._netconf is not None
        return int(self._netconf.port)

    @property
    def http_ports(self) -> dict[str, int]:
        """scheme ("http", "https") -> bound port, for the listeners configured."""
        return dict(self._http.ports) if self._http is not None else {}

    def serve_forever(self) -> None:
        self._stopped.wait()

    def stop(self) -> None:
        if self.leadership is not None:
            self.leadership.stop()  # the engine stops with the term; the lease is handed on
            self.leadership = None
        if self._http is not None:
            self._http.stop()
            self._http = None
        if self._netconf is not None:
            self._netconf.stop()
        if self._outbox is not None:
            self._outbox.stop()
            self._outbox = None
        if self.services is not None:
            self.services.engine.stop()
            closers = (
                self.services.day2,
                self.services.events,
                self.services.datastore,
                self.services.vims,
            )
            for closer in closers:
                close = getattr(closer, "close", None)
                if close is not None:
                    close()
        if self._state_lock is not None:
            self._state_lock.release()
            self._state_lock = None
        self._stopped.set()
