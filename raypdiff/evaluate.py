"""Evaluation of a generator against its zoo on the zoo's fixed dev subsets: original vs AE-reconstructed vs
generated (mean and best), a novelty guard (distance to the nearest zoo vector) and a conditioning guard
(condition × task matrix). Writes report.json, report.md and report.png.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from raypdiff.config import ConfigError
from raypdiff.generate import Generator


class Scorer:
    """Scores flat vectors on one task's dev subset with a base model built once."""

    def __init__(self, gen: Generator, task: str, zoo_meta: dict, bar=None):
        from raypdiff import lora
        from raypdiff.config import Config
        from raypdiff.tasks import load_split

        cfg = Config.from_dict({"model": gen.payload["base_model"], "lora": gen.payload["lora"]})
        self.spec, self.layout, self.dtype = gen.spec(task), gen.layout(task), cfg.model.dtype
        dev = load_split(self.spec, "dev").take(zoo_meta["tasks"][task]["dev_indices"])
        self.labels, self.bar = dev.labels, bar
        self.model = lora.build(cfg.model, cfg.lora, self.spec)
        self.batches = lora.eval_batches(lora.load_tokenizer(cfg.model), dev, cfg.model.max_length,
                                         zoo_meta["eval"]["batch_size"])

    def __call__(self, vectors: np.ndarray) -> list[float]:
        from raypdiff import lora

        out = []
        for v in vectors:
            lora.load_vector(self.model, v, self.layout)
            out.append(lora.evaluate(self.model, self.batches, self.spec, self.labels, self.dtype))
            if self.bar is not None:
                self.bar.update()
        return out


def novelty(generated: np.ndarray, zoo: np.ndarray) -> dict:
    """Nearest-zoo L2 distance and cosine of each generated vector, next to zoo nearest-neighbour distances."""
    def pairwise(a, b):
        d2 = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None] - 2 * a @ b.T
        return np.sqrt(np.maximum(d2, 0))

    d = pairwise(generated, zoo)
    nn_idx = d.argmin(1)
    cos = (generated * zoo[nn_idx]).sum(1) / (np.linalg.norm(generated, axis=1) * np.linalg.norm(zoo[nn_idx], axis=1))
    dz = pairwise(zoo, zoo)
    np.fill_diagonal(dz, np.inf)
    return {"gen_nearest_l2_median": float(np.median(d.min(1))), "gen_nearest_cos_median": float(np.median(cos)),
            "zoo_neighbour_l2_median": float(np.median(dz.min(1))), "zoo_norm_median": float(np.median(np.linalg.norm(zoo, axis=1)))}


