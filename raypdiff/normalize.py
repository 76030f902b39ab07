"""Per-coordinate z-score statistics of zoo vectors: per task (the paper's default), over the batch, or none.

Fitted once on the zoo, saved with the generator and inverted at generation time.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from raypdiff.config import ConfigError

Mode = Literal["task", "batch", "none"]
POOLED = "*"  # key of the statistics shared by every task (batch mode)


class Normalizer:
    def __init__(self, mode: Mode, stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                 eps: float = 1e-8):
        if mode not in ("task", "batch", "none"):
            raise ConfigError(f"normalize: mode {mode!r} is not one of task, batch, none")
        self.mode, self.eps, self.stats = mode, eps, stats or {}

    @classmethod
    def fit(cls, vectors: dict[str, np.ndarray], mode: Mode, eps: float = 1e-8) -> "Normalizer":
        """vectors: task → (N_task, P_task). Batch mode needs every task to share one P."""
        norm = cls(mode, eps=eps)
        if mode == "task":
            norm.stats = {t: (v.mean(0), v.std(0)) for t, v in vectors.items()}
        elif mode == "batch":
            sizes = {v.shape[1] for v in vectors.values()}
            if len(sizes) > 1:
                # Tasks with different heads: pool over the rows that share each coordinate (the LoRA part).
                p = max(sizes)
                stacked = np.full((sum(len(v) for v in vectors.values()), p), np.nan, dtype=np.float64)
                i = 0
                for v in vectors.values():
                    stacked[i:i + len(v), :v.shape[1]] = v
                    i += len(v)
                mean, std = np.nanmean(stacked, 0), np.nanstd(stacked, 0)
            else:
                allv = np.concatenate(list(vectors.values()))
                mean, std = allv.mean(0), allv.std(0)
            norm.stats = {POOLED: (mean.astype(np.float32), std.astype(np.float32))}
        return norm

    def _stats(self, task: str, p: int):
        key = task if self.mode == "task" else POOLED
        if key not in self.stats:
            raise ConfigError(f"normalize: no statistics for task {task!r} (task-wise statistics exist for "
                              f"{', '.join(sorted(self.stats))}); use normalize.mode=batch for new tasks")
        mean, std = self.stats[key]
        return mean[:p], std[:p]

    def apply(self, task: str, x: np.ndarray) -> np.ndarray:
        """(N, P) raw → (N, P) normalized."""
        if self.mode == "none":
            return x.astype(np.float32)
        mean, std = self._stats(task, x.shape[-1])
        return ((x - mean) / (std + self.eps)).astype(np.float32)

    def invert(self, task: str, z: np.ndarray) -> np.ndarray:
        if self.mode == "none":
            return z.astype(np.float32)
        mean, std = self._stats(task, z.shape[-1])
        return (z * (std + self.eps) + mean).astype(np.float32)

    def invert_tensor(self, task: str, z: torch.Tensor) -> torch.Tensor:
        """`invert` on a torch tensor, keeping its gradient."""
        if self.mode == "none":
            return z
        mean, std = self._stats(task, z.shape[-1])
        std, mean = (torch.from_numpy(np.asarray(a, np.float32)).to(z.device) for a in (std + self.eps, mean))
        return z * std + mean

    def state_dict(self) -> dict:
        return {"mode": self.mode, "eps": self.eps,
                "stats": {k: (np.asarray(m), np.asarray(s)) for k, (m, s) in self.stats.items()}}

    @classmethod
    def from_state(cls, state: dict) -> "Normalizer":
        return cls(state["mode"], {k: (np.asarray(m), np.asarray(s)) for k, (m, s) in state["stats"].items()},
                   state["eps"])
