"""Connecting to Ray: the one place that decides which cluster a command runs on, and what it offers."""
from __future__ import annotations

import atexit
import contextlib
import os
from typing import Optional


def connect(address: Optional[str] = None, progress: bool = True) -> None:
    """`address`, else RAY_ADDRESS (set by `ray job submit`), else a new local Ray — never a cluster that merely
    happens to run on this machine. RAYPDIFF_DASHBOARD=0 starts that local Ray without its dashboard (a process and
    ~1.5 s of a start less: the test suite starts dozens)."""
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        quiet = not address and os.environ.get("RAYPDIFF_DASHBOARD", "1") == "0"  # a cluster's dashboard is its own
        ray.init(address=address or "local", log_to_driver=progress, **({"include_dashboard": False} if quiet else {}))
        if not address:
            atexit.register(_stop_local_ray)  # after Ray's own exit hook (registered at import), so it runs first


def _stop_local_ray() -> None:
    """Stop the local Ray this process started, and leave none of its processes behind. Ray's shutdown gives each
    process 1 s before SIGKILL; a dashboard killed so orphans its module processes, which then wait a minute or more
    for the dead GCS (CI saw them outlive the driver under load). We know them all before the shutdown: kill the rest."""
    import psutil
    import ray

    ours = psutil.Process().children(recursive=True)
    ray.shutdown()
    for p in psutil.wait_procs(ours, timeout=5)[1]:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def cpus() -> int:
    """CPUs the connected cluster has now (re-read by callers each round, so an autoscaler's new nodes count)."""
    import ray

    return int(ray.cluster_resources().get("CPU", 1))
