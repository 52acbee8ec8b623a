"""UserStore: hashed passwords, authorized keys, no defaults."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import paramiko
import pytest

from escnc.rpc.users import UserError, UserStore, verify_password


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = UserStore(tmp_path / "users.sqlite3")
    yield s
    s.close()


def publine(key: paramiko.PKey, comment: str = "me@host") -> str:
    return f"{key.get_name()} {key.get_base64()} {comment}"


def test_empty_store_lets_nobody_in(store: UserStore) -> None:
    assert store.list_users() == []
    for name, pw in [("admin", "admin"), ("root", ""), ("", ""), ("admin", "")]:
        assert not store.check_password(name, pw)


def test_password_hashed_never_plain(store: UserStore, tmp_path: Path) -> None:
    store.add_user("alice", password="s3cret-pw")
    assert store.check_password("alice", "s3cret-pw")
    assert not store.check_password("alice", "s3cret-PW")
    assert not store.check_password("bob", "s3cret-pw")
    raw = (tmp_path / "users.sqlite3").read_bytes()
    wal = tmp_path / "users.sqlite3-wal"
    if wal.exists():
        raw += wal.read_bytes()
    assert b"s3cret-pw" not in raw
    db = sqlite3.connect(tmp_path / "users.sqlite3")
    (stored,) = db.execute("SELECT password_hash FROM users").fetchone()
    db.close()
    assert stored.startswith("scrypt$")
    assert verify_password("s3cret-pw", stored)


def test_same_password_different_salt(store: UserStore, tmp_path: Path) -> None:
    store.add_user("a", password="same")
    store.add_user("b", password="same")
    db = sqlite3.connect(tmp_path / "users.sqlite3")
    hashes = [r[0] for r in db.execute("SELECT password_hash FROM users")]
    db.close()
    assert hashes[0] != hashes[1]


def test_password_change_and_removal_take_effect(store: UserStore) -> None:
    store.add_user("alice", password="one")
    assert store.check_password("alice", "one")  # now cached
    store.add_user("alice", password="two")
    assert not store.check_password("alice", "one")
    assert store.check_password("alice", "two")
    store.remove_user("alice")
    assert not store.check_password("alice", "two")
    with pytest.raises(UserError):
        store.remove_user("alice")


def test_change_by_another_store_instance_detected(store: UserStore, tmp_path: Path) -> None:
    store.add_user("alice", password="one")
    assert store.check_password("alice", "one")
    other = UserStore(tmp_path / "users.sqlite3")
    other.add_user("alice", password="two")
    other.close()
    assert not store.check_password("alice", "one")


def test_public_keys(store: UserStore) -> None:
    key = paramiko.RSAKey.generate(2048)
    other = paramiko.RSAKey.generate(2048)
    store.add_user("kate", public_keys=[publine(key)])
    assert store.check_key("kate", key)
    assert not store.check_key("kate", other)
    assert not store.check_key("bob", key)
    # a key-only user has no password
    assert not store.check_password("kate", "")
    (info,) = store.list_users()
    assert info.name == "kate" and not info.has_password
    assert info.public_keys == (publine(key),)


@pytest.mark.parametrize(
    "line", ["", "ssh-rsa", "ssh-rsa not-base64!", "ssh-ed25519 AAAA", "garbage garbage"]
)
def test_bad_public_keys_rejected(store: UserStore, line: str) -> None:
    with pytest.raises(UserError):
        store.add_user("x", public_keys=[line])
    assert store.list_users() == []


@pytest.mark.parametrize("name", ["", "a b", "tab\tname", "nl\n"])
def test_bad_names_rejected(store: UserStore, name: str) -> None:
    with pytest.raises(UserError):
        store.add_user(name, password="pw")


def test_persistent(tmp_path: Path) -> None:
    s = UserStore(tmp_path / "u.sqlite3")
    s.add_user("alice", password="pw")
    s.close()
    s = UserStore(tmp_path / "u.sqlite3")
    assert s.check_password("alice", "pw")
    assert [u.name for u in s.list_users()] == ["alice"]
    s.close()
