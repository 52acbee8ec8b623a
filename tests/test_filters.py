"""Subtree/XPath filters (RFC 6241 section 6), notification matching, RPC input checks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lxml import etree

from escnc.datastore import filters
from escnc.datastore.schema import Schema
from escnc.errors import RpcError
from escnc.events.esc_event import EscEvent
from escnc.operations.datastore_read import key_resolver

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
LIB = "urn:example:library"
E = "http://www.cisco.com/esc/esc"
P = etree.XMLParser(remove_blank_text=True)

# A small library model (our own, in the spirit of the RFC 6241 6.4 <users> examples):
# library/shelves/shelf[code]/book[isbn] {isbn, title, author*, lang attribute}
LIBRARY = f"""<data xmlns="{NC}"><library xmlns="{LIB}">
  <address>Main street 1</address>
  <shelves>
    <shelf><code>A</code><floor>1</floor>
      <book><isbn>111</isbn><title>Rivers</title><author>ann</author><author>bob</author>
        <genre>nature</genre></book>
      <book lang="de"><isbn>222</isbn><title>Berge</title><author>cid</author></book>
      <book><isbn>333</isbn><title>Seas</title><genre>nature</genre></book>
    </shelf>
    <shelf><code>B</code><floor>2</floor>
      <book><isbn>444</isbn><title>Stars</title><genre>space</genre></book>
    </shelf>
  </shelves>
