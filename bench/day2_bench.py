"""Day-2 timings: resize+confirm, live migration, snapshot create/delete.

Two levels, each on the libvirt test driver and (when ESCNC_QEMU_URI is set) QEMU:
* ``vim``: the primitives on a bare libvirt connection (what libvirt costs);
* ``e2e``: over NETCONF against an in-process escnc server, from sending the RPC /
  edit to receiving the terminal escEvent (test driver only: two hosts in-process).

    python bench/day2_bench.py [-n 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import libvirt
from lxml import etree

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from escnc.ns import ESC  # noqa: E402
from escnc.vim import migrate, resize, snapshots  # noqa: E402

libvirt.registerErrorHandler(lambda _c, _e: None, None)
NS = {"e": ESC}


def report(label: str, samples: list[float]) -> None:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    print(f"{label:<44} n={len(ms):<4} median {statistics.median(ms):8.2f} ms   p95 {p95:8.2f} ms")


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


# ---- vim level ----------------------------------------------------------------------------


def test_vm(conn: libvirt.virConnect, name: str, dom_type: str, disk: str = "") -> None:
    # QEMU internal snapshots need a qcow2 disk (an empty one: the guest sits in the BIOS)
    devices = (
        f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>"
        if disk
        else ""
    )
    conn.defineXML(
        f"<domain type='{dom_type}'><name>{name}</name><memory unit='MiB'>256</memory>"
        f"<vcpu current='1'>2</vcpu><os><type arch='x86_64'>hvm</type></os>"
        f"<features><acpi/></features><devices>{devices}</devices></domain>"
    ).create()


def bench_vim(
    label: str,
    a: libvirt.virConnect,
    b: libvirt.virConnect | None,
    n: int,
    dom_type: str,
    disk: str = "",
) -> None:
    test_vm(a, "bench-vm", dom_type, disk)
    try:

        def resize_revert() -> None:
            rec = resize.resize_domain(a, "bench-vm", 2, 256, shutdown_timeout=20)
            resize.revert_resize(a, rec, shutdown_timeout=20)

        report(f"{label} vim resize(live)+revert", timed(resize_revert, n))

        def cold() -> None:
            rec = resize.resize_domain(a, "bench-vm", 3, 256, shutdown_timeout=5)
            resize.revert_resize(a, rec, shutdown_timeout=5)

        report(f"{label} vim resize(cold)+revert", timed(cold, max(1, n // 4)))
        counter = iter(range(10**6))

        def snap() -> None:
            sid = f"s{next(counter)}"
            snapshots.create_snapshot(a, "bench-vm", sid, "bench")
            snapshots.delete_snapshot(a, "bench-vm", sid)

        report(f"{label} vim snapshot create+delete", timed(snap, max(1, n // 4)))
        if b is not None:
            hosts = [a, b]

            def move() -> None:
                migrate.migrate_domain(hosts[0], hosts[1], "bench-vm", live=True)
                hosts.reverse()

            kind = "definition move" if label == "test" else "libvirt, 2 daemons"
            report(f"{label} vim live migration ({kind})", timed(move, n))
    finally:
        for c in (a, b):
            if c is None:
                continue
            dom = migrate.find_domain(c, "bench-vm")
            if dom is not None:
                migrate.undefine_fully(dom)


# ---- end to end ---------------------------------------------------------------------------


def bench_e2e(n: int) -> None:
    from ncclient.transport import session as nc_session

    from conftest import add_user, connect, make_settings, test_host_uri
    from escnc.app import Server

    nc_session.TICK = 0.0005
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        state = base / "state"
        add_user(state)
        settings = make_settings(
            state,
            vims={
                "hostA": test_host_uri(base / "h", "hostA"),
                "hostB": test_host_uri(base / "h", "hostB"),
            },
            snapshot_poll_secs=0.005,
            volume_poll_secs=0.005,
        )
        image = base / "img.qcow2"
        image.write_bytes(b"\0" * 4096)
        srv = Server(settings)
        srv.start()
        try:
            with connect(srv) as m, connect(srv) as sub:
                sub.create_subscription(stream_name="escEvent")

                def until(kind: str) -> None:
                    while True:
                        note = sub.take_notification(block=True, timeout=60)
                        assert note is not None, f"no {kind}"
                        root = etree.fromstring(note.notification_xml.encode())
                        if root.findtext(".//e:event/e:type", namespaces=NS) == kind:
                            return

                def edit(flavor: str) -> None:
                    cfg = CONFIG.format(esc=ESC, image=image, flavor=flavor)
                    m.edit_config(target="running", config=cfg)

                def call(xml: str) -> None:
                    m.dispatch(etree.fromstring(xml))

                edit("small")
                until("SERVICE_ALIVE")
                vm = srv.services.engine.store.vms("t1", "d1")[0].generated_name
                flavors = iter(["large", "small"] * n)

                def resize_confirm() -> None:
                    edit(next(flavors))
                    until("VM_VERIFY_RESIZE")
                    call(
                        f'<vmAction xmlns="{ESC}"><actionType>CONFIRM_RESIZE</actionType>'
                        f"<vmName>{vm}</vmName></vmAction>"
                    )
                    until("VM_ALIVE")

                report("e2e resize + confirm (NETCONF, test driver)", timed(resize_confirm, n))

                def migrate() -> None:
                    call(
                        f'<vmMigrate xmlns="{ESC}"><vmName>{vm}</vmName>'
                        "<migrationType>live</migrationType></vmMigrate>"
                    )
                    until("VM_MIGRATE_COMPLETE")

                report("e2e live migration (NETCONF, test driver)", timed(migrate, n))

                def snapshot() -> None:
                    call(
                        f'<vmBackupAction xmlns="{ESC}"><vmName>{vm}</vmName>'
                        "<backupName>b</backupName></vmBackupAction>"
                    )
                    until("VM_BACKUP_COMPLETE")
                    call(
                        f'<snapshotAction xmlns="{ESC}"><actionType>DELETE</actionType>'
                        "<snapshot>b</snapshot></snapshotAction>"
                    )
                    until("VM_SNAPSHOT_DELETED")

                report("e2e snapshot + delete (NETCONF, test driver)", timed(snapshot, n))
        finally:
            srv.stop()


CONFIG = """<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
<esc_datamodel xmlns="{esc}">
  <images><image><name>img</name><src>{image}</src></image></images>
  <flavors>
    <flavor><name>small</name><vcpus>1</vcpus><memory_mb>512</memory_mb></flavor>
    <flavor><name>large</name><vcpus>2</vcpus><memory_mb>1024</memory_mb></flavor>
  </flavors>
  <tenants><tenant><name>t1</name><deployments><deployment><name>d1</name>
    <vm_group><name>g1</name><image>img</image><flavor>{flavor}</flavor>
      <bootup_time>30</bootup_time><recovery_wait_time>0</recovery_wait_time>
    </vm_group></deployment></deployments></tenant></tenants>
