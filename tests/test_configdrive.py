"""Config drives: an ISO 9660 image labelled cidata whose Rock Ridge and Joliet names
are the day-0 file names (nested ones too), private to escnc; names that leave the
drive are refused. Read back with pycdlib and, where installed, isoinfo."""

from __future__ import annotations

import io
import shutil
import stat
import subprocess
from pathlib import Path

import pycdlib  # type: ignore[import-untyped]
import pytest

from escnc.vim.configdrive import ConfigDriveError, build_config_drive

FILES = {
    "user-data": b"#cloud-config\nhostname: vm1\n",
    "meta-data": b"instance-id: vm1\n",
    "/openstack/latest/user_data": b"payload",
    "openstack/latest/meta_data.json": b"{}",
    "a-rather-long-file-name-with-dashes.and.dots.txt": b"x" * 5000,
}


def read(iso: pycdlib.PyCdlib, path: str, **how: str) -> bytes:
    buf = io.BytesIO()
    iso.get_file_from_iso_fp(buf, **{k: path for k in how.values()})
    return buf.getvalue()


def test_drive_holds_the_files_under_their_names(tmp_path: Path) -> None:
    out = tmp_path / "drives" / "vm1"
    assert build_config_drive(FILES, out) == "iso"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    iso = pycdlib.PyCdlib()
    iso.open(str(out))
    try:
        assert iso.pvd.volume_identifier.rstrip() == b"cidata"
        for name, data in FILES.items():
            path = "/" + name.lstrip("/")
            assert read(iso, path, k="rr_path") == data
            assert read(iso, path, k="joliet_path") == data
    finally:
        iso.close()
    if shutil.which("isoinfo"):
        listing = subprocess.run(["isoinfo", "-R", "-f", "-i", str(out)], capture_output=True,
                                 text=True, check=True).stdout.split()
        assert "/user-data" in listing and "/openstack/latest/user_data" in listing


def test_names_are_normalised(tmp_path: Path) -> None:
    out = tmp_path / "vm1"
    build_config_drive({"a//b": b"1", "./c": b"2", "d/../e": b"3"}, out)
    iso = pycdlib.PyCdlib()
    iso.open(str(out))
    try:
        assert [read(iso, p, k="rr_path") for p in ("/a/b", "/c", "/e")] == [b"1", b"2", b"3"]
    finally:
        iso.close()


def test_rebuilding_replaces_the_drive(tmp_path: Path) -> None:
    out = tmp_path / "vm1"
    build_config_drive(FILES, out)
    build_config_drive({"user-data": b"new"}, out)
    iso = pycdlib.PyCdlib()
    iso.open(str(out))
    try:
        assert read(iso, "/user-data", k="rr_path") == b"new"
        assert [c.rock_ridge.name() for c in iso.list_children(rr_path="/")
                if not c.is_dot() and not c.is_dotdot()] == [b"user-data"]
    finally:
        iso.close()


@pytest.mark.parametrize("name", ["../escape", "a/../../b", "/..", "."])
def test_names_leaving_the_drive_are_refused(tmp_path: Path, name: str) -> None:
    out = tmp_path / "vm1"
    with pytest.raises(ConfigDriveError):
        build_config_drive({name: b"x"}, out)
    assert not out.exists()
