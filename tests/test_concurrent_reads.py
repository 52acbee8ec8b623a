"""No single read stops other sessions (security issue, item 7): reads share the
datastore, so another session's get-config is answered while an expensive XPath filter
is still running, and edits wait only for the reads in progress."""

from __future__ import annotations

import threading
import time

from lxml import etree

from conftest import connect
from escnc.app import Server

E = "http://www.cisco.com/esc/esc"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
HOSTILE = "//*[count(//*) > 0]"


def _tenants(n: int) -> str:
    body = "".join(f"<tenant><name>t{i}</name></tenant>" for i in range(n))
    return f'<config xmlns="{NC}"><esc_datamodel xmlns="{E}"><tenants>{body}</tenants>' \
           "</esc_datamodel></config>"


def test_small_get_config_is_answered_while_an_expensive_filter_runs(server: Server) -> None:
    with connect(server) as admin:
        admin.edit_config(target="running", config=_tenants(1000))
    order: list[str] = []
    hostile_started = threading.Event()

    def hostile() -> None:
        with connect(server) as m:
            hostile_started.set()
            try:
                m.get_config("running", filter=("xpath", HOSTILE))
            except Exception as exc:  # ended by a filter limit: also fine
                order.append(f"hostile-error:{type(exc).__name__}")
                return
            order.append("hostile")

    th = threading.Thread(target=hostile)
    with connect(server) as other:
        th.start()
        assert hostile_started.wait(30)
        # let the hostile filter get going: the server is busy in it once the
        # reading section is held by another thread
        store = server.services.datastore  # type: ignore[union-attr]
        deadline = time.monotonic() + 30
        while store._lock.readers == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert store._lock.readers == 1, "the hostile filter never started"
        small = other.get_config(
            "running",
            filter=("subtree", f'<esc_datamodel xmlns="{E}"><tenants><tenant><name>t7</name>'
                               "</tenant></tenants></esc_datamodel>"),
        )
        order.append("small")
        names = small.data_ele.findall(f".//{{{E}}}tenant/{{{E}}}name")
        assert [n.text for n in names] == ["t7"]
    th.join(300)
    assert order[0] == "small", order  # answered before the expensive read finished
    assert len(order) == 2


def test_edit_waits_for_a_read_and_reads_see_whole_edits(server: Server) -> None:
    """An edit does not interleave with a read section: a reader sees the tree before
    or after an edit, never half of it."""
    store = server.services.datastore  # type: ignore[union-attr]
    with connect(server) as admin:
        admin.edit_config(target="running", config=_tenants(3))
        done = threading.Event()
        with store.reading("running") as tree:
            before = etree.tostring(tree)

            def edit() -> None:
                with connect(server) as m:
                    m.edit_config(target="running", config=_tenants(5))
                done.set()

            th = threading.Thread(target=edit)
            th.start()
            assert not done.wait(1.0)  # held back by this read section
            assert etree.tostring(tree) == before
        th.join(30)
        assert done.is_set()
        names = admin.get_config("running").data_ele.findall(f".//{{{E}}}tenant")
        assert len(names) == 5
