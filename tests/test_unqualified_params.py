"""Base-operation parameters written without a namespace (RFC 6241; Ansible's form).

Ansible's netconf_config sends ``<config xmlns:xc="urn:ietf:params:xml:ns:netconf:base:1.0">``:
a prefix declared, the element itself in no namespace. escnc used to answer
``unexpected namespace None in <edit-config>``.
"""

from __future__ import annotations

import pytest
from lxml import etree
from ncclient.operations.rpc import RPCError
from ncclient.xml_ import to_ele

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
E = "http://www.cisco.com/esc/esc"
FLAVOR = (f'<esc_datamodel xmlns="{E}"><flavors><flavor><name>unq</name><vcpus>1</vcpus>'
          "<memory_mb>64</memory_mb><root_disk_mb>64</root_disk_mb></flavor></flavors>"
          "</esc_datamodel>")


def flavors(nc) -> list[str]:  # type: ignore[no-untyped-def]
    data = etree.fromstring(str(nc.get_config("running")).encode())
    return data.xpath("//e:flavor/e:name/text()", namespaces={"e": E})


def test_ansible_config_form_is_accepted(nc) -> None:  # type: ignore[no-untyped-def]
    nc.edit_config(target="running",
                   config=f'<config xmlns:xc="{NC}">{FLAVOR}</config>')
    assert flavors(nc) == ["unq"]


def test_unqualified_target_and_filter(nc) -> None:  # type: ignore[no-untyped-def]
    rpc = to_ele(f'<nc:edit-config xmlns:nc="{NC}"><target><running/></target>'
                 f"<config>{FLAVOR}</config></nc:edit-config>")
    nc.dispatch(rpc)
    assert flavors(nc) == ["unq"]
    got = nc.dispatch(to_ele(
        f'<nc:get-config xmlns:nc="{NC}"><source><running/></source>'
        f'<filter type="subtree"><esc_datamodel xmlns="{E}"><flavors/></esc_datamodel>'
        "</filter></nc:get-config>"))
    assert "unq" in str(got)


def test_an_unknown_unqualified_parameter_names_itself(nc) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RPCError) as err:
        nc.dispatch(to_ele(f'<nc:edit-config xmlns:nc="{NC}"><target><running/></target>'
                           f"<bogus/><config>{FLAVOR}</config></nc:edit-config>"))
    assert err.value.tag == "unknown-element"
    assert "None" not in (err.value.message or "") and "bogus" in (err.value.message or "")
    assert flavors(nc) == []  # nothing changed
