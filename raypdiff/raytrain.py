"""A plain training loop on Ray Train: the one place that builds the trainer, checkpoints the loop's state dict,
resumes from it and hands the final state back (the generator, its fold generators, the vision base)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Optional

import torch

from raypdiff.config import Config
from raypdiff.storage import Location

STATE = "state.pt"


def resumed_state(device=None) -> Optional[dict]:
    """On a worker: the state of the run's latest checkpoint (a restart or a re-run), else None."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if not ckpt:
        return None
    with ckpt.as_directory() as d:
        return torch.load(Path(d) / STATE, weights_only=True, map_location=device)


def report(metrics: dict, state: Optional[dict] = None) -> None:
    """On a worker: report metrics, with state as the checkpoint where given (every worker reports; rank 0 alone
    passes the state under DDP, whose replicas hold the same weights)."""
    import ray.train

    if state is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save(state, Path(d) / STATE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def run(loop: Callable[[dict], None], loop_config: dict, cfg: Config, out: Location, name: str, what: str,
        num_workers: int = 1, callbacks: Optional[list] = None, datasets: Optional[dict] = None) -> tuple[dict, dict]:
    """Run loop on num_workers Ray Train workers (trainer.use_gpu, trainer.cpus_per_worker, trainer.max_failures),
    checkpoints under out/ray/<name> through out's file system (a bucket or a disk), so a re-run under the same
    name resumes. Returns the last checkpoint's state (on the CPU) and the last metrics; what names the job in
    its error."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    t = cfg.trainer
    trainer = TorchTrainer(
        loop, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=t.use_gpu,
                                     resources_per_worker={"CPU": t.cpus_per_worker}),
        run_config=RunConfig(name=name, storage_path=(out / "ray").path, storage_filesystem=out.fs,
                             failure_config=FailureConfig(max_failures=t.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2), callbacks=callbacks or []),
        datasets=datasets)
    result = trainer.fit()
    if result.error:
        raise RuntimeError(f"{what} failed: {result.error}")
    with result.checkpoint.as_directory() as d:
        return torch.load(Path(d) / STATE, weights_only=True, map_location="cpu"), result.metrics  # saved on a GPU
