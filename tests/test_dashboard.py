"""The live dashboard at ``/`` in a real browser: Debian's headless Chromium driven by
selenium loads it with HTTP Basic credentials; a deploy made over NETCONF appears on the
page with its VM reaching VM_ALIVE through the live event stream (no reload); a
screenshot is kept. Without login 401; a NACM-restricted user sees only its tenant."""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import Iterator
from html import escape
from pathlib import Path

import httpx
import pytest
from lxml import etree

from conftest import PASSWORD, USER, add_user, connect
from escnc.app import Server
from escnc.ns import ESC
from http_helpers import client

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("example_image")]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "deployment.xml"
NACM_EXAMPLE = ROOT / "examples" / "nacm-tenants.xml"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 60.0  # upper bound for what the page must show (a loaded machine); not a timing


@pytest.fixture
def server(server_factory) -> Server:  # type: ignore[no-untyped-def]
    return server_factory(http_listen="127.0.0.1:0")


def _missing(what: str) -> None:
    # in CI a dashboard test that cannot run is a failure, not a skip
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} missing in CI (scripts/test.sh installs it)")
    pytest.skip(f"{what} not installed")


@pytest.fixture
def browser(server: Server) -> Iterator[object]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium")
    binary = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    driver_path = shutil.which("chromedriver") or (
        CHROMEDRIVER if Path(CHROMEDRIVER).exists() else None)
    if binary is None or driver_path is None:
        _missing("chromium / chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        driver.set_page_load_timeout(60)
        # HTTP Basic on every request of the page (document, fetch, EventSource)
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                               {"headers": {"Authorization": f"Basic {token}"}})
        yield driver
    finally:
        driver.quit()