</library><opening xmlns="urn:example:hours"><day>mon</day></opening></data>"""

KEYS = {"shelf": ["code"], "book": ["isbn"]}


def lib_keys(el: etree._Element) -> list[str]:
    ns = etree.QName(el).namespace
    return [f"{{{ns}}}{k}" for k in KEYS.get(etree.QName(el).localname, [])]


def data() -> etree._Element:
    return etree.fromstring(LIBRARY, P)


def filt(body: str) -> etree._Element:
    return etree.fromstring(f'<filter xmlns="{NC}" type="subtree">{body}</filter>', P)


def run(body: str, src: etree._Element | None = None) -> etree._Element:
    return filters.apply_subtree_filter(data() if src is None else src, filt(body), lib_keys)


def canon(el: etree._Element) -> str:
    return etree.tostring(el, method="c14n").decode()


def expect(body: str) -> str:
    return canon(etree.fromstring(f'<data xmlns="{NC}">{body}</data>', P))


def books(out: etree._Element) -> list[str]:
    return [b.findtext(f"{{{LIB}}}isbn") or "" for b in out.iter(f"{{{LIB}}}book")]


def test_empty_filter_selects_nothing() -> None:
    assert len(run("")) == 0


def test_selection_of_whole_subtree_and_namespace() -> None:
    out = run(f'<library xmlns="{LIB}"/>')
    assert [etree.QName(c).localname for c in out] == ["library"]
    assert canon(out[0]) == canon(data()[0])
    # another namespace selects nothing
    assert len(run('<library xmlns="urn:example:other"/>')) == 0


def test_namespace_wildcard() -> None:
    # no namespace, or the <rpc>'s NETCONF namespace inherited: any namespace matches
    assert len(run('<library xmlns=""/>')) == 1
    assert len(run("<library/>")) == 1
    assert books(run('<library xmlns=""><shelves><shelf><book/></shelf></shelves></library>')) == [
        "111",
        "222",
        "333",
        "444",
    ]


def test_multiple_top_level_filters() -> None:
    out = run(f'<library xmlns="{LIB}"><address/></library><opening xmlns="urn:example:hours"/>')
    assert canon(out) == expect(
        f'<library xmlns="{LIB}"><address>Main street 1</address></library>'
        '<opening xmlns="urn:example:hours"><day>mon</day></opening>'
    )


def test_containment_returns_list_keys() -> None:
    # "all titles": the shelf code and book isbn keys come along although not asked for
    out = run(
        f'<library xmlns="{LIB}"><shelves><shelf><book><title/></book></shelf></shelves></library>'
    )
    assert canon(out) == expect(
        f'<library xmlns="{LIB}"><shelves>'
        "<shelf><code>A</code><book><isbn>111</isbn><title>Rivers</title></book>"
        '<book lang="de"><isbn>222</isbn><title>Berge</title></book>'
        "<book><isbn>333</isbn><title>Seas</title></book></shelf>"
        "<shelf><code>B</code><book><isbn>444</isbn><title>Stars</title></book></shelf>"
        "</shelves></library>"
    )


def test_containment_selecting_nothing_drops_entry() -> None:
    # only books with an author are returned; entries without one are left out
    out = run(
        f'<library xmlns="{LIB}"><shelves><shelf><book><author/></book></shelf></shelves></library>'
    )
    assert books(out) == ["111", "222"]
    assert [s.findtext(f"{{{LIB}}}code") for s in out.iter(f"{{{LIB}}}shelf")] == ["A"]


def test_one_specific_entry_by_content_match() -> None:
    # only a content-match node: the whole entry
    out = run(
        f'<library xmlns="{LIB}"><shelves><shelf><code>A</code><book><isbn>333</isbn></book>'
        "</shelf></shelves></library>"
    )
    assert canon(out) == expect(
        f'<library xmlns="{LIB}"><shelves><shelf><code>A</code>'
        "<book><isbn>333</isbn><title>Seas</title><genre>nature</genre></book>"
        "</shelf></shelves></library>"
    )


def test_content_match_with_sibling_selection() -> None:
    out = run(
        f'<library xmlns="{LIB}"><shelves><shelf><book><isbn>111</isbn><title/><genre/></book>'
        "</shelf></shelves></library>"
    )
    assert canon(out) == expect(
        f'<library xmlns="{LIB}"><shelves><shelf><code>A</code>'
        "<book><isbn>111</isbn><title>Rivers</title><genre>nature</genre></book>"
        "</shelf></shelves></library>"
    )
    # the selected sibling is absent in the entry: the entry still comes with its key
    out = run(
        f'<library xmlns="{LIB}"><shelves><shelf><book><isbn>222</isbn><genre/></book>'
        "</shelf></shelves></library>"
    )
    assert canon(out) == expect(
        f'<library xmlns="{LIB}"><shelves><shelf><code>A</code>'
        '<book lang="de"><isbn>222</isbn></book></shelf></shelves></library>'
    )


def test_content_match_on_non_key_leaf() -> None:
    out = run(
        f'<library xmlns="{LIB}"><shelves><shelf><book><genre>nature</genre><title/></book>'
        "</shelf></shelves></library>"
    )
    assert canon(out) == expect(
        f'<library xmlns="{LIB}"><shelves><shelf><code>A</code>'
        "<book><isbn>111</isbn><title>Rivers</title><genre>nature</genre></book>"
        "<book><isbn>333</isbn><title>Seas</title><genre>nature</genre></book>"
        "</shelf></shelves></library>"
    )


def test_content_match_false_selects_nothing() -> None:
    body = (
        f'<library xmlns="{LIB}"><shelves><shelf><code>Z</code><book/></shelf></shelves></library>'
    )
    assert len(run(body)) == 0


def test_content_match_on_leaf_list_returns_matching_instance() -> None:
    out = run(
        f'<library xmlns="{LIB}"><shelves><shelf><book><author>bob</author><title/></book>'
        "</shelf></shelves></library>"
    )
    assert canon(out) == expect(
        f'<library xmlns="{LIB}"><shelves><shelf><code>A</code>'
        "<book><isbn>111</isbn><title>Rivers</title><author>bob</author></book>"
        "</shelf></shelves></library>"
    )


def test_multiple_subtrees_merge_without_duplicates() -> None:
    # three filters on the same list (RFC 6241 6.4.7 style): union, each entry once,
    # in data order
    out = run(
        f'<library xmlns="{LIB}"><shelves><shelf>'
        "<book><isbn>333</isbn><title/></book>"
        "<book><isbn>111</isbn><genre/></book>"
        "<book><isbn>111</isbn><title/></book>"
        "</shelf></shelves></library>"
    )
    assert canon(out) == expect(
        f'<library xmlns="{LIB}"><shelves><shelf><code>A</code>'
        "<book><isbn>111</isbn><title>Rivers</title><genre>nature</genre></book>"
        "<book><isbn>333</isbn><title>Seas</title></book>"
        "</shelf></shelves></library>"
    )
    # a selection node and a containment node for the same entry: the whole entry
    out = run(
        f'<library xmlns="{LIB}"><shelves><shelf><code>B</code><book><title/></book>'
        "<book/></shelf></shelves></library>"
    )
    assert canon(out) == expect(
        f'<library xmlns="{LIB}"><shelves><shelf><code>B</code>'
        "<book><isbn>444</isbn><title>Stars</title><genre>space</genre></book>"
        "</shelf></shelves></library>"
    )


def test_attribute_match() -> None:
    out = run(
        f'<library xmlns="{LIB}"><shelves><shelf><book lang="de"/></shelf></shelves></library>'
    )
    assert books(out) == ["222"]
    assert next(out.iter(f"{{{LIB}}}book")).get("lang") == "de"
    out = run(
        f'<library xmlns="{LIB}"><shelves><shelf><book lang="fr"/></shelf></shelves></library>'
    )
    assert len(out) == 0


def test_source_tree_is_not_modified() -> None:
    src = data()
    before = canon(src)
    out = run(
        f'<library xmlns="{LIB}"><shelves><shelf><book><title/></book></shelf></shelves></library>',
        src,
    )
    out[0].find(f".//{{{LIB}}}title").text = "changed"  # type: ignore[union-attr]
    assert canon(src) == before


def test_long_list_prefilter_matches_like_the_loop() -> None:
    entries = "".join(f"<book><isbn>{i}</isbn><title>t{i}</title></book>" for i in range(200))
    src = etree.fromstring(
        f'<data xmlns="{NC}"><library xmlns="{LIB}"><shelves><shelf><code>L</code>{entries}'
        "</shelf></shelves></library></data>",
        P,
    )
    # whitespace around a content-match value is not significant
    body = (
        f'<library xmlns="{LIB}"><shelves><shelf><book><isbn>  137 </isbn><title/></book>'
        "<book><isbn>5</isbn></book><book><isbn>nope</isbn></book></shelf></shelves></library>"
    )
    out = run(body, src)
    assert books(out) == ["5", "137"]
    wild = run(body.replace(f' xmlns="{LIB}"', ' xmlns=""'), src)
    assert canon(wild) == canon(out)


def test_top_nodes_from_several_parents() -> None:
    a = etree.fromstring(f'<library xmlns="{LIB}"><address>x</address></library>')
    b = etree.fromstring('<opening xmlns="urn:example:hours"><day>tue</day></opening>')
    out = filters.filter_nodes([a, b], filt('<opening xmlns="urn:example:hours"/>'))
    assert canon(out) == expect('<opening xmlns="urn:example:hours"><day>tue</day></opening>')
    assert a.getparent() is None and b.getparent() is None


# ---------------------------------------------------------------- with the escnc schema


@pytest.fixture(scope="module")
def schema() -> Iterator[Schema]:
    yield Schema.load()


ESC_DATA = f"""<data xmlns="{NC}"><esc_datamodel xmlns="{E}">
<flavors><flavor><name>fl</name><vcpus>1</vcpus><memory_mb>64</memory_mb></flavor>
<flavor><name>big</name><vcpus>8</vcpus><memory_mb>8192</memory_mb></flavor></flavors>
<tenants><tenant><name>t1</name><deployments>
<deployment><name>d1</name><vm_group><name>g1</name><image>img</image><flavor>fl</flavor>
</vm_group><vm_group><name>g2</name><image>img2</image><flavor>big</flavor></vm_group></deployment>
<deployment><name>d2</name><vm_group><name>g1</name><image>img</image><flavor>fl</flavor>
</vm_group></deployment></deployments></tenant></tenants></esc_datamodel></data>"""


def test_schema_keys_in_containment(schema: Schema) -> None:
    src = etree.fromstring(ESC_DATA, P)
    f = filt(
        f'<esc_datamodel xmlns="{E}"><tenants><tenant><deployments><deployment>'
        "<vm_group><flavor>big</flavor><image/></vm_group>"
        "</deployment></deployments></tenant></tenants></esc_datamodel>"
    )
    out = filters.apply_subtree_filter(src, f, key_resolver(schema))
    assert canon(out) == expect(
        f'<esc_datamodel xmlns="{E}"><tenants><tenant><name>t1</name><deployments>'
        "<deployment><name>d1</name><vm_group><name>g2</name><image>img2</image>"
        "<flavor>big</flavor></vm_group></deployment></deployments></tenant></tenants>"
        "</esc_datamodel>"
    )


def test_xpath_filter_keys_and_live_tree(schema: Schema) -> None:
    src = etree.fromstring(ESC_DATA, P)
    before = canon(src)
    out = filters.apply_xpath_filter(
        src,
        "/esc:esc_datamodel/esc:tenants/esc:tenant/esc:deployments/esc:deployment"
        "[esc:name='d2']/esc:vm_group/esc:image",
        {"esc": E},
        key_resolver(schema),
    )
    assert canon(out) == expect(
        f'<esc_datamodel xmlns="{E}"><tenants><tenant><name>t1</name><deployments>'
        "<deployment><name>d2</name><vm_group><name>g1</name><image>img</image></vm_group>"
        "</deployment></deployments></tenant></tenants></esc_datamodel>"
    )
    assert canon(src) == before
    with pytest.raises(RpcError) as err:
        filters.apply_xpath_filter(src, "/esc:[", {"esc": E})
    assert err.value.tag == "invalid-value"


# ---------------------------------------------------------------- notifications


def event() -> etree._Element:
    return EscEvent(type="VM_ALIVE", status="SUCCESS", depname="dep-a", tenant="t1").to_xml()


@pytest.mark.parametrize(
    ("spec", "matches"),
    [
        (None, True),
        (f'<escEvent xmlns="{E}"/>', True),
        (f'<escEvent xmlns="{E}"><depname>dep-a</depname></escEvent>', True),
        (f'<escEvent xmlns="{E}"><depname>dep-b</depname></escEvent>', False),
        (f'<escEvent xmlns="{E}"><event><type>VM_ALIVE</type></event></escEvent>', True),
        (f'<escEvent xmlns="{E}"><event><type>VM_DEPLOYED</type></event></escEvent>', False),
        (f'<escEvent xmlns="{E}"><status>SUCCESS</status><event/></escEvent>', True),
        ('<escEvent xmlns="urn:other"/>', False),
        ('<escEvent xmlns=""><tenant>t1</tenant></escEvent>', True),
        ("", False),
    ],
)
def test_notification_subtree(spec: str | None, matches: bool) -> None:
    f = None if spec is None else filt(spec)
    assert filters.notification_matches(event(), f) is matches


def test_notification_xpath() -> None:
    ev = event()
    assert filters.notification_matches(ev, "/esc:escEvent[esc:depname='dep-a']", {"esc": E})
    assert not filters.notification_matches(
        ev, "/esc:escEvent/esc:event[esc:type='VM_DEPLOYED']", {"esc": E}
    )
    f = etree.fromstring(
        f'<filter xmlns="{NC}" xmlns:e="{E}" type="xpath" '
        "select=\"/e:escEvent/e:event/e:type[.='VM_ALIVE']\"/>"
    )
    assert filters.notification_matches(ev, f)
    assert not filters.notification_matches(ev, "/esc:[", {"esc": E})  # bad XPath: no match


# ---------------------------------------------------------------- RPC input validation

VALID_RPCS = {
    "serviceAction": "<actionType>STOP</actionType><tenantName>t</tenantName><depName>d</depName>",
    "vmAction": "<actionType>REBOOT</actionType><vmName>d_g_0_x</vmName><force>true</force>",
    "vmMigrate": "<vmName>v</vmName><migrationType>live</migrationType>"
    "<blockMigration>false</blockMigration><host>h2</host>",
    "vmBackupAction": "<vmName>v</vmName><backupName>b</backupName>"
    "<actionType>SNAPSHOT</actionType>",
    "snapshotAction": "<actionType>DELETE</actionType><snapshot>s1</snapshot>",
    "createVolumeFromSnapshot": "<snapshot>s1</snapshot><name>vol</name>"
    "<volume_type>qcow2</volume_type><multiattach>false</multiattach><bootable>true</bootable>",
    "recoveryVmAction": "<actionType>DO</actionType><vmName>v</vmName>",
    "vmRevertSnapshot": "<vmName>v</vmName><snapshot>s1</snapshot>",
    "rollback": "<id>3</id>",
    "queryComputeCapacity": "<zoneId>h1</zoneId><resourceDescriptor>"
    "<computeResourceTypeId>vcInstances</computeResourceTypeId></resourceDescriptor>"
    "<timePeriod><startTime>2015-09-21T00:00:00Z</startTime>"
    "<stopTime>2015-09-21T00:05:30Z</stopTime></timePeriod>",
    "subscribeComputeCapacity": "<zoneId>12345</zoneId><resourceDescriptor>"
    "<computeResourceTypeId>vcInstances</computeResourceTypeId></resourceDescriptor>"
    "<threshold><capacity_info>available</capacity_info><condition>lt</condition>"
    "<value>5</value></threshold>",
    "unsubscribeComputeCapacity": "<capacityChangeSubscriptionId>a</capacityChangeSubscriptionId>",
    "createComputeReservation": "<startTime>2015-09-21T01:00:00Z</startTime>"
    "<computePoolReservation><numCpuCores>20</numCpuCores><numVcInstances>5</numVcInstances>"
    "<virtualMemSize>10</virtualMemSize></computePoolReservation>",
    "queryComputeReservation": "<queryReservationFilter><reservationId>x</reservationId>"
    "</queryReservationFilter>",
    "updateComputeReservation": "<startTime>2015-09-14T16:00:00Z</startTime>"
    "<reservationId>xxxx-yyyy-zzzz</reservationId>",
    "terminateComputeReservation": "<reservationId>x</reservationId>"
    "<reservationId>y</reservationId>",
}
# the network and storage faces of seed 003 take the compute shapes with their own
# resource types and pools
for _kind, _type, _pool in (
    ("Network", "<networkResourceTypeId>publicIps</networkResourceTypeId>",
     "<networkReservation><numPublicIps>2</numPublicIps></networkReservation>"),
    ("Storage", "<storageResourceTypeId>storageSize</storageResourceTypeId>",
     "<storagePoolReservation><storageSize>10</storageSize><numVolumes>2</numVolumes>"
     "</storagePoolReservation>"),
):
    VALID_RPCS.update({
        f"query{_kind}Capacity": f"<zoneId>h1</zoneId><resourceDescriptor>{_type}"
        "</resourceDescriptor><timePeriod><startTime>2015-09-21T00:00:00Z</startTime>"
        "</timePeriod>",
        f"subscribe{_kind}Capacity": f"<zoneId>12345</zoneId><resourceDescriptor>{_type}"
        "</resourceDescriptor><threshold><capacity_info>available</capacity_info>"
        "<condition>lt</condition><value>5</value></threshold>",
        f"unsubscribe{_kind}Capacity":
        "<capacityChangeSubscriptionId>a</capacityChangeSubscriptionId>",
        f"create{_kind}Reservation": f"<startTime>2015-09-21T01:00:00Z</startTime>{_pool}",
        f"query{_kind}Reservation": "<queryReservationFilter><reservationId>x"
        "</reservationId></queryReservationFilter>",
        f"update{_kind}Reservation": "<reservationId>x</reservationId>"
        "<stopTime>2015-09-22T00:00:00Z</stopTime>",
        f"terminate{_kind}Reservation": "<reservationId>x</reservationId><force>true</force>",
    })
# (rpc, body, error-tag, error-path, bad-element)
INVALID_RPCS = [
    (
        "serviceAction",
        "<actionType>EXPLODE</actionType><tenantName>t</tenantName><depName>d</depName>",
        "invalid-value",
        "/esc:serviceAction/esc:actionType",
        None,
    ),
    (
        "serviceAction",
        "<actionType>STOP</actionType><tenantName>t</tenantName>",
        "missing-element",
        "/esc:serviceAction",
        "depName",
    ),
    (
        "vmAction",
        "<actionType>PAUSE</actionType><vmName>v</vmName>",
        "invalid-value",
        "/esc:vmAction/esc:actionType",
        None,
    ),
    ("vmAction", "<actionType>STOP</actionType>", "missing-element", "/esc:vmAction", "vmName"),
    (
        "vmAction",
        "<actionType>STOP</actionType><vmName>v</vmName><bogus/>",
        "unknown-element",
        "/esc:vmAction/esc:bogus",
        "bogus",
    ),
    (
        "vmAction",
        "<actionType>STOP</actionType><vmName>v</vmName><force>maybe</force>",
        "invalid-value",
        "/esc:vmAction/esc:force",
        "force",
    ),
    (
        "vmMigrate",
        "<vmName>v</vmName><migrationType>teleport</migrationType>",
        "invalid-value",
        "/esc:vmMigrate/esc:migrationType",
        None,
    ),
    ("vmMigrate", "<vmName>v</vmName>", "missing-element", "/esc:vmMigrate", "migrationType"),
    (
        "vmBackupAction",
        "<vmName>v</vmName><backupName>b</backupName><actionType>COPY</actionType>",
        "invalid-value",
        "/esc:vmBackupAction/esc:actionType",
        None,
    ),
    (
        "vmBackupAction",
        "<vmName>v</vmName>",
        "missing-element",
        "/esc:vmBackupAction",
        "backupName",
    ),
    (
        "snapshotAction",
        "<actionType>KEEP</actionType><snapshot>s</snapshot>",
        "invalid-value",
        "/esc:snapshotAction/esc:actionType",
        None,
    ),
    (
        "snapshotAction",
        "<actionType>DELETE</actionType><snap>s</snap>",
        "unknown-element",
        "/esc:snapshotAction/esc:snap",
        "snap",
    ),
    (
        "createVolumeFromSnapshot",
        "<snapshot>s</snapshot>",
        "missing-element",
        "/esc:createVolumeFromSnapshot",
        "name",
    ),
    (
        "createVolumeFromSnapshot",
        "<snapshot>s</snapshot><name>n</name><bootable>yes</bootable>",
        "invalid-value",
        "/esc:createVolumeFromSnapshot/esc:bootable",
        "bootable",
    ),
    (
        "recoveryVmAction",
        "<actionType>UNDO</actionType><vmName>v</vmName>",
        "invalid-value",
        "/esc:recoveryVmAction/esc:actionType",
        None,
    ),
    (
        "recoveryVmAction",
        "<actionType>DO</actionType>",
        "missing-element",
        "/esc:recoveryVmAction",
        "vmName",
    ),
    (
        "vmRevertSnapshot",
        "<vmName>v</vmName>",
        "missing-element",
        "/esc:vmRevertSnapshot",
        "snapshot",
    ),
    ("rollback", "<id>x</id>", "invalid-value", "/esc:rollback/esc:id", "id"),
    ("rollback", "", "missing-element", "/esc:rollback", "id"),
]


def rpc_el(name: str, body: str) -> etree._Element:
    return etree.fromstring(f'<{name} xmlns="{E}">{body}</{name}>')


@pytest.mark.parametrize("name", sorted(VALID_RPCS))
def test_rpc_input_valid(schema: Schema, name: str) -> None:
    schema.validate_rpc_input(rpc_el(name, VALID_RPCS[name]))


@pytest.mark.parametrize(("name", "body", "tag", "path", "bad"), INVALID_RPCS)
def test_rpc_input_invalid(
    schema: Schema, name: str, body: str, tag: str, path: str, bad: str | None
) -> None:
    with pytest.raises(RpcError) as err:
        schema.validate_rpc_input(rpc_el(name, body))
    e = err.value
    assert (e.tag, e.path) == (tag, path), e.message
    assert e.path_nsmap == {"esc": E}
    if bad is not None:
        assert e.info.get("bad-element") == bad


def test_every_esc_rpc_is_covered(schema: Schema) -> None:
    from yangson.schemanode import RpcActionNode

    rpcs = {
        c.name
        for c in schema.dm.schema.children
        if isinstance(c, RpcActionNode) and c.ns == "escnc" and c.get_child("input") is not None
    }
    with_input = {
        n for n in rpcs if schema.dm.schema.get_child(n, "escnc").get_child("input").children
    }
    assert with_input <= set(VALID_RPCS), with_input - set(VALID_RPCS)


def test_notification_validation(schema: Schema) -> None:
    schema.validate_notification(event())
    with pytest.raises(RpcError) as err:
        schema.validate_notification(
            etree.fromstring(f'<escEvent xmlns="{E}"><status>SO-SO</status></escEvent>')
        )
    assert (err.value.tag, err.value.path) == ("invalid-value", "/esc:escEvent/esc:status")