def evaluate(gen_path: str, out_dir: str, num: int = 10, seed: int = 0, matrix_num: int = 3,
             tasks: list[str] | None = None, guidance: float | None = None, sampler: str | None = None,
             quality: float | None = None, recon_num: int | None = None) -> dict:
    """num generated adapters per task, recon_num (default num) zoo vectors reconstructed, matrix_num per
    condition × task cell. guidance / sampler / quality: sampling settings other than the generator's own."""
    from raypdiff.zoo import read_meta, task_arrays

    gen = Generator(gen_path)
    guidance = gen.cfg.diffusion.guidance if guidance is None else guidance
    sampler = sampler or gen.cfg.diffusion.sampler
    quality = gen.resolve_quality(quality)
    meta = read_meta(gen.payload["zoo"])
    names = tasks or gen.task_names
    recon_num = num if recon_num is None else recon_num
    for name, n in (("--num", num), ("--recon-num", recon_num), ("--matrix-num", matrix_num)):
        if n < 1:
            raise ConfigError(f"{name}: must be >= 1, got {n}")
    for t in names:
        gen.spec(t)
    arrays = task_arrays(gen.payload["zoo"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"tasks": {}, "condition_matrix": {}, "novelty": {},
                    "sampling": {"guidance": guidance, "sampler": sampler, "quality": quality}}
    fits = {c: [s for s in names if gen.layout(s) == gen.layout(c)] for c in names}
    total = sum(min(recon_num, len(arrays[t]["vector"])) + num + matrix_num * len(fits[t]) for t in names)
    bar = tqdm(total=total, desc="score adapters", unit="adapter")
    scorers = {t: Scorer(gen, t, meta, bar) for t in names}
    gen_seconds = []
    for t in names:
        zoo_vecs, values = arrays[t]["vector"], arrays[t]["value"]  # (N, P), (N,)
        pick = np.linspace(0, len(zoo_vecs) - 1, min(recon_num, len(zoo_vecs))).round().astype(int)
        recon = scorers[t](gen.reconstruct(t, zoo_vecs[pick]))
        t0 = time.time()
        vecs = gen.vectors(gen.conditions(t, num, quality), t, seed, guidance, sampler)
        gen_seconds.append((time.time() - t0) / num)
        scores = scorers[t](vecs)
        report["tasks"][t] = {
            "metric": scorers[t].spec.metric,
            "original": {"mean": float(values.mean()), "best": float(values.max())},
            "recon": {"mean": float(np.mean(recon)), "best": float(np.max(recon)), "n": len(recon)},
            "generated": {"mean": float(np.mean(scores)), "best": float(np.max(scores)), "n": len(scores)},
        }
        report["novelty"][t] = novelty(vecs, zoo_vecs)
    # Condition c's adapters scored on every task s whose layout fits. They are de-normalized with s's
    # statistics and drawn from the same noise, so a row differs from the diagonal only through the condition
    # (with task-wise statistics, c's own statistics alone would make c's adapters fit c).
    for c in names:  # sampled once per condition, de-normalized per scored task
        x = gen.normalized(gen.conditions(c, matrix_num, quality), seed + 1, guidance, sampler)
        report["condition_matrix"][c] = {s: float(np.mean(scorers[s](gen.denormalize(s, x))))
                                          for s in fits[c]}
    bar.close()
    report["own_condition_wins"] = {
        s: max(((c, row[s]) for c, row in report["condition_matrix"].items() if s in row), key=lambda x: x[1])[0] == s
        for s in names}
    report["generate_seconds_per_adapter"] = float(np.median(gen_seconds))
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(markdown(report))
    plot(report, out / "report.png")
    return report


def markdown(report: dict) -> str:
    sampling = report["sampling"]
    quality = "" if sampling.get("quality") is None else f", quality {sampling['quality']:g}"
    lines = [f"Sampling: {sampling['sampler'].upper()}, guidance {sampling['guidance']:g}{quality}.", "",
             "| task | metric | original mean | original best | recon mean | recon best | generated mean | "
             "generated best | n |", "|---|---|---|---|---|---|---|---|---|"]
    for t, r in report["tasks"].items():
        lines.append(f"| {t} | {r['metric']} | {r['original']['mean']:.4f} | {r['original']['best']:.4f} | "
                     f"{r['recon']['mean']:.4f} | {r['recon']['best']:.4f} | {r['generated']['mean']:.4f} | "
                     f"{r['generated']['best']:.4f} | {r['generated']['n']} |")
    lines += ["", "Novelty (per task: median L2 from each generated vector to its nearest zoo vector, its cosine, "
              "and the median L2 between zoo neighbours):", "",
              "| task | gen→zoo L2 | gen→zoo cos | zoo↔zoo L2 | zoo norm |", "|---|---|---|---|---|"]
    for t, n in report["novelty"].items():
        lines.append(f"| {t} | {n['gen_nearest_l2_median']:.4f} | {n['gen_nearest_cos_median']:.4f} | "
                     f"{n['zoo_neighbour_l2_median']:.4f} | {n['zoo_norm_median']:.3f} |")
    names = list(report["tasks"])
    lines += ["", "Condition × task (rows: condition used to generate; columns: task scored, de-normalized with its "
              "statistics; – = layouts differ):",
              "", "| condition | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for c, row in report["condition_matrix"].items():
        lines.append(f"| {c} | " + " | ".join(f"{row[s]:.3f}" if s in row else "–" for s in names) + " |")
    lines += ["", "Own condition wins: " + ", ".join(f"{t}: {'yes' if w else 'NO'}"
                                                   for t, w in report["own_condition_wins"].items())]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["tasks"])
    keys = [("original", "mean"), ("original", "best"), ("recon", "mean"), ("generated", "mean"), ("generated", "best")]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.2))
    for i, (a, b) in enumerate(keys):
        ax.bar(x + (i - 2) * 0.16, [report["tasks"][t][a][b] for t in names], 0.16, label=f"{a} {b}")
    ax.set_xticks(x, names)
    ax.set_ylabel("dev metric")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

