"""Fault tolerance of `raypdiff collect`: a worker SIGKILLed mid-task is retried by Ray and the zoo still
comes out complete, with no duplicate rows; re-running collect on a complete zoo collects nothing.

Each collection runs as `python -m raypdiff.cli collect ...` in its own process group with a private local Ray
(collect.ray_address=local, RAY_TMPDIR in a fresh temp dir), so it never touches another Ray on the machine.
"""
from __future__ import annotations

import math
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
from helpers import RaypdiffProcess, data_root

pytestmark = pytest.mark.full  # end to end: the full tier

TASK = "SST-2"
STEPS, CAPTURES = 40, 5
EXPECTED_STEPS = list(range(STEPS - CAPTURES + 1, STEPS + 1))  # the last capture.num steps, stride 1


def _collect_cmd(zoo: Path) -> list[str]:
    return ["collect", "-q", "-c", "configs/tiny.yaml", f"tasks=[{TASK}]", f"train.steps={STEPS}",
            f"capture.num={CAPTURES}", "collect.max_retries=3", f"data.root={data_root()}",
            f"collect.output_dir={zoo}", "collect.ray_address=local", "tracking.enabled=false"]


class Collection(RaypdiffProcess):
    """One `raypdiff collect` subprocess, watched for its collect_one workers."""

    def __init__(self, zoo: Path, tmp: Path, name: str):
        super().__init__(_collect_cmd(zoo), tmp, tmp / f"{name}.log")

    def watch(self, timeout: float, skip: int | None = None) -> set[int]:
        """Poll until the collect process exits; returns the pids seen running collect_one (except `skip`)."""
        pids, deadline = set(), time.time() + timeout
        while self.proc.poll() is None and time.time() < deadline:
            pids.update(w.pid for w in self.workers("ray::collect_one") if w.pid != skip)
            time.sleep(0.2)
        return pids


def check_zoo(zoo: Path) -> None:
    from raypdiff.zoo.store import load_table, read_meta, shard_name

    meta = read_meta(zoo)  # raises unless the collection finished
    assert meta.complete is True and list(meta.tasks) == [TASK]
    assert sorted(p.name for p in (zoo / "shards").iterdir()) == [shard_name(TASK, 0)]  # no stray temp files
    t = load_table(zoo)
    keys = list(zip(t["task"].to_pylist(), t["seed"].to_pylist(), t["step"].to_pylist()))
    assert len(keys) == len(set(keys)), "duplicate (task, seed, step) rows"
    assert sorted(keys) == [(TASK, 0, s) for s in EXPECTED_STEPS]
    size = sum(math.prod(shape) for _, shape in meta.tasks[TASK].layout)
    assert all(len(v) == size for v in t["vector"].to_pylist())
    assert all(math.isfinite(v) for v in t["value"].to_pylist())


@pytest.fixture(scope="module")
def faulted_zoo(data_dir):
    """A one-task collection whose collect_one worker is SIGKILLed mid-task; yields the run's facts."""
    tmp = Path(tempfile.mkdtemp(prefix="rpf", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    zoo = tmp / "zoo"
    run = Collection(zoo, tmp, "faulted")
    shard = zoo / "shards" / f"{TASK}__seed0.parquet"
    try:
        victim, first_seen, deadline = None, None, time.time() + 150
        while time.time() < deadline and run.proc.poll() is None:
            workers = run.workers("ray::collect_one")
            if workers:
                if first_seen is None:
                    first_seen = time.time()
                elif time.time() - first_seen >= 3.0:  # it has been running collect_one a few seconds
                    victim = workers[0]
                    break
            time.sleep(0.2)
        assert victim is not None, f"never saw a ray::collect_one worker running:\n{run.tail()}"
        assert not shard.exists(), "the task finished before the kill; make it longer (train.steps)"
        ran_for = time.time() - victim.create_time()
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        killed_at = time.time()

        retried = run.watch(170, skip=victim.pid)
        print(f"killed collect_one worker {victim.pid} ({ran_for:.1f}s after its process started); "
              f"collect exited {run.proc.returncode} {time.time() - killed_at:.1f}s later; retry pids {retried}")
        assert run.proc.poll() is not None, f"collect did not finish after the kill:\n{run.tail()}"
        yield {"zoo": zoo, "tmp": tmp, "rc": run.proc.returncode, "log": run.tail(), "victim": victim.pid,
               "retried": retried, "survivors": run.survivors()}
    finally:
        run.close()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.timeout(400)
def test_worker_killed_mid_task_is_retried(faulted_zoo):
    f = faulted_zoo
    assert f["rc"] == 0, f"collect failed after the worker was killed:\n{f['log']}"
    assert f["retried"], f"no new collect_one worker after killing pid {f['victim']}:\n{f['log']}"
    check_zoo(f["zoo"])
    assert not f["survivors"], f"Ray processes outlived the collect process: {f['survivors']}"


@pytest.mark.timeout(400)
def test_rerun_on_complete_zoo_collects_nothing(faulted_zoo):
    from raypdiff.zoo.store import load_table

    zoo = faulted_zoo["zoo"]
    check_zoo(zoo)
    shards = sorted((zoo / "shards").iterdir())
    before = {p.name: p.stat().st_mtime_ns for p in shards}
    rows = load_table(zoo)

    run = Collection(zoo, faulted_zoo["tmp"], "rerun")
    try:
        ran = run.watch(240)
        assert run.proc.poll() == 0, f"re-run exited {run.proc.returncode}:\n{run.tail()}"
        assert not ran, "a collect_one task ran on a complete zoo"
        survivors = run.survivors()
    finally:
        run.close()
    assert not survivors, f"Ray processes outlived the collect process: {survivors}"
    assert {p.name: p.stat().st_mtime_ns for p in sorted((zoo / "shards").iterdir())} == before
    assert load_table(zoo).equals(rows)
    check_zoo(zoo)