</esc_datamodel></config>"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="iterations per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nodes = []
        for name in ("a", "b"):
            node = Path(tmp) / f"{name}.xml"
            node.write_text("<node></node>\n")
            nodes.append(libvirt.open(f"test://{node}"))
        bench_vim("test", nodes[0], nodes[1], args.n, "test")
    qemu = os.environ.get("ESCNC_QEMU_URI")
    if qemu:
        qconn = libvirt.open(qemu)
        peer = os.environ.get("ESCNC_QEMU_URI2")
        disk = f"/var/lib/libvirt/images/escnc-bench-{os.getpid()}.qcow2"
        # the tiny test guest (tests/guest/build.py): it boots, so vCPU unplug and ACPI
        # shutdown behave as with a real VNF
        built = subprocess.run(
            [sys.executable, str(ROOT / "tests/guest/build.py")],
            capture_output=True,
            text=True,
            check=True,
        )
        raw = built.stdout.strip().splitlines()[-1]
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, disk], check=True)
        try:
            second = libvirt.open(peer) if peer else None
            bench_vim("qemu", qconn, second, max(2, args.n // 5), "qemu", disk)
        finally:
            os.unlink(disk)
    else:
        print("qemu: skipped (set ESCNC_QEMU_URI, e.g. qemu:///system)")
    bench_e2e(args.n)


if __name__ == "__main__":
    main()
