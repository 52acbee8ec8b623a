"""Build the tiny QEMU test guest: a Debian kernel plus a busybox-static initramfs.

The result is an ordinary bootable disk image (``disk.raw``: an unpartitioned FAT
file system with SYSLINUX, the kernel and the initramfs), so escnc boots it like any
other image: no kernel/initrd special cases in the domain XML. The initramfs's /init
(``init.sh`` beside this file) brings the NIC up with the static address from the
day-0 data escnc hands the VM and then answers ping; the ACPI power button powers it
off. ``vmlinuz`` and ``initrd.gz`` are kept beside the disk for direct kernel boot.

Needs (Debian packages): busybox-static, syslinux, syslinux-common, mtools, cpio,
and a ``linux-image-*-amd64`` .deb, taken from (first that exists) ``$ESCNC_GUEST_KERNEL_DEB``,
the cache, or ``apt-get download`` (never installed: only unpacked).

Builds are cached under ``tests/.guest-cache/<hash>/``; a cache hit costs nothing.

    python tests/guest/build.py            # build (or reuse) and print the disk path
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("ESCNC_GUEST_CACHE", HERE.parent / ".guest-cache"))
INIT = HERE / "init.sh"
BUSYBOX = Path("/bin/busybox")
SYSLINUX_BIOS = Path("/usr/lib/syslinux/modules/bios")
DISK_MB = 32
# Drivers the guest loads (dependencies are added automatically, in order).
WANTED_MODULES = (
    "virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi", "e1000",
    "ata_piix", "ahci", "sd_mod", "sr_mod", "isofs", "vfat", "nls_cp437",
    "nls_iso8859_1", "button", "evdev",
)
CMDLINE = "console=ttyS0 quiet loglevel=3 panic=-1 tsc=unstable"
BUILD_VERSION = "1"

UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via "${router%% *}" ;;
esac
"""
POWER_BUTTON = (
    "#!/bin/sh\necho 'escnc-guest: power button: powering off' >/dev/console\npoweroff -f\n"
)


@dataclass(frozen=True)
class GuestImage:
    disk: Path  # bootable raw disk image
    kernel: Path
    initrd: Path
    cmdline: str
    kernel_version: str


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, check=True, capture_output=True, **kw)  # type: ignore[call-overload, no-any-return]


def _kernel_package() -> str:
    """The versioned linux-image package behind the linux-image-amd64 metapackage."""
    out = _run(["apt-cache", "depends", "linux-image-amd64"]).stdout.decode()
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            return line.split()[-1]
    raise RuntimeError("apt-cache knows no linux-image-amd64 (run apt-get update)")


def find_kernel_deb() -> Path:
    env = os.environ.get("ESCNC_GUEST_KERNEL_DEB")
    if env:
        return Path(env)
    debs = CACHE / "debs"
    found = sorted(debs.glob("linux-image-*-amd64_*.deb"))
    if found:
        return found[-1]
    debs.mkdir(parents=True, exist_ok=True)
    pkg = _kernel_package()
    _run(["apt-get", "download", "-q", pkg], cwd=debs)
    found = sorted(debs.glob(f"{pkg}_*.deb"))
    if not found:
        raise RuntimeError(f"apt-get download {pkg} produced no .deb in {debs}")
    return found[-1]


def _module_depends(ko: Path) -> list[str]:
    data = ko.read_bytes()
    marker = b"\0depends="
    pos = data.find(marker)
    if pos < 0:
        return []
    end = data.index(b"\0", pos + 1)
    deps = data[pos + len(marker) : end].decode()
    return [d for d in deps.split(",") if d]


def _ordered_modules(moddir: Path) -> list[Path]:
    by_name = {p.stem.replace("-", "_"): p for p in moddir.rglob("*.ko")}
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        ko = by_name.get(name)
        if ko is None:  # built into the kernel
            return
        for dep in _module_depends(ko):
            visit(dep)
        order.append(ko)

    for name in WANTED_MODULES:
        visit(name)
    return order


def _cpio_newc(root: Path) -> bytes:
    out = subprocess.run(
        "find . -print0 | cpio --null -o -H newc --quiet",
        shell=True, cwd=root, check=True, capture_output=True,
    ).stdout
    return out


