"""The README's five-minute tour runs as written: pasted into bash at the top of the
repository, in a fresh temporary folder, against a server of its own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tour_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Five-minute tour", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_tour_block_writes_only_below_its_own_folder() -> None:
    block = _tour_block()
    assert "/tmp/" not in block and "8830" not in block  # no fixed paths or ports
    assert "--state-dir" in block and "127.0.0.1:0" in block


def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCNC_")}
    env["TMPDIR"] = str(tmp_path)  # mktemp -d lands here
    script = tmp_path / "tour.sh"
    script.write_text("set -euo pipefail\n" + _tour_block())
    r = subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    folders = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(folders) == 1
    events = (folders[0] / "events.txt").read_text()
    for kind in ("VM_ALIVE", "SERVICE_ALIVE", "VM_STOPPED", "VM_STARTED",
                 "VM_CONFIRM_RESIZE_COMPLETE", "VM_BACKUP_COMPLETE", "VM_MIGRATE_COMPLETE",
                 "SERVICE_UNDEPLOYED"):
        assert kind in events, f"{kind} not seen by the tour's watcher:\n{events[-2000:]}"
    assert "FAILURE" not in events
