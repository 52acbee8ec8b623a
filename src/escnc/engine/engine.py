"""The lifecycle engine: makes libvirt match the committed configuration.

Flow: a commit (``CommitEvent``) is parsed into a Desired state (engine/model.py),
diffed against the previous one and turned into jobs (deploy, update, undeploy,
image registration) on per-deployment queues (``engine/jobs.py``). Jobs drive the
VIM driver (vim/driver.py) through ``engine/vmops.py``, record every step in
``engine.sqlite3`` and publish escEvents; modules see the engine through the small
views of ``engine/context.py``. ``engine/reconcile.py`` brings hosts and records back in
line at start, after a host reconnects and every ``settings.reconcile_interval``.
``engine/monitor.py`` keeps polling every live, monitored VM after VM_ALIVE (one
scheduler thread; ICMP through one raw socket, ``engine/icmp.py``) and, with
libvirt's crash/shut-off events, hands a VM that went down to ``Engine._vm_down``:
recovery per recovery_policy (``actions.run_recovery``) or, for MANUAL,
VM_MANUAL_RECOVERY_NEEDED and a wait for recoveryVmAction DO.

Extension API for VM maintenance (resize, migration, snapshots, volumes)::

    engine = services.engine
    engine.submit(tenant, deployment, "name", fn)     # fn(job) on its queue; undeploy cancels
    engine.submit_for_vm(generated_name, "name", fn)  # same, found by VM name
    engine.find_vm(generated_name) -> VmRecord | None
    engine.deployment_of(vm) / engine.group_of(vm)    # record; desired vm_group settings
    engine.set_vm_state(generated_name, state, **fields) -> VmRecord   # durable
    engine.publish(type, dep, vm=None, message=..., failure=False, target=None)
    engine.wait_alive(job, dep, [vm], event="VM_ALIVE", always=True) -> [errors]
    engine.ops.host(vm) / engine.ops.domain(vm)       # Host and vim.driver.Domain
    engine.driver; engine.hooks (engine/hooks.py)     # the VIM driver, maintenance hooks
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lxml import etree

from escnc.engine import actions, imagejobs, lifecycle, outbox, reconcile
from escnc.engine import states as st
from escnc.engine.capacity import CapacityManager
from escnc.engine.clock import Clock, SystemClock
from escnc.engine.errors import StateChanged
from escnc.engine.hooks import MaintenanceHooks
from escnc.engine.hostfacts import HostFactsCache
from escnc.engine.imagereg import ImageRegistry
from escnc.engine.jobs import Job, JobQueue
from escnc.engine.liveness import (
    DOMAIN_POLL,
    LeasedPing,
    Probe,
    collector_for,
    collector_note,
    icmp_ping,
    ping_target,
    wait_alive,
)
from escnc.engine.model import Desired, GroupSpec, merge_pruned, parse_desired
from escnc.engine.monitor import Monitor, monitored
from escnc.engine.notify import Notifier
from escnc.engine.opdata import build_opdata
from escnc.engine.store import DeploymentRecord, EngineStore, VmRecord, instance_id
from escnc.engine.validate import validate_config
from escnc.engine.vmops import VmOps
from escnc.ns import ESC
from escnc.vim.driver import LibvirtDriver, VimDriver
from escnc.vim.hosts import HostRegistry
from escnc.vim.source_policy import day0_policy, image_policy

if TYPE_CHECKING:
    from escnc.services import CommitEvent, Services

log = logging.getLogger(__name__)


class Engine:
    ns = ESC
    image_wait_seconds = 3600.0

    def __init__(self, services: Services, clock: Clock | None = None) -> None:
        self.services = services
        self.clock: Clock = clock or SystemClock()
        self.settings = services.settings
        self.vims: HostRegistry = services.vims
        state_dir = self.settings.state_dir
        self.store = EngineStore(state_dir / "engine.sqlite3", database=self.settings.database)
        self.jobs = JobQueue()
        self.images = ImageRegistry(
            state_dir / "images", state_dir / "pools", image_policy(self.settings)
        )
        self.instance_id = instance_id(state_dir, self.store)
        self.driver: VimDriver = LibvirtDriver(self.vims)  # the one VIM driver (vim/driver.py)
        self.host_facts = HostFactsCache(self.driver)
        self.ops = VmOps(
            self.driver, self.images, state_dir, self.instance_id, day0_policy(self.settings)
        )
        self.notifier = Notifier(services.events, self.vims)
        self.hooks = MaintenanceHooks()
        self.monitor = Monitor(self)
        self.capacity = CapacityManager(self)  # reservations, capacity (engine/capacity.py)
        self.elastic = lifecycle.elastic_for(self)  # KPIs, rules, scaling (engine/elastic.py)
        self.desired = Desired()
        self._desired_lock = threading.Lock()
        self.started = False
        self.started_at = time.monotonic()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._admit = threading.Lock()  # check-then-queue of requests is atomic
        self._ticks = threading.Condition()
        self.ticks = 0  # periodic reconcile passes done (tests)

    # -- start / stop ----------------------------------------------------------------

    # the datastore's validator and commit listener: once per datastore, so a leader's
    # next term's engine (escnc.leadership) passes ``attach=False`` and delegates instead
    VALIDATE_WHOLE = (f"{{{ESC}}}vim_connector",)  # one libvirtd is one VIM: URIs compared

    def start(self, *, attach: bool = True) -> None:
        ds = self.services.datastore
        if ds is not None:
            if attach:
                ds.add_validator(self.validate, whole_lists=self.VALIDATE_WHOLE)
                ds.add_commit_listener(self.on_commit)
            self.desired = parse_desired(ds.running_xml())
        self.services.state_providers.append(self.state)
        self.driver.add_lifecycle_listener(self._on_domain_event)
        self.vims.add_reconnect_listener(self._host_connected)
        self._apply_vims(Desired(), self.desired)
        self._apply_images(Desired(), self.desired)
        # outcomes flagged as reported that a kill -9 kept from the log (engine/outbox.py)
        outbox.republish(self)
        self.reconcile()
        # after reconcile's jobs are queued: a down VM found now is handled after them
        self.store.add_vm_listener(self.monitor.on_vm)
        self.monitor.start()
        self.capacity.start()
        self.elastic.start(self.services.events)
        self.started = True
        if self.settings.reconcile_interval > 0:
            self._ticker = threading.Thread(target=self._tick, name="engine-reconcile", daemon=True)
            self._ticker.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop all work; a running job gets ``timeout`` seconds to notice its cancel
        (a leader's demotion passes what is left of its lease, docs/ha.md)."""
        if self._stop.is_set():
            return  # stopped already (a leader's term ended before the server stops)
        self._stop.set()
        deadline = time.monotonic() + timeout
        self.started = False
        if self.state in self.services.state_providers:
            self.services.state_providers.remove(self.state)
        self.jobs.shutdown(0)  # every job cancelled now (joined below)
        self.elastic.stop()
        release = getattr(self.clock, "release", None)
        if release is not None:
            release()
        self.monitor.stop()
        if self._ticker is not None:
            self._ticker.join(max(0.0, min(10.0, deadline - time.monotonic())))
        self.jobs.shutdown(max(0.0, deadline - time.monotonic()))
        self.capacity.stop()
        self.store.close()

    def _tick(self) -> None:
        while not self.clock.wait_until(
            self.clock.now() + self.settings.reconcile_interval, self._stop
        ):
            try:
                self.reconcile()
            except Exception:
                log.exception("periodic reconcile failed")
            with self._ticks:
                self.ticks += 1
                self._ticks.notify_all()

    def wait_ticks(self, count: int, timeout: float = 30.0) -> bool:
        """For tests: block until ``count`` periodic reconcile passes are done."""
        with self._ticks:
            return self._ticks.wait_for(lambda: self.ticks >= count, timeout)

    def reconcile(self) -> None:
        reconcile.reconcile(self)

    def _host_connected(self, host: str) -> None:
        """A host (re)connected (its connect thread): its capacity figures first, so
        that the jobs the reconcile resumes are placed on what it really has."""
        try:
            self.capacity.read_host(host)
        except Exception:  # a host that fails to answer now is read by the next poll
            log.exception("reading the capacity of host %s", host)
        self.reconcile()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """For tests and benchmarks: block until no job is queued or running."""
        return self.jobs.wait_idle(timeout)

    # -- datastore hooks -------------------------------------------------------------

    def validate(self, tree: etree._Element) -> None:
        validate_config(self, tree)

    def state(self) -> list[etree._Element]:
        return [build_opdata(self)]

    def on_commit(self, event: CommitEvent) -> None:
        """Turn a commit into jobs; never does VM work on the committing thread."""
        with self._desired_lock:
            old = self.desired
            # the old versions of the touched entries (merge_pruned)
            was = parse_desired(event.old)
            new = merge_pruned(old, was, parse_desired(event.new))
            self.desired = new
        self._apply_vims(old, new)
        self._apply_images(old, new)
        for key, spec in new.deployments.items():
            before = old.deployments.get(key)
            if before is None:
                self.submit(
                    *key,
                    "deploy",
                    self.bind(lifecycle.deploy, spec),
                    interruptible=True,
                )
            elif before.fingerprint != spec.fingerprint:
                self.submit(*key, "update", self.bind(lifecycle.update, before, spec))
        for key in old.deployments.keys() - new.deployments.keys():
            # only undeploy interrupts deploy/start/reboot; queued jobs never run
            self.jobs.cancel_queued(key)
            self.jobs.interrupt(key)
            self.jobs.submit(key, "undeploy", self.bind(lifecycle.undeploy, *key), kind="undeploy")
        for name in old.networks.keys() - new.networks.keys():
            for host in self.vims.hosts():
                if host.connected:
                    self.jobs.submit(
                        ("network", name),
                        "remove network",
                        functools.partial(imagejobs.remove_network, host, name),
                    )

    def _apply_vims(self, old: Desired, new: Desired) -> None:
        for name, (uri, default) in new.vims.items():
            if old.vims.get(name) != (uri, default) and uri:
                self.vims.add_host(name, uri, default=default)
        for name in old.vims.keys() - new.vims.keys():
            self.vims.remove_host(name)

    def _apply_images(self, old: Desired, new: Desired) -> None:
        for name, spec in new.images.items():
            # a failed image is retried when it changed (or at start), not by every commit
            if self.images.begin(spec, retry_failed=old.images.get(name) != spec):
                self.jobs.submit(
                    ("image", name),
                    "register image",
                    functools.partial(imagejobs.register_image, self, spec),
                )
        for name in old.images.keys() - new.images.keys():
            self.jobs.submit(
                ("image", name),
                "forget image",
                functools.partial(imagejobs.forget_image, self, name, self._stop),
            )

    # -- extension API -----------------------------------------------------------------

    def bind(self, fn: Callable[..., Any], *args: Any) -> Callable[[Job], Any]:
        """A job body calling ``fn(engine, job, *args)``."""

        def body(job: Job) -> Any:
            return fn(self, job, *args)

        return body

    def submit(
        self,
        tenant: str,
        deployment: str,
        name: str,
        fn: Callable[[Job], Any],
        *,
        interruptible: bool = False,
    ) -> Job:
        return self.jobs.submit((tenant, deployment), name, fn, interruptible=interruptible)

    def submit_for_vm(
        self, generated_name: str, name: str, fn: Callable[[Job], Any], **kw: bool
    ) -> Job:
        vm = self.find_vm(generated_name)
        if vm is None:
            raise KeyError(generated_name)
        return self.submit(vm.tenant, vm.deployment, name, fn, **kw)

    def find_vm(self, generated_name: str) -> VmRecord | None:
        return self.store.vm(generated_name)

    def deployment_of(self, vm: VmRecord) -> DeploymentRecord | None:
        return self.store.deployment(vm.tenant, vm.deployment)

    def group_of(self, vm: VmRecord) -> GroupSpec | None:
        spec = self.desired.deployments.get(vm.dep_key)
        return spec.groups.get(vm.group) if spec else None

    def set_vm_state(self, generated_name: str, state: str, *,
                     expected_state: str | None = None, **fields: Any) -> VmRecord:
        """``expected_state``: only from that state (StateChanged otherwise)."""
        vm = self.store.update_vm(generated_name, expected_state=expected_state,
                                  state=state, **fields)
        if vm is None:
            raise KeyError(generated_name)
        return vm

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
    ) -> None:
        """``key``: the idempotency key of a flagged outcome (engine/outbox.py)."""
        self.notifier.publish(
            type_, dep, vm, message=message, failure=failure, status_code=status_code,
            target=target, key=key,
        )

    def forget_reported(self, dep: DeploymentRecord) -> None:
        """An undeployed deployment owes no event any more (engine/outbox.py)."""
        outbox.forget(self.notifier, dep)

    def wait_alive(
        self,
        job: Job,
        dep: DeploymentRecord,
        vms: list[VmRecord],
        event: str | None = "VM_ALIVE",
        always: bool = False,
        late: Callable[[VmRecord, str], bool] | None = None,
    ) -> list[str]:
        """Wait until each VM is alive or its bootup_time passes; returns error messages.

        Alive VMs go to VM_ALIVE_STATE with monitoring on (and ``event`` is published,
        once per VM unless ``always``); late ones go to VM_ERROR_STATE (and ``event``
        is published as FAILURE saying why) unless ``late(vm, why)`` brought them
        back (AUTO recovery). An undeploy interrupts the wait.
        """
        if not vms:
            return []
        now = time.monotonic()
        probes = []
        notes: dict[str, str] = {}  # why ICMPPing is not what decides (said in VM_ALIVE)
        leased: dict[str, LeasedPing] = {}  # DHCP interfaces: pinged on their lease
        for vm in vms:
            group = self.group_of(vm)
            host = self.ops.host(vm)
            collector = collector_for(vm, group, host.is_test)
            notes[vm.generated_name] = collector_note(vm, group, host.is_test)
            vm = self.set_vm_state(vm.generated_name, vm.state, collector=collector)
            bootup = float((group.bootup_time if group else 0) or self.settings.default_bootup_time)
            if collector == st.COLLECTOR_ICMP and group is not None:
                address = ping_target(vm, group)
                check: Callable[[], bool] = functools.partial(icmp_ping, address)
                if not address:
                    nicid = group.kpi.nicid if group.kpi else 0
                    check = LeasedPing(functools.partial(self.ops.guest_address, vm, nicid))
                    leased[vm.generated_name] = check
                interval = min(group.kpi.poll_seconds if group.kpi else 3.0, 2.0)
            else:
                check = functools.partial(self.ops.is_running, vm)
                interval = DOMAIN_POLL
            probes.append(Probe(vm, check, now + bootup, interval))

        def on_alive(vm: VmRecord) -> None:
            current = self.store.vm(vm.generated_name) or vm
            report = event is not None and (always or not current.alive_reported)
            # the first VM_ALIVE is flagged before it is sent, and sent under its key
            first = report and event == "VM_ALIVE" and not current.alive_reported
            vm = self.set_vm_state(
                vm.generated_name,
                st.VM_ALIVE,
                monitoring=True,
                status_message="",
                alive_reported=current.alive_reported or report,
            )
            if report and event is not None:
                lease = leased.get(vm.generated_name)
                how = f"ICMPPing on {lease.address}, its DHCP lease" if lease else ""
                how = how or notes.get(vm.generated_name, "")
                key = outbox.vm_key(dep, vm, outbox.ALIVE) if first else None
                self.publish(event, dep, vm, message="VM is alive" + (f" ({how})" if how else ""),
                             key=key)

        alive, failed, cancelled = wait_alive(probes, job.cancel, on_alive)
        errors = []
        for vm in failed:
            bootup = next(
                p.deadline - now for p in probes if p.vm.generated_name == vm.generated_name
            )
            msg = (
                f"VM {vm.generated_name} was not alive within bootup_time {bootup:.0f} s "
                f"(collector {vm.collector})"
            )
            lease = leased.get(vm.generated_name)
            if lease is not None and not lease.address:
                msg += "; libvirt knows no DHCP lease of its interface: it could not be pinged"
            vm = self.set_vm_state(vm.generated_name, st.VM_ERROR, status_message=msg)
            if late is not None and not job.cancel.is_set() and late(vm, msg):
                continue
            errors.append(msg)
            if event is not None:
                self.publish(event, dep, vm, message=msg, failure=True)
        if cancelled:
            done = {v.generated_name for v in alive + failed}
            for vm in vms:
                if vm.generated_name not in done:
                    errors.append(f"VM {vm.generated_name}: interrupted by undeploy")
                    if event is not None:
                        self.publish(
                            event, dep, vm, message="interrupted by undeploy", failure=True
                        )
        return errors

    # -- RPC entry points (operations/esc_actions.py) --------------------------------

    # Each checks the request against the current state and raises
    # engine.errors.Refused at once when the state forbids it (operations/ maps it).

    def vm_action(self, vm: VmRecord, action: str, force: bool) -> Job:
        power = action in ("START", "REBOOT")
        with self._admit:
            actions.check_vm_action(self, vm, action)
            return self.jobs.submit(
                vm.dep_key,
                f"vmAction {action} of {vm.generated_name}",
                self.bind(actions.run_vm_action, vm.generated_name, action, force),
                interruptible=power,
                scope=vm.generated_name if power else None,
                on_cancel=self._cancelled(vm, actions.VM_TERMINAL.get(action)),
            )

    def service_action(self, dep: DeploymentRecord, action: str) -> Job:
        terminal = dict(STOP="SERVICE_STOPPED", START="SERVICE_STARTED", REBOOT="SERVICE_REBOOTED")
        with self._admit:
            actions.check_service_action(self, dep, action)
            return self.jobs.submit(
                dep.key,
                f"serviceAction {action}",
                self.bind(actions.run_service_action, dep.tenant, dep.name, action),
                interruptible=action in ("START", "REBOOT"),
                scope="" if action in terminal else None,
                on_cancel=self._cancelled_service(dep, terminal.get(action)),
            )

    def recover(self, vm: VmRecord, reason: str) -> Job:
        with self._admit:
            actions.check_recovery(self, vm)
            return self.jobs.submit(
                vm.dep_key,
                f"recovery of {vm.generated_name}",
                self.bind(actions.run_recovery, vm.generated_name, reason),
                interruptible=True,
                scope=vm.generated_name,
            )

    def check_vm_operation(self, vm: VmRecord, what: str) -> None:
        """For day-2 requests (migrate, backup, ...): raise Refused when the VM's
        deployment is stopped, being undeployed, or held by a start/reboot."""
        actions.check_vm_operation(self, vm, what)

    def _cancelled(self, vm: VmRecord, event: str | None) -> Callable[[], None] | None:
        if event is None:
            return None

        def report() -> None:
            dep = self.deployment_of(vm) or DeploymentRecord(vm.tenant, vm.deployment, "", "")
            self.publish(event, dep, vm, message="cancelled by undeploy", failure=True)

        return report

    def _cancelled_service(
        self, dep: DeploymentRecord, event: str | None
    ) -> Callable[[], None] | None:
        if event is None:
            return None
        return lambda: self.publish(event, dep, message="cancelled by undeploy", failure=True)

    # -- monitoring: libvirt events and the poller (engine/monitor.py) ------------------

    def _on_domain_event(self, host: str, name: str, event: str) -> None:
        if event not in ("stopped", "crashed"):
            return
        vm = self.store.vm(name)
        if vm is None or vm.host != host or not monitored(vm):
            return
        what = "crashed" if event == "crashed" else "shut off"
        self.vm_down(vm, f"domain of VM {name} {what} on host {host} without escnc asking")

    def vm_down(self, vm: VmRecord, reason: str) -> Job:
        """A monitored VM stopped answering: handled on its deployment's queue, after
        whatever was queued before (our own stop/reboot jobs run first)."""
        log.warning("%s", reason)
        return self.jobs.submit(
            vm.dep_key,
            f"vm down {vm.generated_name}",
            self.bind(Engine._vm_down, vm.generated_name, reason),
            kind=f"down {vm.generated_name}",
        )

    def _vm_down(self, job: Job, name: str, reason: str) -> None:
        vm = self.store.vm(name)
        if vm is None or not monitored(vm):
            return  # stopped, rebooted, undeployed or already recovered meanwhile
        check, _what = self.monitor.probe(vm)
        if check():  # one more look: it answers again (or an action of ours revived it)
            self.monitor.on_vm(name, vm)
            return
        dep = self.deployment_of(vm)
        group = self.group_of(vm)
        if (
            dep is None
            or group is None
            or dep.state in (st.SERVICE_STOPPED, st.SERVICE_UNDEPLOYING)
        ):
            return
        if group.recovery_type.upper() == "MANUAL":
            try:  # only from the state the probe judged (an action may have moved it)
                self.manual_recovery_needed(dep, name, reason, expected_state=vm.state)
            except StateChanged as exc:
                log.info("not marking %s for manual recovery: %s", name, exc)
            return
        actions.run_recovery(self, job, name, reason)

    def manual_recovery_needed(self, dep: DeploymentRecord, name: str, reason: str,
                               expected_state: str | None = None) -> None:
        """A MANUAL-recovery VM is down: VM_ERROR, no monitoring, one
        VM_MANUAL_RECOVERY_NEEDED; nothing happens until recoveryVmAction DO."""
        vm = self.set_vm_state(
            name,
            st.VM_ERROR,
            expected_state=expected_state,
            monitoring=False,
            status_message=f"{reason}; waiting for recoveryVmAction DO",
        )
        self.publish(
            "VM_MANUAL_RECOVERY_NEEDED",
            dep,
            vm,
            message=f"{reason}; recovery_type MANUAL: waiting for recoveryVmAction DO",
        )
