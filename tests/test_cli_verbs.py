"""escnc-cli verbs and waits added for the interop issue: --wait after a flavor change
follows the resize to VM_VERIFY_RESIZE, delete-dep --wait goes on past a single VM's
FAILURE, progress lines during a long wait, and the verbs for vmRevertSnapshot,
createVolumeFromSnapshot, recoveryVmAction and any RPC from a file (capacity)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from escnc.app import Server
from escnc.cli import client, follow
from escnc.cli.common import EXIT_TIMEOUT
from test_cli import EXAMPLES, _vm_name, cli

ESC = "http://www.cisco.com/esc/esc"


pytestmark = pytest.mark.usefixtures("example_image")


def _event(kind: str, status: str = "SUCCESS", vm: str = "vm1") -> etree._Element:
    return etree.fromstring(
        f'<escEvent xmlns="{ESC}"><status>{status}</status><depname>d</depname>'
        f"<tenant>t</tenant><vm_source><generated_vmname>{vm}</generated_vmname>"
        f"</vm_source><event><type>{kind}</type></event></escEvent>")


def test_undeploy_wait_goes_on_after_a_vm_failure() -> None:
    waiter = client._dep_waiter([("t", "d")])
    waiter.terminal = {"SERVICE_UNDEPLOYED"}
    waiter.stop_on_failure = False
    waiter.feed(_event("VM_UNDEPLOYED", "FAILURE", "vm1"))
    assert not waiter.done and waiter.failed
    waiter.feed(_event("VM_UNDEPLOYED", "SUCCESS", "vm2"))
    assert not waiter.done
    waiter.feed(_event("SERVICE_UNDEPLOYED"))
    assert waiter.done and waiter.failed  # exit status 3, but only at the end


def test_flavor_change_waits_for_verify_resize(server: Server) -> None:
    r = cli(server, "edit-config", str(EXAMPLES / "deployment.xml"), "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    vm = _vm_name(server)
    r = cli(server, "edit-config", str(EXAMPLES / "flavor-update.xml"), "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SERVICE_UPDATED" in r.stderr
    lines = r.stderr.splitlines()
    assert any("VM_VERIFY_RESIZE" in line and vm in line for line in lines), r.stderr
    # it returned once the VM is in VERIFY_RESIZE: confirming works at once
    r = cli(server, "get", "/esc_datamodel/opdata/tenants")
    assert "VM_VERIFY_RESIZE_STATE" in r.stdout
    r = cli(server, "vm-action", "CONFIRM_RESIZE", vm, "--wait")
    assert r.returncode == 0 and "VM_CONFIRM_RESIZE_COMPLETE" in r.stderr, r.stderr


def test_revert_snapshot_and_volume_verbs(server: Server) -> None:
    r = cli(server, "edit-config", str(EXAMPLES / "deployment.xml"), "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    vm = _vm_name(server)
    r = cli(server, "vm-backup-action", vm, "snap-r", "SNAPSHOT", "--wait")
    assert r.returncode == 0, r.stderr
    r = cli(server, "vm-revert-snapshot", vm, "snap-r", "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "VM_SNAPSHOT_REVERTED" in r.stderr and "VM_ALIVE" in r.stderr
    r = cli(server, "create-volume-from-snapshot", "snap-r", "vol-r", "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "VM_VOLUME_CREATED_EVENT" in r.stderr


def test_recovery_verb_sends_recovery_vm_action(server: Server) -> None:
    r = cli(server, "recovery-vm-action", "DO", "no-such-vm")
    assert r.returncode == 1 and "<rpc-error" in r.stdout
    assert "no-such-vm" in r.stdout


def test_rpc_verb_sends_a_capacity_query_from_a_file(server: Server, tmp_path: Path) -> None:
    f = tmp_path / "q.xml"
    f.write_text(f'<queryComputeCapacity xmlns="{ESC}"><resourceDescriptor>'
                 "<computeResourceTypeId>vcInstances</computeResourceTypeId>"
                 "</resourceDescriptor></queryComputeCapacity>")
    r = cli(server, "rpc", str(f))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "<rpc-reply" in r.stdout and "rpc-error" not in r.stdout
    assert "vcInstances" in r.stdout or "capacity" in r.stdout.lower()


def test_long_wait_prints_progress(monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    class Quiet:
        connected = True

        def take_notification(self, block: bool, timeout: float) -> Any:
            time.sleep(min(timeout, 0.02))
            return None

    monkeypatch.setattr(follow, "PROGRESS_EVERY", 0.05)
    waiter = client._vm_waiter("vm1", "VM_ALIVE")
    code = follow.follow(Quiet(), waiter, timeout=0.3)
    assert code == EXIT_TIMEOUT
    assert capsys.readouterr().err.count("still waiting") >= 2


def _leaves(o: Any) -> list[Any]:
    if isinstance(o, dict):
        return [v for x in o.values() for v in _leaves(x)]
    if isinstance(o, list):
        return [v for x in o for v in _leaves(x)]
    return [o]


def test_json_is_rfc7951(server: Server, tmp_path: Path) -> None:
    """--json: module-qualified top-level names, a one-entry list is an array, integers
    are numbers; RPC output as {"module:output"}; <ok/> as an empty object."""
    import json

    f = tmp_path / "flavor.xml"
    f.write_text(f'<esc_datamodel xmlns="{ESC}"><flavors><flavor><name>one</name>'
                 "<vcpus>2</vcpus><memory_mb>512</memory_mb><root_disk_mb>64</root_disk_mb>"
                 "</flavor></flavors></esc_datamodel>")
    r = cli(server, "--json", "edit-config", str(f))
    assert r.returncode == 0 and json.loads(r.stdout) == {}, r.stdout + r.stderr
    r = cli(server, "--json", "get-config", "/esc_datamodel/flavors/flavor[name='one']")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc == {"escnc:esc_datamodel": {"flavors": {"flavor": [
        {"name": "one", "vcpus": 2, "memory_mb": 512, "root_disk_mb": 64}]}}}

    q = tmp_path / "q.xml"
    q.write_text(f'<queryComputeCapacity xmlns="{ESC}"><resourceDescriptor>'
                 "<computeResourceTypeId>vcInstances</computeResourceTypeId>"
                 "</resourceDescriptor></queryComputeCapacity>")
    r = cli(server, "--json", "rpc", str(q))
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert list(out) == ["escnc:output"], out
    # RFC 7951 6.1: 64-bit integers (the capacity figures are uint64) are JSON strings
    figures = [v for v in _leaves(out) if isinstance(v, str) and v.isdigit()]
    assert figures and not any(isinstance(v, int) for v in _leaves(out)), out
