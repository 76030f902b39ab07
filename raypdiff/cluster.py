"""Connecting to Ray: the one place that decides which cluster a command runs on, and what it offers."""
from __future__ import annotations

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


def cpus() -> int:
    """CPUs the connected cluster has now (re-read by callers each round, so an autoscaler's new nodes count)."""
    import ray

    return int(ray.cluster_resources().get("CPU", 1))
