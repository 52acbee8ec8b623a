"""The CI and install scripts depend on nothing an earlier run left behind.

A green run on a developer machine once hid two gaps of a fresh machine: libvirt's
dnsmasq directory (made only when libvirt itself starts a DHCP network) and `pgrep`
(package procps, absent from a minimal Debian root). These tests check, on the machine
that runs them, that every program the scripts call comes from a package the scripts
install (or one every Debian system has), and that `hypervisor.sh` creates every
directory libvirtd writes into, starting from none of them (a private mount namespace
hides the machine's own copies).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"

# programs the scripts and tests/guest/build.py run (beyond shell builtins)
PROGRAMS = {
    "hypervisor.sh": ["ip", "virsh", "virtlogd", "libvirtd", "unshare", "mount", "stat",
                      "seq", "sleep", "kill", "cat", "mkdir", "chown", "chmod", "rm"],
    # python3 itself: python3-venv (installed) brings Debian's; a machine may put another
    # first on PATH (pyenv), which dpkg does not own
    "test.sh": ["dpkg-query", "apt-get", "date"],
    "guest/build.py": ["apt-cache", "apt-get", "dpkg-deb", "cpio", "mformat", "mcopy",
                       "syslinux", "qemu-img", "genisoimage", "busybox", "ping"],
}
# directories libvirtd (system instance) writes into that no package is sure to create
LIBVIRT_DIRS = ["/var/lib/libvirt/dnsmasq", "/var/lib/libvirt/qemu", "/var/lib/libvirt/images",
                "/var/lib/libvirt/boot", "/var/cache/libvirt/qemu", "/var/log/libvirt/qemu",
                "/run/libvirt"]

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian system")


def _installed_by_scripts() -> set[str]:
    text = (SCRIPTS / "test.sh").read_text()
    block = re.search(r"PACKAGES=\((.*?)\)", text, re.S)
    assert block is not None, "scripts/test.sh has no PACKAGES=( ... ) list"
    return set(block.group(1).split())


def _dpkg(*args: str) -> str:
    return subprocess.run(["dpkg-query", *args], capture_output=True, text=True).stdout


def _owner(path: str) -> str | None:
    real = os.path.realpath(path)
    for candidate in (path, real, real.replace("/usr/", "/", 1)):
        out = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout:
            return out.stdout.split(":", 1)[0].split(",")[0].strip()
    return None


def _always_there(pkg: str) -> bool:
    """Essential or priority required: on every Debian root, minbase included."""
    fields = _dpkg("-W", "-f=${Essential} ${Priority}", pkg).split()
    return "yes" in fields or "required" in fields


def _needed_by_installed(pkg: str, installed: set[str]) -> bool:
    """``pkg`` comes with one of ``installed`` (a Depends/Pre-Depends, one level)."""
    for top in installed:
        deps = _dpkg("-W", "-f=${Depends}, ${Pre-Depends}", top)
        names = {re.split(r"[ :(]", d.strip())[0] for d in re.split(r"[,|]", deps) if d.strip()}
        if pkg in names:
            return True
    return False


@needs_dpkg
@pytest.mark.parametrize("script", sorted(PROGRAMS))
def test_every_program_comes_from_an_installed_package(script: str) -> None:
    installed = _installed_by_scripts()
    assert "python3-venv" in installed and "procps" in installed
    missing = []
    for prog in PROGRAMS[script]:
        path = shutil.which(prog) or shutil.which(prog, path="/usr/sbin:/sbin")
        if path is None:
            missing.append(f"{prog}: not on this machine")
            continue
        pkg = _owner(path)
        if pkg is None:
            missing.append(f"{prog} ({path}): no package owns it")
        elif not (pkg in installed or _always_there(pkg) or _needed_by_installed(pkg, installed)):
            missing.append(f"{prog}: package {pkg} is neither installed by scripts/test.sh "
                           "nor part of every Debian system")
    assert not missing, "; ".join(missing)


def test_scripts_do_not_rely_on_procps() -> None:
    """pgrep/pkill are not on a minimal root: the scripts read /proc instead."""
    for name in ("hypervisor.sh", "test.sh", "install.sh"):
        text = (SCRIPTS / name).read_text()
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        assert not re.search(r"\b(pgrep|pkill|pidof)\b", code), name


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root for a private mount namespace")
def test_hypervisor_script_creates_libvirt_directories_from_nothing(tmp_path: Path) -> None:
    """With empty tmpfs mounts over libvirt's directories (a fresh machine's view), the
    script's directory step creates every one of them."""
    check = tmp_path / "check.sh"
    mounts = " ".join(sorted({"/" + "/".join(d.strip("/").split("/")[:3]) for d in LIBVIRT_DIRS}))
    check.write_text(
        "set -e\n"
        "mount --make-rprivate /\n"
        f"for d in {mounts}; do mkdir -p \"$d\"; mount -t tmpfs none \"$d\"; done\n"
        f"for d in {' '.join(d for d in LIBVIRT_DIRS if d not in mounts.split())}; do "
        "[ ! -e \"$d\" ] || { echo \"left: $d\"; exit 9; }; done\n"
        f"bash {SCRIPTS / 'hypervisor.sh'} dirs\n"
        f"for d in {' '.join(LIBVIRT_DIRS)}; do "
        "[ -d \"$d\" ] || { echo \"missing: $d\"; exit 8; }; done\n"
        "echo ok\n"
    )
    r = subprocess.run(["unshare", "-m", "bash", str(check)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr
