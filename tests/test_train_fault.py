"""Fault tolerance of `raypdiff train`: the Ray Train worker is SIGKILLed after the first checkpoint; the
FailureConfig restarts it, training resumes from that checkpoint (not from step 0) and the command still
writes generator.safetensors and exits 0.

Both commands run as `python -m raypdiff.cli ...` in their own process group with a private local Ray
(RAY_TMPDIR in a fresh temp dir); only processes below our own subprocess are ever inspected or killed.
"""
from __future__ import annotations

import json
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
from helpers import RaypdiffProcess

from raypdiff import checkpoint
from raypdiff.checkpoint import GENERATOR_FILE

pytestmark = pytest.mark.full  # end to end: the full tier

AE_STEPS, DIFF_STEPS, EVERY = 400, 400, 50


def registered_checkpoint(gen: Path) -> dict | None:
    """Metrics of the latest checkpoint the Ray Train controller has registered (a checkpoint folder on disk
    is not enough: the worker writes it before its report reaches the controller, and a kill in between
    rightly restarts from the previous one)."""
    snaps = list(gen.glob("ray/generator-*/checkpoint_manager_snapshot.json"))  # one run: one folder
    try:
        latest = json.loads(snaps[0].read_text()).get("latest_checkpoint_result")
    except (IndexError, OSError, ValueError):  # not written yet, or caught mid-write
        return None
    return latest and latest["metrics"]


@pytest.mark.timeout(600)
def test_worker_killed_mid_training_resumes_from_checkpoint(tiny_zoo, data_dir):
    tmp = Path(tempfile.mkdtemp(prefix="rptf", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    gen = tmp / "gen"
    runs = []
    try:
        train = RaypdiffProcess(["train", "-q", "-c", "configs/tiny_gen.yaml", "--zoo", str(tiny_zoo),
                                 f"data.root={data_dir}", "tracking.enabled=false", f"trainer.output_dir={gen}",
                                 f"autoencoder.steps={AE_STEPS}", f"diffusion.steps={DIFF_STEPS}",
                                 f"trainer.checkpoint_every={EVERY}", "trainer.max_failures=2"],
                                tmp / "ray", tmp / "train.log")
        runs.append(train)
        victim, deadline = None, time.time() + 300
        while time.time() < deadline and train.proc.poll() is None:
            workers = train.workers("RayTrainWorker")
            first = registered_checkpoint(gen)
            if workers and first:
                victim = workers[0]
                break
            time.sleep(0.1)
        assert victim is not None, f"never saw a RayTrainWorker with a checkpoint written:\n{train.tail()}"
        assert not (gen / GENERATOR_FILE).exists(), "training finished before the kill; give it more steps"
        assert (first["phase"], first["step"]) != ("diffusion", DIFF_STEPS), first
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        killed_at = time.time()

        replacements = set()
        while train.proc.poll() is None and time.time() < killed_at + 400:
            replacements.update(w.pid for w in train.workers("RayTrainWorker") if w.pid != victim.pid)
            time.sleep(0.5)
        rc = train.proc.poll()
        print(f"killed RayTrainWorker {victim.pid} at checkpoint {first['phase']} step {first['step']}; "
              f"train exited {rc} {time.time() - killed_at:.1f}s later; new workers {replacements}")
        assert rc == 0, f"train failed after the worker was killed (rc={rc}):\n{train.tail()}"
        assert replacements, f"no new RayTrainWorker after killing {victim.pid}:\n{train.tail()}"
        assert (gen / GENERATOR_FILE).is_file()

        summary = json.loads((gen / "train_summary.json").read_text())
        assert summary["final"]["resumed"] is True, f"the final report says training restarted: {summary['final']}"
        assert summary["final"]["phase"] == "diffusion" and summary["final"]["step"] == DIFF_STEPS
        # resumed, not restarted: the history carried over the checkpoint holds every logged step exactly once
        steps = [(h["phase"], h["step"]) for h in checkpoint.load(gen).history]
        assert steps == [("ae", s) for s in range(50, AE_STEPS + 1, 50)] + \
            [("diffusion", s) for s in range(50, DIFF_STEPS + 1, 50)], steps
    finally:
        for r in runs:
            r.close()
        shutil.rmtree(tmp, ignore_errors=True)
