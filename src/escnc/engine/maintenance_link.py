"""The VM maintenance code's one adapter onto the lifecycle engine.

Everything maintenance (resize, migration, snapshots, volumes) needs from the engine
(VM and deployment records, the per-deployment job queue, the notifier, host and pool
setup, the VIM driver) goes through
:class:`EngineLink`, so a change in the engine's internals is a change here only.
:class:`MaintenanceContext` is what each maintenance concept (engine/resize.py,
migration.py, snapshots.py, volumes.py) receives: the link, the store and the settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from escnc.engine import states
from escnc.engine.errors import Conflict
from escnc.engine.jobs import waiting
from escnc.engine.maintenance_store import Day2Store
from escnc.engine.model import Desired, parse_desired
from escnc.errors import RpcError
from escnc.settings import Settings
from escnc.vim import storage
from escnc.vim.driver import VimDriver, VimError
from escnc.vim.hosts import Host
from escnc.vim.networks import ensure_network

if TYPE_CHECKING:
    from escnc.engine.store import DeploymentRecord, VmRecord
    from escnc.services import Services


class EngineLink:
    def __init__(self, services: Services) -> None:
        self.services = services

    @property
    def engine(self) -> Any:
        return self.services.engine

    @property
    def driver(self) -> VimDriver:
        return self.engine.driver  # type: ignore[no-any-return]

    # -- records ---------------------------------------------------------------------

    def vm(self, name: str) -> VmRecord | None:
        return self.engine.store.vm(name)  # type: ignore[no-any-return]

    def require_vm(self, name: str) -> VmRecord:
        vm = self.vm(name)
        if vm is None:
            raise RpcError(
                "data-missing",
                f"VM [{name}] not found.",
                app_tag="404",
                info={"bad-element": "vmName"},
            )
        return vm

    def vms(self, tenant: str, deployment: str) -> list[VmRecord]:
        return self.engine.store.vms(tenant, deployment)  # type: ignore[no-any-return]

    def deployment(self, vm: VmRecord) -> DeploymentRecord:
        dep = self.engine.store.deployment(vm.tenant, vm.deployment)
        if dep is None:
            raise RpcError(
                "data-missing", f"deployment {vm.deployment} of {vm.generated_name} not found"
            )
        return dep  # type: ignore[no-any-return]

    def fitting_hosts(self, vm: VmRecord, hosts: list[str]) -> list[str]:
        """Those of ``hosts`` where ``vm`` fits (the engine's capacity admission)."""
        return self.engine.capacity.migration_hosts(vm, hosts)  # type: ignore[no-any-return]

    def update_vm(self, name: str, **changes: object) -> VmRecord | None:
        return self.engine.store.update_vm(name, **changes)  # type: ignore[no-any-return]

    def desired(self) -> Desired:
        return parse_desired(self.services.datastore.running_xml())

    def image_names(self) -> set[str]:
        """Images in the configuration or known to the engine's image registry."""
        known = {st.spec.name for st in self.engine.images.states()}
        return known | set(self.engine.desired.images)

    def wait_image(self, name: str, timeout: float) -> str:
        """Wait for image ``name`` to be active; its registration message. Raises
        RpcError with the registration's error."""
        from escnc.engine.imagereg import ImageError

        try:
            with waiting():  # a day-2 job waiting for a registration holds no slot
                st = self.engine.images.wait_active(name, timeout)
                st.reported.wait(timeout)  # CREATE_IMAGE published before the caller's event
        except ImageError as exc:
            raise RpcError("operation-failed", str(exc)) from exc
        return str(st.message)

    # -- jobs and events -------------------------------------------------------------

    def submit(
        self,
        key: object,
        name: str,
        fn: Callable[[Any], None],
        on_cancel: Callable[[], None] | None = None,
    ) -> None:
        """Queue ``fn(job)`` behind the deployment's other jobs; ``on_cancel`` reports
        the request's outcome if an undeploy drops the job before it runs."""
        self.engine.jobs.submit(key, name, fn, on_cancel=on_cancel)

    def settle(self, job: Any, vm: VmRecord, *, announce: bool = True) -> VmRecord | None:
        """Back to service after a day-2 operation: a running VM goes through the
        engine's liveness check (VM_ALIVE, published only if ``announce``), a stopped
        one is VM_STOPPED_STATE."""
        try:
            dom = self.driver.domain(self.host(vm.host), vm.generated_name)
            running = dom is not None and dom.active()
        except (VimError, RpcError):
            running = False
        if not running:
            return self.update_vm(vm.generated_name, state=states.VM_STOPPED, monitoring=False)
        fresh = self.update_vm(vm.generated_name, state=states.VM_INERT, monitoring=False) or vm
        self.engine.wait_alive(
            job,
            self.deployment(fresh),
            [fresh],
            event="VM_ALIVE" if announce else None,
            always=True,
        )
        return self.vm(vm.generated_name)

    def publish(
        self,
        type_: str,
        vm: VmRecord,
        *,
        message: str = "",
        failure: bool = False,
        status_code: int | None = None,
        target: VmRecord | None = None,
    ) -> None:
        dep = self.engine.store.deployment(vm.tenant, vm.deployment)
        if dep is None:  # the deployment went away meanwhile: still report on the VM
            from escnc.engine.store import DeploymentRecord

            dep = DeploymentRecord(vm.tenant, vm.deployment, "", "")
        self.engine.notifier.publish(
            type_, dep, vm, message=message, failure=failure, status_code=status_code, target=target
        )

    # -- hosts -----------------------------------------------------------------------

    def host(self, name: str) -> Host:
        try:
            return self.services.vims.get(name)  # type: ignore[no-any-return]
        except KeyError as exc:
            raise RpcError(
                "invalid-value", f"host [{name}] is not configured", info={"bad-element": "host"}
            ) from exc

    def host_names(self) -> list[str]:
        return [h.name for h in self.services.vims.hosts() if h.connected]

    def prepare_host(self, host_name: str, vm: VmRecord, desired: Desired) -> None:
        """Give a migration target what the VM's domain refers to: pool and networks."""
        host = self.host(host_name)
        storage.ensure_pool(host, self.services.settings.state_dir / "pools" / host.name)
        for _nicid, network, _ip, _mac in vm.interfaces:
            ensure_network(host, desired.networks.get(network), network)


BUSY_STATES = (states.VM_VERIFY_RESIZE, states.VM_MIGRATING)


@dataclass
class MaintenanceContext:
    """What a maintenance concept works with (no Engine, no Services beyond the link)."""

    link: EngineLink
    store: Day2Store
    settings: Settings

    @property
    def services(self) -> Services:
        return self.link.services

    def key(self, vm: VmRecord) -> tuple[str, str]:
        return (vm.tenant, vm.deployment)

    def poll(self, kind: str) -> tuple[float, float]:
        """(poll interval, timeout) in seconds for a snapshot or volume operation."""
        s = self.settings
        if kind == "volume":
            return s.volume_poll_secs, s.volume_timeout_mins * 60
        return s.snapshot_poll_secs, s.snapshot_timeout_mins * 60

    def require_not_busy(self, vm: VmRecord) -> None:
        if vm.state in BUSY_STATES or self.store.pending(vm.generated_name):
            raise Conflict(f"VM [{vm.generated_name}] is in {vm.state}: confirm or revert first")

    def cancelled(self, event: str, vm: VmRecord) -> None:
        """An undeploy dropped the queued request: its terminal event, as a failure."""
        self.link.publish(event, vm, failure=True, message="cancelled by undeploy")
