"""get-config latency while one VIM host hangs.

A second host's URI points to a loopback port that accepts TCP and never answers
(``qemu+tcp://127.0.0.1:PORT/system`` in the operator's settings, and a
``qemu+ssh://`` vim_connector committed by a client). Prints the time from
Server.start() to listening, and get-config / edit-config latency (median, p99 over
ncclient) with no hanging host and with both hanging ones.

usage: python bench/hang_bench.py [--rounds N]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import conftest
from conftest import add_user, connect, make_settings
from escnc.app import Server
from escnc.ns import ESC


def silent_listener() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(sock.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return sock, sock.getsockname()[1]


def ms(samples: list[float]) -> str:
    samples = sorted(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return f"median {statistics.median(samples) * 1000:6.2f} ms, p99 {p99 * 1000:6.2f} ms"


def run(hang: bool, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="escnc-hang-") as tmp:
        state = Path(tmp) / "state"
        add_user(state)
        settings = make_settings(state, reconcile_interval=1.0)
        settings.vims = {"default": conftest.test_host_uri(Path(tmp) / "hosts")}
        sock, port = silent_listener()
        if hang:
            settings.vims["hang"] = f"qemu+tcp://127.0.0.1:{port}/system"
        srv = Server(settings)
        t0 = time.perf_counter()
        srv.start()
        listening = time.perf_counter() - t0
        try:
            with connect(srv) as m:
                if hang:
                    m.edit_config(
                        target="running",
                        config=f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">'
                        f'<esc_datamodel xmlns="{ESC}"><vim_connectors><vim_connector>'
                        f"<name>hang2</name><uri>qemu+ssh://127.0.0.1:{port}/system</uri>"
                        "</vim_connector></vim_connectors></esc_datamodel></config>",
                    )
                gets, edits = [], []
                for i in range(rounds):
                    t = time.perf_counter()
                    m.get_config(source="running")
                    gets.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    m.edit_config(
                        target="running",
                        config=f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">'
                        f'<esc_datamodel xmlns="{ESC}"><flavors><flavor><name>f{i % 20}</name>'
                        f"<vcpus>1</vcpus><memory_mb>{64 + i}</memory_mb></flavor></flavors>"
                        "</esc_datamodel></config>",
                    )
                    edits.append(time.perf_counter() - t)
            label = "2 hosts hanging" if hang else "no host hanging"
            print(f"{label:16}: start -> listening {listening * 1000:7.1f} ms")
            print(f"{label:16}: get-config  {ms(gets)} ({rounds} rounds)")
            print(f"{label:16}: edit-config {ms(edits)} ({rounds} rounds)")
        finally:
            sock.close()
            srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    run(False, args.rounds)
    run(True, args.rounds)


if __name__ == "__main__":
    main()
