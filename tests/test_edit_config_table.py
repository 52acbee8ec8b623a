"""edit-config semantics and the invalid-edit table, directly on the Datastore.

Every invalid edit must fail with the expected error-tag/error-path and leave running
unchanged; incremental validation must agree with whole-tree validation on each.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from escnc.datastore.edit import EditOptions
from escnc.datastore.schema import Schema
from escnc.datastore.store import Datastore
from escnc.errors import RpcError, RpcErrors
from escnc.settings import Settings

E = "http://www.cisco.com/esc/esc"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
P = etree.XMLParser(remove_blank_text=True)
SCHEMA = Schema.load()
DEP = (
    "/esc:esc_datamodel/esc:tenants/esc:tenant[esc:name='t']"
    "/esc:deployments/esc:deployment[esc:name='d']"
)
VG = DEP + "/esc:vm_group[esc:name='g']"

BASE = f"""<esc_datamodel xmlns="{E}">
<images><image><name>img</name><src>/i.qcow2</src></image></images>
<flavors><flavor><name>fl</name><vcpus>1</vcpus><memory_mb>64</memory_mb></flavor></flavors>
<networks><network><name>net</name></network></networks>
<tenants><tenant><name>t</name><deployments><deployment><name>d</name>
<vm_group><name>g</name><image>img</image><flavor>fl</flavor>
<interfaces><interface><nicid>0</nicid><network>net</network></interface></interfaces>
</vm_group></deployment></deployments></tenant></tenants></esc_datamodel>"""


def cfg(body: str) -> etree._Element:
    return etree.fromstring(f'<config xmlns="{NC}" xmlns:nc="{NC}">{body}</config>', P)


def vg(inner: str, op: str = "") -> str:
    return (
        f'<esc_datamodel xmlns="{E}"><tenants><tenant><name>t</name><deployments>'
        f"<deployment><name>d</name><vm_group{op}><name>g</name>{inner}</vm_group>"
        "</deployment></deployments></tenant></tenants></esc_datamodel>"
    )


@pytest.fixture(params=[True, False], ids=["incremental", "whole-tree"])
def ds(request: pytest.FixtureRequest, tmp_path: Path) -> Datastore:
    store = Datastore(Settings(state_dir=tmp_path), SCHEMA, incremental=request.param)
    store.edit("running", cfg(BASE), EditOptions(), 1, "u")
    yield store
    store.close()


def dump(ds: Datastore) -> bytes:
    with ds.reading("running") as tree:
        return etree.tostring(tree)


INVALID = [
    (
        "unknown image",
        vg("<image>nope</image>"),
        "data-missing",
        VG + "/esc:image",
        "instance-required",
    ),
    (
        "unknown flavor",
        vg("<flavor>nope</flavor>"),
        "data-missing",
        VG + "/esc:flavor",
        "instance-required",
    ),
    (
        "unknown network",
        vg("<interfaces><interface><nicid>1</nicid><network>x</network></interface></interfaces>"),
        "data-missing",
        None,
        "instance-required",
    ),
    (
        "min > max",
        vg("<scaling><min_active>3</min_active><max_active>2</max_active></scaling>"),
        "operation-failed",
        VG + "/esc:scaling",
        "must-violation",
    ),
    ("range", vg("<bootup_time>0</bootup_time>"), "invalid-value", VG + "/esc:bootup_time", None),
    ("enum", vg("<placement><type>nowhere</type></placement>"), "invalid-value", None, None),
    ("type", vg("<recovery_wait_time>abc</recovery_wait_time>"), "invalid-value", None, None),
    ("unknown element", vg("<bogus>1</bogus>"), "unknown-element", None, None),
    ("create existing", vg("", ' nc:operation="create"'), "data-exists", VG, None),
    (
        "delete missing",
        vg('<volumes><volume nc:operation="delete"><name>v</name></volume></volumes>'),
        "data-missing",
        None,
        None,
    ),
    (
        "missing mandatory",
        f'<esc_datamodel xmlns="{E}"><flavors><flavor><name>f2</name><vcpus>1</vcpus>'
        "</flavor></flavors></esc_datamodel>",
        "missing-element",
        None,
        None,
    ),
    (
        "unique ip",
        vg(
            "<interfaces><interface><nicid>1</nicid><network>net</network><ip_address>10.0.0.1"
            "</ip_address></interface><interface><nicid>2</nicid><network>net</network>"
            "<ip_address>10.0.0.1</ip_address></interface></interfaces>"
        ),
        "operation-failed",
        None,
        "data-not-unique",
    ),
    (
        "delete used image",
        f'<esc_datamodel xmlns="{E}"><images><image nc:operation="delete">'
        "<name>img</name></image></images></esc_datamodel>",
        "data-missing",
        VG + "/esc:image",
        "instance-required",
    ),
    ("bad operation", vg("", ' nc:operation="frob"'), "bad-attribute", None, None),
    (
        "flavor vcpus range",
        f'<esc_datamodel xmlns="{E}"><flavors><flavor><name>f3</name><vcpus>0</vcpus>'
        "<memory_mb>1</memory_mb></flavor></flavors></esc_datamodel>",
        "invalid-value",
        "/esc:esc_datamodel/esc:flavors/esc:flavor[esc:name='f3']/esc:vcpus",
        None,
    ),
    (
        "subnet unique address",
        f'<esc_datamodel xmlns="{E}"><networks><network><name>n2</name>'
        "<subnet><name>a</name><address>10.1.0.0</address></subnet>"
        "<subnet><name>b</name><address>10.1.0.0</address></subnet>"
        "</network></networks></esc_datamodel>",
        "operation-failed",
        None,
        "data-not-unique",
    ),
    (
        "change used flavor name away",
        f'<esc_datamodel xmlns="{E}"><flavors><flavor nc:operation="replace"><name>fl2</name>'
        '<vcpus>1</vcpus><memory_mb>1</memory_mb></flavor><flavor nc:operation="delete">'
        "<name>fl</name></flavor></flavors></esc_datamodel>",
        "data-missing",
        VG + "/esc:flavor",
        "instance-required",
    ),
    (
        "config false",
        f'<esc_datamodel xmlns="{E}"><opdata><system_status><status>ACTIVE</status>'
        "</system_status></opdata></esc_datamodel>",
        "invalid-value",
        None,
        None,
    ),
    (
        "kpi nicid leafref",
        vg(
            "<kpi_data><kpi><event_name>VM_ALIVE</event_name><metric_collector>"
            "<nicid>7</nicid></metric_collector></kpi></kpi_data>"
        ),
        "data-missing",
        None,
        "instance-required",
    ),
]


@pytest.mark.parametrize("name,body,tag,path,app_tag", INVALID, ids=[i[0] for i in INVALID])
def test_invalid_edit_rejected(
    ds: Datastore, name: str, body: str, tag: str, path: str | None, app_tag: str | None
) -> None:
    before = dump(ds)
    with pytest.raises(RpcError) as err:
        ds.edit("running", cfg(body), EditOptions(), 1, "u")
    assert err.value.tag == tag, err.value
    if path is not None:
        assert err.value.path == path
    if app_tag is not None:
        assert err.value.app_tag == app_tag
    assert dump(ds) == before
    assert len(ds.history()) == 1


def test_merge_replace_remove_delete(ds: Datastore) -> None:
    ds.edit("running", cfg(vg("<bootup_time>30</bootup_time>")), EditOptions(), 1, "u")
    assert b"<bootup_time>30</bootup_time>" in dump(ds)
    ds.edit(
        "running",
        cfg(vg("<image>img</image><flavor>fl</flavor>", ' nc:operation="replace"')),
        EditOptions(),
        1,
        "u",
    )
    out = dump(ds)
    assert b"bootup_time" not in out and b"<interfaces>" not in out
    ds.edit(
        "running",
        cfg(vg('<flavor nc:operation="remove"/>'.replace("/>", "></flavor>"))),
        EditOptions(error_option="stop-on-error"),
        1,
        "u",
        test_option="set",
    )
    ds.edit("running", cfg(vg("<flavor>fl</flavor>")), EditOptions(), 1, "u")
    ds.edit("running", cfg(vg("", ' nc:operation="delete"')), EditOptions(), 1, "u")
    assert b"<vm_group>" not in dump(ds)
    ds.edit("running", cfg(vg("", ' nc:operation="remove"')), EditOptions(), 1, "u")


def test_default_operation_none_and_replace(ds: Datastore) -> None:
    with pytest.raises(RpcError) as err:
        ds.edit(
            "running",
            cfg(
                f'<esc_datamodel xmlns="{E}"><tenants><tenant><name>zz</name>'
                '<description nc:operation="merge">x</description></tenant>'
                "</tenants></esc_datamodel>"
            ),
            EditOptions(default_operation="none"),
            1,
            "u",
        )
    assert err.value.tag == "data-missing"
    new = BASE.replace("<name>fl</name><vcpus>1", "<name>fl</name><vcpus>2")
    ds.edit("running", cfg(new), EditOptions(default_operation="replace"), 1, "u")
    assert b"<vcpus>2</vcpus>" in dump(ds)


def test_test_only_changes_nothing(ds: Datastore) -> None:
    before = dump(ds)
    ds.edit(
        "running",
        cfg(vg("<bootup_time>30</bootup_time>")),
        EditOptions(),
        1,
        "u",
        test_option="test-only",
    )
    assert dump(ds) == before


def test_continue_on_error_applies_the_rest(ds: Datastore) -> None:
    body = (
        f'<esc_datamodel xmlns="{E}"><tenants>'
        '<tenant nc:operation="create"><name>t</name></tenant>'
        "<tenant><name>t2</name><description>ok</description></tenant>"
        "</tenants></esc_datamodel>"
    )
    with pytest.raises((RpcError, RpcErrors)):
        ds.edit("running", cfg(body), EditOptions(error_option="continue-on-error"), 1, "u")
    assert b"<name>t2</name>" in dump(ds)


def test_commit_listener_sees_changes(ds: Datastore) -> None:
    events = []
    ds.add_commit_listener(events.append)
    ds.edit("running", cfg(vg("<bootup_time>30</bootup_time>")), EditOptions(), 7, "bob")
    (ev,) = events
    assert ev.session_id == 7 and ev.username == "bob"
    assert ev.new.find(f".//{{{E}}}bootup_time") is not None
    assert ev.old.find(f".//{{{E}}}bootup_time") is None
    assert ev.old.find(f".//{{{E}}}deployment") is not None


def test_validator_error_goes_to_client(ds: Datastore) -> None:
    def veto(data: etree._Element) -> None:
        if data.find(f".//{{{E}}}bootup_time") is not None:
            raise RpcError("invalid-value", "engine says no", path="/esc:x")

    ds.add_validator(veto)
    before = dump(ds)
    with pytest.raises(RpcError, match="engine says no"):
        ds.edit("running", cfg(vg("<bootup_time>30</bootup_time>")), EditOptions(), 1, "u")
    assert dump(ds) == before


def test_rollback_history(ds: Datastore, tmp_path: Path) -> None:
    ds.edit("running", cfg(vg("<bootup_time>30</bootup_time>")), EditOptions(), 1, "u")
    ds.edit("running", cfg(vg("<bootup_time>40</bootup_time>")), EditOptions(), 1, "u")
    hid = ds.history()[1][0]
    ds.rollback(hid, 1, "u")
    assert b"bootup_time" not in dump(ds)


def test_persistence_round_trip(tmp_path: Path) -> None:
    ds = Datastore(Settings(state_dir=tmp_path), SCHEMA)
    ds.edit("running", cfg(BASE), EditOptions(), 1, "u")
    ds.edit("running", cfg(vg("<bootup_time>30</bootup_time>")), EditOptions(), 1, "u")
    before = dump(ds)
    ds.close()
    again = Datastore(Settings(state_dir=tmp_path), SCHEMA)
    assert dump(again) == before
    again.close()


def many_globals(n: int) -> str:
    return (
        f'<esc_datamodel xmlns="{E}"><flavors>'
        + "".join(
            f"<flavor><name>x{i}</name><vcpus>1</vcpus><memory_mb>8</memory_mb></flavor>"
            for i in range(n)
        )
        + "</flavors><images>"
        + "".join(f"<image><name>i{i}</name><src>/i{i}.qcow2</src></image>" for i in range(n))
        + "</images></esc_datamodel>"
    )


# (body, expected error tag or None) with 40 extra flavors/images in running:
# incremental validation sees only the changed/referenced top-level entries
WIDE = [
    (vg("<flavor>x17</flavor><image>i33</image>"), None),
    (vg("<flavor>x99</flavor>"), "data-missing"),
    (vg("<image>i99</image>"), "data-missing"),
    (
        f'<esc_datamodel xmlns="{E}"><flavors><flavor><name>x5</name><vcpus>2000</vcpus>'
        "</flavor></flavors></esc_datamodel>",
        "invalid-value",
    ),
    (
        f'<esc_datamodel xmlns="{E}"><flavors><flavor><name>x5</name><vcpus>2</vcpus>'
        "</flavor></flavors></esc_datamodel>",
        None,
    ),
    (
        f'<esc_datamodel xmlns="{E}"><images><image nc:operation="delete"><name>img</name>'
        "</image></images></esc_datamodel>",
        "data-missing",
    ),
    (
        f'<esc_datamodel xmlns="{E}"><images><image nc:operation="delete"><name>i3</name>'
        "</image></images></esc_datamodel>",
        None,
    ),
    (
        f'<esc_datamodel xmlns="{E}"><flavors><flavor><name>new</name><vcpus>1</vcpus>'
        "</flavor></flavors></esc_datamodel>",
        "missing-element",
    ),
]


@pytest.mark.parametrize("body,tag", WIDE)
def test_wide_root_incremental_agrees_with_whole_tree(ds: Datastore, body: str, tag: str) -> None:
    ds.edit("running", cfg(many_globals(40)), EditOptions(), 1, "u")
    before = dump(ds)
    if tag is None:
        ds.edit("running", cfg(body), EditOptions(), 1, "u")
        assert dump(ds) != before
    else:
        with pytest.raises(RpcError) as err:
            ds.edit("running", cfg(body), EditOptions(), 1, "u")
        assert err.value.tag == tag
        assert dump(ds) == before


def test_prune_keeps_changed_and_referenced_entries() -> None:
    from escnc.datastore import pruning

    lists = pruning.analyse(SCHEMA.dm.schema, {m.name: m.namespace for m in SCHEMA.modules()})
    assert {etree.QName(pl.tag).localname for pl in lists} >= {"image", "flavor", "network"}
    data = etree.fromstring(
        f'<data xmlns="{NC}">{many_globals(5)}</data>'.replace(
            "</esc_datamodel>",
            "<tenants><tenant><name>t</name><deployments><deployment><name>d</name><vm_group>"
            "<name>g</name><image>i2</image><flavor>x4</flavor></vm_group></deployment>"
            "</deployments></tenant></tenants></esc_datamodel>",
        ),
        P,
    )
    before = etree.tostring(data)
    flavor = f"{{{E}}}flavor"
    cut = pruning.prune(data, lists, {(flavor, "x1")})
    names = [n.text for n in data.iter(f"{{{E}}}name")]
    assert "x1" in names and "x4" in names and "i2" in names
    assert "x0" not in names and "i0" not in names
    cut.restore()
    assert etree.tostring(data) == before


def base_with(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


TWO_DEPS = base_with(
    "</deployment></deployments>",
    "</deployment><deployment><name>d2</name><vm_group><name>g</name><image>img</image>"
    "<flavor>fl</flavor></vm_group></deployment></deployments>",
)
# copy-config sources (whole configurations): (name, source, error tag or None, error path)
COPY = [
    ("unchanged", BASE, None, None),
    (
        "one deployment changed",
        base_with("<flavor>fl</flavor>", "<flavor>fl</flavor><bootup_time>30</bootup_time>"),
        None,
        None,
    ),
    ("deployment added", TWO_DEPS, None, None),
    (
        "unknown image",
        base_with("<image>img</image>", "<image>nope</image>"),
        "data-missing",
        VG + "/esc:image",
    ),
    (
        "range",
        base_with("<flavor>fl</flavor>", "<flavor>fl</flavor><bootup_time>0</bootup_time>"),
        "invalid-value",
        VG + "/esc:bootup_time",
    ),
    (
        "unknown element in deployment",
        base_with("<name>d</name>", "<name>d</name><bogus/>"),
        "unknown-element",
        None,
    ),
    (
        "unknown element among deployments",
        base_with("<deployments>", "<deployments><bogus/>"),
        "unknown-element",
        None,
    ),
    (
        "unknown element among tenants",
        base_with("<tenants>", "<tenants><bogus/>"),
        "unknown-element",
        None,
    ),
    (
        "unknown top-level element",
        base_with("<images>", "<bogus/><images>"),
        "unknown-element",
        None,
    ),
    (
        "flavor in use removed",
        base_with(
            "<flavors><flavor><name>fl</name><vcpus>1</vcpus><memory_mb>64</memory_mb>"
            "</flavor></flavors>",
            "",
        ),
        "data-missing",
        VG + "/esc:flavor",
    ),
    (
        "tenant entry outside tenants",
        base_with("<tenants>", "<tenant><name>x</name></tenant><tenants>"),
        "unknown-element",
        None,
    ),
]


def copy_source(body: str) -> etree._Element:
    return etree.fromstring(f'<config xmlns="{NC}">{body}</config>', P)


@pytest.mark.parametrize("name,body,tag,path", COPY, ids=[c[0] for c in COPY])
def test_copy_config_incremental_agrees_with_whole_tree(
    ds: Datastore, name: str, body: str, tag: str | None, path: str | None
) -> None:
    ds.edit("running", cfg(TWO_DEPS), EditOptions(), 1, "u")  # d2 exists
    ds.edit("running", cfg(many_globals(10)), EditOptions(), 1, "u")
    before = dump(ds)
    if tag is None:
        ds.copy_config("running", copy_source(body), 1, "u")
        got = dump(ds)
        expect = etree.tostring(etree.fromstring(f'<data xmlns="{NC}">{body}</data>', P))
        assert etree.tostring(etree.fromstring(got, P)) == expect
        return
    with pytest.raises((RpcError, RpcErrors)) as err:
        ds.copy_config("running", copy_source(body), 1, "u")
    first = err.value.errors[0] if isinstance(err.value, RpcErrors) else err.value
    assert first.tag == tag, first
    if path is not None:
        assert first.path == path
    assert dump(ds) == before


def test_copy_config_duplicate_deployment_is_rejected(ds: Datastore) -> None:
    dup = base_with(
        "</deployment></deployments>",
        "</deployment><deployment><name>d</name>"
        "<vm_group><name>g</name><image>img</image><flavor>fl</flavor></vm_group>"
        "</deployment></deployments>",
    )
    before = dump(ds)
    with pytest.raises((RpcError, RpcErrors)):
        ds.copy_config("running", copy_source(dup), 1, "u")
    assert dump(ds) == before


def test_leaves_of_a_created_entry_repeated_or_with_operations(ds: Datastore) -> None:
    """A new entry's plain leaves take a short path; a repeated leaf, or one with an
    operation, still merges as RFC 6241 says (the last value wins), and an error
    inside the new entry undoes all of it (continue-on-error keeps the rest)."""
    ds.edit("running", cfg(
        f'<esc_datamodel xmlns="{E}"><flavors><flavor><name>f2</name>'
        "<vcpus>1</vcpus><vcpus>2</vcpus>"
        '<memory_mb nc:operation="merge">64</memory_mb><memory_mb>128</memory_mb>'
        '<root_disk_mb>5</root_disk_mb><root_disk_mb nc:operation="replace">6</root_disk_mb>'
        '<ephemeral_disk_mb nc:operation="remove"/>'
        "</flavor></flavors></esc_datamodel>"), EditOptions(), 1, "u")
    with ds.reading("running") as tree:
        f2 = tree.find(f".//{{{E}}}flavor[{{{E}}}name='f2']")
        assert f2 is not None
        got = [(etree.QName(c).localname, c.text) for c in f2]
    assert got == [("name", "f2"), ("vcpus", "2"), ("memory_mb", "128"), ("root_disk_mb", "6")]
    before = dump(ds)
    with pytest.raises((RpcError, RpcErrors)):
        ds.edit("running", cfg(
            f'<esc_datamodel xmlns="{E}"><flavors>'
            "<flavor><name>f3</name><vcpus>1</vcpus><bogus>1</bogus></flavor>"
            "<flavor><name>f4</name><vcpus>1</vcpus><memory_mb>64</memory_mb></flavor>"
            "</flavors></esc_datamodel>"),
            EditOptions(error_option="continue-on-error"), 1, "u")
    with ds.reading("running") as tree:
        names = [n.text for n in tree.iterfind(f".//{{{E}}}flavor/{{{E}}}name")]
    assert "f3" not in names and "f4" in names
    ds.edit("running", cfg(
        f'<esc_datamodel xmlns="{E}"><flavors>'
        f'<flavor nc:operation="remove"><name>f4</name></flavor></flavors></esc_datamodel>'),
        EditOptions(), 1, "u")
    assert dump(ds) == before
