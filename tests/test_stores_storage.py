"""The engine, day-2, reservation, user and callback stores on escnc.storage.

Every test named ``..._both`` runs on SQLite and on a real PostgreSQL (the ``backend``
parameter): two store objects on one database are two nodes (or a restart); a store
built on a file an older escnc wrote keeps that file's data (SQLite only: the old
format was SQLite); a write fenced by a leader that was replaced commits nothing.
"""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest

from escnc.cluster import ElectionTimings, LeaderElector, NotLeader
from escnc.engine.capacity.model import Amount
from escnc.engine.capacity.records import RecordStore, Reservation
from escnc.engine.clock import ManualClock
from escnc.engine.errors import StateChanged
from escnc.engine.maintenance_store import Day2Store, PendingResize, SnapshotRecord
from escnc.engine.store import DeploymentRecord, EngineStore, VmRecord, instance_id
from escnc.events.callbacks import CallbackStore, Transaction
from escnc.rpc.users import UserStore
from escnc.storage import SchemaTooNew, Storage
from pg_support import wait_for
from test_capacity import vims  # noqa: F401 (the fixture)

Factory = Callable[[], Storage]
TIMINGS = ElectionTimings(lease_duration=15.0, renew_deadline=10.0, retry=2.0)


def vm(name: str, state: str = "VM_INIT_STATE", index: int = 0) -> VmRecord:
    return VmRecord(generated_name=name, vm_id=f"id-{name}", tenant="t", deployment="d",
                    group="g", index=index, host="h", state=state,
                    interfaces=[(0, "net", "10.0.0.5", "52:54:00:00:00:01")])


@pytest.fixture
def leader(make_storage: Factory) -> Iterator[LeaderElector]:
    """A real elector on the test's database, elected (token 1); its clock is manual,
    so it renews only when a test advances it."""
    elector = LeaderElector(make_storage(), address="a.example:830", node_id="a",
                            timings=TIMINGS, clock=ManualClock()).start()
    assert wait_for(lambda: elector.ticks >= 1 and elector.is_leader, timeout=30)
    yield elector
    elector.stop(timeout=30)


def take_over(make_storage: Factory) -> None:
    """Another node takes the lease (the token grows) behind the leader's back."""
    conn = make_storage().connect()
    conn.execute("UPDATE cluster_lease SET token = token + 1, holder = 'z'")
    conn.close()


# -- engine state --------------------------------------------------------------------


def test_engine_store_write_read_reload_both(make_storage: Factory) -> None:
    a = EngineStore(storage=make_storage())
    a.put_deployment(DeploymentRecord("t", "d", "dep-1", "DEPLOYING"))
    a.put_vm(vm("d_g_0_x"))
    a.update_vm("d_g_0_x", state="VM_ALIVE_STATE", deployed_reported=True)
    b = EngineStore(storage=make_storage())  # another node (or a restart)
    assert b.vm("d_g_0_x") == a.vm("d_g_0_x")
    got = b.vm("d_g_0_x")
    assert got is not None and got.interfaces == [(0, "net", "10.0.0.5", "52:54:00:00:00:01")]
    assert got.state == "VM_ALIVE_STATE" and got.deployed_reported
    heard: list[tuple[str, str | None]] = []
    b.add_vm_listener(lambda name, rec: heard.append((name, rec.state if rec else None)))
    # the leader goes on writing; the other node sees it after reload() only
    a.put_vm(vm("d_g_1_y", index=1))
    a.update_vm("d_g_0_x", state="VM_ERROR_STATE")
    a.update_deployment("t", "d", state="ACTIVE", alive_reported=True)
    assert b.vm("d_g_1_y") is None
    b.reload()
    assert [v.generated_name for v in b.vms()] == ["d_g_0_x", "d_g_1_y"]
    dep = b.deployment("t", "d")
    assert dep is not None and dep.state == "ACTIVE" and dep.alive_reported
    assert sorted(heard) == [("d_g_0_x", "VM_ERROR_STATE"), ("d_g_1_y", "VM_INIT_STATE")]
    a.delete_vm("d_g_1_y")
    a.delete_deployment("t", "d")
    heard.clear()
    b.reload()
    assert heard == [("d_g_1_y", None)] and b.deployments() == []
    a.close()
    b.close()


