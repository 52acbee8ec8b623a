"""libvirt hosts: one long-lived connection per host, and libvirt's event loop.

A *host* is one libvirt URI (``qemu:///system``, ``qemu+ssh://h/system``,
``test:///path/host.xml``). Hosts come from ``settings.vims`` (the first is the
default) and from ``vim_connector`` objects in the configuration (the engine calls
:meth:`HostRegistry.add_host` / :meth:`HostRegistry.remove_host` at commit).

Why one connection per host: a second ``open`` of ``test:///path`` is a fresh,
empty hypervisor, and for real hosts each connection costs a daemon session.
libvirt connections are thread safe, so every engine thread shares it.

Connections are opened in the background (one thread per attempt), so neither the
server's start nor a commit adding a ``vim_connector`` waits for a host: a host that
accepts TCP and never answers shows as disconnected ("no answer within N s") while
everything else goes on. At start the registry waits at most ``vim_start_wait`` for
its hosts; a caller of :meth:`Host.connection` waits at most ``vim_connect_timeout``
for a connection under way. Every successful connect runs the reconnect listeners.

Lifecycle events (started, stopped, crashed) reach listeners registered with
:meth:`add_domain_listener` through the default event loop, which must be
registered before the first connection is opened. A lost connection is reopened
by a watchdog thread; :meth:`add_reconnect_listener` callbacks then run so the
engine can reconcile that host.

Hosts from the settings are the operator's (trusted). A host from the configuration
is opened only if its URI passes ``vim/uri_policy.py`` (checked again here, right
before ``libvirt.open``, whatever the validator said), it never replaces a settings
host of the same name, and libvirt's error text about it is cut to its first line.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import libvirt
from lxml import etree

from escnc.settings import Settings
from escnc.vim.uri_policy import UriRefused, check_vim_uri

log = logging.getLogger(__name__)

DomainListener = Callable[[str, str, int, int], None]  # host, domain name, event, detail
ReconnectListener = Callable[[str], None]  # host name

_loop_lock = threading.Lock()
_loop_started = False


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; we raise and log instead."""


def start_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once per process)."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.registerErrorHandler(_ignore_libvirt_error, None)
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:  # keep the loop alive whatever a callback does
                    log.exception("libvirt event loop iteration failed")

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


def _set(event: threading.Event) -> threading.Event:
    event.set()
    return event


@dataclass
class Host:
    name: str
    uri: str
    conn: libvirt.virConnect | None = None
    error: str = ""
    trusted: bool = True  # from the operator's settings; False: from the configuration
    refused: bool = False  # the URI policy or host identity refused it: never (re)opened
    uuid: str = ""  # libvirt's host UUID ("" when the driver has none: test driver)
    twin: str = ""  # refused: the host of that name is the same libvirtd
    connect_timeout: float = 10.0
    connect_started: float = 0.0  # monotonic time of the last connection attempt
    # set while no connection attempt is under way (vim-connect threads clear it)
    idle: threading.Event = field(default_factory=lambda: _set(threading.Event()))
    # serialises storage/network setup on this host; domain calls need no lock
    lock: threading.RLock = field(default_factory=threading.RLock)
    _callback_ids: list[int] = field(default_factory=list)

    @property
    def is_test(self) -> bool:
        """The libvirt test driver: guests are not reachable, state is in-process."""
        return self.uri.startswith("test:")

    @property
    def connected(self) -> bool:
        if self.conn is None:
            return False
        try:
            return bool(self.conn.isAlive())
        except libvirt.libvirtError:
            return False

    @property
    def status_message(self) -> str:
        """Why the host is not connected ("" when it is): for opdata."""
        if self.connected:
            return ""
        if not self.idle.is_set():
            waited = time.monotonic() - self.connect_started
            if waited > self.connect_timeout:
                return f"no answer within {self.connect_timeout:g} s (still trying)"
            return "connecting"
        return self.error or "not connected"

    @property
    def is_local(self) -> bool:
        """Files under our state_dir are visible to the hypervisor (no remote transport)."""
        scheme = self.uri.split(":", 1)[0]
        return (
            "+" not in scheme and "://" in self.uri and self.uri.split("://", 1)[1].startswith("/")
        )

    def connection(self) -> libvirt.virConnect:
        if self.conn is None and not self.idle.is_set():
            self.idle.wait(self.connect_timeout)  # a connect under way: its outcome
        if self.conn is None:
            raise libvirt.libvirtError(
                f"host {self.name} ({self.uri}) is not connected: {self.error}"
            )
        return self.conn

    @property
    def domain_type(self) -> str:
        # KVM is unusable on the target machines: plain TCG emulation for QEMU.
        return "test" if self.is_test else "qemu"

    def hostname(self) -> str:
        if self.conn is None:  # never wait for a connect here (events, opdata)
            return self.name
        try:
            return str(self.connection().getHostname())
        except libvirt.libvirtError:
            return self.name

    def hostid(self) -> str:
        """Stable opaque id, shaped like ESC's (sha224 hex of host name and URI)."""
        return hashlib.sha224(f"{self.name}|{self.uri}".encode()).hexdigest()


