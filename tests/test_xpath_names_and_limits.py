"""XPath filters as ConfD resolves them (issue 13) and their cost limit (issue 10).

Over NETCONF with ncclient against a real server: ESC's documented unprefixed
``select="esc_datamodel/opdata"``, netconf-console2's ``/esc_datamodel/...``, an
undeclared module prefix or module name as prefix, a name no module defines (an
error, not ``<data/>``), and ``//*[count(//*) > 0]`` over 1,000 tenants ending by
its limit with operation-failed / filter-limit-exceeded.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from lxml import etree
from ncclient.operations.rpc import RPCError

from conftest import connect
from escnc.app import Server
from escnc.datastore import filters
from escnc.datastore.schema import YANG_DIR
from escnc.datastore.xpath_names import index_for_directory
from escnc.datastore.xpath_rewrite import FilterBudget
from escnc.errors import RpcError

E = "http://www.cisco.com/esc/esc"
MON = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"
TENANTS = 1000


def status_of(reply: object) -> list[str]:
    data = etree.fromstring(str(reply).encode())
    return data.xpath("//e:opdata/e:system_status/e:status/text()", namespaces={"e": E})


@pytest.mark.parametrize(
    "select",
    [
        "esc_datamodel/opdata",  # ESC's documentation, relative and unprefixed
        "/esc_datamodel/opdata/system_status",  # netconf-console2 -x
        "/esc:esc_datamodel/esc:opdata/esc:system_status",  # module prefix, undeclared
        "/escnc:esc_datamodel/escnc:opdata/escnc:system_status",  # module name as prefix
        "/esc_datamodel/esc:opdata/system_status/status",  # mixed
    ],
)
def test_confd_style_names_select_data(nc, select: str) -> None:  # type: ignore[no-untyped-def]
    assert status_of(nc.get(filter=("xpath", select))) == ["ACTIVE"]


def test_declared_prefix_still_wins_and_other_modules_resolve(nc) -> None:  # type: ignore[no-untyped-def]
    # a declared prefix keeps its declared meaning (here: esc bound to the ESC namespace
    # under another name)
    got = nc.get(filter=("xpath", ({"x": E}, "/x:esc_datamodel/x:opdata/x:system_status")))
    assert status_of(got) == ["ACTIVE"]
    # 'username' exists in three modules: it matches in whichever module has it here
    data = etree.fromstring(
        str(nc.get(filter=("xpath", "/netconf-state/sessions/session/username"))).encode()
    )
    assert data.xpath("//m:session/m:username/text()", namespaces={"m": MON}) == ["admin"]


@pytest.mark.parametrize(
    ("select", "named"),
    [
        ("/esc_datamodel/opdata/no_such_node", "'no_such_node'"),
        ("/esc:esc_datamodel/esc:opdata/esc:nope", "'nope'"),
        ("/zz:esc_datamodel", "'zz'"),
    ],
)
def test_a_name_no_module_defines_is_an_error(nc, select: str, named: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RPCError) as err:
        nc.get(filter=("xpath", select))
    assert err.value.tag == "invalid-value"
    assert named in (err.value.message or "")
    assert "select" in (err.value.info or "")


def test_a_foreign_namespace_is_an_error(nc) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RPCError) as err:
        nc.get_config("running", filter=("xpath", ({"f": "urn:foreign"}, "/f:things")))
    assert err.value.tag == "invalid-value" and "urn:foreign" in (err.value.message or "")


def tenants_config(n: int) -> str:
    body = "".join(f"<tenant><name>t-{i:04d}</name></tenant>" for i in range(n))
    return (f'<config><esc_datamodel xmlns="{E}"><tenants>{body}</tenants>'
            "</esc_datamodel></config>")


@pytest.fixture
def big(server_factory: Callable[..., Server]) -> Callable[..., Server]:
    def make(**overrides: object) -> Server:
        srv = server_factory(**overrides)
        with connect(srv) as m:
            m.edit_config(target="running", config=tenants_config(TENANTS))
        return srv

    return make


def expensive(srv: Server) -> tuple[RPCError, float]:
    with connect(srv) as m:
        t0 = time.monotonic()
        with pytest.raises(RPCError) as err:
            m.get_config("running", filter=("xpath", "//*[count(//*) > 0]"))
        elapsed = time.monotonic() - t0
        # the session is still usable and ordinary filters answer at once
        t1 = time.monotonic()
        one = m.get_config(
            "running", filter=("xpath", "/esc_datamodel/tenants/tenant[name='t-0500']/name")
        )
        assert etree.fromstring(str(one).encode()).xpath(
            "//e:tenant/e:name/text()", namespaces={"e": E}) == ["t-0500"]
        assert time.monotonic() - t1 < 5
    return err.value, elapsed


def test_quadratic_filter_over_1000_tenants_ends_by_node_limit(big) -> None:  # type: ignore[no-untyped-def]
    srv = big(filter_max_seconds=0)  # only the node budget (default 1,000,000)
    err, elapsed = expensive(srv)
    assert (err.tag, err.type) == ("operation-failed", "application")
    assert getattr(err, "_app_tag", None) == "filter-limit-exceeded"
    assert "filter_max_nodes=1000000" in (err.message or "")
    assert elapsed < 60  # unbounded, it is > 4e6 node visits per outer node


def test_quadratic_filter_over_1000_tenants_ends_by_deadline(big) -> None:  # type: ignore[no-untyped-def]
    srv = big(filter_max_nodes=0, filter_max_seconds=1.0)
    err, elapsed = expensive(srv)
    assert getattr(err, "_app_tag", None) == "filter-limit-exceeded"
    assert "filter_max_seconds=1 s" in (err.message or "")
    assert 1.0 <= elapsed < 10


# ------------------------------------------------------------ the budget itself


def tree(n: int) -> etree._Element:
    root = etree.Element(f"{{{E}}}esc_datamodel")
    tenants = etree.SubElement(root, f"{{{E}}}tenants")
    for i in range(n):
        etree.SubElement(etree.SubElement(tenants, f"{{{E}}}tenant"), f"{{{E}}}name").text = str(i)
    return root


def test_budget_counts_every_node_a_long_axis_walks() -> None:
    env = filters.XPathEnv(index_for_directory(YANG_DIR), FilterBudget(0, 0))
    env.budget = FilterBudget(10**9, 0)
    top = tree(50)
    filters.xpath_nodes([top], "//tenant[following::name = '49']", {}, env=env)
    assert env.budget.visited > 50 * 50  # each tenant walks its following nodes
    env.budget = FilterBudget(500, 0)
    with pytest.raises(RpcError) as err:
        filters.xpath_nodes([top], "//tenant[following::name = '49']", {}, env=env)
    assert err.value.app_tag == "filter-limit-exceeded"
    assert env.budget.visited == 501  # stopped at the first node over the limit


def test_budget_deadline_with_an_injected_clock() -> None:
    now = [100.0]

    def clock() -> float:
        now[0] += 0.01  # every look at the clock: 10 ms later
        return now[0]

    budget = FilterBudget(0, 1.0, clock=clock)
    env = filters.XPathEnv(None, budget)
    with pytest.raises(RpcError) as err:
        filters.xpath_nodes([tree(200)], "//*[count(//*) > 0]", {"e": E}, env=env)
    assert "filter_max_seconds=1 s" in err.value.message
    assert 99 <= budget.visited <= 101  # one clock look per visit: ~100 visits


def test_rewritten_filters_select_what_plain_xpath_selects() -> None:
    top = tree(30)
    env = filters.XPathEnv(None, FilterBudget(10**9, 0))
    for select in [
        "/e:esc_datamodel/e:tenants/e:tenant[3]",
        "//e:tenant[last()]/e:name",
        "//e:name[. = '7']/ancestor::*[1]",
        "/e:esc_datamodel/e:tenants/e:tenant[e:name = '5']/following-sibling::e:tenant[2]",
        "(//e:tenant)[position() < 3]",
        "//text()[. = '9']",
        "count(//e:tenant) > 3 and //e:tenant",
    ]:
        plain = filters.xpath_nodes([top], select, {"e": E})
        budgeted = filters.xpath_nodes([top], select, {"e": E}, env=env)
        assert etree.tostring(plain) == etree.tostring(budgeted), select


def test_overlapping_selections_are_copied_once_and_fast() -> None:
    top = tree(2000)
    t0 = time.perf_counter()
    out = filters.xpath_nodes(
        [top], "//e:tenant | //e:tenant/e:name | /e:esc_datamodel/e:tenants", {"e": E}
    )
    assert time.perf_counter() - t0 < 2  # was quadratic: seconds for 1,000 entries
    tenants = out.findall(f"{{{E}}}esc_datamodel/{{{E}}}tenants/{{{E}}}tenant")
    assert len(tenants) == 2000
    assert all(len(t) == 1 for t in tenants)  # the key leaf once, not twice
    out = filters.xpath_nodes([tree(3)], "//e:tenant/e:name | //e:tenant", {"e": E})
    assert len(out.findall(f".//{{{E}}}name")) == 3