def test_engine_store_compare_and_set_on_vm_state_both(make_storage: Factory) -> None:
    """update_vm(expected_state=...) changes the VM only from that state; from any
    other it raises StateChanged and leaves the database and memory as they were."""
    store = EngineStore(storage=make_storage())
    store.put_vm(vm("d_g_0_x"))
    moved = store.update_vm("d_g_0_x", expected_state="VM_INIT_STATE", state="VM_ALIVE_STATE",
                            monitoring=True)
    assert moved is not None and moved.state == "VM_ALIVE_STATE"
    with pytest.raises(StateChanged, match="is VM_ALIVE_STATE, not VM_INIT_STATE"):
        store.update_vm("d_g_0_x", expected_state="VM_INIT_STATE", state="VM_ERROR_STATE",
                        monitoring=False)
    current = store.vm("d_g_0_x")
    assert current is not None and current.state == "VM_ALIVE_STATE" and current.monitoring
    other = EngineStore(storage=make_storage())
    again = other.vm("d_g_0_x")
    assert again is not None and again.state == "VM_ALIVE_STATE" and again.monitoring
    store.close()
    other.close()


def test_engine_store_fenced_stale_write_refused_both(
        make_storage: Factory, leader: LeaderElector) -> None:
    store = EngineStore(storage=make_storage(), fence=leader.fence)
    store.put_vm(vm("d_g_0_x"))
    take_over(make_storage)
    assert leader.fence.check() == 1  # locally still within its term
    with pytest.raises(NotLeader):
        store.update_vm("d_g_0_x", state="VM_ALIVE_STATE")
    with pytest.raises(NotLeader):
        store.put_deployment(DeploymentRecord("t", "d", "dep-1", "DEPLOYING"))
    with pytest.raises(NotLeader):
        store.delete_vm("d_g_0_x")
    # neither the database nor the memory mirror holds the refused writes
    current = store.vm("d_g_0_x")
    assert current is not None and current.state == "VM_INIT_STATE"
    assert store.deployments() == []
    other = EngineStore(storage=make_storage())
    assert [(v.generated_name, v.state) for v in other.vms()] == [("d_g_0_x", "VM_INIT_STATE")]
    assert other.deployments() == []
    store.close()
    other.close()


def test_instance_id_is_the_clusters_with_a_database_both(
        make_storage: Factory, backend: str, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = EngineStore(storage=make_storage()), EngineStore(storage=make_storage())
    id_a, id_b = instance_id(tmp_path / "a", a), instance_id(tmp_path / "b", b)
    if backend == "postgresql":
        # one id for every node: a new leader adopts the old leader's domains
        assert id_a == id_b == instance_id(tmp_path / "b", b)
        assert not (tmp_path / "a" / "instance-id").exists()
    else:
        # single node: the state directory's id, as before
        assert id_a != id_b
        assert (tmp_path / "a" / "instance-id").read_text().strip() == id_a
    assert instance_id(tmp_path / "a", a) == id_a  # stable
    a.close()
    b.close()


@pytest.mark.parametrize("make", [EngineStore, Day2Store, RecordStore, UserStore,
                                  CallbackStore])
def test_a_schema_from_a_newer_escnc_is_refused_both(
        make_storage: Factory, make: Callable[..., object]) -> None:
    """Rolling upgrade: an older node does not write to a schema it does not know."""
    store = make(storage=make_storage())
    store.close()  # type: ignore[attr-defined]
    conn = make_storage().connect()
    conn.execute("UPDATE escnc_schema SET version = version + 1")
    conn.close()
    with pytest.raises(SchemaTooNew):
        make(storage=make_storage())


def test_engine_store_adopts_an_old_engine_file(tmp_path: Path) -> None:
    path = tmp_path / "engine.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE deployments (tenant TEXT NOT NULL, name TEXT NOT NULL,"
        " body TEXT NOT NULL, PRIMARY KEY (tenant, name));"
        "CREATE TABLE vms (generated_name TEXT PRIMARY KEY, body TEXT NOT NULL);")
    old.execute("INSERT INTO deployments VALUES ('t', 'd', ?)",
                ('{"tenant": "t", "name": "d", "deployment_id": "x", "state": "ACTIVE"}',))
    old.execute("INSERT INTO vms VALUES ('d_g_0_x', ?)", (
        '{"generated_name": "d_g_0_x", "vm_id": "1", "tenant": "t", "deployment": "d",'
        ' "group": "g", "index": 0, "host": "h", "state": "VM_ALIVE_STATE",'
        ' "interfaces": [[0, "net", "10.0.0.5", "52:54:00:00:00:01"]]}',))
    old.commit()
    old.close()
    store = EngineStore(path)
    got = store.vm("d_g_0_x")
    assert got is not None and got.state == "VM_ALIVE_STATE"
    assert got.interfaces == [(0, "net", "10.0.0.5", "52:54:00:00:00:01")]
    dep = store.deployment("t", "d")
    assert dep is not None and dep.state == "ACTIVE"
    store.put_vm(vm("d_g_1_y", index=1))
    store.close()
    store = EngineStore(path)  # migrated once: a restart keeps both
    assert [v.generated_name for v in store.vms()] == ["d_g_0_x", "d_g_1_y"]
    store.close()


