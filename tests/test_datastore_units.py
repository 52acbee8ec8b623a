"""Root list entries (images, flavors, networks, VIM connectors) as units of their own.

A one-entry edit stores, validates and hands to listeners that entry only; the
other entries' stored rows stay as they were; what was acknowledged survives
SIGKILL; a state directory of the previous layout (entries inside the root unit)
is migrated on open; large edits and removals keep the datastore consistent. On both
backends (the ``backend`` parameter: SQLite file, PostgreSQL via settings.database).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree

from escnc.datastore.edit import EditOptions
from escnc.datastore.persistence import Store, UnitRow
from escnc.datastore.schema import Schema
from escnc.datastore.store import Datastore
from escnc.engine.model import merge_pruned, parse_desired
from escnc.errors import RpcError, RpcErrors
from escnc.services import CommitEvent
from escnc.settings import Settings
from escnc.storage import open_storage

E = "http://www.cisco.com/esc/esc"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
SCHEMA = Schema.load()


def cfg(inner: str) -> etree._Element:
    return etree.fromstring(
        f'<config xmlns="{NC}" xmlns:nc="{NC}"><esc_datamodel xmlns="{E}">{inner}'
        "</esc_datamodel></config>"
    )


def flavor(name: str, vcpus: int = 1) -> str:
    return (f"<flavor><name>{name}</name><vcpus>{vcpus}</vcpus><memory_mb>512</memory_mb>"
            "</flavor>")


def query(ds: Datastore, sql: str) -> list[tuple[object, ...]]:
    """Rows straight from the datastore's storage (either backend)."""
    conn = ds._store.storage.connect()
    try:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
    finally:
        conn.close()


def rows(ds: Datastore) -> dict[str, tuple[int, bytes]]:
    return {str(k): (int(s), bytes(x))  # type: ignore[call-overload]
            for k, s, x in query(ds, "SELECT key, seq, xml FROM units WHERE ds='running'")}


def names(ds: Datastore, tag: str) -> list[str]:
    with ds.reading("running") as tree:
        return [el.findtext(f"{{{E}}}name") or "" for el in tree.iter(f"{{{E}}}{tag}")]


Make = Callable[[], Settings]


