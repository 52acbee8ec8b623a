"""Fair sessions and private state (security issue): one user cannot take every session
slot, silent connections from one address do not lock others out, guessing passwords
slows down per address, a removed user's sessions end, the state directory is private
and owned by one server."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

from conftest import PASSWORD, USER, add_user, make_settings
from escnc.app import Server
from escnc.netconf.admission import AuthPenalty, StartupGate, session_refusal
from escnc.rpc.users import UserStore
from escnc.statedir import StateDirBusy
from netconf_helpers import TEST_NS, MiniServer, RawClient, wait_for

ECHO = f'<echo xmlns="{TEST_NS}"><a>1</a></echo>'
BOB, BOB_PW = "bob", "bob-pw"


def _session(port: int, user: str = USER, password: str = PASSWORD, **kw: object) -> RawClient:
    c = RawClient(port, user=user, password=password, **kw)  # type: ignore[arg-type]
    c.hello()
    return c


def _refused(port: int, user: str, password: str) -> bool:
    """True when login works but the session channel is refused (no slot)."""
    try:
        c = _session(port, user, password)
    except (paramiko.ChannelException, paramiko.SSHException, EOFError, OSError):
        return True
    c.close()
    return False


# --- session slots -----------------------------------------------------------------------


def test_one_user_cannot_take_every_session(tmp_path: Path) -> None:
    state = tmp_path / "s"
    add_user(state, BOB, BOB_PW)
    srv = MiniServer(state, max_sessions=6, max_sessions_per_user=3, reserved_sessions=2)
    try:
        bobs = [_session(srv.port, BOB, BOB_PW) for _ in range(3)]
        assert _refused(srv.port, BOB, BOB_PW)  # per-user limit
        # the recovery user still gets in, up to every slot
        admins = [_session(srv.port) for _ in range(3)]
        assert admins[-1].rpc(ECHO, 1).get("message-id") == "1"
        assert _refused(srv.port, USER, PASSWORD)  # 6 of 6 now
        for c in bobs + admins:
            c.close()
    finally:
        srv.stop()


def test_last_slots_are_kept_for_the_recovery_user(tmp_path: Path) -> None:
    state = tmp_path / "s"
    add_user(state, BOB, BOB_PW)
    add_user(state, "carol", "carol-pw")
    srv = MiniServer(state, max_sessions=4, max_sessions_per_user=0, reserved_sessions=2)
    try:
        held = [_session(srv.port, BOB, BOB_PW), _session(srv.port, "carol", "carol-pw")]
        assert _refused(srv.port, BOB, BOB_PW)
        assert _refused(srv.port, "carol", "carol-pw")
        admin = _session(srv.port)
        assert admin.rpc(ECHO, 2).get("message-id") == "2"
        for c in [*held, admin]:
            c.close()
    finally:
        srv.stop()


def test_session_refusal_rules() -> None:
    kw = {"max_sessions": 10, "per_user": 3, "reserved": 2, "recovery_user": "admin"}
    assert session_refusal("bob", {}, **kw) is None  # type: ignore[arg-type]
    assert "max-sessions-per-user" in str(session_refusal("bob", {"bob": 3}, **kw))  # type: ignore[arg-type]
    assert session_refusal("admin", {"admin": 9}, **kw) is None  # type: ignore[arg-type]
    assert "reserved" in str(session_refusal("bob", {"x": 8}, **kw))  # type: ignore[arg-type]
    assert "max-sessions" in str(session_refusal("admin", {"x": 10}, **kw))  # type: ignore[arg-type]


def test_removed_user_sessions_end_at_once(tmp_path: Path) -> None:
    state = tmp_path / "s"
    add_user(state, BOB, BOB_PW)
    srv = MiniServer(state)
    try:
        bob = _session(srv.port, BOB, BOB_PW)
        admin = _session(srv.port)
        assert bob.rpc(ECHO, 1).get("message-id") == "1"
        # removed by another process's store, as `escnc user remove` does
        other = UserStore(state / "users.sqlite3")
        other.remove_user(BOB)
        other.close()
        started = time.monotonic()
        assert wait_for(lambda: len(srv.sessions) == 1, timeout=5)
        assert time.monotonic() - started < 3
        with pytest.raises((EOFError, OSError, paramiko.SSHException)):
            bob.rpc(ECHO, 2)
        assert admin.rpc(ECHO, 3).get("message-id") == "3"
        admin.close()
    finally:
        srv.stop()


# --- unauthenticated connections ------------------------------------------------------


def test_silent_connections_from_one_address_do_not_lock_out_others(tmp_path: Path) -> None:
    """The issue's case: connections that never send a banner, from one address."""
    srv = MiniServer(tmp_path / "s", max_startups_per_source=10)
    try:
        mute = []
        for _ in range(12):
            s = socket.create_connection(("127.0.0.1", srv.port), 10,
                                         source_address=("127.0.0.2", 0))
            mute.append(s)
        assert wait_for(lambda: srv.netconf.startups == 10)  # per-source cap
        time.sleep(0.2)
        assert srv.netconf.startups == 10
        # a user from another address logs in at once
        started = time.monotonic()
        c = _session(srv.port)
        assert c.rpc(ECHO, 1).get("message-id") == "1"
        assert time.monotonic() - started < 10, "login waited behind the silent connections"
        c.close()
        for s in mute:
            s.close()
    finally:
        srv.stop()