# -- day-2 ---------------------------------------------------------------------------


def snap(ident: str, status: str = "creating") -> SnapshotRecord:
    return SnapshotRecord(id=ident, name=f"n-{ident}", vm_name="d_g_0_x", host="h",
                          hostname="node", tenant="t", deployment="d", status=status)


def test_day2_store_write_read_reload_both(make_storage: Factory) -> None:
    a = Day2Store(storage=make_storage())
    a.put_snapshot(snap("s1"))
    a.update_snapshot("s1", status="active")
    a.put_pending(PendingResize(vm_name="d_g_0_x", kind="resize", host="h",
                                resize={"vcpus": 2}, queue=["d_g_1_y"]))
    b = Day2Store(storage=make_storage())
    got = b.snapshot("s1")
    assert got is not None and got.status == "active"
    pending = b.pending("d_g_0_x")
    assert pending is not None and pending.resize == {"vcpus": 2}
    assert pending.queue == ["d_g_1_y"]
    a.put_snapshot(snap("s2"))
    a.delete_pending("d_g_0_x")
    assert b.snapshot("s2") is None and b.pending("d_g_0_x") is not None
    b.reload()
    assert [s.id for s in b.snapshots()] == ["s1", "s2"] and b.all_pending() == []
    a.close()
    b.close()


def test_day2_store_fenced_stale_write_refused_both(
        make_storage: Factory, leader: LeaderElector) -> None:
    store = Day2Store(storage=make_storage(), fence=leader.fence)
    store.put_snapshot(snap("s1"))
    take_over(make_storage)
    with pytest.raises(NotLeader):
        store.update_snapshot("s1", status="active")
    with pytest.raises(NotLeader):
        store.delete_snapshot("s1")
    current = store.snapshot("s1")
    assert current is not None and current.status == "creating"
    other = Day2Store(storage=make_storage())
    assert [(s.id, s.status) for s in other.snapshots()] == [("s1", "creating")]
    store.close()
    other.close()


def test_day2_store_adopts_an_old_file(tmp_path: Path) -> None:
    path = tmp_path / "day2.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE snapshots (id TEXT PRIMARY KEY, body TEXT NOT NULL);"
        "CREATE TABLE volumes (id TEXT PRIMARY KEY, body TEXT NOT NULL);"
        "CREATE TABLE pending (vm_name TEXT PRIMARY KEY, body TEXT NOT NULL);")
    old.execute("INSERT INTO snapshots VALUES ('s1', ?)", (
        '{"id": "s1", "name": "n", "vm_name": "v", "host": "h", "hostname": "x",'
        ' "tenant": "t", "deployment": "d", "status": "active"}',))
    old.execute("INSERT INTO pending VALUES ('v', ?)",
                ('{"vm_name": "v", "kind": "migrate", "host": "h2", "source_host": "h"}',))
    old.commit()
    old.close()
    store = Day2Store(path)
    got = store.snapshot("s1")
    assert got is not None and got.status == "active"
    pending = store.pending("v")
    assert pending is not None and pending.source_host == "h"
    store.close()


# -- reservations --------------------------------------------------------------------


def reservation(ident: str, vcpus: int = 2) -> Reservation:
    return Reservation(id=ident, kind="compute", zone="hostA", start=0.0, stop=None,
                       amount=Amount(instances=1, vcpus=vcpus, memory_mb=512))


def test_record_store_write_read_both(make_storage: Factory) -> None:
    a = RecordStore(storage=make_storage())
    a.put_reservation(reservation("r1"))
    a.put_reservation(reservation("r2"))
    a.put_reservation(reservation("r1", vcpus=4))  # rewritten: listed last, as before
    b = RecordStore(storage=make_storage())
    assert [(r.id, r.amount.vcpus) for r in b.reservations()] == [("r2", 2), ("r1", 4)]
    a.close()
    b.close()


def test_record_store_fenced_stale_write_refused_both(
        make_storage: Factory, leader: LeaderElector) -> None:
    store = RecordStore(storage=make_storage(), fence=leader.fence)
    store.put_reservation(reservation("r1"))
    take_over(make_storage)
    with pytest.raises(NotLeader):
        store.put_reservation(reservation("r1", vcpus=8))
    assert [r.amount.vcpus for r in RecordStore(storage=make_storage()).reservations()] == [2]
    store.close()


