"""escnc as a daemon: the systemd unit, log files (rotation, JSON lines), `escnc status`."""

from __future__ import annotations

import configparser
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PASSWORD, USER, add_user
from conftest import test_host_uri as host_uri
from escnc.app import Server
from escnc.cli import logging_setup
from escnc.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "packaging" / "escnc.service"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("ESCNC_PASSWORD", None)
    env.update(extra)
    return env


# --- systemd unit ---------------------------------------------------------------------


def unit() -> configparser.RawConfigParser:
    cp = configparser.RawConfigParser(strict=False, delimiters=("=",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(UNIT.read_text())
    return cp


def test_unit_hardening_and_state_directory() -> None:
    svc = unit()["Service"]
    expected = {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "StateDirectory": "escnc", "StateDirectoryMode": "0700",
        "Restart": "on-failure", "User": "escnc",
    }
    assert {k: svc.get(k) for k in expected} == expected
    rw = svc["ReadWritePaths"].split()
    exec_start = svc["ExecStart"].replace("\\\n", " ")
    # everything escnc writes is in a writable path: state dir and log file
    assert "--state-dir /var/lib/escnc" in exec_start and "/var/lib/escnc" in rw
    assert "--log-file /var/log/escnc/escnc.log" in exec_start and "/var/log/escnc" in rw


def test_unit_verifies_with_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (package systemd)")
    escnc = shutil.which("escnc") or str(Path(sys.executable).parent / "escnc")
    copy = tmp_path / "escnc.service"
    copy.write_text(UNIT.read_text().replace("/opt/escnc/.venv/bin/escnc", escnc))
    r = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "escnc.service" not in r.stderr, r.stderr
    r = subprocess.run([analyze, "security", "--offline=yes", str(copy)], capture_output=True,
                       text=True, timeout=60)
    assert "Overall exposure level" in r.stdout
    level = float(r.stdout.split("Overall exposure level for escnc.service:")[1].split()[0])
    assert level <= 4.0, r.stdout[-2000:]


# --- log files ------------------------------------------------------------------------


@pytest.fixture
def restore_logging():  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in saved:
        root.addHandler(h)
    root.setLevel(level)


def test_json_lines_with_tags_and_size_rotation(tmp_path: Path, restore_logging) -> None:  # type: ignore[no-untyped-def]
    log_file = tmp_path / "logs" / "escnc.log"
    settings = Settings(state_dir=tmp_path / "s", log_file=str(log_file), log_format="json",
                        log_max_bytes=2000, log_backups=2)
    logging_setup.configure(settings)
    log = logging.getLogger("escnc.engine.notify")
    log.info("event %s %s", "VM_DEPLOYED", "SUCCESS",
             extra={"tenant": "admin", "deployment": "dep", "vm": "dep_g_0_abc"})
    log.warning("no tags here")
    first = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert first[0]["message"] == "event VM_DEPLOYED SUCCESS"
    assert (first[0]["tenant"], first[0]["deployment"], first[0]["vm"]) == (
        "admin", "dep", "dep_g_0_abc")
    assert first[0]["level"] == "INFO" and first[0]["time"].endswith("Z")
    assert "tenant" not in first[1]
    for i in range(200):
        log.info("line %d %s", i, "x" * 40)
    files = sorted(p.name for p in log_file.parent.iterdir())
    assert files == ["escnc.log", "escnc.log.1", "escnc.log.2"]  # rotated, 2 backups kept
    assert all(p.stat().st_size <= 2000 for p in log_file.parent.iterdir())


def test_text_format_shows_esc_style_tags(tmp_path: Path, restore_logging) -> None:  # type: ignore[no-untyped-def]
    log_file = tmp_path / "escnc.log"
    logging_setup.configure(Settings(state_dir=tmp_path / "s", log_file=str(log_file)))
    logging.getLogger("escnc.engine").info("deployed", extra={"tenant": "t", "deployment": "d"})
    assert "escnc.engine: [tenant=t deployment=d] deployed" in log_file.read_text()


def test_serve_writes_its_log_file_as_json(tmp_path: Path) -> None:
    state = tmp_path / "state"
    add_user(state)
    log_file = tmp_path / "log" / "escnc.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "escnc.cli.server", "serve", "--state-dir", str(state),
         "--listen", "127.0.0.1:0", "--vim", f"default={host_uri(tmp_path / 'hosts')}",
         "--log-file", str(log_file), "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )
    try:
        assert proc.stdout is not None
        assert "serving NETCONF" in proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any("listening" in r["message"] for r in records)
    assert any(r["message"].startswith("signal") for r in records)


def test_bad_log_format_is_a_usage_error(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "escnc.cli.server", "serve", "--log-format", "xml"],
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 2 and "invalid choice" in r.stderr


# --- escnc status ---------------------------------------------------------------------


def status(srv: Server, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "escnc.cli.server", "status", "--port", str(srv.port),
         "--user", USER],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env=_env(ESCNC_PASSWORD=password),
    )


def test_status_prints_version_uptime_hosts_sessions(server: Server) -> None:
    from escnc import __version__

    r = status(server)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"escnc {__version__}: ACTIVE") and ", up " in lines[0]
    assert "hosts: 1" in lines and any("default  connected  test://" in x for x in lines)
    assert "sessions: 1" in lines  # its own
    assert any(f"  {USER} from 127.0.0.1 since " in x for x in lines)


def test_status_cannot_log_in(server: Server) -> None:
    r = status(server, password="wrong")
    assert r.returncode == 5 and "cannot connect" in r.stderr
