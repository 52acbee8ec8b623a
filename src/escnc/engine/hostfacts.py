"""The engine's snapshot of what its hosts look like, for readers that must not ask them.

Validators run under the datastore lock and <get> runs on a NETCONF session thread:
neither may wait for a remote host (one slow ``qemu+ssh`` host would stall every
get-config and edit-config). They read this snapshot instead; the engine refreshes
it on its own threads -- every reconcile pass and whenever a host (re)connects -- so
it is at most one ``reconcile_interval`` old. A host that is not connected (still
connecting, refused, hanging) is in it as disconnected, with the reason.
"""

from __future__ import annotations

import logging
import threading

from escnc.vim.driver import HostFacts, VimDriver, VimError

log = logging.getLogger(__name__)


class HostFactsCache:
    def __init__(self, driver: VimDriver) -> None:
        self._driver = driver
        self._facts: dict[str, HostFacts] = {}
        self._lock = threading.Lock()  # guards _facts only: no remote call under it

    def refresh(self, only: str | None = None) -> None:
        """Ask the hosts (all, or ``only``) for their facts: engine threads only."""
        hosts = self._driver.hosts.hosts()
        fresh: dict[str, HostFacts] = {}
        for host in hosts:
            if only is not None and host.name != only:
                continue
            try:
                fresh[host.name] = self._driver.facts(host)
            except VimError as exc:
                log.debug("facts of host %s: %s", host.name, exc)
                fresh[host.name] = HostFacts(host.name, host.connected, error=str(exc))
        names = {h.name for h in hosts}
        with self._lock:
            self._facts.update(fresh)
            for gone in set(self._facts) - names:
                del self._facts[gone]

    def get(self, name: str) -> HostFacts | None:
        with self._lock:
            return self._facts.get(name)

    def has_network(self, name: str) -> bool:
        """A connected host had network ``name`` at the last refresh."""
        with self._lock:
            return any(f.connected and name in f.networks for f in self._facts.values())