def test_record_store_adopts_an_old_file(tmp_path: Path) -> None:
    path = tmp_path / "reservations.sqlite3"
    old = sqlite3.connect(path)
    for table in ("reservations", "subscriptions"):
        old.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY, data TEXT)")
    for ident in ("r2", "r1"):
        old.execute("INSERT INTO reservations VALUES (?, ?)", (ident, reservation(ident).to_json()))
    old.commit()
    old.close()
    store = RecordStore(path)
    assert [r.id for r in store.reservations()] == ["r2", "r1"]  # their order stays
    store.put_reservation(reservation("r3"))
    assert [r.id for r in store.reservations()] == ["r2", "r1", "r3"]
    store.close()


# -- users ---------------------------------------------------------------------------


def test_user_store_write_read_both(make_storage: Factory) -> None:
    key = paramiko.RSAKey.generate(1024)
    a = UserStore(storage=make_storage())
    b = UserStore(storage=make_storage())  # another node: no cache to reload
    before = b.version()
    a.add_user("alice", password="pw-1", public_keys=[f"ssh-rsa {key.get_base64()} me"])
    assert b.version() != before
    assert b.check_password("alice", "pw-1") and b.check_key("alice", key)
    a.add_user("alice", password="pw-2")  # replaces password and keys
    assert not b.check_password("alice", "pw-1") and not b.check_key("alice", key)
    seen = b.version()
    a.remove_user("alice")
    assert b.version() != seen and b.names() == frozenset() and not b.has_users()
    a.close()
    b.close()


def test_user_store_fenced_stale_write_refused_both(
        make_storage: Factory, leader: LeaderElector) -> None:
    store = UserStore(storage=make_storage(), fence=leader.fence)
    store.add_user("alice", password="pw")
    take_over(make_storage)
    with pytest.raises(NotLeader):
        store.add_user("bob", password="pw")
    with pytest.raises(NotLeader):
        store.remove_user("alice")
    assert store.names() == frozenset({"alice"})
    store.close()


