"""`escnc` and `escnc-cli` as a user runs them: real processes against a real server."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import PASSWORD, USER
from escnc.app import Server
from escnc.cli import server as server_cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("ESCNC_PASSWORD", None)
    env.update(extra)
    return env


def escnc(*args: str, stdin: str | None = None, timeout: float = 60,
          **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "escnc.cli.server", *args],
        input=stdin, capture_output=True, text=True, timeout=timeout, env=_env(**env),
    )


def cli(srv: Server, *args: str, timeout: float = 120, password: str = PASSWORD,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "escnc.cli.client", *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        env=_env(ESCNC_HOST="127.0.0.1", ESCNC_PORT=str(srv.port), ESCNC_USER=USER,
                 ESCNC_PASSWORD=password),
    )


pytestmark = pytest.mark.usefixtures("example_image")


# --- escnc: settings parsing ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:830", ("127.0.0.1", 830)),
        ("[::1]:830", ("::1", 830)),
        ("[::1]", ("::1", 830)),
        ("::1", ("::1", 830)),
        ("0.0.0.0:2022", ("0.0.0.0", 2022)),
        ("8830", ("127.0.0.1", 8830)),
        (":0", ("127.0.0.1", 0)),
        ("localhost", ("localhost", 830)),
    ],
)
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    assert server_cli.parse_listen(value) == expected


@pytest.mark.parametrize("value", ["host:port", "[::1:830", "1.2.3.4:70000"])
def test_parse_listen_rejects(value: str) -> None:
    with pytest.raises(Exception, match=r"port|IPv6|expected"):
        server_cli.parse_listen(value)


def test_config_file_maps_onto_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "escnc.toml"
    cfg.write_text(
        'state_dir = "/tmp/x-state"\nlisten = "[::1]:1830"\nlog_level = "DEBUG"\n'
        "max_sessions = 7\nidle_timeout = 5\n"
        '[vims]\ndefault = "qemu:///system"\nedge = "qemu+ssh://root@edge/system"\n'
    )
    args = server_cli.build_parser().parse_args(
        ["serve", "--config", str(cfg), "--vim", "a=test:///default", "--listen", "127.0.0.1:9"]
    )
    s = server_cli.build_settings(args)
    assert s.state_dir == Path("/tmp/x-state")
    assert (s.listen_host, s.listen_port) == ("127.0.0.1", 9)  # command line wins
    assert s.vims == {"a": "test:///default"}
    assert s.max_sessions == 7 and s.idle_timeout == 5.0 and s.log_level == "DEBUG"
    args = server_cli.build_parser().parse_args(["serve", "--config", str(cfg)])
    s = server_cli.build_settings(args)
    assert (s.listen_host, s.listen_port) == ("::1", 1830)
    assert s.vims == {"default": "qemu:///system", "edge": "qemu+ssh://root@edge/system"}


def test_config_file_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("no_such_setting = 1\n")
    r = escnc("serve", "--config", str(cfg), "--state-dir", str(tmp_path / "s"))
    assert r.returncode == 1 and "unknown setting 'no_such_setting'" in r.stderr
    cfg.write_text("max_sessions = 'many'\n")
    r = escnc("serve", "--config", str(cfg), "--state-dir", str(tmp_path / "s"))
    assert r.returncode == 1 and "max_sessions must be an integer" in r.stderr
    r = escnc("serve", "--vim", "nouri")
    assert r.returncode == 2 and "NAME=URI" in r.stderr


# --- escnc user -----------------------------------------------------------------------


def test_user_add_list_remove(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    r = escnc("user", "add", "alice", "--password-stdin", "--state-dir", state, stdin="s3cret\n")
    assert r.returncode == 0, r.stderr
    key = tmp_path / "id.pub"
    key.write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx4mVYsWxNR4pyvKCEZXWlGcV1cdVfvQ4W8y1qIvWgB bob@x\n"
    )
    r = escnc("user", "add", "bob", "--key", str(key), "--state-dir", state)
    assert r.returncode == 0, r.stderr
    r = escnc("user", "list", "--state-dir", state)
    assert r.returncode == 0
    lines = dict(line.split("\t") for line in r.stdout.strip().splitlines())
    assert lines == {"alice": "password", "bob": "key ssh-ed25519"}
    # no password source at all: a clear error, nothing created
    r = escnc("user", "add", "carol", "--state-dir", state, stdin="")
    assert r.returncode == 1 and "--password-stdin" in r.stderr
    # ESCNC_PASSWORD works too
    r = escnc("user", "add", "dave", "--state-dir", state, ESCNC_PASSWORD="pw-from-env")
    assert r.returncode == 0, r.stderr
    r = escnc("user", "remove", "alice", "--state-dir", state)
    assert r.returncode == 0
    r = escnc("user", "remove", "alice", "--state-dir", state)
    assert r.returncode == 1 and "no such user" in r.stderr
    r = escnc("user", "list", "--state-dir", state)
    assert [ln.split("\t")[0] for ln in r.stdout.splitlines()] == ["bob", "dave"]


def test_user_state_dir_from_environment(tmp_path: Path) -> None:
    r = escnc("user", "add", "eve", "--password-stdin", stdin="pw\n",
              ESCNC_STATE_DIR=str(tmp_path / "envstate"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "envstate" / "users.sqlite3").exists()


@pytest.mark.postgresql
def test_user_commands_on_the_clusters_database(tmp_path: Path, pg_dsn: str) -> None:
    """With --database the users are in the cluster's database (every node's), not in
    the state directory."""
    from escnc.rpc.users import UserStore

    state = tmp_path / "state"
    r = escnc("user", "add", "alice", "--password-stdin", "--state-dir", str(state),
              "--database", pg_dsn, stdin="s3cret\n")
    assert r.returncode == 0, r.stderr
    assert not (state / "users.sqlite3").exists()
    store = UserStore(database=pg_dsn, path=tmp_path / "unused.sqlite3")
    assert store.check_password("alice", "s3cret")
    store.close()
    r = escnc("user", "list", "--database", pg_dsn, "--state-dir", str(state))
    assert r.returncode == 0 and r.stdout.startswith("alice\tpassword"), r.stdout + r.stderr
    r = escnc("user", "remove", "alice", "--database", pg_dsn, "--state-dir", str(state))
    assert r.returncode == 0, r.stderr
    assert escnc("user", "list", "--database", pg_dsn).stdout == ""


# --- escnc serve ----------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    state = tmp_path / "served"
    assert escnc("user", "add", USER, "--password-stdin", "--state-dir", str(state),
                 stdin=PASSWORD + "\n").returncode == 0
    host = tmp_path / "host.xml"
    host.write_text("<node></node>\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "escnc.cli.server", "serve", "--state-dir", str(state),
         "--listen", "127.0.0.1:0", "--vim", f"default=test://{host}", "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"serving NETCONF on 127\.0\.0\.1:(\d+)", line)
    assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
    yield proc, int(m.group(1)), state
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


class _Port:
    def __init__(self, port: int) -> None:
        self.port = port


def test_serve_answers_and_stops_on_sigterm(
    served: tuple[subprocess.Popen[str], int, Path],
) -> None:
    proc, port, _ = served
    r = cli(_Port(port), "get", "/esc_datamodel/opdata/system_status")  # type: ignore[arg-type]
    assert r.returncode == 0, r.stderr
    assert "<status>ACTIVE</status>" in r.stdout
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_serve_port_taken_is_a_clear_error(
    served: tuple[subprocess.Popen[str], int, Path], tmp_path: Path,
) -> None:
    _, port, _ = served
    r = escnc("serve", "--state-dir", str(tmp_path / "other"), "--listen", f"127.0.0.1:{port}",
              "--vim", "default=test:///default")
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1 port {port}: address already in use" in r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root may bind privileged ports")
def test_serve_privileged_port_is_a_clear_error(tmp_path: Path) -> None:
    r = escnc("serve", "--state-dir", str(tmp_path / "s"), "--listen", "127.0.0.1:830")
    assert r.returncode == 1 and "permission denied" in r.stderr


def test_serve_ipv6_loopback(tmp_path: Path) -> None:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    proc = subprocess.Popen(
        [sys.executable, "-m", "escnc.cli.server", "serve", "--state-dir", str(tmp_path / "s6"),
         "--listen", "[::1]:0", "--vim", "default=test:///default"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert re.search(r"serving NETCONF on \[::1\]:\d+", line), line
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


# --- escnc-cli ------------------------------------------------------------------------


def _vm_name(srv: Server) -> str:
    r = cli(srv, "--json", "get", "/esc_datamodel/opdata/tenants")
    assert r.returncode == 0, r.stderr
    found: list[str] = []

    def walk(o: object) -> None:
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "vm_instance":
                    for vm in v if isinstance(v, list) else [v]:
                        found.append(vm["name"])
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(json.loads(r.stdout))
    assert found, r.stdout
    return found[0]


def test_cli_deploy_wait_operate_undeploy(server: Server) -> None:
    r = cli(server, "get-config")
    assert r.returncode == 0 and "<data" in r.stdout

    r = cli(server, "edit-config", str(EXAMPLES / "deployment.xml"), "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "<ok/>" in r.stdout
    for event in ("VM_DEPLOYED", "VM_ALIVE", "SERVICE_ALIVE"):
        assert event in r.stderr
    assert "VM progress:" in r.stderr

    r = cli(server, "get-config", "/esc_datamodel/tenants/tenant[name='admin']")
    assert r.returncode == 0 and "<name>Cirros-VNF</name>" in r.stdout
    r = cli(server, "--json", "get-config", "/esc_datamodel/flavors")
    flavors = json.loads(r.stdout)["escnc:esc_datamodel"]["flavors"]["flavor"]
    assert {f["name"] for f in flavors} == {"SolTest-Cirros-Flavor", "SolTest-Cirros-Flavor-v2"}

    vm = _vm_name(server)
    r = cli(server, "vm-action", "STOP", vm, "--wait")
    assert r.returncode == 0 and "VM_STOPPED" in r.stderr, r.stderr
    r = cli(server, "vm-action", "START", vm, "--wait")
    assert r.returncode == 0 and "VM_STARTED" in r.stderr and "VM_ALIVE" in r.stderr
    r = cli(server, "service-action", "REBOOT", "admin", "Cirros-VNF", "--wait")
    assert r.returncode == 0 and "SERVICE_REBOOTED" in r.stderr, r.stderr

    r = cli(server, "vm-backup-action", vm, "snap-1", "SNAPSHOT", "--wait")
    assert r.returncode == 0 and "VM_BACKUP_COMPLETE" in r.stderr, r.stderr
    r = cli(server, "snapshot-action", "delete", "snap-1", "--wait")
    assert r.returncode == 0 and "VM_SNAPSHOT_DELETED" in r.stderr, r.stderr

    r = cli(server, "delete-dep", "admin", "Cirros-VNF", "--wait")
    assert r.returncode == 0, r.stderr
    assert "VM_UNDEPLOYED" in r.stderr and "SERVICE_UNDEPLOYED" in r.stderr


def test_cli_rpc_error_exit_code(server: Server) -> None:
    r = cli(server, "vm-action", "STOP", "no-such-vm")
    assert r.returncode == 1
    assert "<rpc-error" in r.stdout
    r = cli(server, "--json", "vm-action", "STOP", "no-such-vm")
    assert r.returncode == 1
    (error,) = json.loads(r.stdout)["ietf-restconf:errors"]["error"]
    assert error["error-tag"] and error["error-type"] == "application", error
    bad = Path(server.settings.state_dir) / "bad.xml"
    bad.write_text('<esc_datamodel xmlns="http://www.cisco.com/esc/esc"><flavors><flavor>'
                   "<name>f</name><vcpus>many</vcpus></flavor></flavors></esc_datamodel>")
    r = cli(server, "edit-config", str(bad), "--wait")
    assert r.returncode == 1 and "<rpc-error" in r.stdout


def test_cli_failure_event_exit_code(server: Server) -> None:
    payload = (EXAMPLES / "deployment.xml").read_text().replace(
        "<src>cirros.qcow2</src>", "<src>not-there/image.qcow2</src>"
    )
    f = Path(server.settings.state_dir) / "broken.xml"
    f.write_text(payload)
    r = cli(server, "edit-config", str(f), "--wait", "--wait-timeout", "60")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "FAILURE" in r.stderr


def test_cli_auth_and_connection_errors(server: Server) -> None:
    r = cli(server, "get", password="wrong")
    assert r.returncode == 5 and "cannot connect" in r.stderr
    r = cli(_Port(1), "get")  # type: ignore[arg-type]
    assert r.returncode == 5


def test_cli_notify_prints_notifications(server: Server) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "escnc.cli.client", "notify", "--count", "3", "--for", "90"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(ESCNC_PORT=str(server.port), ESCNC_USER=USER, ESCNC_PASSWORD=PASSWORD),
    )
    try:
        assert proc.stderr is not None
        assert "subscribed" in proc.stderr.readline()
        r = cli(server, "edit-config", str(EXAMPLES / "deployment.xml"))
        assert r.returncode == 0
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert out.count("<notification") == 3
    assert "VM_DEPLOYED" in out and "<eventTime>" in out


def test_cli_help_lists_every_verb() -> None:
    r = subprocess.run([sys.executable, "-m", "escnc.cli.client", "--help"],
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 0
    for verb in ("edit-config", "get-config", "get", "delete-dep", "vm-action", "service-action",
                 "migrate-vm-action", "vm-backup-action", "snapshot-action", "notify"):
        assert verb in r.stdout


def test_examples_tour_runs_clean(tmp_path: Path) -> None:
    """examples/tour.sh: the whole five-minute tour against its own fresh server."""
    env = _env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for k in ("ESCNC_PORT", "ESCNC_HOST", "ESCNC_USER"):
        env.pop(k, None)
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(EXAMPLES / "tour.sh")], capture_output=True, text=True,
                       timeout=280, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout + r.stderr
    for event in ("SERVICE_ALIVE", "VM_STOPPED", "VM_CONFIRM_RESIZE_COMPLETE", "VM_BACKUP_COMPLETE",
                  "VM_MIGRATE_COMPLETE", "SERVICE_STOPPED", "SERVICE_UNDEPLOYED", "tour complete"):
        assert event in out, event
    assert "[subscriber] SERVICE_ALIVE" in out
    assert time.monotonic() - t0 < 280


def test_cli_public_key_login(server: Server, tmp_path: Path) -> None:
    import paramiko

    key = paramiko.RSAKey.generate(2048)
    private = tmp_path / "id_rsa"
    key.write_private_key_file(str(private))
    public = tmp_path / "id_rsa.pub"
    public.write_text(f"ssh-rsa {key.get_base64()} cli@test\n")
    state = str(server.settings.state_dir)
    r = escnc("user", "add", "keyuser", "--key", str(public), "--state-dir", state)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "escnc.cli.client", "--port", str(server.port), "--user", "keyuser",
         "--key", str(private), "get", "/esc_datamodel/opdata/system_status"],
        capture_output=True, text=True, timeout=60, env=_env(), stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr
    assert "<status>ACTIVE</status>" in r.stdout


def test_cli_notify_replays_from_start_time(server: Server) -> None:
    r = cli(server, "edit-config", str(EXAMPLES / "deployment.xml"), "--wait")
    assert r.returncode == 0, r.stderr
    # the image registration, then the deployment's three events
    r = cli(server, "--json", "notify", "--start-time", "1970-01-01T00:00:00Z", "--count", "4",
            "--for", "60")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count('"escnc:escEvent"') == 4
    assert r.stdout.count('"ietf-restconf:notification"') == 4
    for event in ("CREATE_IMAGE", "VM_DEPLOYED", "VM_ALIVE", "SERVICE_ALIVE"):
        assert f'"{event}"' in r.stdout


def test_readme_configuration_reference_loads(tmp_path: Path) -> None:
    """The TOML block in the README's configuration reference is a working --config file
    that sets every documented key (and nothing unknown)."""
    from escnc.cli.server import load_config
    from escnc.settings import Settings

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "escnc.toml"
    path.write_text(block.replace('max_sessions = 64', 'max_sessions = 7'))
    settings = load_config(path, Settings())
    assert settings.max_sessions == 7
    assert settings.vims == {"default": "test:///default"}
    assert settings.max_startups == 256 and settings.auth_failure_delay == 0.3


# --- issue 13: the smaller command-line items ------------------------------------------


def test_version_flags() -> None:
    from escnc import __version__

    r = escnc("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"escnc {__version__}"
    r = subprocess.run([sys.executable, "-m", "escnc.cli.client", "--version"],
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"escnc-cli {__version__}"


def test_cli_without_password_says_how_to_give_one(server: Server, tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "escnc.cli.client", "get"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        # no agent, no ~/.ssh keys: HOME is empty
        env={k: v for k, v in _env(ESCNC_PORT=str(server.port), ESCNC_USER=USER,
                                   HOME=str(tmp_path)).items() if k != "SSH_AUTH_SOCK"},
    )
    assert r.returncode == 5
    assert "set ESCNC_PASSWORD" in r.stderr and "--password" in r.stderr and "--key" in r.stderr


def test_wait_timeout_without_wait_is_a_usage_error(server: Server) -> None:
    r = cli(server, "delete-dep", "admin", "nope", "--wait-timeout", "5")
    assert r.returncode == 2 and "--wait-timeout needs --wait" in r.stderr


def test_user_list_does_not_create_the_state_dir(tmp_path: Path) -> None:
    missing = tmp_path / "not-there"
    r = escnc("user", "list", "--state-dir", str(missing))
    assert r.returncode == 0 and "no user database" in r.stderr
    r = escnc("user", "remove", "bob", "--state-dir", str(missing))
    assert r.returncode == 1 and "no user 'bob'" in r.stderr
    assert not missing.exists()


def test_invalid_enum_lists_the_valid_values(server: Server, tmp_path: Path) -> None:
    f = tmp_path / "bad-enum.xml"
    f.write_text(
        '<esc_datamodel xmlns="http://www.cisco.com/esc/esc"><tenants><tenant><name>t</name>'
        "<deployments><deployment><name>d</name><placement_group><name>p</name>"
        "<type>sideways</type><enforcement>strict</enforcement></placement_group>"
        "</deployment></deployments></tenant></tenants></esc_datamodel>")
    r = cli(server, "edit-config", str(f))
    assert r.returncode == 1
    assert "valid values: affinity, anti_affinity" in r.stdout


def test_cli_notify_ends_cleanly(server: Server) -> None:
    r = cli(server, "notify", "--stream", "NETCONF", "--for", "1")
    assert r.returncode == 0, r.stderr
    assert "subscribed" in r.stderr
    assert "Connection reset" not in r.stderr and "Socket exception" not in r.stderr