def host_uuid(conn: libvirt.virConnect) -> str:
    """The host UUID from libvirt's capabilities ("" when there is none)."""
    try:
        caps = etree.fromstring(conn.getCapabilities().encode())
    except (libvirt.libvirtError, etree.XMLSyntaxError):
        return ""
    return (caps.findtext("host/uuid") or "").strip()


class HostRegistry:
    """All libvirt hosts known to escnc."""

    def __init__(self, settings: Settings, reconnect_interval: float = 5.0) -> None:
        self._settings = settings
        self._hosts: dict[str, Host] = {}
        self._static: set[str] = set(settings.vims)
        self._lock = threading.RLock()
        self._domain_listeners: list[DomainListener] = []
        self._reconnect_listeners: list[ReconnectListener] = []
        self._closed = threading.Event()
        self._default = next(iter(settings.vims), "")
        start_event_loop()
        for name, uri in settings.vims.items():
            self.add_host(name, uri, trusted=True)
        # local hosts answer in milliseconds: connected before the engine starts; a
        # remote one that hangs does not hold the server's start any longer than this
        deadline = time.monotonic() + settings.vim_start_wait
        for host in self.hosts():
            host.idle.wait(max(0.0, deadline - time.monotonic()))
        self._watchdog = threading.Thread(
            target=self._watch, args=(reconnect_interval,), name="vim-watchdog", daemon=True
        )
        self._watchdog.start()

    # -- hosts -----------------------------------------------------------------------

    def add_host(
        self, name: str, uri: str, default: bool = False, *, trusted: bool = False
    ) -> Host:
        """A host (``trusted``: from the settings; otherwise from the configuration,
        which cannot change a settings host's URI)."""
        with self._lock:
            existing = self._hosts.get(name)
            if existing is not None and not trusted and name in self._static:
                if existing.uri != uri:
                    log.warning(
                        "vim_connector %s: the operator's VIM of that name is kept "
                        "(its URI cannot be changed from the configuration)",
                        name,
                    )
                if default:
                    self._default = name
                return existing
            if existing is not None and existing.uri == uri:
                if default:
                    self._default = name
                return existing
            if existing is not None:
                self._disconnect(existing)
            host = Host(
                name=name,
                uri=uri,
                trusted=trusted,
                connect_timeout=self._settings.vim_connect_timeout,
            )
            self._hosts[name] = host
            if default or not self._default:
                self._default = name
        self._start_connect(host)
        return host

    def remove_host(self, name: str) -> None:
        """Forget a configured host (settings hosts stay: they come from the command line)."""
        with self._lock:
            if name in self._static:
                return
            host = self._hosts.pop(name, None)
            if self._default == name:
                self._default = next(iter(self._hosts), "")
        if host is not None:
            self._disconnect(host)

    def get(self, name: str) -> Host:
        with self._lock:
            host = self._hosts.get(name)
        if host is None:
            raise KeyError(name)
        return host

    def names(self) -> list[str]:
        with self._lock:
            return list(self._hosts)

    def hosts(self) -> list[Host]:
        with self._lock:
            return list(self._hosts.values())

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._hosts

    @property
    def default(self) -> Host:
        return self.get(self._default)

    @property
    def default_name(self) -> str:
        return self._default

    # -- listeners -------------------------------------------------------------------

    def add_domain_listener(self, listener: DomainListener) -> None:
        self._domain_listeners.append(listener)

    def add_reconnect_listener(self, listener: ReconnectListener) -> None:
        self._reconnect_listeners.append(listener)

    # -- connections -----------------------------------------------------------------

    def _start_connect(self, host: Host) -> None:
        """Open ``host`` on a thread of its own; a connect that takes longer than the
        timeout leaves the host disconnected, saying so, and may still complete."""
        with self._lock:
            if not host.idle.is_set():
                return  # one attempt at a time
            host.idle.clear()
            host.connect_started = time.monotonic()
        threading.Thread(
            target=self._connect_in_background,
            args=(host,),
            name=f"vim-connect-{host.name}",
            daemon=True,
        ).start()

    def _connect_in_background(self, host: Host) -> None:
        try:
            connected = self._connect(host)
        except Exception:  # a thread of ours must not die silently
            log.exception("connecting to host %s failed", host.name)
            connected = False
        finally:
            host.idle.set()
        with self._lock:
            current = self._hosts.get(host.name) is host and not self._closed.is_set()
        if not current:  # removed or replaced meanwhile, or the registry closed
            self._disconnect(host)
            return
        if connected:
            for listener in list(self._reconnect_listeners):
                try:
                    listener(host.name)
                except Exception:
                    log.exception("reconnect listener failed")

    def _connect(self, host: Host) -> bool:
        if not host.trusted:
            try:
                check_vim_uri(host.uri, allow_test=self._settings.allow_test_vims)
            except UriRefused as exc:
                host.refused = True
                host.error = f"URI refused: {exc}"
                log.warning("host %s: not connected, %s", host.name, host.error)
                return False
        try:
            conn = libvirt.open(host.uri)
        except libvirt.libvirtError as exc:
            # libvirt may quote what it read (a file, a remote's answer): first line only
            host.error = (str(exc).splitlines() or [""])[0][:300]
            log.warning("cannot connect to host %s (%s): %s", host.name, host.uri, host.error)
            return False
        uuid = host_uuid(conn)
        with self._lock:
            twin = next(
                (
                    h
                    for h in self._hosts.values()
                    if uuid and h is not host and h.uuid == uuid and h.conn is not None
                ),
                None,
            )
            if twin is None:
                host.uuid = uuid
                host.conn = conn
                host.error = ""
        if twin is not None:
            # one libvirtd under two names: each would see the other's domains as
            # orphans of its own and reconcile would destroy and recreate them forever
            host.refused = True
            host.twin = twin.name
            host.error = (
                f"same libvirtd as host {twin.name} ({twin.uri}, host UUID {uuid}): not used"
            )
            log.warning("host %s (%s): %s", host.name, host.uri, host.error)
            try:
                conn.close()
            except libvirt.libvirtError:
                pass
            return False
        try:
            cb = conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, host.name
            )
            host._callback_ids.append(cb)
            conn.setKeepAlive(5, 3)
        except libvirt.libvirtError as exc:  # test driver has no keepalive
            log.debug("host %s: %s", host.name, exc)
        log.info("connected to host %s (%s)", host.name, host.uri)
        return True

    def _disconnect(self, host: Host) -> None:
        conn, host.conn = host.conn, None
        if conn is None:
            return
        for cb in host._callback_ids:
            try:
                conn.domainEventDeregisterAny(cb)
            except libvirt.libvirtError:
                pass
        host._callback_ids.clear()
        try:
            conn.close()
        except libvirt.libvirtError:
            pass

    def _on_lifecycle(
        self,
        _conn: libvirt.virConnect,
        dom: libvirt.virDomain,
        event: int,
        detail: int,
        host_name: str,
    ) -> None:
        name = dom.name()
        for listener in list(self._domain_listeners):
            try:
                listener(host_name, name, event, detail)
            except Exception:
                log.exception("domain listener failed")

    def _watch(self, interval: float) -> None:
        while not self._closed.wait(interval):
            for host in self.hosts():
                if host.connected or host.refused or not host.idle.is_set():
                    continue  # fine, never to be opened, or an attempt under way
                if host.conn is not None:
                    log.warning("lost connection to host %s (%s)", host.name, host.uri)
                    self._disconnect(host)
                self._start_connect(host)

    def close(self) -> None:
        self._closed.set()
        for host in self.hosts():
            self._disconnect(host)
