"""What each engine module needs from the engine: small, typed views, not the Engine.

The Engine satisfies these protocols structurally; a module typed against one of them
cannot reach anything else (and does not import engine/engine.py, not even for type
hints: tests/test_layers.py). Each view lists only what its module uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from escnc.engine.capacity import CapacityManager
    from escnc.engine.clock import Clock
    from escnc.engine.elastic import Elastic
    from escnc.engine.hooks import MaintenanceHooks
    from escnc.engine.hostfacts import HostFactsCache
    from escnc.engine.imagereg import ImageRegistry
    from escnc.engine.jobs import Job, JobQueue
    from escnc.engine.model import Desired, GroupSpec
    from escnc.engine.notify import Notifier
    from escnc.engine.placement import CapacityCheck
    from escnc.engine.store import DeploymentRecord, EngineStore, VmRecord
    from escnc.engine.vmops import VmOps
    from escnc.settings import Settings
    from escnc.vim.driver import VimDriver
    from escnc.vim.hosts import HostRegistry


class OpdataView(Protocol):
    """engine/opdata.py: what <get> shows (records and the host snapshot; no host call)."""

    started: bool
    started_at: float
    vims: HostRegistry
    store: EngineStore
    ops: VmOps
    images: ImageRegistry
    host_facts: HostFactsCache
    elastic: Elastic


class ValidationView(Protocol):
    """engine/validate.py: runs under the datastore lock, so no remote call."""

    settings: Settings
    vims: HostRegistry
    store: EngineStore
    host_facts: HostFactsCache
    capacity: CapacityManager
    elastic: Elastic


class MonitorView(Protocol):
    """engine/monitor.py: which VMs to poll, and whom to tell when one goes down."""

    store: EngineStore
    ops: VmOps

    def group_of(self, vm: VmRecord) -> GroupSpec | None: ...
    def vm_down(self, vm: VmRecord, reason: str) -> Any: ...


class ReconcileView(Protocol):
    """engine/reconcile.py: observe hosts, compare, queue one coalesced job."""

    desired: Desired
    store: EngineStore
    jobs: JobQueue
    ops: VmOps
    driver: VimDriver
    vims: HostRegistry
    host_facts: HostFactsCache
    instance_id: str

    def bind(self, fn: Callable[..., Any], *args: Any) -> Callable[[Job], Any]: ...
    def publish(
        self,
        type_: str,
        dep: DeploymentRecord,
        vm: VmRecord | None = None,
        *,
        message: str = "",
        failure: bool = False,
        status_code: int | None = None,
        target: VmRecord | None = None,
        key: str | None = None,
    ) -> None: ...


class JobView(ReconcileView, Protocol):
    """engine/lifecycle.py, actions.py, converge.py: what a job body does to VMs --
    records, events, the VIM operations, the liveness wait and day-2 hooks."""

    hooks: MaintenanceHooks
    images: ImageRegistry
    image_wait_seconds: float

    @property
    def capacity(self) -> CapacityCheck:
        """Admission for the VMs a job places (engine/placement.py)."""

    def set_vm_state(self, generated_name: str, state: str, *,
                     expected_state: str | None = None, **fields: Any) -> VmRecord: ...
    def wait_alive(
        self,
        job: Job,
        dep: DeploymentRecord,
        vms: list[VmRecord],
        event: str | None = "VM_ALIVE",
        always: bool = False,
        late: Callable[[VmRecord, str], bool] | None = None,
    ) -> list[str]: ...
    def manual_recovery_needed(self, dep: DeploymentRecord, name: str, reason: str,
                               expected_state: str | None = None) -> None: ...
    def forget_reported(self, dep: DeploymentRecord) -> None: ...


class ElasticView(JobView, Protocol):
    """engine/lifecycle.elastic_for: what the KPI poller, rules and scaler act through."""

    settings: Settings
    clock: Clock

    def deployment_of(self, vm: VmRecord) -> DeploymentRecord | None: ...
    def group_of(self, vm: VmRecord) -> GroupSpec | None: ...
    def recover(self, vm: VmRecord, reason: str) -> Any: ...


class ImageJobView(Protocol):
    """engine/imagejobs.py: image registration and removal on every host."""

    images: ImageRegistry
    vims: HostRegistry
    ops: VmOps
    driver: VimDriver
    notifier: Notifier
    desired: Desired
