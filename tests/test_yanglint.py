"""libyang's yanglint validates what escnc sends, against the modules escnc serves.

The modules come from escnc itself (get-schema for every schema in netconf-state);
the implemented ones are those its yang-library lists as ``module`` (import-only
modules are only on the search path, as a libyang client would load them). Then
``yanglint -t get`` / ``-t getconfig`` check full get and get-config replies and
``-t nc-notif`` checks notifications in their RFC 5277 envelope (eventTime), with
the operational data for instance-identifiers. yanglint comes from Debian's
libyang2-tools (scripts/test.sh installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from lxml import etree

from conftest import connect
from escnc.app import Server

MON = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"
YL = "urn:ietf:params:xml:ns:yang:ietf-yang-library"
E = "http://www.cisco.com/esc/esc"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"


def yanglint() -> str:
    path = shutil.which("yanglint")
    if path is None:
        pytest.fail("yanglint (Debian package libyang2-tools) is not installed")
    return path


def lint(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([yanglint(), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def data_file(reply: object, path: Path) -> Path:
    """The children of <data> of an rpc-reply, as yanglint reads data trees."""
    data = etree.fromstring(str(reply).encode()).find(f"{{{NC}}}data")
    assert data is not None
    path.write_text("".join(etree.tostring(c).decode() for c in data))
    return path


def _configure(m) -> None:  # type: ignore[no-untyped-def]
    """A tenant and a flavor, so that replies hold lists, numbers and defaults."""
    m.edit_config(target="running", config=(
        f'<config><esc_datamodel xmlns="{E}"><tenants><tenant><name>lint</name>'
        "</tenant></tenants><flavors><flavor><name>f1</name><vcpus>1</vcpus>"
        "<memory_mb>64</memory_mb><root_disk_mb>64</root_disk_mb></flavor></flavors>"
        "</esc_datamodel></config>"))


@pytest.fixture
def served(server: Server, tmp_path: Path) -> tuple[Server, Path, list[str]]:
    """escnc's modules via get-schema; the implemented ones per its yang-library."""
    mods = tmp_path / "modules"
    mods.mkdir()
    with connect(server) as m:
        st = etree.fromstring(str(m.get(filter=(
            "subtree", f'<netconf-state xmlns="{MON}"><schemas/></netconf-state>'))).encode())
        for s in st.iter(f"{{{MON}}}schema"):
            ident, ver = s.findtext(f"{{{MON}}}identifier"), s.findtext(f"{{{MON}}}version")
            (mods / f"{ident}@{ver}.yang").write_text(m.get_schema(ident, ver).data)
        lib = etree.fromstring(str(m.get(filter=(
            "subtree", f'<yang-library xmlns="{YL}"/>'))).encode())
    implemented = [
        f"{el.findtext(f'{{{YL}}}name')}@{el.findtext(f'{{{YL}}}revision')}.yang"
        for el in lib.iter(f"{{{YL}}}module")
    ]
    assert "escnc@2024-06-01.yang" in implemented
    for name in implemented:
        assert (mods / name).exists(), f"yang-library names {name}, get-schema has no such"
    return server, mods, implemented


def test_served_modules_compile_without_warnings(served) -> None:  # type: ignore[no-untyped-def]
    _, mods, implemented = served
    r = lint(["-p", str(mods), *implemented], mods)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_get_and_get_config_replies_are_valid(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    srv, mods, implemented = served
    with connect(srv) as m:
        _configure(m)
        get = data_file(m.get(), tmp_path / "get.xml")
        get_config = data_file(m.get_config("running"), tmp_path / "get-config.xml")
    assert "denied-operations" in get.read_text() or "ietf-netconf-acm@2018-02-14.yang" \
        not in implemented
    r = lint(["-p", str(mods), "-t", "get", *implemented, str(get)], mods)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    r = lint(["-p", str(mods), "-t", "getconfig", *implemented, str(get_config)], mods)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_notifications_are_valid(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    srv, mods, implemented = served
    with connect(srv) as m:
        m.create_subscription(stream_name="NETCONF")
        m.edit_config(target="running", config=(
            f'<config><esc_datamodel xmlns="{E}"><tenants><tenant><name>n1</name>'
            "</tenant></tenants></esc_datamodel></config>"))
        with connect(srv) as other:  # session-start and session-end
            other.get_config("running", filter=("subtree", f'<esc_datamodel xmlns="{E}"/>'))
        notes = []
        while len(notes) < 3:
            n = m.take_notification(timeout=15)
            assert n is not None, f"only {len(notes)} notifications arrived"
            notes.append(n.notification_xml)
        operational = data_file(m.get(), tmp_path / "operational.xml")
    names = []
    for i, xml in enumerate(notes):
        text = xml if isinstance(xml, str) else xml.decode()
        body = etree.fromstring(text.encode())[1]
        names.append(etree.QName(body).localname)
        f = tmp_path / f"notification{i}.xml"
        f.write_text(text)
        r = lint(["-p", str(mods), "-t", "nc-notif", "-O", str(operational), *implemented,
                  str(f)], mods)
        assert r.returncode == 0 and not r.stderr.strip(), (text, r.stderr)
    assert "netconf-config-change" in names and "netconf-session-start" in names


def test_get_data_of_the_operational_datastore_is_valid(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """RFC 8526 get-data ds:operational: the whole datastore, config and state (-t data)."""
    from ncclient.xml_ import to_ele

    srv, mods, implemented = served
    nmda = "urn:ietf:params:xml:ns:yang:ietf-netconf-nmda"
    with connect(srv) as m:
        reply = m.dispatch(to_ele(
            f'<get-data xmlns="{nmda}" xmlns:ds="urn:ietf:params:xml:ns:yang:ietf-datastores">'
            "<datastore>ds:operational</datastore></get-data>"))
    data = etree.fromstring(str(reply).encode()).find(f"{{{nmda}}}data")
    assert data is not None and len(data) > 3
    f = tmp_path / "operational.xml"
    f.write_text("".join(etree.tostring(c).decode() for c in data))
    r = lint(["-p", str(mods), "-t", "data", *implemented, str(f)], mods)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_cli_json_output_is_valid_rfc7951(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """escnc-cli --json prints get and get-config replies that libyang reads as JSON
    instance data (RFC 7951) and validates against escnc's modules."""
    from test_cli import cli

    srv, mods, implemented = served
    with connect(srv) as m:
        _configure(m)
    for verb, kind in (("get-config", "getconfig"), ("get", "get")):
        r = cli(srv, "--json", verb)
        assert r.returncode == 0, r.stderr
        f = tmp_path / f"{verb}.json"
        f.write_text(r.stdout)
        lint_r = lint(["-p", str(mods), "-t", kind, *implemented, str(f)], mods)
        assert lint_r.returncode == 0 and not lint_r.stderr.strip(), (kind, lint_r.stderr)
