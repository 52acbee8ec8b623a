"""``escnc serve --database postgresql://...``: the setting, and a real server whose
event log is in PostgreSQL -- a second node (another state directory) on the same
database replays what the first one logged."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from lxml import etree

from conftest import connect
from escnc.app import Server
from escnc.cli import server as cli
from escnc.ns import NC_NOTIF_BASE


def test_database_option_and_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["serve", "--database", "postgresql://escnc@db.example/escnc"])
    assert cli.build_settings(args).database == "postgresql://escnc@db.example/escnc"
    assert cli.build_settings(parser.parse_args(["serve"])).database == ""  # SQLite
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["serve", "--database", "sqlite:///x.db"])
    assert exit_.value.code == 2 and "postgresql://" in capsys.readouterr().err
    config = tmp_path / "escnc.toml"
    config.write_text('database = "mysql://db/escnc"\n')
    with pytest.raises(cli.CliError, match="postgresql://"):
        cli.build_settings(parser.parse_args(["serve", "--config", str(config)]))
    config.write_text('database = "postgresql://escnc@db/escnc"\n')
    settings = cli.build_settings(parser.parse_args(["serve", "--config", str(config)]))
    assert settings.database == "postgresql://escnc@db/escnc"


def session_starts(srv: Server, **replay: object) -> list[str]:
    """Usernames of the netconf-session-start notifications a replay returns."""
    users = []
    with connect(srv) as m:
        m.create_subscription(**replay)
        while True:
            note = m.take_notification(block=True, timeout=10)
            assert note is not None, "replay did not complete"
            root = etree.fromstring(note.notification_xml.encode())
            if root.find(".//{urn:ietf:params:xml:ns:netmod:notification}replayComplete") \
                    is not None:
                return users
            start = root.find(f".//{{{NC_NOTIF_BASE}}}netconf-session-start")
            if start is not None:
                users.append(start.findtext(f"{{{NC_NOTIF_BASE}}}username") or "")


@pytest.mark.postgresql
def test_the_event_log_lives_in_postgresql(
    pg_dsn: str, tmp_path: Path, server_factory: Callable[..., Server]
) -> None:
    first = server_factory(tmp_path / "node1", database=pg_dsn)
    with connect(first):
        pass
    assert not (tmp_path / "node1" / "events.sqlite3").exists()
    with psycopg.connect(pg_dsn) as db:
        count = db.execute("SELECT COUNT(*) FROM events").fetchone()
        version = db.execute(
            "SELECT version FROM escnc_schema WHERE component = 'events'").fetchone()
    assert count is not None and count[0] >= 1 and version == (2,)  # 2: event_keys
    second = server_factory(tmp_path / "node2", database=pg_dsn)
    # the replay sees node 1's session, then its own sessions; in sequence order
    replayed = session_starts(second, start_time="2000-01-01T00:00:00Z")
    assert len(replayed) >= 2 and set(replayed) == {"admin"}
    with psycopg.connect(pg_dsn) as db:
        seqs = [r[0] for r in db.execute("SELECT seq FROM events ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1))


def test_serve_with_an_unreachable_database_says_so(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    src = Path(__file__).resolve().parent.parent / "src"
    run = subprocess.run(
        [sys.executable, "-m", "escnc.cli.server", "serve", "--state-dir",
         str(tmp_path / "state"), "--listen", "127.0.0.1:0",
         "--database", "postgresql://escnc:pw@127.0.0.1:1/escnc"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(src)})
    assert run.returncode == 1, run.stderr
    assert "escnc: error: cannot connect to postgresql://escnc:***@127.0.0.1:1/escnc" \
        in run.stderr
    assert "pw@" not in run.stderr + run.stdout and "Traceback" not in run.stderr