def test_random_early_drop_like_openssh_maxstartups() -> None:
    rolls = iter([0.9, 0.1, 0.5, 0.99])
    gate = StartupGate(begin=2, rate=30, full=4, per_source=0, rand=lambda: next(rolls))
    assert gate.refusal("a") is None and gate.refusal("b") is None  # below begin
    assert gate.refusal("c") is None  # 30 % drop, rolled 0.9
    # at 3 of 4: p = 30 % + 70 % * 1/2 = 65 %: 0.1 drops, 0.5 drops
    assert "random early drop" in str(gate.refusal("d"))
    assert "random early drop" in str(gate.refusal("d"))
    assert gate.refusal("d") is None  # 0.99 passes
    assert "max-startups" in str(gate.refusal("e"))  # full
    gate.release("a")
    assert gate.total == 3


# --- failed logins ----------------------------------------------------------------------


def test_failure_delay_doubles_per_address_and_decays() -> None:
    now = [0.0]
    p = AuthPenalty(0.5, 4.0, window=600, clock=lambda: now[0])
    assert p.delay("h") == 0.5
    for _ in range(2):
        p.failed("h")
    assert p.delay("h") == 2.0
    assert p.delay("other") == 0.5
    for _ in range(5):
        p.failed("h")
    assert p.delay("h") == 4.0  # capped
    now[0] = 601.0
    assert p.delay("h") == 0.5  # forgotten after the window


def test_wrong_passwords_slow_down_across_connections(tmp_path: Path) -> None:
    srv = MiniServer(tmp_path / "s", auth_failure_delay=0.1, auth_failure_delay_max=5.0,
                     max_auth_attempts=1)
    try:
        took = []
        for _ in range(4):
            t = paramiko.Transport(("127.0.0.1", srv.port))
            t.start_client(timeout=10)
            started = time.monotonic()
            with pytest.raises(paramiko.AuthenticationException):
                t.auth_password(USER, "wrong")
            took.append(time.monotonic() - started)
            t.close()
        # 0.1, 0.2, 0.4, 0.8 s: each new connection waits longer (lower bounds only)
        assert took[3] >= 0.8 and took[2] >= 0.4
        # the right password is never delayed
        c = _session(srv.port)
        assert c.rpc(ECHO, 1).get("message-id") == "1"
        c.close()
    finally:
        srv.stop()


# --- the state directory --------------------------------------------------------------


def test_state_dir_is_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    add_user(state)
    os.chmod(state, 0o755)
    (state / "users.sqlite3").chmod(0o644)
    srv = Server(make_settings(state))
    srv.start()
    try:
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        files = [p for p in state.iterdir() if p.is_file()]
        assert {p.name for p in files} >= {"datastore.sqlite3", "events.sqlite3",
                                           "users.sqlite3", "escnc.lock"}
        for p in files:
            if p.name.endswith(".pub"):
                continue
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    finally:
        srv.stop()


def test_second_server_on_one_state_dir_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    add_user(state)
    first = Server(make_settings(state))
    first.start()
    try:
        with pytest.raises(StateDirBusy, match=f"PID {os.getpid()}"):
            Server(make_settings(state)).start()
        # the same from the command line: a clear message and a non-zero exit
        r = subprocess.run(
            [sys.executable, "-m", "escnc.cli.server", "serve", "--state-dir", str(state),
             "--listen", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )
        assert r.returncode != 0
        assert "in use by another escnc server" in r.stderr
        assert f"PID {os.getpid()}" in r.stderr
    finally:
        first.stop()
    # once the first is gone the directory is free again
    again = Server(make_settings(state))
    again.start()
    again.stop()


def test_a_burst_of_32_connections_is_served_with_the_defaults(tmp_path: Path) -> None:
    """Orchestrators reconnecting at once: the default limits let 32 in together."""
    import threading

    srv = MiniServer(tmp_path / "s")
    try:
        results: list[object] = []
        gate = threading.Barrier(32)

        def one() -> None:
            gate.wait()
            try:
                c = _session(srv.port)
                results.append(c.rpc(ECHO, 1).get("message-id"))
                c.close()
            except Exception as exc:  # recorded and asserted below
                results.append(exc)

        threads = [threading.Thread(target=one) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert results == ["1"] * 32
    finally:
        srv.stop()
