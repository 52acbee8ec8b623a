"""The state directory: private permissions and one server at a time.

Everything escnc keeps (datastore, events, users, host key, engine state) lives in one
directory. It is made 0700 and every file directly in it 0600, so other local users
can read neither credentials nor image URLs with passwords (SQLite's -wal and -shm
files take the permissions of their database file). An exclusive ``flock`` on
``escnc.lock`` stops a second server from sharing the directory: two servers on one
datastore corrupt each other's history and see each other's events.

Exception: a QEMU run by a local libvirtd (``qemu:///system``) opens VM disks in
``pools/`` as its own user, so it must be able to traverse the directory; then the
directory is 0711 (others may pass through, never list or read) and the files stay 0600.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from pathlib import Path

from escnc.errors import EscncError

log = logging.getLogger(__name__)

LOCK_FILE = "escnc.lock"
PRIVATE_DIR = 0o700
TRAVERSABLE_DIR = 0o711
PRIVATE_FILE = 0o600


class StateDirBusy(EscncError):
    """Another escnc server holds the state directory."""


class StateDirLock:
    """Holds ``escnc.lock`` for as long as the server runs (released by :meth:`release`
    or when the process dies: the kernel drops a dead process's flock)."""

    def __init__(self, state_dir: Path, fd: int) -> None:
        self.state_dir = state_dir
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def prepare(state_dir: Path, *, traversable: bool = False) -> StateDirLock:
    """Create the directory with private permissions and take its lock.

    Raises :class:`StateDirBusy` naming the PID of the server that holds it."""
    state_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    os.chmod(state_dir, TRAVERSABLE_DIR if traversable else PRIVATE_DIR)
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise StateDirBusy(
            f"state directory {state_dir} is in use by another escnc server (PID {holder}); "
            "stop it or choose another --state-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    os.fchmod(fd, PRIVATE_FILE)
    return StateDirLock(state_dir, fd)


def make_files_private(state_dir: Path) -> None:
    """Make every regular file directly in the state directory 0600 (databases, keys,
    instance id), whatever the umask was when it was created."""
    for entry in os.scandir(state_dir):
        if entry.is_file(follow_symlinks=False):
            mode = entry.stat(follow_symlinks=False).st_mode & 0o777
            if mode != PRIVATE_FILE:
                try:
                    os.chmod(entry.path, PRIVATE_FILE)
                except OSError as exc:  # not ours (e.g. root-owned): say so, carry on
                    log.warning("cannot make %s private: %s", entry.path, exc)
