"""Run an escnc server in this process, for kill -9 tests.

usage: python tests/engine_server_proc.py STATE_DIR HOST_URI [CREATE_DELAY_SECONDS [DATABASE]]
Prints ``PORT <n>`` when listening. CREATE_DELAY slows each VM creation so a test
can kill the process in the middle of a deployment. DATABASE: a postgresql:// URL
(``settings.database``; default: SQLite files in STATE_DIR).

Fault injection (tests only; read here, never by the product): with
``ESCNC_TEST_KILL_AT=TYPE:N:before`` (or ``:after``) the process kills itself with
SIGKILL at the N-th flagged publish of event TYPE (one sent under an idempotency key,
engine/outbox.py): ``before`` is right between the engine recording the outcome as
reported and the event reaching the log, ``after`` right after it reached the log.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from escnc.app import Server
from escnc.engine.notify import Notifier
from escnc.engine.vmops import VmOps
from escnc.settings import Settings

KILL_AT = "ESCNC_TEST_KILL_AT"


def install_kill_point(spec: str) -> None:
    """SIGKILL this process at the N-th keyed publish of an event type (see above)."""
    type_, nth, when = spec.split(":")
    original = Notifier.publish
    seen = [0]

    def publish(self: Notifier, kind: str, *args: Any, **kw: Any) -> None:
        hit = kind == type_ and kw.get("key") is not None
        if hit:
            seen[0] += 1
            hit = seen[0] == int(nth)
        if hit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, kind, *args, **kw)
        if hit and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    Notifier.publish = publish  # type: ignore[method-assign]


def settings_from_argv(argv: list[str]) -> Settings:
    """STATE_DIR HOST_URI [CREATE_DELAY [DATABASE]]: the settings of a test server process (and the
    slowed VM creation when a delay is given)."""
    state, uri = Path(argv[1]), argv[2]
    delay = float(argv[3]) if len(argv) > 3 else 0.0
    if delay:
        original = VmOps.create

        def slow_create(self, *args, **kw):  # type: ignore[no-untyped-def]
            time.sleep(delay)
            return original(self, *args, **kw)

        VmOps.create = slow_create  # type: ignore[method-assign]
    logging.basicConfig(level=logging.WARNING)
    settings = Settings(
        state_dir=state, listen_host="127.0.0.1", listen_port=0, vims={"default": uri}
    )
    if len(argv) > 4:
        settings.database = argv[4]
    settings.reconcile_interval = 1.0  # the periodic reconcile on, as in production
    settings.image_import_dirs = [state.parent]  # the test's image is next to the state
    # as conftest.TEST_OVERCOMMIT (the test node has 16 CPUs, 3 GiB)
    settings.overcommit = {"vcpus": 256.0, "memory": 256.0, "storage": 256.0}
    return settings


def main() -> None:
    if os.environ.get(KILL_AT):
        install_kill_point(os.environ[KILL_AT])
    srv = Server(settings_from_argv(sys.argv))
    srv.start()
    print(f"PORT {srv.port}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
