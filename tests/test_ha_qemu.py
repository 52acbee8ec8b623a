"""Active/standby on a real libvirtd + QEMU (TCG) with the tiny test guest (issue 18):
two ``escnc serve`` nodes on one PostgreSQL, both with the real hypervisor. The
leader is killed with SIGKILL in the middle of a 20-VM deployment (some domains
created, some not); the standby takes over and finishes the deployment exactly once.

What a user subscribed on the new leader with replay from the start sees: one
VM_DEPLOYED and one VM_ALIVE per VM, one SERVICE_ALIVE; libvirt holds exactly the
deployment's 20 domains (none twice, none orphaned), opdata shows the same 20; an
undeploy through the new leader leaves none of them.

Skipped unless ESCNC_QEMU_URI is set (see tests/test_qemu_lifecycle.py: libvirtd in
network namespace escnc-ci, pytest run inside it). The hypervisor may be shared with
another run: everything here is named by a random tag and only that is cleaned up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from ha_support import Node, role, wait_until
from test_qemu_lifecycle import (  # the qemu tests' host, image, network and events
    BOOT_TIMEOUT,
    URI,
    Env,
    Events,
    _cleanup_libvirt,
    cleanup_config_xml,
    config_xml,
    env,  # noqa: F401  (fixture)
    guest_disk,  # noqa: F401  (fixture)
    opdata_vms,
    our_domains,
    undeploy_xml,
)

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.postgresql,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(not URI, reason="ESCNC_QEMU_URI is not set (needs a real libvirtd)"),
]

VMS = 20  # the figure
KILL_AFTER = 4  # VM_DEPLOYED events the leader reports before it is killed
LEASE = 3.0  # lease_duration as in test_ha_serve (renew_deadline 2, retry 0.25)
START = "1970-01-01T00:00:00Z"


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.stop()


def start(nodes: list[Node], where: Env, name: str, dsn: str) -> Node:
    # one import directory for both nodes: the image's source is the same file
    imports = where.state / "import"
    imports.mkdir(exist_ok=True)
    node = Node(where.state, name, dsn, lease=LEASE, http=False, vim=URI,
                extra=f'image_import_dirs = ["{imports}"]\n'
                # 20 one-vCPU guests on a 2-CPU machine: admission allows them
                '[overcommit]\nvcpus = 16\n')
    nodes.append(node)
    return node


def test_kill9_of_the_leader_mid_deploy_on_qemu(
        pg_dsn: str, guest_disk: Path, env: Env, nodes: list[Node]) -> None:  # noqa: F811
    prefix = env.deployment + "_"
    try:
        a = start(nodes, env, "a", pg_dsn)
        assert wait_until(lambda: role(a) == "leader/running", 60), role(a)
        b = start(nodes, env, "b", pg_dsn)
        assert wait_until(lambda: role(b) == "standby/stopped", 60), role(b)

        m = a.connect()
        m.timeout = 120
        m.create_subscription(stream_name="escEvent")
        events = Events(m)
        assert m.edit_config(config=config_xml(env, guest_disk, VMS), target="running").ok
        events.wait_type("VM_DEPLOYED", count=KILL_AFTER, timeout=300)
        a.kill9()
        at_kill = our_domains(prefix)
        try:
            m.close_session()
        except Exception:
            pass  # the session died with the leader
        print(f"{len(at_kill)} of {VMS} domains when the leader was killed")
        assert KILL_AFTER <= len(at_kill) < VMS, "the leader was not killed mid-deploy"

        assert wait_until(lambda: role(b) == "leader/running", LEASE + 30), role(b)
        with b.connect() as m:
            m.timeout = 120
            m.create_subscription(stream_name="escEvent", start_time=START)
            events = Events(m)
            events.wait_type("SERVICE_ALIVE", timeout=BOOT_TIMEOUT * 2)
            vms = opdata_vms(m, env)
            assert len(vms) == VMS, sorted(vms)
            assert all(v["state"] == "VM_ALIVE_STATE" for v in vms.values()), vms
            assert our_domains(prefix) == sorted(vms), "a duplicate, orphan or missing domain"

            assert m.edit_config(config=undeploy_xml(env), target="running").ok
            events.wait_type("SERVICE_UNDEPLOYED", timeout=300)
            assert our_domains(prefix) == []
            # everything the deployment's job published up to its undeploy, replayed:
            # a repeat by the resumed job would have come before SERVICE_UNDEPLOYED
            seen = Counter((e.type, e.vm) for e in events.seen)
            for vm in vms:
                assert seen[("VM_DEPLOYED", vm)] == 1, (vm, seen)
                assert seen[("VM_ALIVE", vm)] == 1, (vm, seen)
            assert sum(n for (t, _), n in seen.items() if t == "VM_DEPLOYED") == VMS, seen
            assert sum(n for (t, _), n in seen.items() if t == "VM_ALIVE") == VMS, seen
            assert seen[("SERVICE_ALIVE", "")] == 1, seen
            assert not any(t == "VM_RECOVERY_DEPLOYED" for t, _ in seen), seen
            assert m.edit_config(config=cleanup_config_xml(env), target="running").ok
    finally:
        for node in nodes:  # first: a running leader would recreate what is removed
            node.stop()
        _cleanup_libvirt(env)
