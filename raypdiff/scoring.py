"""Scoring adapters: a plain scorer (one base model per task, its val/test batches built once), and a pool of
Ray actors running it with vectors streamed in, so `evaluate` scales with the cluster's workers."""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from raypdiff.tasks import Split, TaskSpec


class Scorer:
    """Predictions of flat adapter vectors on the val or test rows of the tasks it was given."""

    def __init__(self, base_model: dict, lora_cfg: dict, batch_size: int,
                 tasks: dict[str, tuple[dict, list, dict[str, Split]]]):
        """tasks: name → (spec dict, layout json, {"val": Split, "test": Split})."""
        from raypdiff.config import Config

        cfg = Config.for_base(base_model, lora_cfg)
        self.model_cfg, self.lora_cfg, self.batch_size, self.tasks = cfg.model, cfg.lora, batch_size, tasks
        self._models: dict = {}
        self._batches: dict = {}
        self._tok = None

    def predict(self, task: str, split: str, vectors: np.ndarray) -> np.ndarray:
        """(k, P) vectors → (k, R) predictions (class ids, or scores for regression) on `split`'s rows."""
        from raypdiff import lora

        spec_dict, layout_json, rows = self.tasks[task]
        spec = TaskSpec(**spec_dict)
        if task not in self._models:
            self._models[task] = lora.build(self.model_cfg, self.lora_cfg, spec)
        if (task, split) not in self._batches:
            self._tok = self._tok or lora.load_tokenizer(self.model_cfg)
            self._batches[task, split] = lora.eval_batches(self._tok, rows[split], self.model_cfg.max_length,
                                                           self.batch_size)
        model, layout = self._models[task], lora.Layout.from_json(layout_json)
        out = []
        for v in vectors:
            lora.load_vector(model, v, layout)
            out.append(lora.predict(model, self._batches[task, split], spec.is_regression, self.model_cfg.dtype))
        return np.stack(out)


class _Worker:
    def __init__(self, threads: int, base_model: dict, lora_cfg: dict, batch_size: int, shared: dict):
        """shared: the pool's tasks with each split as an object ref (nested refs are not resolved by Ray)."""
        import ray
        import torch

        torch.set_num_threads(threads)
        tasks = {name: (spec, layout, {k: ray.get(ref) for k, ref in rows.items()})
                 for name, (spec, layout, rows) in shared.items()}
        self.scorer = Scorer(base_model, lora_cfg, batch_size, tasks)

    def predict(self, task: str, split: str, vectors: np.ndarray) -> np.ndarray:
        return self.scorer.predict(task, split, vectors)


class ScorerPool:
    """`workers` Ray actors (default: one per CPU the cluster has), each holding the base model; jobs are cut into
    chunks of `chunk` vectors and streamed to whichever actor is free."""

    def __init__(self, base_model: dict, lora_cfg: dict, batch_size: int,
                 tasks: dict[str, tuple[dict, list, dict[str, Split]]], workers: Optional[int] = None,
                 threads: int = 1, chunk: int = 4, address: Optional[str] = None):
        import ray

        from raypdiff.cluster import connect, cpus

        connect(address, progress=False)
        n = workers or max(1, cpus() // threads)
        shared = {name: (spec, layout, {k: ray.put(v) for k, v in rows.items()})
                  for name, (spec, layout, rows) in tasks.items()}
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        # the cluster's CPUs, not the caller's placement group (a sweep trial's holds next to none)
        actor = ray.remote(num_cpus=threads)(_Worker).options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None))
        self.actors = [actor.remote(threads, base_model, lora_cfg, batch_size, shared) for _ in range(n)]
        self.chunk = chunk

    def predict(self, jobs: Iterable[tuple[str, str, np.ndarray]], bar=None) -> list[np.ndarray]:
        """jobs: (task, split, (k, P) vectors) → one (k, R) prediction array per job, in order."""
        import ray

        jobs = list(jobs)
        pieces = [(j, task, split, vecs[i:i + self.chunk]) for j, (task, split, vecs) in enumerate(jobs)
                  for i in range(0, len(vecs), self.chunk)]
        results: dict[int, list] = {}
        pending: dict = {}
        free, queue = list(self.actors) * 2, list(enumerate(pieces))  # two chunks in flight per actor
        while queue or pending:
            while queue and free:
                k, (_, task, split, vecs) = queue.pop(0)
                a = free.pop()
                pending[a.predict.remote(task, split, vecs)] = (k, a)
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            k, a = pending.pop(ref)
            results[k] = ray.get(ref)
            free.append(a)
            if bar is not None:
                bar.update(len(pieces[k][3]))
        out: dict[int, list] = {}
        for k, (j, *_rest) in enumerate(pieces):
            out.setdefault(j, []).append(results[k])
        return [np.concatenate(out[j]) if j in out else np.empty((0, 0), np.float32) for j in range(len(jobs))]

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
