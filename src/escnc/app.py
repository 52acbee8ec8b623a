"""Wiring: build every component from Settings and run the NETCONF server.

Component constructors (each owned by its package):
  escnc.datastore.schema.Schema.load()                     YANG modules + yangson model
  escnc.netconf.users.UserStore(path)                      users, hashed passwords, keys
  escnc.datastore.store.Datastore(settings, schema)        running/candidate/startup
  escnc.events.bus.EventBus(settings)                      durable event log + delivery
  escnc.vim.hosts.HostRegistry(settings)                   libvirt connections
  escnc.engine.engine.Engine(services)                     reconciler and jobs
  escnc.netconf.sessions.SessionManager(services)          live sessions
  escnc.netconf.server.NetconfServer(services)             SSH listener
Every module in escnc.operations with a ``register(registry, services)`` function
is registered automatically, in name order.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import threading
from typing import TYPE_CHECKING, Any

from escnc import statedir
from escnc.netconf.dispatch import RpcRegistry
from escnc.services import Services
from escnc.settings import Settings

if TYPE_CHECKING:
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

    from escnc.datastore.schema import Schema
    from escnc.datastore.store import Datastore
    from escnc.engine.engine import Engine
    from escnc.engine.names import check_names
    from escnc.events.bus import EventBus
    from escnc.netconf.sessions import SessionManager
    from escnc.netconf.users import UserStore
    from escnc.vim.hosts import HostRegistry

    services.schema = Schema.load()
    services.users = UserStore(settings.state_dir / "users.sqlite3")
    services.datastore = Datastore(settings, services.schema)
    services.events = EventBus(settings)
    services.vims = HostRegistry(settings)
    services.engine = Engine(services, clock=clock)
    services.datastore.add_validator(check_names)
    services.sessions = SessionManager(services)

    import escnc.operations as ops_pkg

    for info in sorted(pkgutil.iter_modules(ops_pkg.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"escnc.operations.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(services.registry, services)
    statedir.make_files_private(settings.state_dir)
    return services


class Server:
    """The whole escnc server in one object (used by ``escnc serve`` and the tests)."""

    def __init__(self, settings: Settings, clock: Any = None) -> None:
        self.settings = settings
        self._clock = clock
        self.services: Services | None = None
        self._netconf: NetconfServer | None = None
        self._state_lock: statedir.StateDirLock | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        from escnc.netconf.server import NetconfServer

        self._state_lock = statedir.prepare(
            self.settings.state_dir, traversable=needs_traversable_state_dir(self.settings)
        )
        try:
            self.services = build_services(self.settings, self._clock)
        except BaseException:
            self._state_lock.release()
            raise
        self.services.engine.start()
        self._netconf = NetconfServer(self.services)
        self._netconf.start()
        log.info(
            "escnc listening on %s port %d (state %s)",
            self.settings.listen_host,
            self.port,
            self.settings.state_dir,
        )

    @property
    def port(self) -> int:
        assert self._netconf is not None
        return int(self._netconf.port)

    def serve_forever(self) -> None:
        self._stopped.wait()

    def stop(self) -> None:
        if self._netconf is not None:
            self._netconf.stop()
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
