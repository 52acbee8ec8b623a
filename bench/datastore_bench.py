"""edit-config latency for a one-deployment change with 10 / 1,000 / 10,000
deployments already in running, get-config time for the whole tree and with a
one-deployment subtree filter, and (``--commit``) candidate commit and
copy-config of a one-deployment change, and (``--writers``) edit throughput of
concurrent writer threads (group commit).

Measures the datastore path a NETCONF edit-config takes (edit, incremental YANG
validation, durable commit), without SSH. Usage:
    python bench/datastore_bench.py [--sizes 10,1000,10000] [--edits 200] [--commit]
        [--database postgresql://...] [--fast]

``--database``: the datastore on that PostgreSQL database instead of a SQLite file
(its datastore tables are dropped before each size). ``--fast``: durable_commits=False.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from lxml import etree

from escnc.datastore.edit import EditOptions
from escnc.datastore.schema import Schema
from escnc.datastore.store import Datastore
from escnc.operations import datastore_read
from escnc.settings import Settings

E = "http://www.cisco.com/esc/esc"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
P = etree.XMLParser(remove_blank_text=True)

GLOBALS = f"""<esc_datamodel xmlns="{E}">
<images><image><name>img</name><src>/i.qcow2</src></image></images>
<flavors><flavor><name>fl</name><vcpus>1</vcpus><memory_mb>64</memory_mb></flavor>
<flavor><name>fl2</name><vcpus>2</vcpus><memory_mb>128</memory_mb></flavor></flavors>
<networks><network><name>net</name></network></networks></esc_datamodel>"""


def deployment(i: int, flavor: str = "fl") -> str:
    return (
        f"<deployment><name>dep{i}</name><vm_group><name>g1</name><bootup_time>60</bootup_time>"
        f"<recovery_wait_time>0</recovery_wait_time><image>img</image><flavor>{flavor}</flavor>"
        "<interfaces><interface><nicid>0</nicid><network>net</network></interface></interfaces>"
        "<scaling><min_active>1</min_active><max_active>1</max_active><elastic>true</elastic>"
        "</scaling><kpi_data><kpi><event_name>VM_ALIVE</event_name><metric_value>1</metric_value>"
        "<metric_cond>GT</metric_cond><metric_type>UINT32</metric_type><metric_collector>"
        "<type>ICMPPing</type><nicid>0</nicid><poll_frequency>3</poll_frequency>"
        "<polling_unit>seconds</polling_unit><continuous_alarm>false</continuous_alarm>"
        "</metric_collector></kpi></kpi_data><rules><admin_rules><rule><event_name>VM_ALIVE"
        "</event_name><action>ALWAYS log</action></rule></admin_rules></rules></vm_group>"
        "</deployment>"
    )


def config(body: str) -> etree._Element:
    return etree.fromstring(f'<config xmlns="{NC}">{body}</config>', P)


def tenant(deps: str) -> str:
    return (
        f'<esc_datamodel xmlns="{E}"><tenants><tenant><name>admin</name><deployments>{deps}'
        "</deployments></tenant></tenants></esc_datamodel>"
    )


def filtered_get_config(ds: Datastore, schema: Schema, name: str) -> bytes:
    """get-config running with a subtree filter naming one deployment (operation code path)."""
    req = etree.fromstring(
        f'<get-config xmlns="{NC}"><source><running/></source><filter type="subtree">'
        f'<esc_datamodel xmlns="{E}"><tenants><tenant><name>admin</name><deployments>'
        f"<deployment><name>{name}</name></deployment></deployments></tenant></tenants>"
        "</esc_datamodel></filter></get-config>",
        P,
    )
    ctx = SimpleNamespace(services=SimpleNamespace(datastore=ds, schema=schema))
    return etree.tostring(datastore_read.get_config(ctx, req))  # type: ignore[arg-type]


def timed(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def writers(ds: Datastore, size: int, n: int, secs: float = 2.0) -> float:
    """Edits/s of ``n`` threads each editing its own deployments (no SSH, no engine)."""
    counts = [0] * n
    stop = threading.Event()

    def work(k: int) -> None:
        i = 0
        while not stop.is_set():
            dep = (k + n * i) % size
            cfg = config(tenant(deployment(dep, "fl2" if (i // max(1, size // n)) % 2 else "fl")))
            ds.edit("running", cfg, EditOptions(), k + 1, "bench")
            i += 1
        counts[k] = i

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(secs)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def reset(database: str) -> None:
    """Drop the datastore's tables (a fresh datastore on a reused database)."""
    if not database:
        return
    from escnc.storage.postgresql import PostgresStorage

    conn = PostgresStorage(database).connect()
    for table in ("units", "history", "meta", "datastore_head"):
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute("CREATE TABLE IF NOT EXISTS escnc_schema (component TEXT PRIMARY KEY,"
                 " version INTEGER NOT NULL)")
    conn.execute("DELETE FROM escnc_schema WHERE component = 'datastore'")
    conn.close()