@pytest.fixture
def mk(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Make:
    """Settings of this test's datastore, on its backend (call again: a restart)."""
    db = str(request.getfixturevalue("pg_dsn")) if backend == "postgresql" else ""
    return lambda: Settings(state_dir=tmp_path, database=db)


@pytest.fixture
def ds(mk: Make):  # type: ignore[no-untyped-def]
    store = Datastore(mk(), SCHEMA)
    yield store
    store.close()


def test_one_flavor_edit_leaves_other_rows_untouched(ds: Datastore) -> None:
    ds.edit("running", cfg("<flavors>" + "".join(flavor(f"f{i}") for i in range(5))
                           + "</flavors><images><image><name>img</name><src>/tmp/i.qcow2</src>"
                           "</image></images>"), EditOptions(), 1, "u")
    before = rows(ds)
    assert '["e", "flavors", "f3"]' in before and '["e", "images", "img"]' in before
    assert b"f3" not in before['["r"]'][1]  # the root unit holds no entries
    events: list[CommitEvent] = []
    ds.add_commit_listener(events.append)
    ds.edit("running", cfg("<flavors>" + flavor("f3", 7) + "</flavors>"), EditOptions(), 1, "u")
    after = rows(ds)
    changed = {k for k in before if before[k] != after.get(k)}
    assert changed == {'["e", "flavors", "f3"]'}
    assert b"<vcpus>7</vcpus>" in after['["e", "flavors", "f3"]'][1]
    # listeners see the edited entry only (the engine merges by entry)
    (event,) = events
    assert [el.findtext(f"{{{E}}}name") for el in event.new.iter(f"{{{E}}}flavor")] == ["f3"]
    assert not list(event.new.iter(f"{{{E}}}image"))
    # the rollback history holds the one old entry
    ((undo,),) = query(ds, "SELECT undo FROM history ORDER BY id DESC LIMIT 1")
    assert isinstance(undo, str)
    assert "f3" in undo and "f1" not in undo
    assert names(ds, "flavor") == ["f0", "f1", "f2", "f3", "f4"]


def test_deployment_validates_against_entries_it_references(ds: Datastore) -> None:
    ds.edit("running", cfg("<flavors>" + "".join(flavor(f"f{i}") for i in range(60))
                           + "</flavors><images><image><name>img</name><src>/tmp/i.qcow2</src>"
                           "</image></images>"), EditOptions(), 1, "u")
    dep = ("<tenants><tenant><name>t</name><deployments><deployment><name>d</name>"
           "<vm_group><name>g</name><image>{img}</image><flavor>{fl}</flavor></vm_group>"
           "</deployment></deployments></tenant></tenants>")
    ds.edit("running", cfg(dep.format(img="img", fl="f42")), EditOptions(), 1, "u")
    with pytest.raises((RpcError, RpcErrors)):
        ds.edit("running", cfg(dep.format(img="img", fl="nope")), EditOptions(), 1, "u")
    # removing a flavor an untouched deployment uses is refused, others go
    with pytest.raises(RpcError) as exc:
        ds.edit("running", cfg('<flavors><flavor nc:operation="delete"><name>f42</name>'
                               "</flavor></flavors>"), EditOptions(), 1, "u")
    assert exc.value.tag == "data-missing"
    ds.edit("running", cfg('<flavors><flavor nc:operation="delete"><name>f41</name>'
                           "</flavor></flavors>"), EditOptions(), 1, "u")
    assert "f42" in names(ds, "flavor") and "f41" not in names(ds, "flavor")


def test_large_edit_remove_and_undo(ds: Datastore, mk: Make) -> None:
    n = 2000
    ds.edit("running", cfg("<flavors>" + "".join(flavor(f"f{i}", i % 8 + 1) for i in range(n))
                           + "</flavors>"), EditOptions(), 1, "u")
    assert len(rows(ds)) == n + 1
    # a failed edit that removed many entries first is undone in place, order kept
    bad = ("<flavors>" + "".join(f'<flavor nc:operation="remove"><name>f{i}</name></flavor>'
                                 for i in range(0, n, 2))
           + '<flavor nc:operation="delete"><name>missing</name></flavor></flavors>')
    with pytest.raises(RpcError):
        ds.edit("running", cfg(bad), EditOptions(), 1, "u")
    assert names(ds, "flavor") == [f"f{i}" for i in range(n)]
    ds.edit("running", cfg("<flavors>" + "".join(
        f'<flavor nc:operation="remove"><name>f{i}</name></flavor>' for i in range(0, n, 2))
        + "</flavors>"), EditOptions(), 1, "u")
    assert names(ds, "flavor") == [f"f{i}" for i in range(1, n, 2)]
    assert len(rows(ds)) == n // 2 + 1
    ds.edit("running", cfg('<flavors nc:operation="delete"/>'), EditOptions(), 1, "u")
    assert names(ds, "flavor") == [] and list(rows(ds)) == ['["r"]']
    ds.close()
    again = Datastore(mk(), SCHEMA)
    assert names(again, "flavor") == []
    again.close()


def test_old_layout_state_dir_is_migrated(tmp_path: Path, mk: Make) -> None:
    root = (f'<data xmlns="{NC}"><esc_datamodel xmlns="{E}"><flavors>{flavor("a", 2)}'
            f'{flavor("b", 3)}</flavors><tenants/></esc_datamodel></data>').encode()
    tenant = f'<tenant xmlns="{E}"><name>t</name><description>x</description></tenant>'.encode()
    settings = mk()
    old = Store(storage=open_storage(settings.database, tmp_path / "datastore.sqlite3"))
    for ds_name in ("running", "startup"):
        old.write(ds_name, [UnitRow(("r",), 1, root), UnitRow(("t", "t"), 2, tenant)], [])
    old.write("running", [], [], history=("2026-01-01T00:00:00Z", "u", 1, 1,
                                           [(("r",), 1, root)]))
    old.close()
    ds = Datastore(mk(), SCHEMA)
    assert names(ds, "flavor") == ["a", "b"] and names(ds, "tenant") == ["t"]
    got = rows(ds)
    assert set(got) == {'["r"]', '["e", "flavors", "a"]', '["e", "flavors", "b"]', '["t", "t"]'}
    assert b"<flavor>" not in got['["r"]'][1]
    assert ds.history() == []  # old-layout undo data is not replayed
    ds.edit("running", cfg("<flavors>" + flavor("b", 5) + "</flavors>"), EditOptions(), 1, "u")
    with ds.reading("startup") as tree:
        assert [el.findtext(f"{{{E}}}name") for el in tree.iter(f"{{{E}}}flavor")] == ["a", "b"]
    ds.close()
    again = Datastore(mk(), SCHEMA)
    with again.reading("running") as tree:
        vcpus = {el.findtext(f"{{{E}}}name"): el.findtext(f"{{{E}}}vcpus")
                 for el in tree.iter(f"{{{E}}}flavor")}
    assert vcpus == {"a": "2", "b": "5"}
    again.close()


def test_engine_merge_keeps_untouched_root_entries() -> None:
    def tree(inner: str) -> etree._Element:
        return etree.fromstring(f'<data xmlns="{NC}"><esc_datamodel xmlns="{E}">{inner}'
                                "</esc_datamodel></data>")

    full = parse_desired(tree("<flavors>" + flavor("a") + flavor("b") + flavor("c")
                              + "</flavors>"))
    merged = merge_pruned(full, parse_desired(tree("<flavors>" + flavor("b") + "</flavors>")),
                          parse_desired(tree("<flavors>" + flavor("b", 4) + "</flavors>")))
    assert sorted(merged.flavors) == ["a", "b", "c"] and merged.flavors["b"].vcpus == 4
    gone = merge_pruned(merged, parse_desired(tree("<flavors>" + flavor("a") + "</flavors>")),
                        parse_desired(tree("")))
    assert sorted(gone.flavors) == ["b", "c"] and sorted(full.flavors) == ["a", "b", "c"]


CHILD = r"""
import sys
from pathlib import Path
from lxml import etree
from escnc.datastore.edit import EditOptions
from escnc.datastore.schema import Schema
from escnc.datastore.store import Datastore
from escnc.settings import Settings
from escnc.storage import open_storage
E = "http://www.cisco.com/esc/esc"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
ds = Datastore(Settings(state_dir=Path(sys.argv[1]), database=sys.argv[2]), Schema.load())
i = 0
while True:
    cfg = etree.fromstring(
        f'<config xmlns="{NC}"><esc_datamodel xmlns="{E}"><flavors><flavor><name>f{i % 7}</name>'
        f"<vcpus>{i % 8 + 1}</vcpus><memory_mb>{i + 1}</memory_mb></flavor></flavors>"
        "</esc_datamodel></config>")
    ds.edit("running", cfg, EditOptions(), 1, "u")
    print(f"ack {i}", flush=True)
    i += 1
"""


def test_sigkill_keeps_acknowledged_entry_edits(tmp_path: Path, mk: Make) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), mk().database],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    acked = -1
    deadline = time.time() + 60
    while acked < 40 and time.time() < deadline:
        line = proc.stdout.readline()
        if line.startswith("ack "):
            acked = int(line.split()[1])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for line in proc.stdout:
        if line.startswith("ack "):
            acked = int(line.split()[1])
    assert acked >= 7
    ds = Datastore(mk(), SCHEMA)
    with ds.reading("running") as tree:
        mem = {el.findtext(f"{{{E}}}name"): int(el.findtext(f"{{{E}}}memory_mb") or 0)
               for el in tree.iter(f"{{{E}}}flavor")}
    ds.close()
    for k in range(7):  # each flavor holds its last acknowledged edit, or the one in flight
        last = max(i for i in range(acked + 1) if i % 7 == k)
        assert mem[f"f{k}"] - 1 in (last, last + 7), (k, last, mem)