def artifact_dir(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


def deploy(srv: Server, xml: str) -> None:
    with connect(srv) as m:
        m.edit_config(target="running", config=f'<config xmlns="{NC}">{xml}</config>')


def example_body() -> str:
    root = etree.fromstring(EXAMPLE.read_bytes())
    return etree.tostring(root).decode()


def test_dashboard_live_in_chromium(server: Server, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = server.http_ports["http"]
    browser.get(f"http://127.0.0.1:{port}/")
    assert "escnc dashboard" in browser.title
    wait = WebDriverWait(browser, WAIT, poll_frequency=0.2)
    wait.until(lambda d: d.find_element(By.ID, "live").text == "live")
    assert "no deployment visible" in browser.find_element(By.ID, "state").text
    hosts = browser.find_elements(By.CSS_SELECTOR, "article.host meter")
    assert len(hosts) == 2  # vCPUs and memory of the one test host
    browser.execute_script("window.escncNotReloaded = true;")

    deploy(server, example_body())

    vm_state = "tr[data-vm] td.vm-state"
    wait.until(lambda d: any(c.text == "VM_ALIVE_STATE"
                             for c in d.find_elements(By.CSS_SELECTOR, vm_state)))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'li.event[data-type="SERVICE_ALIVE"]'))
    dep = browser.find_element(By.CSS_SELECTOR, 'article[data-deployment="admin/Cirros-VNF"]')
    assert "SERVICE_ACTIVE_STATE" in dep.find_element(By.CSS_SELECTOR, ".dep-state").text
    row = dep.find_element(By.CSS_SELECTOR, "tr[data-vm]")
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[0] == "SolTest-Cirros-VM-Group" and cells[2] == "VM_ALIVE_STATE"
    assert cells[3] == "default" and "10.91.0.10" in cells[5]
    types = [li.get_attribute("data-type")
             for li in browser.find_elements(By.CSS_SELECTOR, "li.event")]
    assert {"VM_DEPLOYED", "VM_ALIVE", "SERVICE_ALIVE"} <= set(types)
    assert browser.execute_script("return window.escncNotReloaded === true;")
    # the stream carried it: no script error, nothing blocked by the CSP
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == [], errors

    out = artifact_dir(tmp_path)
    out.mkdir()
    png = out / "dashboard.png"
    assert browser.save_screenshot(str(png))
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("ESCNC_TEST_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(keep) / png.name)


def _tenant_a_deployment() -> str:
    """examples/deployment.xml's deployment again in tenant-a (its own name, address)."""
    text = EXAMPLE.read_text()
    start, end = text.index("<tenants>"), text.index("</tenants>") + len("</tenants>")
    tenants = text[start:end]
    other = (tenants.replace("<name>admin</name>", "<name>tenant-a</name>", 1)
             .replace("<name>Cirros-VNF</name>", "<name>A-VNF</name>")
             .replace("10.91.0.10", "10.91.0.20"))
    both = tenants.replace("</tenants>", other[len("<tenants>"):])
    return etree.tostring(etree.fromstring((text[:start] + both + text[end:]).encode())).decode()


def _sse_until(http: httpx.Client, url: str, want: str,
               headers: dict[str, str] | None = None) -> list[dict[str, str]]:
    """The dashboard stream's events up to the first of type ``want`` (bounded)."""
    seen: list[dict[str, str]] = []
    deadline = time.monotonic() + WAIT
    with http.stream("GET", url, timeout=WAIT, headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        last_id = ""
        for line in r.iter_lines():
            if line.startswith("id: "):
                last_id = line[4:]
            elif line.startswith("data: "):
                seen.append({**json.loads(line[6:]), "id": last_id})
                if seen[-1]["type"] == want:
                    return seen
            assert time.monotonic() < deadline, f"no {want} in {seen}"
    raise AssertionError(f"stream ended before {want}: {seen}")


def test_login_csp_and_nacm_restricted_view(server: Server, tmp_path: Path) -> None:
    port = server.http_ports["http"]
    base = f"http://127.0.0.1:{port}"
    for path in ("/", "/dashboard/state", "/dashboard/events"):
        r = httpx.get(base + path, timeout=30)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        assert "Cirros" not in r.text
    assert httpx.get(base + "/", auth=(USER, "wrong"), timeout=30).status_code == 401

    add_user(server.settings.state_dir, "alice", "alice-pw")
    deploy(server, _tenant_a_deployment())
    with client(port) as http:
        page = http.get("/")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "<script>" not in page.text and " on" + "click" not in page.text
        assert http.get("/dashboard/static/dashboard.js").status_code == 200
        # both deployments' events (replay from the start), each VM alive at the end
        events = _sse_until(http, "/dashboard/events?after=0&tenant=tenant-a", "SERVICE_ALIVE")
        assert {e["tenant"] for e in events} == {"tenant-a"}
        admin = _sse_until(http, "/dashboard/events?after=0&tenant=admin", "SERVICE_ALIVE")
        # a reconnecting EventSource sends the last id back: the stream goes on after it
        again = _sse_until(http, "/dashboard/events?after=0&tenant=admin", "SERVICE_ALIVE",
                           {"Last-Event-ID": admin[0]["id"]})
        assert again == admin[1:] and again
        assert http.get("/dashboard/events?after=x").status_code == 400
        state = http.get("/dashboard/state").text
        assert 'data-deployment="admin/Cirros-VNF"' in state
        assert 'data-deployment="tenant-a/A-VNF"' in state
        assert "reservation(s) held" not in state
        with connect(server) as m:  # a pool reservation shows as reserved capacity
            m.dispatch(etree.fromstring(
                f'<createComputeReservation xmlns="{ESC}"><zoneId>default</zoneId>'
                "<computePoolReservation><numCpuCores>3</numCpuCores><numVcInstances>1"
                "</numVcInstances><virtualMemSize>700</virtualMemSize>"
                "</computePoolReservation></createComputeReservation>"))
        state = http.get("/dashboard/state").text
        assert "1 reservation(s) held" in state
        assert "3 / 16 (18%)" in state and "700 / 3072 MiB (22%)" in state
        only_a = http.get("/dashboard/state?tenant=tenant-a").text
        assert "A-VNF" in only_a and "Cirros-VNF" not in only_a
        # names from the datastore and the query are escaped
        odd = "<i>\"&'x"
        deploy(server, f'<esc_datamodel xmlns="{ESC}"><tenants><tenant><name>'
                       f"{escape(odd)}</name></tenant></tenants></esc_datamodel>")
        page = http.get("/", params={"tenant": odd})
        assert escape(odd) in page.text and odd not in page.text
        assert f'<option value="{escape(odd)}" selected>' in page.text

    with connect(server) as m:  # the worked example of docs/access-control.md
        m.edit_config(target="running",
                      config=f'<config xmlns="{NC}">{NACM_EXAMPLE.read_text()}</config>')
    with client(port, "alice", "alice-pw") as alice:
        page = alice.get("/")
        assert page.status_code == 200
        assert 'data-deployment="tenant-a/A-VNF"' in page.text
        assert "Cirros-VNF" not in page.text and '<option value="admin"' not in page.text
        # NACM filters the stream too: admin's events are not replayed to alice
        events = _sse_until(alice, "/dashboard/events?after=0", "SERVICE_ALIVE")
        tenants = {e["tenant"] for e in events}
        assert "tenant-a" in tenants and "admin" not in tenants, events
