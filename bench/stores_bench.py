"""Engine-state writes and user-key reads on SQLite and PostgreSQL (escnc.storage).

EngineStore: N VM writes (put_vm then update_vm, as a deploy does), then reload().
UserStore: check_key from T threads (the SSH transports' read path). Prints
operations/s. PostgreSQL: ``--dsn postgresql://...`` or, without it, a throw-away
server from tests/pg_support.py (fsync off: measures escnc, not the disk). Usage:
    python bench/stores_bench.py [--vms 2000] [--threads 4] [--checks 2000] [--dsn URL]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paramiko

from escnc.engine.store import EngineStore, VmRecord
from escnc.rpc.users import UserStore
from escnc.storage import Storage
from escnc.storage.postgresql import PostgresStorage
from escnc.storage.sqlite import SqliteStorage


def vm(i: int) -> VmRecord:
    return VmRecord(generated_name=f"dep_g_{i}_x", vm_id=str(i), tenant="t", deployment="dep",
                    group="g", index=i, host="h", state="VM_INIT_STATE",
                    interfaces=[(0, "net", f"10.0.{i // 250}.{i % 250}", "52:54:00:00:00:01")])


def run(name: str, make: Callable[[], Storage], vms: int, threads: int, checks: int) -> None:
    store = EngineStore(storage=make())
    t0 = time.perf_counter()
    for i in range(vms):
        store.put_vm(vm(i))
        store.update_vm(vm(i).generated_name, state="VM_ALIVE_STATE")
    writes = 2 * vms / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    store.reload()
    reload_ms = (time.perf_counter() - t0) * 1000
    store.close()

    users = UserStore(storage=make())
    key = paramiko.RSAKey.generate(2048)
    users.add_user("alice", public_keys=[f"ssh-rsa {key.get_base64()} a"])
    per = checks // threads

    def check() -> None:
        for _ in range(per):
            assert users.check_key("alice", key)

    workers = [threading.Thread(target=check) for _ in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    reads = per * threads / (time.perf_counter() - t0)
    users.close()
    print(f"{name:10} engine writes {writes:7.0f}/s   reload of {vms} VMs {reload_ms:6.1f} ms"
          f"   check_key x{threads} threads {reads:7.0f}/s")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--dsn", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "escnc.sqlite3"
        run("sqlite", lambda: SqliteStorage(path), args.vms, args.threads, args.checks)
    server = None
    dsn = args.dsn
    if not dsn:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from pg_support import PgServer

        server = PgServer().start()
        dsn = server.create_database()
    try:
        run("postgresql", lambda: PostgresStorage(dsn), args.vms, args.threads, args.checks)
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
