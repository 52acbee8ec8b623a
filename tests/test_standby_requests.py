"""The request layer on a standby (rpc/standby.py), in one process: every registered
operation outside the read allow-list gets not-leader naming the leader, whichever
handler it has; the reads run; HTTP maps not-leader to 503 with Retry-After. The
standby is a real LeaderElector on a SQLite lease another elector holds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from conftest import make_settings
from escnc.app import build_services
from escnc.cluster import ElectionTimings, LeaderElector
from escnc.ns import ESC
from escnc.rpc.errors import error_dict, error_headers, http_status
from escnc.rpc.request import RequestSession, execute
from escnc.rpc.standby import READS
from escnc.services import Services
from escnc.storage.sqlite import SqliteStorage
from pg_support import wait_for

LEADER = "10.0.0.1:830"


@pytest.fixture
def standby(tmp_path: Path) -> Iterator[Services]:
    storage = SqliteStorage(tmp_path / "lease.sqlite3")
    timings = ElectionTimings(lease_duration=30, renew_deadline=20, retry=0.05)
    leader = LeaderElector(storage, address=LEADER, node_id="a", timings=timings).start()
    other = LeaderElector(storage, address="10.0.0.2:830", node_id="b", timings=timings)
    try:
        assert wait_for(lambda: leader.is_leader, 10)
        other.start()
        assert wait_for(lambda: other.ticks >= 1, 10)
        services = build_services(make_settings(tmp_path / "state"))
        services.fence = other.fence
        yield services
        services.engine.stop()
        for closer in (services.day2, services.datastore, services.events):
            closer.close()
    finally:
        other.stop()
        leader.stop()


def run(services: Services, namespace: str, name: str) -> list:  # type: ignore[type-arg]
    session = RequestSession(services, 1, "admin")
    try:
        return execute(services, session, etree.Element(f"{{{namespace}}}{name}")).errors
    finally:
        session.end()


def test_every_operation_but_the_reads_is_refused(standby: Services) -> None:
    names = standby.registry.names()
    assert set(names) >= READS  # the allow-list names only what exists
    writes = [n for n in names if n not in READS]
    assert ("urn:ietf:params:xml:ns:netconf:base:1.0", "edit-config") in writes
    assert (ESC, "vmAction") in writes and (ESC, "createComputeReservation") in writes
    for namespace, name in writes:
        errors = run(standby, namespace, name)
        assert errors and errors[0].app_tag == "not-leader", name
        err = errors[0]
        assert (err.type, err.tag) == ("application", "operation-failed")
        assert [el.text for el in err.info_elements] == [LEADER]
        xml = etree.tostring(err.to_xml()).decode()
        assert f"<esc:leader xmlns:esc=\"{ESC}\">{LEADER}</esc:leader>" in xml
        assert http_status(errors) == 503 and error_headers(errors)["Retry-After"] == "2"
        assert error_dict(err)["error-info"] == {"leader": LEADER}
    for namespace, name in sorted(READS):
        errors = run(standby, namespace, name)
        assert not any(e.app_tag == "not-leader" for e in errors), name


def test_a_commit_checks_the_fence(standby: Services) -> None:
    """The datastore validator of a cluster node: a commit that got past the request
    layer (here: the system's own edit) is refused once the term is over."""
    from escnc.app import attach_cluster_hooks
    from escnc.errors import RpcError

    attach_cluster_hooks(standby)
    config = etree.fromstring(
        f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><esc_datamodel '
        f'xmlns="{ESC}"><tenants><tenant><name>t</name></tenant></tenants></esc_datamodel>'
        '</config>')
    with pytest.raises(RpcError) as refused:
        standby.datastore.system_edit(config)
    assert refused.value.app_tag == "not-leader"
    standby.fence = None  # (no fence: a single node's datastore is not hooked at all)
    standby.datastore.system_edit(config)


def test_unusable_lease_timings_are_refused_before_anything_starts(tmp_path: Path) -> None:
    from escnc.app import Server

    settings = make_settings(tmp_path / "state", database="postgresql://x@127.0.0.1:1/x",
                             lease_retry=12.0)
    with pytest.raises(ValueError, match="lease_retry < renew_deadline < lease_duration"):
        Server(settings).start()
    assert not (tmp_path / "state").exists()
