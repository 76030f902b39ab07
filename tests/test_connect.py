"""`cluster.connect`: a local Ray it starts (no address, or "local") is stopped with every process of it when the
driver exits, on a real Ray in a private temp dir."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from helpers import REPO, private_ray_env

DRIVER = """
from raypdiff.cluster import _LOCAL_RAY, connect
connect({address!r}, progress=False)
print(" ".join(str(p.pid) for p in _LOCAL_RAY))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("address", [None, "local"])
def test_a_local_ray_leaves_no_process_behind(address):
    with tempfile.TemporaryDirectory(prefix="rpc", dir="/tmp") as tmp:  # short: Ray's socket paths < 108 chars
        env = {**private_ray_env(Path(tmp)), "RAYPDIFF_DASHBOARD": "0"}
        out = subprocess.run([sys.executable, "-c", DRIVER.format(address=address)], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=100)
        assert out.returncode == 0, out.stderr[-2000:]
        pids = [int(p) for p in out.stdout.split()]
        assert pids, f"connect({address!r}) recorded none of the local Ray's processes to stop"
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"the local Ray's processes {alive} outlived its driver"
