"""Nothing a client sends may reach the host (issue 10, items 1-6): each hostile source
a NETCONF client can name, sent through ncclient to a real escnc server, is refused
with a clear error and leaves nothing behind.

1. VIM URIs that run programs or read files (``qemu+ext://...?command=``, ``test:///FILE``)
2. image ``src`` / day-0 ``file`` naming host files (``/etc/shadow``, symlinks, ``..``)
3. ``/dev/zero``, FIFOs and endless streams (bounded reads, fail fast)
4. escnc's own databases as a source
5. SSRF: loopback, DNS answers, redirects; error texts without the remote's words
6. size limits while streaming; unframed or truncated streams are failures

Hostile servers are on loopback (the "allowed" side of a redirect listens on this
machine's own non-loopback address: its packets never leave the host either).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from lxml import etree
from ncclient.operations import RPCError

from conftest import connect
from engine_support import config, deployment, ev_type, nc_edit, nc_events, nc_opdata
from escnc.app import Server
from escnc.ns import ESC
from escnc.vim import fetch as vim_fetch
from escnc.vim.uri_policy import UriRefused, check_vim_uri

pytestmark = pytest.mark.timeout(120)

E = f"{{{ESC}}}"
DATA = b"QFI\xfb" + bytes(range(256)) * 256  # 64 KiB + 4
SHA = hashlib.sha256(DATA).hexdigest()
SECRET = "SECRET-LINE-b9f1"


# -- helpers -------------------------------------------------------------------------


def refused(m, xml: str) -> RPCError:  # type: ignore[no-untyped-def]
    with pytest.raises(RPCError) as exc:
        nc_edit(m, xml)
    return exc.value


def running(m) -> str:  # type: ignore[no-untyped-def]
    return m.get_config(source="running").data_xml  # type: ignore[no-any-return]


def vim_xml(name: str, uri: str) -> str:
    uri = uri.replace("&", "&amp;").replace("<", "&lt;")
    return (
        f'<esc_datamodel xmlns="{ESC}"><vim_connectors><vim_connector><name>{name}</name>'
        f"<uri>{uri}</uri></vim_connector></vim_connectors></esc_datamodel>"
    )


def image_xml(name: str, src: str, checksum: str = "") -> str:
    extra = f"<checksum>{checksum}</checksum>" if checksum else ""
    return (
        f'<esc_datamodel xmlns="{ESC}"><images><image><name>{name}</name><src>{src}</src>'
        f"<disk_format>qcow2</disk_format>{extra}</image></images></esc_datamodel>"
    )


def day0_config(tmp: Path, file: str, image_src: str | None = None) -> str:
    """``config()`` whose vm_group also takes a day-0 file."""
    entry = f"<configuration><dst>/etc/app.conf</dst><file>{file}</file></configuration>"
    return config(tmp, deployment(), image_src=image_src).replace(
        "<config_data>", "<config_data>" + entry, 1
    )


def image_state(m, name: str, timeout: float = 20) -> dict[str, str]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        for img in nc_opdata(m).iter(f"{E}image"):
            if img.findtext(f"{E}name") == name:
                found = {c.tag.split("}")[1]: c.text or "" for c in img}
                if found.get("state") != "registering":
                    return found
        assert time.monotonic() < deadline, f"image {name} still registering"
        time.sleep(0.05)


def nothing_cached(srv: Server, name: str) -> None:
    images = srv.settings.state_dir / "images"
    assert not list(images.glob(f"{name}.*")), list(images.iterdir())


def failed_image(srv: Server, m, name: str, src: str, reason: str) -> str:  # type: ignore[no-untyped-def]
    """Configure image ``name`` from ``src``: its registration fails naming ``reason``,
    CREATE_IMAGE reports FAILURE, nothing lands in the cache."""
    nc_edit(m, image_xml(name, src))
    st = image_state(m, name)
    assert st["state"] == "error" and reason in st["status_message"], st
    assert "size_bytes" not in st
    while True:  # this image's CREATE_IMAGE (earlier images' may still be queued)
        ev = [e for e in nc_events(m, "CREATE_IMAGE") if ev_type(e) == "CREATE_IMAGE"][-1]
        if f"image {name} " in (ev.findtext(f"{E}status_message") or ""):
            break
    assert ev.findtext(f"{E}status") == "FAILURE"
    assert reason in (ev.findtext(f"{E}status_message") or "")
    nothing_cached(srv, name)
    return st["status_message"]


@pytest.fixture
def strict(server_factory: Callable[..., Server]) -> Server:
    """Production defaults for every source setting (import dir <state>/import, day-0
    dir <state>/day0, no loopback URLs); test VIMs stay on (the host is one)."""
    return server_factory(image_import_dirs=None, day0_dirs=None)


@pytest.fixture
def marker_script(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    marker = tmp_path / "PWNED"
    script = tmp_path / "evil.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    yield script, marker


# -- 1. VIM connector URIs -----------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("qemu+ext:///system?command={script}", "'command' is not allowed: it runs a program"),
        ("qemu+ext:///system", "transport 'ext' is not allowed"),
        ("qemu+ssh://%2Ftmp%2Fx@localhost/system?command=/bin/sh", "'command' is not allowed"),
        ("qemu+ssh://root@localhost/system?netcat={script}", "'netcat' is not allowed"),
        ("qemu+unix:///system?socket=/tmp/evil.sock", "'socket' is not allowed"),
        ("qemu+unix:///system", "transport 'unix' is not allowed"),
        ("qemu+tls://h.example/system?no_verify=1", "'no_verify' is not allowed"),
        ("qemu+ssh://h.example/system?keyfile=/etc/ssh/ssh_host_ed25519_key", "'keyfile'"),
        ("qemu:///system?mode=direct", "'mode' is not allowed"),
        ("qemu:///system?proxy=native", "'proxy' is not allowed"),
        ("qemu+ssh://-oProxyCommand=x/system", "is not a host name"),
        ("qemu+tcp://h.example/system", "unencrypted"),
        ("lxc:///", "driver 'lxc' is not allowed"),
        ("test:///{secret}", "absolute, normalised PATH.xml"),
    ],
)
def test_vim_uri_that_could_touch_the_host_is_refused_at_edit_time(
    server: Server,
    marker_script: tuple[Path, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    uri: str,
    reason: str,
) -> None:
    script, marker = marker_script
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    uri = uri.format(script=script, secret=str(secret).lstrip("/"))
    caplog.set_level(logging.DEBUG)
    with connect(server) as m:
        err = refused(m, vim_xml("evil", uri))
        assert err.tag == "invalid-value" and err.app_tag == "vim-uri-refused", err
        assert err.path is not None and err.path.strip().endswith(
            "vim_connector[esc:name='evil']/esc:uri"
        ), err.path
        assert "vim_connector evil: URI refused" in err.message and reason in err.message, err
        assert "vim_connector" not in running(m)  # nothing changed
    assert "evil" not in server.services.vims.names()  # type: ignore[union-attr]
    assert not marker.exists()
    assert SECRET not in caplog.text


def test_vim_uri_is_checked_again_before_libvirt_open(
    server: Server, marker_script: tuple[Path, Path]
) -> None:
    """Defence in depth: a configured host whose URI the policy refuses is never opened,
    whatever reached the registry (a config stored by an older escnc, a bug upstream)."""
    script, marker = marker_script
    vims = server.services.vims
    assert vims is not None
    host = vims.add_host("evil", f"qemu+ext:///system?command={script}")
    assert host.refused and not host.connected
    assert "'command' is not allowed" in host.error
    time.sleep(0.2)  # a program libvirt started would have run by now
    assert not marker.exists()
    vims.remove_host("evil")


def test_operator_vims_are_trusted_and_cannot_be_repointed(server: Server) -> None:
    with connect(server) as m:
        err = refused(m, vim_xml("default", "qemu:///system"))
        assert err.app_tag == "vim-uri-refused" and "operator's settings" in err.message, err
        default = server.settings.vims["default"]  # test:///<tmp>/hosts/host.xml: trusted
        nc_edit(m, vim_xml("default", default))  # the same URI: fine
    assert server.services.vims.get("default").connected  # type: ignore[union-attr]


def test_test_vims_only_in_test_mode(server_factory: Callable[..., Server]) -> None:
    prod = server_factory(allow_test_vims=False)
    with connect(prod) as m:
        err = refused(m, vim_xml("t", "test:///default"))
        assert err.app_tag == "vim-uri-refused" and "allow_test_vims" in err.message, err
    test_mode = server_factory()
    with connect(test_mode) as m:
        nc_edit(m, vim_xml("t", "test:///default"))
    host = test_mode.services.vims.get("t")  # type: ignore[union-attr]
    host.idle.wait(30)  # hosts connect in the background (vim/hosts.py)
    assert host.connected


def test_uri_policy_allows_the_ordinary_shapes() -> None:
    for ok in (
        "qemu:///system",
        "qemu:///session",
        "qemu+tls://host.example/system",
        "qemu+tls://10.0.0.7:16514/system",
        "qemu+ssh://escnc@edge-1.example/system",
        "qemu+ssh://[2001:db8::1]:2222/system",
        "qemu+libssh2://user@h/system",
    ):
        check_vim_uri(ok)
    for bad in ("qemu+ssh://h/system?name=qemu+ext:///x", "qemu:///embed", "qemu+tls://u@h/system"):
        with pytest.raises(UriRefused):
            check_vim_uri(bad)


# -- 2 and 4. host files and escnc's own files as image src / day-0 file -------------


def test_image_src_outside_the_import_dirs_is_refused(strict: Server, tmp_path: Path) -> None:
    secret = tmp_path / "secret.qcow2"
    secret.write_text(SECRET)
    state = strict.settings.state_dir
    imports = state / "import"
    imports.mkdir()
    (imports / "to-users").symlink_to(state / "users.sqlite3")
    (imports / "to-secret").symlink_to(secret)
    with connect(strict) as m:
        m.create_subscription(stream_name="escEvent")
        outside = "is outside the directories the operator allows"
        for name, src in (
            ("shadow", "/etc/shadow"),
            ("furl", "file:///etc/shadow"),
            ("hostkey", str(state / "hostkey")),
            ("users", str(state / "users.sqlite3")),
            ("dotdot", f"{imports}/../users.sqlite3"),
            ("secret", str(secret)),
        ):
            msg = failed_image(strict, m, name, src, outside)
            assert "image_import_dirs" in msg and str(imports) in msg
        via_link = "leads (through a symbolic link) outside"
        failed_image(strict, m, "link1", str(imports / "to-users"), via_link)
        failed_image(strict, m, "link2", str(imports / "to-secret"), via_link)
        shown = etree.tostring(nc_opdata(m)).decode()
    assert hashlib.sha256(SECRET.encode()).hexdigest() not in shown
    with connect(strict) as m:  # escnc's own files untouched: it still works
        assert m.get_config(source="running").ok


def test_import_dir_around_the_state_dir_still_guards_its_files(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    """Even an import directory that contains the state directory grants none of
    escnc's own files."""
    srv = server_factory(image_import_dirs=[tmp_path])
    state = srv.settings.state_dir
    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent")
        for name in ("users.sqlite3", "hostkey", "datastore.sqlite3"):
            if (state / name).exists():
                failed_image(srv, m, name.split(".")[0], str(state / name), "escnc's own state")