def test_filter_by_key_on_long_list_follows_edits(ds: Datastore) -> None:
    """A subtree filter picking one flavor of many by key (the key-position cache)
    answers right after entries are removed, added and replaced in place."""
    from escnc.datastore import filters
    from escnc.operations.datastore_read import key_resolver

    keys = key_resolver(SCHEMA)
    ds.edit("running", cfg("<flavors>" + "".join(flavor(f"f{i}") for i in range(100))
                           + "</flavors>"), EditOptions(), 1, "u")

    def pick(name: str) -> list[str]:
        flt = etree.fromstring(f'<filter xmlns="{NC}"><esc_datamodel xmlns="{E}"><flavors>'
                               f"<flavor><name>{name}</name></flavor></flavors></esc_datamodel>"
                               "</filter>")
        with ds.reading("running") as tree:
            out = filters.apply_subtree_filter(tree, flt, keys)
        return [f"{el.findtext(f'{{{E}}}name')}/{el.findtext(f'{{{E}}}vcpus')}"
                for el in out.iter(f"{{{E}}}flavor")]

    assert pick("f50") == ["f50/1"] and pick("nope") == []
    # same number of entries, positions moved: f10 gone, g1 appended
    ds.edit("running", cfg('<flavors><flavor nc:operation="delete"><name>f10</name></flavor>'
                           + flavor("g1", 3) + "</flavors>"), EditOptions(), 1, "u")
    assert pick("f10") == [] and pick("g1") == ["g1/3"] and pick("f50") == ["f50/1"]
    ds.edit("running", cfg('<flavors><flavor nc:operation="replace"><name>f50</name>'
                           "<vcpus>6</vcpus><memory_mb>1</memory_mb></flavor></flavors>"),
            EditOptions(), 1, "u")
    assert pick("f50") == ["f50/6"] and pick("f99") == ["f99/1"]


