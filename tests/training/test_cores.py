"""The share of a machine's cores among its running training workers (known answers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from i2m2_ray.training.cores import CoreShare, running_workers, threads_for


def test_threads_are_an_equal_share_never_below_the_workers_cpus() -> None:
    assert threads_for(1, 2, 1) == 2  # alone on 2 cores
    assert threads_for(1, 2, 2) == 1
    assert threads_for(1, 2, 3) == 1  # oversubscribed: still its one CPU
    assert threads_for(2, 16, 3) == 5
    assert threads_for(4, 16, 8) == 4  # its CPUs are the floor
    assert threads_for(1, 8, 0) == 8  # nothing registered: as if alone


def test_running_workers_add_up_every_live_driver_and_drop_dead_ones(tmp_path: Path) -> None:
    share = CoreShare(str(tmp_path))
    share.set(2)
    assert json.loads(share.path.read_text()) == {"pid": os.getpid(), "workers": 2}
    # another live driver on the machine (this test's parent process) with 3 workers
    (tmp_path / "other.json").write_text(json.dumps({"pid": os.getppid(), "workers": 3}))
    # a driver that has exited: its file is ignored and removed
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / "dead.json"
    dead.write_text(json.dumps({"pid": int(gone.stdout), "workers": 7}))
    # a file being replaced (not JSON yet) and one of another shape count nothing
    (tmp_path / "partial.json").write_text('{"pid": ')
    (tmp_path / "odd.json").write_text(json.dumps({"workers": 4}))
    assert running_workers(tmp_path) == 5
    assert not dead.exists()
    share.set(0)
    assert running_workers(tmp_path) == 3
    share.close()
    assert not share.path.exists() and running_workers(tmp_path) == 3
    assert running_workers(tmp_path / "absent") == 0