def test_image_from_the_import_dir_is_private(strict: Server) -> None:
    imports = strict.settings.state_dir / "import"
    imports.mkdir()
    (imports / "ok.qcow2").write_bytes(DATA)
    with connect(strict) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, image_xml("ok", str(imports / "ok.qcow2"), checksum=SHA))
        assert image_state(m, "ok")["state"] == "active"
    cache = strict.settings.state_dir / "images"
    for path in (cache / "ok.disk", cache / "ok.disk.meta"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.parametrize(
    ("file", "reason"),
    [
        ("/etc/shadow", "is outside the directories the operator allows"),
        ("/proc/self/environ", "is outside the directories the operator allows"),
        ("file:///etc/ssh/ssh_host_ed25519_key", "is outside the directories"),
        ("{state}/users.sqlite3", "is outside the directories"),
        ("../users.sqlite3", "is outside the directories"),
        ("/dev/zero", "is outside the directories"),
        ("ftp://h.example/x", "scheme 'ftp' is not allowed"),
        ("http://127.0.0.1:9/x", "address 127.0.0.1 is not allowed: loopback"),
        ("http://169.254.169.254/latest/meta-data/", "not allowed: the cloud metadata address"),
        ("http://localhost/x", "loopback, not allowed"),
    ],
)
def test_day0_file_outside_the_day0_dirs_is_refused_at_edit_time(
    strict: Server, tmp_path: Path, file: str, reason: str
) -> None:
    state = strict.settings.state_dir
    file = file.format(state=state)
    with connect(strict) as m:
        err = refused(m, day0_config(tmp_path, file))
        assert err.tag == "invalid-value" and err.app_tag == "day0-source-refused", err
        assert err.path is not None and err.path.strip().endswith(
            "esc:configuration[esc:dst='/etc/app.conf']/esc:file"
        ), err.path
        assert reason in err.message and "config_data /etc/app.conf" in err.message, err
        assert "tenant" not in running(m)
    assert strict.services.engine.store.vms() == []  # type: ignore[union-attr]


def test_day0_links_fifos_and_state_files_in_a_day0_dir_are_refused(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    srv = server_factory(day0_dirs=[tmp_path / "day0", tmp_path])  # tmp_path holds the state
    day0 = tmp_path / "day0"
    day0.mkdir()
    (day0 / "zero").symlink_to("/dev/zero")
    os.mkfifo(day0 / "fifo")
    (day0 / "big").write_bytes(b"x" * (srv.settings.day0_max_bytes + 1))
    state = srv.settings.state_dir
    cases = {
        str(day0 / "zero"): "leads (through a symbolic link) outside",
        "fifo": "is not a regular file",  # relative: to the first day-0 directory
        str(day0 / "big"): "over the limit of 1048576 bytes (day0_max_bytes)",
        str(state / "users.sqlite3"): "one of escnc's own state files",
    }
    with connect(srv) as m:
        for file, reason in cases.items():
            t0 = time.monotonic()
            err = refused(m, day0_config(tmp_path, file))
            assert err.app_tag == "day0-source-refused" and reason in err.message, err
            assert time.monotonic() - t0 < 5  # a FIFO is never opened (it would block)


# -- 3. /dev/zero, FIFOs and endless streams ------------------------------------------


def test_dev_zero_and_fifo_as_image_src_fail_fast(strict: Server) -> None:
    imports = strict.settings.state_dir / "import"
    imports.mkdir()
    (imports / "zero").symlink_to("/dev/zero")
    os.mkfifo(imports / "fifo")
    with connect(strict) as m:
        m.create_subscription(stream_name="escEvent")
        t0 = time.monotonic()
        failed_image(strict, m, "zero", "/dev/zero", "is outside the directories")
        failed_image(strict, m, "zlink", str(imports / "zero"), "leads (through a symbolic link)")
        failed_image(strict, m, "fifo", str(imports / "fifo"), "is not a regular file")
        assert time.monotonic() - t0 < 15


class _Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: list[str] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        path = self.path
        if path == "/img.qcow2":
            self._reply(DATA)
        elif path == "/endless":  # chunked, never ends
            self._start(chunked=True)
            chunk = b"A" * 65536
            try:
                while True:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                return
        elif path == "/chunked":  # complete chunked stream
            self._start(chunked=True)
            for i in range(0, len(DATA), 10000):
                part = DATA[i : i + 10000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/chunked-cut":  # chunks, then the connection drops: no terminator
            self._start(chunked=True)
            self.wfile.write(b"%x\r\n%s\r\n" % (1000, DATA[:1000]))
            self.close_connection = True
        elif path == "/unframed":  # neither length nor chunks: ends by closing
            self._start()
            self.wfile.write(DATA)
            self.close_connection = True
        elif path == "/huge":  # announces more than the limit
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 40))
            self.end_headers()
            self.close_connection = True
        elif path == "/secret-404":
            body = b"SECRET-BODY internal admin panel"
            self.send_response(404, "SECRET-REASON")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path.startswith("/to/"):  # redirect to the URL-encoded rest
            self.send_response(302)
            self.send_header("Location", path[4:].replace("%3A", ":"))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/day0":
            self._reply(b"#cloud-config\nhostname: from-url\n")
        else:
            self._reply(b"", 404)

    def _start(self, chunked: bool = False) -> None:
        self.send_response(200)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
        self.end_headers()

    def _reply(self, body: bytes, code: int = 200) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def _serve(address: str) -> Iterator[tuple[str, list[str]]]:
    handler = type("Handler", (_Hostile,), {"hits": []})
    httpd = ThreadingHTTPServer((address, 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://{address}:{httpd.server_address[1]}", handler.hits
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def web() -> Iterator[tuple[str, list[str]]]:
    yield from _serve("127.0.0.1")


def _own_address() -> str | None:
    """This machine's own non-loopback IPv4 address (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        addr = str(s.getsockname()[0])
    return None if addr.startswith(("127.", "169.254.", "0.")) else addr


@pytest.fixture
def own_web() -> Iterator[tuple[str, list[str]]]:
    addr = _own_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback address to serve the allowed side")
    yield from _serve(addr)


def test_endless_day0_url_fails_the_deployment_fast(
    server_factory: Callable[..., Server], web: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, _hits = web
    srv = server_factory(url_allow_loopback=True, day0_max_bytes=100_000)
    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent")
        t0 = time.monotonic()
        nc_edit(m, day0_config(tmp_path, f"{url}/endless", image_src=f"{url}/img.qcow2"))
        events = nc_events(m, "SERVICE_ALIVE")
        assert time.monotonic() - t0 < 15
        deployed = [e for e in events if ev_type(e) == "VM_DEPLOYED"][-1]
        msg = deployed.findtext(f"{E}status_message") or ""
        assert deployed.findtext(f"{E}status") == "FAILURE"
        assert "is over the limit of 100000 bytes (day0_max_bytes)" in msg, msg
        assert events[-1].findtext(f"{E}status") == "FAILURE"
        # the reconciler does not spin on it: the server answers at once
        t1 = time.monotonic()
        assert m.get_config(source="running").ok
        assert time.monotonic() - t1 < 1.0
    assert not list((srv.settings.state_dir / "configdrives").glob("*"))
    # a restart (the crash loop: the reconciler retried at once) comes up and
    # serves; whatever it retries is bounded by the same limit
    srv.stop()
    again = server_factory(
        state_dir=srv.settings.state_dir, url_allow_loopback=True, day0_max_bytes=100_000
    )
    with connect(again) as m:
        t2 = time.monotonic()
        assert m.get_config(source="running").ok
        dep = nc_opdata(m).find(f".//{E}deployment")
        assert time.monotonic() - t2 < 1.0
        assert dep is not None and dep.findtext(f"{E}state") != "SERVICE_ACTIVE_STATE"


def test_day0_from_an_allowed_url_and_the_day0_dir_work(
    server_factory: Callable[..., Server], web: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, _hits = web
    srv = server_factory(url_allow_loopback=True)
    day0 = srv.settings.state_dir / "day0"
    day0.mkdir()
    (day0 / "app.conf").write_text("name=$VM_NAME\n")
    cfg = day0_config(tmp_path, "app.conf", image_src=f"{url}/img.qcow2").replace(
        "<config_data>",
        f"<config_data><configuration><dst>/etc/u.conf</dst><file>{url}/day0</file>"
        "</configuration>",
        1,
    )
    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, cfg)
        events = nc_events(m, "SERVICE_ALIVE")
        assert events[-1].findtext(f"{E}status") == "SUCCESS", [
            (ev_type(e), e.findtext(f"{E}status_message")) for e in events
        ]


# -- 5. SSRF -------------------------------------------------------------------------


def test_loopback_url_refused_by_default_and_allowed_by_the_operator(
    server_factory: Callable[..., Server], web: tuple[str, list[str]]
) -> None:
    url, hits = web
    strict = server_factory()
    with connect(strict) as m:
        for src in (f"{url}/img.qcow2", url.replace("127.0.0.1", "localhost") + "/img.qcow2",
                    url.replace("127.0.0.1", "[::ffff:127.0.0.1]") + "/img.qcow2"):
            err = refused(m, image_xml("lo", src))
            assert err.tag == "invalid-value" and err.app_tag == "image-source-refused", err
            assert err.path is not None and err.path.strip().endswith(
                "image[esc:name='lo']/esc:src"
            )
            assert "loopback" in err.message and "url_allow_loopback" in err.message, err
    assert hits == []  # not one request reached it
    allowed = server_factory(url_allow_loopback=True)
    with connect(allowed) as m:
        nc_edit(m, image_xml("lo", f"{url}/img.qcow2"))
        assert image_state(m, "lo")["state"] == "active"
    assert hits == ["/img.qcow2"]


def test_every_resolved_address_is_checked_and_the_checked_one_is_used(
    server_factory: Callable[..., Server],
    web: tuple[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name that resolves to loopback (among others) is refused when it is fetched;
    the connection goes to the address that was checked: a DNS answer that changes
    afterwards (rebinding) is never asked for."""
    url, hits = web
    port = int(url.rsplit(":", 1)[1])
    real = socket.getaddrinfo
    lookups: list[str] = []

    def fake(host: str, *args: object, **kw: object):  # type: ignore[no-untyped-def]
        def answer(*addrs: str) -> list[tuple[object, ...]]:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addrs]

        if host == "mixed.example":
            lookups.append(host)
            return answer("10.1.2.3", "127.0.0.1")
        if host == "rebind.example":  # first answer checked; later ones go nowhere
            lookups.append(host)
            return answer("127.0.0.1" if lookups.count(host) == 1 else "10.255.255.1")
        return real(host, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(vim_fetch.socket, "getaddrinfo", fake)
    strict = server_factory()
    with connect(strict) as m:
        m.create_subscription(stream_name="escEvent")
        failed_image(
            strict,
            m,
            "dns",
            f"http://mixed.example:{port}/img.qcow2",
            "address 127.0.0.1 (of host mixed.example) is not allowed: loopback",
        )
        for spelled in ("2130706433", "0x7f000001"):  # loopback the resolver understands
            failed_image(
                strict,
                m,
                f"num{spelled[-1]}",
                f"http://{spelled}:{port}/img.qcow2",
                f"address 127.0.0.1 (of host {spelled}) is not allowed: loopback",
            )
    assert hits == [] and lookups == ["mixed.example"]
    allowed = server_factory(url_allow_loopback=True)
    with connect(allowed) as m:
        nc_edit(m, image_xml("pinned", f"http://rebind.example:{port}/img.qcow2"))
        assert image_state(m, "pinned")["state"] == "active"
    assert hits == ["/img.qcow2"] and lookups.count("rebind.example") == 1


def test_redirect_from_an_allowed_server_to_loopback_is_refused(
    strict: Server, web: tuple[str, list[str]], own_web: tuple[str, list[str]]
) -> None:
    lo_url, lo_hits = web
    own_url, own_hits = own_web
    with connect(strict) as m:
        m.create_subscription(stream_name="escEvent")
        # the allowed side works (private ranges are allowed) ...
        nc_edit(m, image_xml("direct", f"{own_url}/img.qcow2"))
        assert image_state(m, "direct")["state"] == "active"
        # ... but its redirect to loopback is checked like the first URL
        target = f"{lo_url}/img.qcow2".replace(":", "%3A")
        failed_image(
            strict, m, "hop", f"{own_url}/to/{target}", "address 127.0.0.1 is not allowed"
        )
    assert lo_hits == []
    assert own_hits[0] == "/img.qcow2" and own_hits[-1].startswith("/to/")


def test_error_texts_do_not_echo_the_remote(
    server_factory: Callable[..., Server], web: tuple[str, list[str]]
) -> None:
    url, _hits = web
    srv = server_factory(url_allow_loopback=True)
    banner = socket.socket()
    banner.bind(("127.0.0.1", 0))
    banner.listen(5)

    def ssh_like() -> None:
        while True:
            try:
                conn, _ = banner.accept()
            except OSError:
                return
            conn.sendall(b"SSH-2.0-OpenSSH_9.9 SECRET-BANNER\r\n")
            try:
                conn.recv(4096)  # the client's request, then hang up
            finally:
                conn.close()

    threading.Thread(target=ssh_like, daemon=True).start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    bport = banner.getsockname()[1]
    try:
        with connect(srv) as m:
            m.create_subscription(stream_name="escEvent")
            msg = failed_image(srv, m, "ssh", f"http://127.0.0.1:{bport}/x",
                               f"host 127.0.0.1:{bport} did not answer with valid HTTP")
            assert "SECRET" not in msg and "SSH-2.0" not in msg
            msg = failed_image(srv, m, "body", f"{url}/secret-404", "HTTP status 404 (Not Found)")
            assert "SECRET" not in msg
            failed_image(srv, m, "refused", f"http://127.0.0.1:{closed_port}/x",
                         f"connection refused by host 127.0.0.1:{closed_port}")
    finally:
        banner.close()


# -- 6. limits and framing -----------------------------------------------------------


def test_streams_over_the_limit_are_aborted(
    server_factory: Callable[..., Server], web: tuple[str, list[str]]
) -> None:
    url, _hits = web
    srv = server_factory(url_allow_loopback=True, image_max_bytes=200_000)
    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent")
        failed_image(srv, m, "huge", f"{url}/huge",
                     f"is {1 << 40} bytes, over the limit of 200000 bytes (image_max_bytes)")
        failed_image(srv, m, "endless", f"{url}/endless",
                     "aborted: more than 200000 bytes (image_max_bytes)")
        nc_edit(m, image_xml("fits", f"{url}/img.qcow2"))  # 64 KiB: within the limit
        assert image_state(m, "fits")["state"] == "active"
    assert not list((srv.settings.state_dir / "images").glob("*.part"))


def test_stream_without_length_counts_only_when_it_ends_cleanly(
    server_factory: Callable[..., Server], web: tuple[str, list[str]]
) -> None:
    url, _hits = web
    srv = server_factory(url_allow_loopback=True)
    with connect(srv) as m:
        m.create_subscription(stream_name="escEvent")
        failed_image(srv, m, "cut", f"{url}/chunked-cut",
                     "closed the connection before the end of the data")
        failed_image(srv, m, "unframed", f"{url}/unframed",
                     "neither Content-Length nor chunked encoding")
        nc_edit(m, image_xml("chunked", f"{url}/chunked"))
        st = image_state(m, "chunked")
        assert st["state"] == "active" and st["size_bytes"] == str(len(DATA)), st
        # an unframed answer whose checksum matches is complete by definition
        nc_edit(m, image_xml("summed", f"{url}/unframed", checksum=SHA))
        assert image_state(m, "summed")["state"] == "active"


# -- libvirt XML built with lxml -----------------------------------------------------


def test_image_names_with_markup_characters_make_valid_volumes(strict: Server) -> None:
    imports = strict.settings.state_dir / "import"
    imports.mkdir()
    (imports / "odd.qcow2").write_bytes(DATA)
    name = "a<b&c"
    with connect(strict) as m:
        m.create_subscription(stream_name="escEvent")
        nc_edit(m, image_xml("a&lt;b&amp;c", str(imports / "odd.qcow2")))
        assert image_state(m, name)["state"] == "active"
        ev = [e for e in nc_events(m, "CREATE_IMAGE") if ev_type(e) == "CREATE_IMAGE"][-1]
        msg = ev.findtext(f"{E}status_message") or ""
        assert ev.findtext(f"{E}status") == "SUCCESS" and "not installed" not in msg, msg
    conn = strict.services.vims.default.connection()  # type: ignore[union-attr]
    pool = conn.storagePoolLookupByName("escnc")
    vols = [v.name() for v in pool.listAllVolumes(0)]
    assert any(v.startswith("image-a<b&c.") for v in vols), vols
