"""Day-0 configuration for a guest: a NoCloud config drive.

Files (``name -> bytes``) are written into an ISO 9660 image with volume label
``cidata`` (what cloud-init's NoCloud source and most VNFs look for), with Rock Ridge
and Joliet names. It is made in-process by pycdlib (a dependency; ~0.5 ms a drive,
where a ``genisoimage`` child cost ~30 ms of fork and exec per VM), or, where pycdlib
cannot be imported, by ``genisoimage`` or ``mkisofs``. Without any of them the same
files go into a raw disk image holding a POSIX tar archive (read it in the guest with
``tar -x < /dev/vdb``), so day-0 data never silently disappears.

Day-0 data often holds secrets: the drive is written mode 0600. Its contents were
read under the operator's day-0 policy before they get here (``engine/vmops.py``).
"""

from __future__ import annotations

import io
import os
import posixpath
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path


class ConfigDriveError(Exception):
    pass


def _iso_tool() -> str | None:
    return shutil.which("genisoimage") or shutil.which("mkisofs")


def build_config_drive(files: dict[str, bytes], out: Path) -> str:
    """Write the drive to ``out`` (mode 0600); return its format: ``iso`` or ``raw``."""
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    out.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    os.close(os.open(out, flags, 0o600))  # the tool writes into a file only we can read
    try:
        return _build(files, out)
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def _parts(name: str) -> list[str]:
    """``name``'s path inside the drive, normalised as the tool path resolves it."""
    norm = posixpath.normpath(name.lstrip("/"))
    if norm in (".", "..") or norm.startswith("../"):
        raise ConfigDriveError(f"config file path {name!r} leaves the drive")
    return norm.split("/")


def _build_pycdlib(files: dict[str, bytes], out: Path) -> str:
    import pycdlib  # type: ignore[import-untyped]
    from pycdlib.pycdlibexception import PyCdlibException  # type: ignore[import-untyped]

    iso = pycdlib.PyCdlib()
    # ISO 9660 names are generated (D1, F2.;1): guests read the Rock Ridge (Linux) or
    # Joliet (Windows) names, which are the real ones, as with genisoimage -rock -joliet
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    dirs: dict[tuple[str, ...], tuple[str, str]] = {(): ("", "")}  # parts -> iso, joliet
    try:
        for n, (name, data) in enumerate(files.items()):
            parts = _parts(name)
            for depth in range(1, len(parts)):
                key = tuple(parts[:depth])
                if key not in dirs:
                    parent_iso, parent_jol = dirs[key[:-1]]
                    iso_path = f"{parent_iso}/D{len(dirs)}"
                    jol_path = f"{parent_jol}/{key[-1]}"
                    iso.add_directory(iso_path, rr_name=key[-1], joliet_path=jol_path)
                    dirs[key] = (iso_path, jol_path)
            parent_iso, parent_jol = dirs[tuple(parts[:-1])]
            iso.add_fp(io.BytesIO(data), len(data), f"{parent_iso}/F{n}.;1",
                       rr_name=parts[-1], joliet_path=f"{parent_jol}/{parts[-1]}")
        with out.open("r+b") as fh:  # the 0600 file made above
            iso.write_fp(fh)
    except PyCdlibException as exc:
        raise ConfigDriveError(f"config drive: {exc}") from exc
    finally:
        iso.close()
    return "iso"


def _build(files: dict[str, bytes], out: Path) -> str:
    try:
        return _build_pycdlib(files, out)
    except ImportError:
        pass
    tool = _iso_tool()
    if tool is not None:
        with tempfile.TemporaryDirectory(prefix="escnc-day0-") as tmp:
            root = Path(tmp)
            for name, data in files.items():
                path = (root / name.lstrip("/")).resolve()
                if root.resolve() not in path.parents:
                    raise ConfigDriveError(f"config file path {name!r} leaves the drive")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            cmd = [tool, "-quiet", "-output", str(out), "-volid", "cidata", "-joliet", "-rock", tmp]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
            if proc.returncode != 0:
                raise ConfigDriveError(f"{Path(tool).name} failed: {proc.stderr.strip()}")
        return "iso"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    pad = (-len(raw)) % (1 << 20)  # whole MiB: block devices like round sizes
    with out.open("r+b") as fh:
        fh.write(raw + b"\0" * pad)
    return "raw"
