"""The server's SSH host key: generated once (Ed25519), kept in the state directory."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

log = logging.getLogger(__name__)

HOST_KEY_FILE = "ssh_host_ed25519_key"


def load_or_create_host_key(state_dir: Path) -> paramiko.PKey:
    path = Path(state_dir) / HOST_KEY_FILE
    if not path.exists():
        _generate(path)
    key = paramiko.Ed25519Key(filename=str(path))
    log.debug("host key %s (%s)", path, key.fingerprint)
    return key


def _generate(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    # Write a private temp file, then rename: a crash never leaves half a key behind,
    # and two servers starting at once agree on one key.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process won the race; keep theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    pub = paramiko.Ed25519Key(filename=str(path))
    (path.with_name(path.name + ".pub")).write_text(f"{pub.get_name()} {pub.get_base64()}\n")
    log.info("generated SSH host key %s (%s)", path, pub.fingerprint)
