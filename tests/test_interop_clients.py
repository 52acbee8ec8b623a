"""Two independent NETCONF clients besides ncclient against the real server:
netconf-console2 (command line, unprefixed and module-prefixed XPath) and
scrapli-netconf (library: its paramiko transport and its default system transport,
which drives the OpenSSH client with a pty)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lxml import etree

from conftest import PASSWORD, USER
from escnc.app import Server

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ESC = "http://www.cisco.com/esc/esc"

FLAVOR = f"""<esc_datamodel xmlns="{ESC}"><flavors><flavor><name>interop-flavor</name>
<vcpus>2</vcpus><memory_mb>512</memory_mb><root_disk_mb>1024</root_disk_mb></flavor></flavors>
</esc_datamodel>"""


pytestmark = pytest.mark.usefixtures("example_image")


# --- netconf-console2 -----------------------------------------------------------------


def ncc(srv: Server, *args: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("netconf_console")
    return subprocess.run(
        [sys.executable, "-c", "import sys; from netconf_console.ncc import main; sys.exit(main())",
         "--host", "127.0.0.1", "--port", str(srv.port), "-u", USER, "-p", PASSWORD, *args],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )


def test_netconf_console2_hello_get_config_edit_config(server: Server, tmp_path: Path) -> None:
    r = ncc(server, "--hello")
    assert r.returncode == 0, r.stderr
    assert "urn:ietf:params:netconf:base:1.1" in r.stdout
    assert "http://www.cisco.com/esc/esc?module=escnc" in r.stdout

    f = tmp_path / "flavor.xml"
    f.write_text(FLAVOR)
    r = ncc(server, "--edit-config", str(f))
    assert r.returncode == 0 and "<ok" in r.stdout, r.stdout + r.stderr

    r = ncc(server, "--get-config", "--ns", f"esc={ESC}", "-x", "/esc:esc_datamodel/esc:flavors")
    assert r.returncode == 0, r.stderr
    data = etree.fromstring(r.stdout.encode())
    names = data.xpath("//e:flavor/e:name/text()", namespaces={"e": ESC})
    assert names == ["interop-flavor"]

    r = ncc(server, "--get-config")
    assert r.returncode == 0 and "interop-flavor" in r.stdout


def test_netconf_console2_custom_rpc_and_deployment(server: Server) -> None:
    r = ncc(server, "--edit-config", str(EXAMPLES / "deployment.xml"))
    assert r.returncode == 0 and "<ok" in r.stdout, r.stdout + r.stderr
    deadline = time.monotonic() + 60
    while "SERVICE_ACTIVE_STATE" not in ncc(server, "--get").stdout:
        assert time.monotonic() < deadline, "deployment never became active"
        time.sleep(0.2)
    # the example's serviceAction files work as written
    r = ncc(server, "--rpc", str(EXAMPLES / "rpc" / "service-stop.xml"))
    assert r.returncode == 0 and "<ok" in r.stdout, r.stdout + r.stderr
    r = ncc(server, "--rpc", str(EXAMPLES / "rpc" / "service-start.xml"))
    assert r.returncode == 0 and "<ok" in r.stdout, r.stdout + r.stderr
    # an rpc-error comes back as such
    r = ncc(server, "--rpc", str(EXAMPLES / "rpc" / "vm-action.xml"))
    assert "rpc-error" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize(
    "xpath",
    [
        "/esc_datamodel/opdata/system_status",  # unprefixed, as ConfD resolves it
        "/escnc:esc_datamodel/escnc:opdata/escnc:system_status",  # module name as prefix
        "/esc:esc_datamodel/esc:opdata/esc:system_status",  # module prefix, undeclared
    ],
)
def test_netconf_console2_xpath_names(server: Server, xpath: str) -> None:
    r = ncc(server, "--get", "-x", xpath)
    assert r.returncode == 0, r.stderr
    data = etree.fromstring(r.stdout.encode())
    assert data.xpath("//e:system_status/e:status/text()", namespaces={"e": ESC}) == ["ACTIVE"]


def test_netconf_console2_unknown_name_is_an_error(server: Server) -> None:
    r = ncc(server, "--get", "-x", "/esc_datamodel/opdata/no_such_thing")
    assert "invalid-value" in r.stdout and "no_such_thing" in r.stdout, r.stdout + r.stderr


def test_netconf_console2_get_schema(server: Server) -> None:
    r = ncc(server, "--get-schema", "escnc")
    assert r.returncode == 0, r.stderr
    assert "module escnc" in r.stdout


# --- scrapli-netconf ------------------------------------------------------------------


def scrapli_conn(srv: Server, transport: str = "paramiko"):  # type: ignore[no-untyped-def]
    driver = pytest.importorskip("scrapli_netconf.driver")
    options: dict[str, object] = {}
    if transport == "system":
        # the OpenSSH client; the test server's host key is new each time
        options = {"open_cmd": ["-o", "UserKnownHostsFile=/dev/null"]}
    conn = driver.NetconfDriver(
        host="127.0.0.1",
        port=srv.port,
        auth_username=USER,
        auth_password=PASSWORD,
        auth_strict_key=False,
        transport=transport,
        ssh_config_file=False,
        transport_options=options,
        timeout_socket=20,
        timeout_transport=30,
        timeout_ops=30,
    )
    conn.open()
    return conn


def test_scrapli_get_config_edit_config_rpc(server: Server) -> None:
    conn = scrapli_conn(server)
    try:
        assert "urn:ietf:params:netconf:base:1.1" in conn.server_capabilities
        r = conn.edit_config(config=f"<config>{FLAVOR}</config>", target="running")
        assert not r.failed, r.result
        r = conn.get_config(
            source="running",
            filter_=f'<esc_datamodel xmlns="{ESC}"><flavors/></esc_datamodel>',
            filter_type="subtree",
        )
        assert not r.failed, r.result
        assert "interop-flavor" in r.result

        deployment = (EXAMPLES / "deployment.xml").read_text()
        deployment = deployment[deployment.index("<esc_datamodel"):]
        r = conn.edit_config(config=f"<config>{deployment}</config>", target="running")
        assert not r.failed, r.result

        state_filter = (
            f'<esc_datamodel xmlns="{ESC}"><opdata><tenants><tenant><name>admin</name>'
            "<deployments><deployment><name>Cirros-VNF</name><state/></deployment>"
            "</deployments></tenant></tenants></opdata></esc_datamodel>"
        )
        deadline = time.monotonic() + 60
        while "SERVICE_ACTIVE_STATE" not in conn.get(filter_=state_filter).result:
            assert time.monotonic() < deadline, "deployment never became active"
            time.sleep(0.2)
        rpc_text = (EXAMPLES / "rpc" / "service-stop.xml").read_text().split("-->", 1)[1]
        r = conn.rpc(filter_=rpc_text)
        assert not r.failed, r.result
        assert "<ok/>" in r.result

        r = conn.get(filter_=f'<esc_datamodel xmlns="{ESC}"><opdata><system_status/></opdata>'
                             "</esc_datamodel>", filter_type="subtree")
        assert not r.failed and "ACTIVE" in r.result, r.result

        r = conn.rpc(filter_=f'<vmAction xmlns="{ESC}"><actionType>STOP</actionType>'
                             "<vmName>nope</vmName></vmAction>")
        assert r.failed and "rpc-error" in r.result
    finally:
        conn.close()


def test_scrapli_system_transport_with_pty(server: Server) -> None:
    """scrapli's default transport: ``ssh -tt`` (a pty request) then the subsystem."""
    if shutil.which("ssh") is None:
        pytest.fail("the OpenSSH client (package openssh-client) is not installed")
    conn = scrapli_conn(server, transport="system")
    try:
        assert "urn:ietf:params:netconf:base:1.1" in conn.server_capabilities
        r = conn.edit_config(config=f"<config>{FLAVOR}</config>", target="running")
        assert not r.failed, r.result
        r = conn.get_config(source="running")
        assert not r.failed and "interop-flavor" in r.result, r.result
        # a reply far beyond a terminal's 4 KiB line, byte for byte (chunked framing)
        r = conn.get(filter_='<netconf-state xmlns="urn:ietf:params:xml:ns:yang:'
                             'ietf-netconf-monitoring"/>', filter_type="subtree")
        assert not r.failed, r.result
        assert len(r.result) > 4096 and r.result.count("<capability>") > 10
        reply = etree.fromstring(r.result.encode())
        assert reply.tag.endswith("rpc-reply")
        r = conn.rpc(filter_=f'<vmAction xmlns="{ESC}"><actionType>STOP</actionType>'
                             "<vmName>nope</vmName></vmAction>")
        assert r.failed and "rpc-error" in r.result
    finally:
        conn.close()
