"""Publishing escEvent notifications for deployments and VMs, and for resources
that belong to no deployment (images: CREATE_IMAGE, DELETE_IMAGE)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from escnc.events.esc_event import FAILURE, SUCCESS, EscEvent, VmRef

if TYPE_CHECKING:
    from escnc.engine.store import DeploymentRecord, VmRecord
    from escnc.vim.hosts import HostRegistry

log = logging.getLogger(__name__)
STREAM = "escEvent"


class Notifier:
    def __init__(self, events: Any, vims: HostRegistry) -> None:
        self._events = events
        self._vims = vims

    def vm_ref(self, vm: VmRecord) -> VmRef:
        hostid = hostname = ""
        if vm.host in self._vims:
            host = self._vims.get(vm.host)
            hostid, hostname = host.hostid(), host.hostname()
        return VmRef(
            vmid=vm.vm_id,
            vmname=vm.generated_name,
            generated_vmname=vm.generated_name,
            vim_id=vm.host,
            vim_project=vm.tenant,
            # escnc's tenant id is the tenant's name (opdata tenant_id, escEvent tenant_id)
            vim_project_id=vm.tenant,
            hostid=hostid,
            hostname=hostname,
            interfaces=list(vm.interfaces),
        )

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
        """``key``: an idempotency key (engine/outbox.py): an event published before
        under the same key is not published again."""
        event = EscEvent(
            type=type_,
            status=FAILURE if failure else SUCCESS,
            status_code=status_code if status_code is not None else (500 if failure else 200),
            status_message=message,
            depname=dep.name,
            tenant=dep.tenant,
            tenant_id=dep.tenant,
            depid=dep.deployment_id,
            vm_group=vm.group if vm is not None else "",
            vm_source=self.vm_ref(vm) if vm is not None else None,
            vm_target=self.vm_ref(target) if target is not None else None,
        )
        log.info(
            "event %s %s %s/%s %s: %s",
            type_,
            event.status,
            dep.tenant,
            dep.name,
            vm.generated_name if vm else "",
            message,
            extra={"tenant": dep.tenant, "deployment": dep.name,
                   "vm": vm.generated_name if vm else ""},  # log tags (cli/logging_setup)
        )
        self._send(type_, event, key)

    def publish_resource(
        self,
        type_: str,
        *,
        message: str = "",
        failure: bool = False,
        status_code: int | None = None,
    ) -> None:
        """An escEvent about a resource outside any deployment (ESC's CREATE_IMAGE,
        DELETE_IMAGE, ...): status, status_code, status_message and the event type."""
        event = EscEvent(
            type=type_,
            status=FAILURE if failure else SUCCESS,
            status_code=status_code if status_code is not None else (500 if failure else 200),
            status_message=message,
        )
        log.info("event %s %s: %s", type_, event.status, message)
        self._send(type_, event)

    def _send(self, type_: str, event: EscEvent, key: str | None = None) -> None:
        if self._events is None:
            return
        try:
            if key is None:
                self._events.publish(STREAM, event.to_xml())
            else:
                self._events.publish(STREAM, event.to_xml(), key=key)
        except Exception:
            log.exception("cannot publish %s", type_)

    def published(self, keys: list[str]) -> set[str]:
        """Which of the idempotency ``keys`` were published."""
        return self._events.logged_keys(keys) if self._events is not None and keys else set()

    def adopt(self, keys: list[str]) -> None:
        """Count ``keys`` as published (outcomes reported before there were keys)."""
        if self._events is not None and keys:
            self._events.adopt_keys(keys)

    def forget(self, prefix: str) -> None:
        """Nothing will be published under keys starting with ``prefix`` again."""
        if self._events is None:
            return
        try:
            self._events.forget_keys(prefix)
        except Exception:  # a leftover key costs a row, never a lost event
            log.exception("cannot forget event keys %s", prefix)
