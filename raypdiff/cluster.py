"""Connecting to Ray: the one place that decides which cluster a command runs on, and what it offers."""
from __future__ import annotations

import atexit
import contextlib
import os
from typing import Optional


def connect(address: Optional[str] = None, progress: bool = True) -> None:
    """`address`, else RAY_ADDRESS (set by `ray job submit`), else a new local Ray ("local" asks for one too) —
    never a cluster that merely happens to run on this machine. RAYPDIFF_DASHBOARD=0 starts that local Ray without
    its dashboard (a process and ~1.5 s of a start less: the test suite starts dozens)."""
    import psutil
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or "local"
        local = address == "local"  # started here, so stopped here: a cluster's processes are its own
        quiet = local and os.environ.get("RAYPDIFF_DASHBOARD", "1") == "0"
        before = {p.pid for p in psutil.Process().children()}
        ray.init(address=address, log_to_driver=progress, **({"include_dashboard": False} if quiet else {}))
        if local:
            if not _LOCAL_RAY:
                atexit.register(_stop_local_ray)  # after Ray's own exit hook (registered at import): runs first
            _LOCAL_RAY[:] = [p for p in psutil.Process().children() if p.pid not in before]


_LOCAL_RAY: list = []  # the processes (GCS, raylet, dashboard, ...) the last local Ray of this process started


def _stop_local_ray() -> None:
    """Stop the local Ray this process started, and leave none of its processes behind. Ray's shutdown gives each
    process 1 s before SIGKILL; a dashboard killed so orphans its module processes, which then wait a minute or more
    for the dead GCS (CI saw them outlive the driver under load). Only Ray's own processes and theirs are known here,
    before the shutdown: those left after it are killed."""
    import psutil
    import ray

    ours = []
    for p in _LOCAL_RAY:
        with contextlib.suppress(psutil.Error):
            if p.is_running():  # the same process still (psutil checks its start time)
                ours += [p, *p.children(recursive=True)]
    ray.shutdown(_exiting_interpreter=True)  # as Ray's own exit hook calls it (its last log lines reach us)
    with contextlib.suppress(psutil.Error):
        for p in psutil.wait_procs(ours, timeout=5)[1]:
            with contextlib.suppress(psutil.Error):
                p.kill()


def cpus() -> int:
    """CPUs the connected cluster has now (re-read by callers each round, so an autoscaler's new nodes count)."""
    import ray

    return int(ray.cluster_resources().get("CPU", 1))