def test_candidate_copy_config_and_rollback_with_entry_units(ds: Datastore, mk: Make) -> None:
    ds.edit("running", cfg("<flavors>" + flavor("a") + flavor("b") + "</flavors>"),
            EditOptions(), 1, "u")
    # candidate edit of one entry, committed
    ds.edit("candidate", cfg("<flavors>" + flavor("b", 4) + flavor("c") + "</flavors>"),
            EditOptions(), 1, "u")
    ds.commit(1, "u")
    assert names(ds, "flavor") == ["a", "b", "c"]
    got = rows(ds)
    assert b"<vcpus>4</vcpus>" in got['["e", "flavors", "b"]'][1]
    # copy-config replaces running: entries split again, one gone, one new
    data = etree.fromstring(f'<config xmlns="{NC}"><esc_datamodel xmlns="{E}"><flavors>'
                            f'{flavor("c", 2)}{flavor("d")}</flavors></esc_datamodel></config>')
    ds.copy_config("running", data, 1, "u")
    assert names(ds, "flavor") == ["c", "d"]
    assert {k for k in rows(ds) if k.startswith('["e"')} == {
        '["e", "flavors", "c"]', '["e", "flavors", "d"]'}
    # roll back to before the copy: the entries come back as they were
    hist = ds.history()
    ds.rollback(hist[0][0], 1, "u")
    assert names(ds, "flavor") == ["a", "b", "c"]
    with ds.reading("running") as tree:
        assert [el.findtext(f"{{{E}}}vcpus") for el in tree.iter(f"{{{E}}}flavor")] == [
            "1", "4", "1"]
    ds.close()
    again = Datastore(mk(), SCHEMA)
    assert names(again, "flavor") == ["a", "b", "c"]
    again.close()


def test_entries_created_together_keep_their_order_on_disk(mk: Make) -> None:
    ds = Datastore(mk(), SCHEMA)
    order = [f"n{i}" for i in (5, 3, 9, 1, 7, 2, 8)]
    ds.edit("running", cfg("<flavors>" + "".join(flavor(n) for n in order) + "</flavors>"),
            EditOptions(), 1, "u")
    ds.edit("candidate", cfg("<flavors>" + "".join(flavor(f"c{n}") for n in order)
                             + "</flavors>"), EditOptions(), 1, "u")
    ds.commit(1, "u")
    assert names(ds, "flavor") == order + [f"c{n}" for n in order]
    ds.close()
    again = Datastore(mk(), SCHEMA)
    assert names(again, "flavor") == order + [f"c{n}" for n in order]
    again.close()
