"""RFC 8526 get-data / edit-data over NETCONF (ncclient against a real server)."""

from __future__ import annotations

import pytest
from lxml import etree
from ncclient.operations.rpc import RPCError
from ncclient.xml_ import to_ele

NMDA = "urn:ietf:params:xml:ns:yang:ietf-netconf-nmda"
DS = "urn:ietf:params:xml:ns:yang:ietf-datastores"
E = "http://www.cisco.com/esc/esc"
MON = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"
YL = "urn:ietf:params:xml:ns:yang:ietf-yang-library"
NS = {"e": E, "n": NMDA, "m": MON, "y": YL}


def get_data(nc, datastore: str, *params: str) -> etree._Element:  # type: ignore[no-untyped-def]
    reply = nc.dispatch(to_ele(
        f'<get-data xmlns="{NMDA}" xmlns:ds="{DS}"><datastore>ds:{datastore}</datastore>'
        f"{''.join(params)}</get-data>"))
    data = etree.fromstring(str(reply).encode()).find(f"{{{NMDA}}}data")
    assert data is not None
    return data


def tenant(name: str) -> str:
    return (f'<config><esc_datamodel xmlns="{E}"><tenants><tenant><name>{name}</name>'
            "</tenant></tenants></esc_datamodel></config>")


def tenants(data: etree._Element) -> list[str]:
    return data.xpath("e:esc_datamodel/e:tenants/e:tenant/e:name/text()", namespaces=NS)


def test_conventional_datastores(nc) -> None:  # type: ignore[no-untyped-def]
    nc.edit_config(target="running", config=tenant("t-run"))
    nc.copy_config(source="running", target="startup")
    nc.edit_config(target="candidate", config=tenant("t-cand"))
    assert tenants(get_data(nc, "running")) == ["t-run"]
    assert sorted(tenants(get_data(nc, "candidate"))) == ["t-cand", "t-run"]
    assert tenants(get_data(nc, "startup")) == ["t-run"]
    nc.discard_changes()


def test_operational_has_config_and_state_and_config_filter(nc) -> None:  # type: ignore[no-untyped-def]
    nc.edit_config(target="running", config=tenant("t1"))
    op = get_data(nc, "operational")
    assert tenants(op) == ["t1"]
    assert op.xpath("e:esc_datamodel/e:opdata/e:system_status/e:status/text()",
                    namespaces=NS) == ["ACTIVE"]
    assert op.find(f"{{{MON}}}netconf-state") is not None
    state = get_data(nc, "operational", "<config-filter>false</config-filter>")
    assert tenants(state) == [] and state.find(f"{{{MON}}}netconf-state") is not None
    assert state.xpath("e:esc_datamodel/e:opdata/e:system_status", namespaces=NS)
    config = get_data(nc, "operational", "<config-filter>true</config-filter>")
    assert tenants(config) == ["t1"] and config.find(f"{{{MON}}}netconf-state") is None
    assert not config.xpath("//e:opdata", namespaces=NS)


def test_filters_and_max_depth(nc) -> None:  # type: ignore[no-untyped-def]
    nc.edit_config(target="running", config=tenant("t1"))
    nc.edit_config(target="running", config=tenant("t2"))
    got = get_data(nc, "running", "<xpath-filter>/esc_datamodel/tenants/tenant[name='t2']"
                                  "</xpath-filter>")
    assert tenants(got) == ["t2"]
    got = get_data(nc, "operational", f'<subtree-filter><esc_datamodel xmlns="{E}"><opdata>'
                                      "<system_status/></opdata></esc_datamodel>"
                                      "</subtree-filter>")
    assert got.xpath("//e:system_status/e:status/text()", namespaces=NS) == ["ACTIVE"]
    assert tenants(got) == []
    shallow = get_data(nc, "running", "<max-depth>1</max-depth>")
    top = shallow.find(f"{{{E}}}esc_datamodel")
    assert top is not None and len(top) == 0
    two = get_data(nc, "running", "<max-depth>3</max-depth>")
    # depth 3 reaches tenant entries, which keep their key
    assert tenants(two) == ["t1", "t2"]
    lib = get_data(nc, "operational", f'<subtree-filter><yang-library xmlns="{YL}"/>'
                                      "</subtree-filter>")
    assert lib.xpath("y:yang-library/y:content-id/text()", namespaces=NS)


@pytest.mark.parametrize(
    ("params", "tag"),
    [
        ("", None),  # placeholder: replaced below by the datastore text
        ("<origin-filter>or:intended</origin-filter>", "unknown-element"),
        ("<max-depth>0</max-depth>", "invalid-value"),
        ("<subtree-filter/><xpath-filter>/a</xpath-filter>", "bad-element"),
    ],
)
def test_refusals(nc, params: str, tag: str | None) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RPCError) as err:
        if tag is None:
            get_data(nc, "intended")
        else:
            get_data(nc, "operational", params)
    assert err.value.tag == (tag or "invalid-value")
    if tag is None:
        assert "ds:operational" in (err.value.message or "")


def test_edit_data_writes_running(nc) -> None:  # type: ignore[no-untyped-def]
    nc.dispatch(to_ele(
        f'<edit-data xmlns="{NMDA}" xmlns:ds="{DS}"><datastore>ds:running</datastore>'
        f'<config><esc_datamodel xmlns="{E}"><tenants><tenant><name>via-edit-data</name>'
        "</tenant></tenants></esc_datamodel></config></edit-data>"))
    assert tenants(get_data(nc, "running")) == ["via-edit-data"]
    with pytest.raises(RPCError) as err:
        nc.dispatch(to_ele(
            f'<edit-data xmlns="{NMDA}" xmlns:ds="{DS}"><datastore>ds:operational</datastore>'
            "<config/></edit-data>"))
    assert err.value.tag == "invalid-value"


def test_hello_announces_yang_library_1_1_with_the_content_id(nc) -> None:  # type: ignore[no-untyped-def]
    caps = [c for c in nc.server_capabilities if "yang-library:1.1" in c]
    assert len(caps) == 1 and "revision=2019-01-04" in caps[0]
    content_id = get_data(nc, "operational").xpath("y:yang-library/y:content-id/text()",
                                                   namespaces=NS)
    assert caps[0].endswith(f"content-id={content_id[0]}")
    assert any("module=ietf-netconf-nmda" in c for c in nc.server_capabilities)
