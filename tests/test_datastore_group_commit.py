"""Group commit: concurrent writers share durable writes, listeners run in commit
order, and a failed write leaves running as it is on disk. Both backends (the
``backend`` parameter: SQLite file, PostgreSQL via settings.database)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from lxml import etree

from escnc.datastore.edit import EditOptions
from escnc.datastore.schema import Schema
from escnc.datastore.store import Datastore
from escnc.errors import RpcError
from escnc.services import CommitEvent
from escnc.settings import Settings

E = "http://www.cisco.com/esc/esc"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
SCHEMA = Schema.load()


@pytest.fixture
def db(backend: str, request: pytest.FixtureRequest) -> str:
    """``settings.database`` of this test: "" (SQLite) or a PostgreSQL database."""
    return str(request.getfixturevalue("pg_dsn")) if backend == "postgresql" else ""


def tenant(name: str, desc: str) -> etree._Element:
    return etree.fromstring(
        f'<config xmlns="{NC}"><esc_datamodel xmlns="{E}"><tenants><tenant><name>{name}</name>'
        f"<description>{desc}</description></tenant></tenants></esc_datamodel></config>"
    )


def dump(ds: Datastore) -> bytes:
    with ds.reading("running") as tree:
        return etree.tostring(tree)


def test_concurrent_writers_all_durable_and_listeners_in_order(tmp_path: Path, db: str) -> None:
    ds = Datastore(Settings(state_dir=tmp_path, rollback_history=1000, database=db), SCHEMA)
    seen: list[str] = []
    ds.add_commit_listener(
        lambda ev: seen.extend(
            f"{t.findtext(f'{{{E}}}name')}={t.findtext(f'{{{E}}}description')}"
            for t in ev.new.iter(f"{{{E}}}tenant")
        )
    )
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(15):
                ds.edit("running", tenant(f"t{k}", str(i)), EditOptions(), k + 1, "u")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(ds.history()) == 8 * 15
    # every tenant's events arrive in the order of its edits
    for k in range(8):
        mine = [int(s.split("=")[1]) for s in seen if s.startswith(f"t{k}=")]
        assert mine == list(range(15))
    before = dump(ds)
    ds.close()
    again = Datastore(Settings(state_dir=tmp_path, database=db), SCHEMA)
    assert dump(again) == before
    again.close()


def test_listener_commit_is_delivered_after_the_outer_one(tmp_path: Path, db: str) -> None:
    ds = Datastore(Settings(state_dir=tmp_path, database=db), SCHEMA)
    order: list[str] = []

    def listener(ev: CommitEvent) -> None:
        names = sorted(t.findtext(f"{{{E}}}name") or "" for t in ev.new.iter(f"{{{E}}}tenant"))
        order.append(",".join(names))
        if names == ["a"]:  # the engine-style reaction: a system edit from a listener
            ds.system_edit(tenant("b", "from listener"))

    ds.add_commit_listener(listener)
    ds.edit("running", tenant("a", "x"), EditOptions(), 1, "u")
    assert order == ["a", "b"]
    ds.close()


def test_failed_write_leaves_running_as_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: str
) -> None:
    ds = Datastore(Settings(state_dir=tmp_path, database=db), SCHEMA)
    ds.edit("running", tenant("a", "1"), EditOptions(), 1, "u")
    before = dump(ds)
    store = ds._store  # inject a disk failure
    real = store.write_batch
    calls = {"n": 0}

    def failing(writes):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk full")
        return real(writes)

    monkeypatch.setattr(store, "write_batch", failing)
    with pytest.raises(RpcError) as err:
        ds.edit("running", tenant("a", "2"), EditOptions(), 1, "u")
    assert err.value.tag == "operation-failed"
    assert dump(ds) == before
    ds.edit("running", tenant("a", "3"), EditOptions(), 1, "u")
    assert b"<description>3</description>" in dump(ds)
    assert len(ds.history()) == 2
    ds.close()