def run(
    size: int, edits: int, schema: Schema, commit: bool = False, threads: tuple[int, ...] = (),
    database: str = "", durable: bool = True,
) -> None:
    reset(database)
    with tempfile.TemporaryDirectory() as tmp:
        ds = Datastore(Settings(state_dir=Path(tmp), database=database,
                                durable_commits=durable), schema)
        ds.edit("running", config(GLOBALS), EditOptions(), 1, "bench")
        t0 = time.perf_counter()
        step = 500
        for start in range(0, size, step):
            body = "".join(deployment(i) for i in range(start, min(size, start + step)))
            ds.edit("running", config(tenant(body)), EditOptions(), 1, "bench")
        load = time.perf_counter() - t0
        lat = []
        for n in range(edits):
            i = (n * 7919) % size
            cfg = config(tenant(deployment(i, "fl2" if n % 2 == 0 else "fl")))
            t = time.perf_counter()
            ds.edit("running", cfg, EditOptions(), 1, "bench")
            lat.append((time.perf_counter() - t) * 1000)
        gets = []
        for _ in range(5):
            t = time.perf_counter()
            with ds.reading("running") as tree:
                etree.tostring(tree)
            gets.append((time.perf_counter() - t) * 1000)
        one = f"dep{size // 2}"
        got = filtered_get_config(ds, schema, one)
        assert got.count(b"<deployment>") == 1 and one.encode() in got, got[:300]
        fget = timed(lambda: filtered_get_config(ds, schema, one), 20)
        extra = ""
        if commit:
            n = 5
            cand_edit, cand_commit, copy_cfg = [], [], []
            for k in range(n):
                cfg = config(tenant(deployment(k % size, "fl2" if k % 2 == 0 else "fl")))
                t = time.perf_counter()
                ds.edit("candidate", cfg, EditOptions(), 1, "bench")
                cand_edit.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                ds.commit(1, "bench")
                cand_commit.append((time.perf_counter() - t) * 1000)
            for _ in range(n):
                with ds.reading("running") as tree:
                    src = etree.fromstring(etree.tostring(tree))
                src.tag = f"{{{NC}}}config"
                fl = src.find(f".//{{{E}}}deployment/{{{E}}}vm_group/{{{E}}}flavor")
                assert fl is not None
                fl.text = "fl2" if fl.text == "fl" else "fl"
                t = time.perf_counter()
                ds.copy_config("running", src, 1, "bench", owned=True)  # as the operation does
                copy_cfg.append((time.perf_counter() - t) * 1000)
            extra = (
                f"\n        candidate edit {statistics.median(cand_edit):7.1f} ms  "
                f"commit {statistics.median(cand_commit):7.1f} ms  "
                f"| copy-config running {statistics.median(copy_cfg):7.1f} ms"
            )
        if threads:
            extra += "\n        concurrent writers: " + "  ".join(
                f"{n} threads {writers(ds, size, n):6.0f} edits/s" for n in threads
            )
        ds.close()
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(
        f"{size:>6} deployments: edit-config median {statistics.median(lat):6.2f} ms  "
        f"p99 {p99:6.2f} ms  | get-config whole tree {statistics.median(gets):7.1f} ms  "
        f"| filtered (1 deployment) {fget:6.2f} ms | initial load {load:5.1f} s{extra}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,1000,10000")
    ap.add_argument("--edits", type=int, default=200)
    ap.add_argument("--commit", action="store_true", help="also candidate commit, copy-config")
    ap.add_argument(
        "--writers", default="", help="also edits/s with these numbers of threads, e.g. 1,4,32"
    )
    ap.add_argument("--database", default="",
                    help="postgresql:// URL (its datastore tables are dropped first)")
    ap.add_argument("--fast", action="store_true", help="durable_commits=False")
    args = ap.parse_args()
    schema = Schema.load()
    threads = tuple(int(n) for n in args.writers.split(",") if n)
    print(f"datastore on {'PostgreSQL' if args.database else 'SQLite'}"
          f"{' (durable_commits=False)' if args.fast else ''},"
          f" loadavg {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    for size in (int(s) for s in args.sizes.split(",")):
        run(size, args.edits, schema, args.commit, threads, args.database, not args.fast)


if __name__ == "__main__":
    main()
