"""Pictures of parameter space: a 2-D t-SNE map of zoo and generated latents coloured by task, and adapters
generated along the straight path between two tasks' conditions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from raypdiff import plots


def latent_map(gen, arrays: dict, conditions: dict[str, torch.Tensor], per_task: int = 40, seed: int = 0) -> dict:
    """2-D t-SNE coordinates of up to `per_task` zoo latents of each task the generator knows, and of the latents it
    samples for each named condition ((n, C') each; tasks it never saw included): {"points": [[x, y], ...],
    "task": [...], "kind": ["zoo" | "generated", ...]}."""
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    blocks, tasks, kinds = [], [], []
    for t in gen.task_names:
        v = arrays[t]["vector"]
        rows = np.sort(rng.choice(len(v), size=min(per_task, len(v)), replace=False))
        blocks.append(gen.encode(t, v[rows]).numpy())
        tasks += [t] * len(rows)
        kinds += ["zoo"] * len(rows)
    for t, cond in conditions.items():
        blocks.append(gen.latents(cond, seed).numpy())
        tasks += [t] * len(cond)
        kinds += ["generated"] * len(cond)
    z = np.concatenate(blocks)  # (N, Z)
    xy = TSNE(n_components=2, perplexity=float(min(30, max(2, (len(z) - 1) // 3))), init="pca",
              random_state=seed).fit_transform(z)
    return {"points": xy.round(4).tolist(), "task": tasks, "kind": kinds}


def interpolate(gen, cond_a: torch.Tensor, cond_b: torch.Tensor, stats_task: str, alphas: list[float],
                seed: int = 0) -> np.ndarray:
    """Adapters for the conditions (1 - a) * cond_a + a * cond_b, (C',) each: (len(alphas), P) raw vectors, laid
    out and de-normalized as `stats_task`. One noise draw for every point, so only the condition moves."""
    cond = torch.stack([(1 - a) * cond_a + a * cond_b for a in alphas])  # (A, C')
    noise = gen.initial_noise(1, seed).expand(len(alphas), -1)
    return gen.denormalize(stats_task, gen.normalized(cond, seed, noise=noise))


def plot_map(m: dict, heldout: list[str], path: Path, title: str) -> Path:
    """Zoo latents as dots, generated ones as crosses (stars for held-out tasks), one colour per task."""
    xy, tasks, kinds = np.asarray(m["points"]), np.asarray(m["task"]), np.asarray(m["kind"])
    names = list(dict.fromkeys(m["task"]))
    colours = plots.palette(len(names))
    with plots.figure(path, (9, 7)) as (fig, ax):
        for i, t in enumerate(names):
            c = colours(i % colours.N)
            for kind, marker, size in (("zoo", "o", 10), ("generated", "*" if t in heldout else "x", 60)):
                rows = (tasks == t) & (kinds == kind)
                if rows.any():
                    ax.scatter(xy[rows, 0], xy[rows, 1], s=size, marker=marker, color=c, alpha=0.8,
                               label=f"{t}{' (held out)' if t in heldout else ''}" if kind == "generated" else None)
        ax.set_title(title)
        ax.legend(fontsize=6, ncol=2, loc="best", markerscale=0.7)
        ax.set_xticks([])
        ax.set_yticks([])
    return path


def plot_path(alphas: list[float], scores: dict[str, list[float]], a: str, b: str, path: Path) -> Path:
    """The metric on each task's test rows along the path from a's condition (0) to b's (1)."""
    with plots.figure(path, (6, 4)) as (fig, ax):
        for task, values in scores.items():
            ax.plot(alphas, values, marker="o", label=f"on {task}'s test rows")
        ax.set_xlabel(f"condition: (1 - a) * {a} + a * {b}")
        ax.set_ylabel("test metric")
        ax.legend(fontsize=8)
    return path
