"""Input that passes XML parsing but must be refused precisely, changing nothing
(security issue, item 9), and the event log's byte budget (item 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree
from ncclient.operations.rpc import RPCError

from escnc.events.log import EventLog, now_ms

E = "http://www.cisco.com/esc/esc"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"

DATA = Path(__file__).parent / "data"
BASE = (f'<config xmlns="{NC}"><esc_datamodel xmlns="{E}">'
        "<images><image><name>SolTest-Cirros-Image</name><src>https://images.example/c.qcow2"
        "</src></image></images><flavors><flavor><name>SolTest-Cirros-Flavor-v2</name>"
        "<vcpus>1</vcpus><memory_mb>256</memory_mb></flavor></flavors>"
        "<networks><network><name>SolTest-Network</name></network></networks>"
        "</esc_datamodel></config>")
FLAVOR = (f'<config xmlns="{NC}"><esc_datamodel xmlns="{E}"><flavors><flavor>'
          "<name>f1</name><vcpus>1</vcpus><memory_mb>256</memory_mb></flavor></flavors>"
          "</esc_datamodel></config>")


def _running(nc) -> bytes:  # type: ignore[no-untyped-def]
    return etree.tostring(nc.get_config("running").data_ele, method="c14n2")


def test_unqualified_operation_attribute_is_refused(nc) -> None:  # type: ignore[no-untyped-def]
    """The issue's case: operation="delete" without the base:1.0 namespace used to be
    ignored with <ok/>; RFC 6241 says unknown-attribute."""
    nc.edit_config(target="running", config=FLAVOR)
    before = _running(nc)
    bad = FLAVOR.replace("<flavor>", '<flavor operation="delete">')
    with pytest.raises(RPCError) as err:
        nc.edit_config(target="running", config=bad)
    assert err.value.tag == "unknown-attribute"
    assert "namespace-qualified" in (err.value.message or "")
    info = etree.tostring(err.value.xml).decode()
    assert "<bad-attribute>operation</bad-attribute>" in info
    assert "<bad-element>flavor</bad-element>" in info
    assert _running(nc) == before


def test_attribute_in_a_foreign_namespace_is_refused(nc) -> None:  # type: ignore[no-untyped-def]
    bad = FLAVOR.replace("<vcpus>", '<vcpus xmlns:x="urn:x" x:weird="1">')
    with pytest.raises(RPCError) as err:
        nc.edit_config(target="running", config=bad)
    assert err.value.tag == "unknown-attribute"
    assert "urn:x" in (err.value.message or "")
    assert b"f1" not in _running(nc)


def test_qualified_operation_still_works(nc) -> None:  # type: ignore[no-untyped-def]
    nc.edit_config(target="running", config=FLAVOR)
    delete = FLAVOR.replace("<flavor>", f'<flavor xmlns:nc="{NC}" nc:operation="delete">')
    nc.edit_config(target="running", config=delete)
    assert b"f1" not in _running(nc)


@pytest.mark.parametrize("value", ["100000000000000000000000", "4294967296", "0", "1e23", "-5"])
def test_confirm_timeout_out_of_range_is_refused(nc, value: str) -> None:  # type: ignore[no-untyped-def]
    nc.edit_config(target="candidate", config=FLAVOR)
    rpc = (f'<commit xmlns="{NC}"><confirmed/><confirm-timeout>{value}</confirm-timeout>'
           "</commit>")
    with pytest.raises(RPCError) as err:
        nc.dispatch(etree.fromstring(rpc))
    assert err.value.tag == "invalid-value"
    assert "4294967295" in (err.value.message or "")
    assert b"f1" not in _running(nc)  # nothing committed
    # the rollback timer still works afterwards
    nc.commit(confirmed=True, timeout="1")
    assert b"f1" in _running(nc)


def test_names_that_cannot_name_files_are_refused(nc) -> None:  # type: ignore[no-untyped-def]
    """Three 255-character names pass YANG but their VM's files could not exist."""
    nc.edit_config(target="running", config=BASE)
    body = (DATA / "seed_deployment_update.xml").read_text().split("?>", 1)[1]
    cfg = (f'<config xmlns="{NC}">{body}</config>'
           .replace("<name>Cirros-VNF</name>", f"<name>{'d' * 255}</name>")
           .replace("<name>SolTest-Cirros-VM-Group</name>", f"<name>{'g' * 255}</name>"))
    before = _running(nc)
    with pytest.raises(RPCError) as err:
        nc.edit_config(target="running", config=cfg)
    assert err.value.tag == "invalid-value"
    assert "file name" in (err.value.message or "")
    assert "esc:vm_group" in (err.value.path or "")
    assert _running(nc) == before


def test_long_image_name_is_refused(nc) -> None:  # type: ignore[no-untyped-def]
    cfg = (f'<config xmlns="{NC}"><esc_datamodel xmlns="{E}"><images><image>'
           f"<name>{'i' * 250}</name><src>https://images.example/x.qcow2</src></image>"
           "</images></esc_datamodel></config>")
    with pytest.raises(RPCError) as err:
        nc.edit_config(target="running", config=cfg)
    assert err.value.tag == "invalid-value"
    assert "at most 200" in (err.value.message or "")


# --- event log byte budget ----------------------------------------------------------------


def test_event_log_keeps_within_its_byte_budget(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.sqlite3", max_bytes=100_000)
    body = b"<x>" + b"a" * 1000 + b"</x>"
    for _ in range(500):  # 500 KB offered to a 100 KB budget
        log.append("NETCONF", now_ms(), "t", body)
    assert log.size_bytes <= 100_000
    assert log.count() >= 80  # most of the budget is still used
    assert log.last_seq() == 500  # the newest are kept, sequence numbers never reused
    first = log.first_seq()
    assert first > 400
    log.close()
    # the running total survives a restart (recomputed once at open)
    again = EventLog(tmp_path / "events.sqlite3", max_bytes=100_000)
    assert again.size_bytes == sum(len(e.body) for e in again.read_after(0, 10_000))
    assert again.first_seq() == first
    again.close()


def test_retention_keeps_the_byte_total_exact(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.sqlite3")
    for i in range(50):
        log.append("NETCONF", now_ms(), "t", b"x" * (i + 1))
    log.prune(None, 10)
    assert log.count() == 10
    assert log.size_bytes == sum(range(41, 51))
    log.close()


def test_day2_libvirt_xml_is_built_with_lxml() -> None:
    """Names with quotes, & and < cannot break out of volume or snapshot XML."""
    from escnc.vim import volumes

    hostile = "a'b\"c&d<e>"
    root = etree.fromstring(volumes._vol_xml(hostile, 10, hostile))
    assert root.findtext("name") == hostile
    assert root.find("target/format").get("type") == hostile  # type: ignore[union-attr]
    assert root.findtext("capacity") == "10"
