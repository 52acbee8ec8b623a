"""Composite VNFs: ESC's start-up policy (policies/startup) through NETCONF on the
libvirt test driver -- dependency order at deploy and after a restart, cycles and
unknown references refused at validation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from ncclient.operations import RPCError

from conftest import connect
from engine_support import E, config, deployment, ev_type, nc_edit, nc_events
from escnc.app import Server

pytestmark = pytest.mark.timeout(120)


def composite(policy: str, groups: tuple[str, ...] = ("app", "db")) -> str:
    """One deployment with a vm_group per name (deployment()'s group) and ``policy``."""
    parts = [deployment(group=g) for g in groups]
    body = "".join(p.split("<deployment><name>dep1</name>", 1)[1].rsplit("</deployment>", 1)[0]
                   for p in parts)
    # each group its own static IP (they share deployment()'s pool addresses otherwise)
    for i, _g in enumerate(groups):
        body = body.replace("<ip_address>10.9.0.10</ip_address>",
                            f"<ip_address>10.9.1.{10 + i}</ip_address>", 1)
    return f"<deployment><name>dep1</name>{policy}{body}</deployment>"


def startup(target: str, *deps: str, event: str = "VM_ALIVE") -> str:
    inner = "".join(
        f"<depends_on><vm_group_ref>{d}</vm_group_ref><kpi_event_ref>{event}</kpi_event_ref>"
        "</depends_on>"
        for d in deps
    )
    return f"<startup><target_vm_group_ref>{target}</target_vm_group_ref>{inner}</startup>"


def group_events(evs: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(ev_type(e), e.findtext(f"{E}vm_group") or "") for e in evs
            if ev_type(e) in ("VM_DEPLOYED", "VM_ALIVE")]


@pytest.fixture
def server(server_factory: Callable[..., Server]) -> Server:
    return server_factory(reconcile_interval=1.0)


def test_app_starts_after_db_is_alive(server: Server, tmp_path: Path) -> None:
    with connect(server) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, config(tmp_path, composite(f"<policies>{startup('app', 'db')}</policies>")))
        evs = nc_events(m, "SERVICE_ALIVE")
        assert group_events(evs) == [
            ("VM_DEPLOYED", "db"), ("VM_ALIVE", "db"), ("VM_DEPLOYED", "app"), ("VM_ALIVE", "app")
        ]
        assert evs[-1].findtext(f"{E}status") == "SUCCESS"


def test_without_policy_groups_start_together(server: Server, tmp_path: Path) -> None:
    with connect(server) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, config(tmp_path, composite("")))
        evs = nc_events(m, "SERVICE_ALIVE")
        assert [t for t, _g in group_events(evs)][:2] == ["VM_DEPLOYED", "VM_DEPLOYED"]


def test_chain_order_after_restart(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    policy = f"<policies>{startup('app', 'db')}{startup('web', 'app')}</policies>"
    srv = server_factory(reconcile_interval=1.0)
    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, config(tmp_path, composite(policy, ("web", "app", "db"))))
        evs = nc_events(m, "SERVICE_ALIVE")
        assert [g for t, g in group_events(evs) if t == "VM_ALIVE"] == ["db", "app", "web"]
    state = srv.settings.state_dir
    srv.stop()
    # the test driver's host comes back empty: reconcile recreates in dependency order
    srv2 = server_factory(state_dir=state, reconcile_interval=1.0)
    with connect(srv2) as m:
        m.create_subscription(stream_name="escEvent", start_time="1970-01-01T00:00:00Z")
        evs = nc_events(m, "VM_RECOVERY_DEPLOYED", count=3, timeout=30)
        order = [e.findtext(f"{E}vm_group") for e in evs if ev_type(e) == "VM_RECOVERY_DEPLOYED"]
        assert order == ["db", "app", "web"]


@pytest.mark.parametrize(
    ("policy", "why"),
    [
        (startup("app", "db") + startup("db", "app"), "dependency cycle"),
        (startup("app", "app"), "depends on itself"),
        (startup("app", "db", event="VM_OVERLOADED"), "kpi_event_ref VM_OVERLOADED"),
    ],
)
def test_bad_policies_are_refused(server: Server, tmp_path: Path, policy: str, why: str) -> None:
    with connect(server) as m:
        with pytest.raises(RPCError) as exc:
            nc_edit(m, config(tmp_path, composite(f"<policies>{policy}</policies>")))
        assert why in str(exc.value)
        assert "policies" in (exc.value.path or "")
        assert server.services.engine.store.deployments() == []  # type: ignore[union-attr]
