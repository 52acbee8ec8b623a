"""The copy-on-write (overlay) candidate behaves exactly like a copied candidate.

Each scenario runs on two datastores, one keeping the candidate as running plus
an overlay of deployment units and one copying running on the first candidate
edit; after every step both must show the same running, candidate, error and
commit events.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree

from escnc.datastore.edit import EditOptions
from escnc.datastore.schema import Schema
from escnc.datastore.store import Datastore
from escnc.errors import RpcError, RpcErrors
from escnc.services import CommitEvent
from escnc.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import datastore_bench as b

E = b.E
NC = b.NC
SCHEMA = Schema.load()
Step = Callable[[Datastore], None]


def canon(el: etree._Element) -> bytes:
    return etree.tostring(etree.fromstring(etree.tostring(el)), method="c14n")


def cand(body: str, test_option: str = "test-then-set") -> Step:
    return lambda ds: ds.edit(
        "candidate", b.config(body), EditOptions(), 1, "t", test_option=test_option
    )


def run(body: str) -> Step:
    return lambda ds: ds.edit("running", b.config(body), EditOptions(), 2, "other")


def dep(i: int, flavor: str = "fl", extra: str = "") -> str:
    return b.tenant(b.deployment(i, flavor).replace("</vm_group>", extra + "</vm_group>", 1))


def delete_dep(i: int) -> str:
    return (
        f'<esc_datamodel xmlns="{E}" xmlns:nc="{NC}"><tenants><tenant><name>admin</name>'
        f'<deployments><deployment nc:operation="delete"><name>dep{i}</name></deployment>'
        "</deployments></tenant></tenants></esc_datamodel>"
    )


FLAVOR3 = (
    f'<esc_datamodel xmlns="{E}"><flavors><flavor><name>fl3</name><vcpus>3</vcpus>'
    "<memory_mb>64</memory_mb></flavor></flavors></esc_datamodel>"
)
DROP_FLAVOR3 = (
    f'<esc_datamodel xmlns="{E}" xmlns:nc="{NC}"><flavors><flavor nc:operation="delete">'
    "<name>fl3</name></flavor></flavors></esc_datamodel>"
)
NEW_TENANT = (
    f'<esc_datamodel xmlns="{E}"><tenants><tenant><name>other</name></tenant></tenants>'
    "</esc_datamodel>"
)


def commit(ds: Datastore) -> None:
    ds.commit(1, "t")


def discard(ds: Datastore) -> None:
    ds.discard_changes(1)


def validate(ds: Datastore) -> None:
    ds.validate("candidate")


SCENARIOS: dict[str, list[Step]] = {
    "edit, commit": [cand(dep(1, "fl2")), cand(dep(2, "fl2")), commit],
    "running moves under the candidate": [
        cand(dep(1, "fl2")),
        run(dep(2, "fl2")),
        run(dep(1, "fl", "<bootup_time>30</bootup_time>")),
        cand(dep(3, "fl2")),
        commit,
    ],
    "root changes in running": [cand(dep(1, "fl2")), run(FLAVOR3), cand(dep(2, "fl2")), commit],
    "create and delete deployments": [
        cand(b.tenant(b.deployment(100))),
        cand(delete_dep(4)),
        run(delete_dep(5)),
        run(b.tenant(b.deployment(101))),
        commit,
    ],
    "invalid edits": [
        cand(dep(1, "nope")),
        cand(dep(1, "fl2")),
        cand(dep(2, "nope")),
        cand(dep(3, "fl2"), "test-only"),
        cand(dep(3, "nope"), "set"),
        validate,
        discard,
        cand(dep(3, "fl2")),
        commit,
    ],
    "reference removed before commit": [
        run(FLAVOR3),
        cand(dep(1, "fl3")),
        run(DROP_FLAVOR3),
        commit,
        discard,
        commit,
    ],
    "candidate edit beyond deployments": [
        cand(dep(1, "fl2")),
        cand(FLAVOR3),
        cand(dep(2, "fl3")),
        commit,
    ],
    "tenant created in running": [cand(dep(1, "fl2")), run(NEW_TENANT), commit],
}


def observe(ds: Datastore, events: list[CommitEvent], step: Step) -> tuple[object, ...]:
    err = None
    try:
        step(ds)
    except (RpcError, RpcErrors) as exc:
        first = exc.errors[0] if isinstance(exc, RpcErrors) else exc
        err = (first.tag, first.path)
    with ds.reading("running") as t:
        running = canon(t)
    dirty = ds.candidate_dirty()
    with ds.reading("candidate") as t:
        candidate = canon(t)
    seen = [sorted((c.operation, c.target) for c in ev.changes) for ev in events]
    events.clear()
    return err, running, candidate, dirty, seen


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_overlay_candidate_matches_copied_candidate(tmp_path: Path, name: str) -> None:
    results = []
    for overlay in (True, False):
        ds = Datastore(
            Settings(state_dir=tmp_path / str(overlay)), SCHEMA, overlay_candidate=overlay
        )
        ds.edit("running", b.config(b.GLOBALS), EditOptions(), 1, "t")
        ds.edit(
            "running",
            b.config(b.tenant("".join(b.deployment(i) for i in range(60)))),
            EditOptions(),
            1,
            "t",
        )
        events: list[CommitEvent] = []
        ds.add_commit_listener(events.append)
        results.append([observe(ds, events, step) for step in SCENARIOS[name]])
        ds.close()
    for i, (with_overlay, copied) in enumerate(zip(*results, strict=True)):
        assert with_overlay == copied, f"step {i}"


def test_overlay_candidate_does_not_copy_running(tmp_path: Path) -> None:
    ds = Datastore(Settings(state_dir=tmp_path), SCHEMA)
    ds.edit("running", b.config(b.GLOBALS), EditOptions(), 1, "t")
    ds.edit("running", b.config(b.tenant(b.deployment(0))), EditOptions(), 1, "t")
    ds.edit("candidate", b.config(dep(0, "fl2")), EditOptions(), 1, "t")
    assert ds._candidate is None and ds._overlay is not None  # running was not copied
    ds.commit(1, "t")
    with ds.reading("running") as t:
        assert t.findtext(f".//{{{E}}}vm_group/{{{E}}}flavor") == "fl2"
    ds.close()
