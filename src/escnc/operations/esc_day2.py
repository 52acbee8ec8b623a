"""Day-2 RPCs (namespace http://www.cisco.com/esc/esc): vmMigrate, vmBackupAction,
snapshotAction, createVolumeFromSnapshot, vmRevertSnapshot.

Each handler validates against the current state and answers ``<ok/>`` once the
operation is queued; progress and outcome arrive as escEvent notifications
(engine/maintenance.py, built and wired into the engine by app.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lxml import etree

from escnc.engine.errors import EngineError
from escnc.engine.maintenance import Maintenance
from escnc.ns import ESC, qn
from escnc.operations.esc_actions import engine_rpc_error

if TYPE_CHECKING:
    from escnc.rpc.dispatch import RpcContext, RpcRegistry
    from escnc.services import Services


def _leaf(request: etree._Element, name: str, default: str = "") -> str:
    value = request.findtext(qn(ESC, name))
    return value.strip() if value is not None else default


def _flag(request: etree._Element, name: str, default: bool) -> bool:
    value = _leaf(request, name)
    return value.lower() == "true" if value else default


def register(registry: RpcRegistry, services: Services) -> None:
    manager: Maintenance = services.day2  # built and wired by app.build_services
    if manager is None:
        return  # no day-2 manager (e.g. no engine): the RPCs are not offered

    def vm_migrate(_ctx: RpcContext, request: etree._Element) -> None:
        manager.migrate(
            _leaf(request, "vmName"),
            _leaf(request, "migrationType", "live"),
            _flag(request, "blockMigration", False),
            _leaf(request, "host") or None,
        )

    def vm_backup(_ctx: RpcContext, request: etree._Element) -> None:
        manager.backup(
            _leaf(request, "vmName"),
            _leaf(request, "backupName"),
            _leaf(request, "actionType", "SNAPSHOT") or "SNAPSHOT",
        )

    def snapshot_action(_ctx: RpcContext, request: etree._Element) -> None:
        # DELETE is the only action the model allows (validated before we get here)
        manager.delete_snapshot(_leaf(request, "snapshot"))

    def create_volume(_ctx: RpcContext, request: etree._Element) -> None:
        manager.create_volume(
            _leaf(request, "snapshot"),
            _leaf(request, "name"),
            _leaf(request, "volume_type"),
            _flag(request, "multiattach", False),
            _flag(request, "bootable", True),
        )

    def revert_snapshot(_ctx: RpcContext, request: etree._Element) -> None:
        manager.revert_to_snapshot(_leaf(request, "vmName"), _leaf(request, "snapshot"))

    for name, handler in (
        ("vmMigrate", vm_migrate),
        ("vmBackupAction", vm_backup),
        ("snapshotAction", snapshot_action),
        ("createVolumeFromSnapshot", create_volume),
        ("vmRevertSnapshot", revert_snapshot),
    ):
        registry.register(ESC, name, _mapped(handler), validate_input=True)


def _mapped(
    handler: Callable[[RpcContext, etree._Element], None],
) -> Callable[[RpcContext, etree._Element], None]:
    """The handler with engine errors (a refusal) answered as rpc-errors."""

    def run(ctx: RpcContext, request: etree._Element) -> None:
        try:
            handler(ctx, request)
        except EngineError as exc:
            raise engine_rpc_error(exc) from None

    return run