def _build_initramfs(unpacked: Path, workdir: Path) -> bytes:
    moddirs = sorted((unpacked / "lib" / "modules").iterdir())
    if not moddirs:
        raise RuntimeError("kernel package has no modules")
    modules = _ordered_modules(moddirs[-1])
    root = workdir / "initramfs"
    dirs = ("bin", "sbin", "etc/acpi/PWRF", "proc", "sys", "dev", "tmp", "mnt", "lib/modules")
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = _run([str(BUSYBOX), "--list"]).stdout.decode().split()
    for applet in applets:
        link = root / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    names = []
    for ko in modules:
        shutil.copy2(ko, root / "lib" / "modules" / ko.name)
        names.append(ko.name)
    (root / "etc" / "modules.order").write_text("\n".join(names) + "\n")
    (root / "etc" / "udhcpc.script").write_text(UDHCPC_SCRIPT)
    (root / "etc" / "udhcpc.script").chmod(0o755)
    (root / "etc" / "acpi" / "PWRF" / "00000080").write_text(POWER_BUTTON)
    (root / "etc" / "acpi" / "PWRF" / "00000080").chmod(0o755)
    shutil.copy2(INIT, root / "init")
    (root / "init").chmod(0o755)
    raw = _cpio_newc(root)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=6, mtime=0) as gz:
        gz.write(raw)
    return buf.getvalue()


def _build_disk(disk: Path, kernel: Path, initrd: Path) -> None:
    """Unpartitioned FAT + SYSLINUX: SeaBIOS boots its first sector directly."""
    with open(disk, "wb") as f:
        f.truncate(DISK_MB * 1024 * 1024)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    _run(["mformat", "-i", str(disk), "-v", "ESCNCGUEST", "-t", str(DISK_MB), "-h", "64",
          "-s", "32", "::"], env=env)
    _run(["syslinux", "--install", str(disk)], env=env)
    cfg = disk.parent / "syslinux.cfg"
    cfg.write_text(
        f"DEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n  KERNEL vmlinuz\n"
        f"  INITRD initrd.gz\n  APPEND {CMDLINE}\n"
    )
    for src in (kernel, initrd, cfg):
        _run(["mcopy", "-i", str(disk), str(src), f"::{src.name}"], env=env)
    cfg.unlink()
    if not SYSLINUX_BIOS.is_dir():  # pragma: no cover - only a hint
        print("note: syslinux-common modules not found", file=sys.stderr)


def build(cache: Path = CACHE, force: bool = False) -> GuestImage:
    deb = find_kernel_deb()
    key = hashlib.sha256()
    key.update(BUILD_VERSION.encode())
    key.update(deb.name.encode())
    key.update(INIT.read_bytes())
    key.update(Path(__file__).read_bytes())
    out = cache / key.hexdigest()[:16]
    disk, kernel, initrd = out / "disk.raw", out / "vmlinuz", out / "initrd.gz"
    version = deb.name.split("_")[0].removeprefix("linux-image-")
    if not force and (out / "done").exists():
        return GuestImage(disk, kernel, initrd, CMDLINE, version)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        work = Path(tmp)
        unpacked = work / "deb"
        unpacked.mkdir()
        subprocess.run(
            f"dpkg-deb --fsys-tarfile '{deb}' | tar -x -C '{unpacked}' --wildcards "
            "'./boot/vmlinuz-*' './lib/modules/*'",
            shell=True, check=True, capture_output=True,
        )
        vmlinuz = sorted((unpacked / "boot").glob("vmlinuz-*"))[-1]
        shutil.copy2(vmlinuz, kernel)
        initrd.write_bytes(_build_initramfs(unpacked, work))
        _build_disk(disk, kernel, initrd)
    (out / "done").write_text(version + "\n")
    return GuestImage(disk, kernel, initrd, CMDLINE, version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build (or reuse) the tiny escnc test guest.")
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    parser.add_argument("--cache", type=Path, default=CACHE, help="cache directory")
    args = parser.parse_args(argv)
    image = build(args.cache, args.force)
    print(image.disk)
    return 0


if __name__ == "__main__":
    sys.exit(main())