def test_user_store_adopts_an_old_file_and_keeps_it_private(tmp_path: Path) -> None:
    from escnc.rpc.users import hash_password

    key = paramiko.RSAKey.generate(1024)
    path = tmp_path / "users.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE users (name TEXT PRIMARY KEY, password_hash TEXT);"
        "CREATE TABLE user_keys (name TEXT NOT NULL REFERENCES users(name) ON DELETE"
        " CASCADE, key_type TEXT NOT NULL, key_blob TEXT NOT NULL, comment TEXT NOT NULL"
        " DEFAULT '', PRIMARY KEY (name, key_type, key_blob));")
    old.execute("INSERT INTO users VALUES ('alice', ?)", (hash_password("pw"),))
    old.execute("INSERT INTO user_keys VALUES ('alice', 'ssh-rsa', ?, 'c')", (key.get_base64(),))
    old.commit()
    old.close()
    path.chmod(0o644)
    store = UserStore(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.check_password("alice", "pw") and store.check_key("alice", key)
    (info,) = store.list_users()
    assert info.public_keys == (f"ssh-rsa {key.get_base64()} c",)
    store.remove_user("alice")  # its keys go too (no foreign-key pragma needed)
    assert store.list_users() == [] and not store.check_key("alice", key)
    store.close()
    fresh = tmp_path / "new" / "users.sqlite3"
    UserStore(fresh).close()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


# -- callbacks -----------------------------------------------------------------------


def test_callback_store_write_read_both(make_storage: Factory) -> None:
    a = CallbackStore(storage=make_storage())
    txn = Transaction(tenant="t", deployment="d", terminal=("SERVICE_ALIVE",),
                      callback="http://cb.example/x")
    a.add(txn, 41)
    a.advance(42, [(txn.id, "event", "http://cb.example/e", {"A": "1"}, b"<e/>"),
                   (txn.id, "outcome", "http://cb.example/x", {"B": "2"}, b"\x00body")], [])
    b = CallbackStore(storage=make_storage())  # the next leader picks the outbox up
    assert b.cursor_seq() == 42
    [(open_txn, after)] = b.open_transactions()
    assert open_txn.id == txn.id and after == 41 and open_txn.terminal == ("SERVICE_ALIVE",)
    [(first, url, headers, body, attempts)] = b.due(now=1e12)  # one per transaction, in order
    assert (url, headers, body, attempts) == ("http://cb.example/e", {"A": "1"}, b"<e/>", 0)
    b.attempted(first, False, "HTTP status 503", next_at=1e11)
    assert b.due(now=1.0) == []  # not due before next_at (and the second waits)
    tried = a.deliveries(txn.id)[0]
    assert (tried.attempts, tried.last_error) == (1, "HTTP status 503")
    b.attempted(first, True, "", None)
    [(second, _url, _h, body, _n)] = b.due(now=1e12)
    assert second > first and body == b"\x00body"
    b.advance(None, [], [(txn.id, 200, "ok")])
    assert a.open_transactions() == [] and a.counts() == {"delivered": 1, "pending": 1}
    assert [d.attempts for d in a.deliveries(txn.id)] == [2, 0]
    a.close()
    b.close()


def test_callback_store_fenced_stale_write_refused_both(
        make_storage: Factory, leader: LeaderElector) -> None:
    store = CallbackStore(storage=make_storage(), fence=leader.fence)
    txn = Transaction(tenant="t")
    store.add(txn, 1)
    take_over(make_storage)
    with pytest.raises(NotLeader):
        store.advance(5, [(txn.id, "outcome", "http://x", {}, b"")], [(txn.id, 200, "")])
    assert store.cursor_seq() == 1 and store.deliveries() == []
    assert [t.id for t, _ in store.open_transactions()] == [txn.id]
    store.close()


def test_callback_store_adopts_an_old_file(tmp_path: Path) -> None:
    path = tmp_path / "callbacks.sqlite3"
    old = sqlite3.connect(path)
    old.executescript("""
CREATE TABLE txn (
  id TEXT PRIMARY KEY, created REAL NOT NULL, after_seq INTEGER NOT NULL,
  spec TEXT NOT NULL, state TEXT NOT NULL, status_code INTEGER, status_message TEXT);
CREATE TABLE delivery (
  id INTEGER PRIMARY KEY AUTOINCREMENT, txn TEXT NOT NULL, kind TEXT NOT NULL,
  url TEXT NOT NULL, headers TEXT NOT NULL, body BLOB NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
  state TEXT NOT NULL, last_error TEXT NOT NULL DEFAULT '');
CREATE INDEX delivery_pending ON delivery(state, txn, id);
CREATE TABLE cursor (k INTEGER PRIMARY KEY CHECK (k = 0), seq INTEGER NOT NULL);
""")
    txn = Transaction(tenant="t", callback="http://x")
    old.execute("INSERT INTO txn VALUES (?, 1.0, 7, ?, 'open', NULL, NULL)", (txn.id, txn.spec()))
    for n in range(3):
        old.execute("INSERT INTO delivery(txn, kind, url, headers, body, next_at, state)"
                    " VALUES (?, 'event', 'http://x', '{}', ?, 0, 'delivered')",
                    (txn.id, b"%d" % n))
    old.execute("DELETE FROM delivery WHERE id = 3")  # AUTOINCREMENT: 3 is never reused
    old.execute("INSERT INTO cursor VALUES (0, 9)")
    old.commit()
    old.close()
    store = CallbackStore(path)
    assert store.cursor_seq() == 9
    assert [t.id for t, after in store.open_transactions() if after == 7] == [txn.id]
    store.advance(10, [(txn.id, "outcome", "http://x", {}, b"o")], [])
    assert [d.id for d in store.deliveries()] == [1, 2, 4]
    store.close()


@pytest.mark.postgresql
def test_capacity_manager_reload_reads_the_other_nodes_reservations(
        pg_dsn: str, tmp_path: Path, server_factory, vims) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """Two servers on one database (own state directories): what one reserved and
    subscribed, the other's capacity manager has after reload() (a new leader)."""
    import capacity_seed as seed
    from escnc.operations import capacity_rest as api
    from test_capacity import CAPACITY_SETTINGS

    first = server_factory(tmp_path / "n1", vims=vims, database=pg_dsn,
                           **CAPACITY_SETTINGS).services.engine.capacity
    second = server_factory(tmp_path / "n2", vims=vims, database=pg_dsn,
                            **CAPACITY_SETTINGS).services.engine.capacity
    rid = api.create_reservation(first, "compute", seed.COMPUTE_CREATE_POOL)[
        "reservationData"]["reservationId"]
    api.subscribe_capacity(first, "compute", seed.COMPUTE_SUBSCRIBE)
    assert second.reservation(rid) is None and second.subs.all() == []
    second.reload()
    got = second.reservation(rid)
    assert got is not None and got == first.reservation(rid)
    assert [s.id for s in second.subs.all()] == [s.id for s in first.subs.all()]
