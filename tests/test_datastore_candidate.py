"""Candidate commit with dirty-unit tracking gives the same result as a full compare."""

from __future__ import annotations

import sys
from pathlib import Path

from lxml import etree

from escnc.datastore.edit import EditOptions
from escnc.datastore.schema import Schema
from escnc.datastore.store import Datastore
from escnc.services import CommitEvent
from escnc.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import datastore_bench as b

E = b.E


def canon(el: etree._Element) -> bytes:
    return etree.tostring(el, method="c14n")


def flavors(ds: Datastore, tree: str = "running") -> dict[str, str]:
    with ds.reading(tree) as t:
        return {
            d.findtext(f"{{{E}}}name") or "": d.findtext(f"{{{E}}}vm_group/{{{E}}}flavor") or ""
            for d in t.iter(f"{{{E}}}deployment")
        }


def make(tmp_path: Path, n: int = 60) -> Datastore:
    ds = Datastore(Settings(state_dir=tmp_path), Schema.load())
    ds.edit("running", b.config(b.GLOBALS), EditOptions(), 1, "t")
    body = "".join(b.deployment(i) for i in range(n))
    ds.edit("running", b.config(b.tenant(body)), EditOptions(), 1, "t")
    return ds


def test_commit_applies_candidate_and_reverts_running_moves(tmp_path: Path) -> None:
    ds = make(tmp_path)
    events: list[CommitEvent] = []
    ds.add_commit_listener(events.append)
    ds.edit("candidate", b.config(b.tenant(b.deployment(1, "fl2"))), EditOptions(), 1, "t")
    # running moves under the open candidate (e.g. a system edit)
    ds.edit("running", b.config(b.tenant(b.deployment(2, "fl2"))), EditOptions(), 0, "sys")
    with ds.reading("candidate") as cand:
        expected = canon(cand)
    events.clear()
    ds.commit(1, "t")
    with ds.reading("running") as run:
        assert canon(run) == expected  # running == candidate, as RFC 6241 8.3 asks
    fl = flavors(ds)
    assert fl["dep1"] == "fl2" and fl["dep2"] == "fl" and fl["dep3"] == "fl"
    (ev,) = events
    assert sorted(c.target for c in ev.changes) == sorted(
        f"/esc:esc_datamodel/esc:tenants/esc:tenant[esc:name='admin']"
        f"/esc:deployments/esc:deployment[esc:name='dep{i}']"
        for i in (1, 2)
    )
    # the swapped key index still finds entries: edit running after the commit
    ds.edit("running", b.config(b.tenant(b.deployment(40, "fl2"))), EditOptions(), 1, "t")
    assert flavors(ds)["dep40"] == "fl2"
    ds.close()


def test_commit_after_copy_and_delete_in_candidate(tmp_path: Path) -> None:
    ds = make(tmp_path, 5)
    with ds.reading("running") as run:
        src = etree.fromstring(etree.tostring(run))
    src.tag = f"{{{b.NC}}}config"
    deps = src.find(f".//{{{E}}}deployments")
    assert deps is not None
    deps.remove(deps[0])
    ds.copy_config("candidate", src, 1, "t")
    ds.edit("candidate", b.config(b.tenant(b.deployment(3, "fl2"))), EditOptions(), 1, "t")
    ds.commit(1, "t")
    assert flavors(ds) == {"dep1": "fl", "dep2": "fl", "dep3": "fl2", "dep4": "fl"}
    # deleting the tenant in candidate removes its deployments on commit
    cfg = b.config(
        f'<esc_datamodel xmlns="{E}"><tenants><tenant xmlns:nc="{b.NC}" nc:operation="delete">'
        "<name>admin</name></tenant></tenants></esc_datamodel>"
    )
    ds.edit("candidate", cfg, EditOptions(), 1, "t")
    ds.commit(1, "t")
    assert flavors(ds) == {}
    ds.close()
    reopened = Datastore(Settings(state_dir=tmp_path), Schema.load())
    assert flavors(reopened) == {}
    reopened.close()
