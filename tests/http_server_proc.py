"""Run an escnc server with its HTTP northbound in this process, for kill -9 tests.

usage: python tests/http_server_proc.py STATE_DIR HOST_URI [CREATE_DELAY_SECONDS]
Prints ``PORTS <netconf> <http>`` when listening. CREATE_DELAY slows each VM creation
so a test can kill the process between a request's accept and its completion.
"""

from __future__ import annotations

import sys

from engine_server_proc import settings_from_argv
from escnc.app import Server


def main() -> None:
    settings = settings_from_argv(sys.argv)
    settings.http_listen = "127.0.0.1:0"
    settings.url_allow_loopback = True  # the test's callback receiver
    settings.callback_retry_base = 0.05
    srv = Server(settings)
    srv.start()
    print(f"PORTS {srv.port} {srv.http_ports['http']}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
