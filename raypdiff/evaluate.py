"""Held-out evaluation of a generator against its zoo: everything that picks reads val, every reported figure is
on test with a 95% bootstrap interval over test rows, beside the baselines (majority class, the zoo's weight
average, the base model with its initial head). Writes report.json, report.md and report.png.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from raypdiff import plots, reports
from raypdiff.config import ConfigError
from raypdiff.generate import Generator
from raypdiff.reports import cell, table
from raypdiff.stats import Bootstrap, interval, metric_rows, val_ties, verdict
from raypdiff.storage import Location, local_folder, writable
from raypdiff.tasks import TaskSpec
from raypdiff.zoo.store import TaskInfo, ZooMeta

TARGET_POINTS = 0.005  # the issue's targets: within half a point of the zoo


def novelty_distances(generated: np.ndarray, zoo: np.ndarray, recon: np.ndarray, originals: np.ndarray) -> dict:
    """Medians: generated → nearest zoo vector (L2, cosine), reconstruction → its own original and → nearest zoo
    vector (the decoder's floor), zoo nearest-neighbour L2, and generated / zoo → the zoo's mean vector."""
    def pairwise(a, b):
        d2 = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None] - 2 * a @ b.T
        return np.sqrt(np.maximum(d2, 0))

    d = pairwise(generated, zoo)
    nn_idx = d.argmin(1)
    cos = (generated * zoo[nn_idx]).sum(1) / (np.linalg.norm(generated, axis=1) * np.linalg.norm(zoo[nn_idx], axis=1))
    dz = pairwise(zoo, zoo)
    np.fill_diagonal(dz, np.inf)
    mean = zoo.mean(0)
    return {"gen_nearest_l2_median": float(np.median(d.min(1))), "gen_nearest_cos_median": float(np.median(cos)),
            "recon_own_l2_median": float(np.median(np.linalg.norm(recon - originals, axis=1))),
            "recon_nearest_l2_median": float(np.median(pairwise(recon, zoo).min(1))),
            "zoo_neighbour_l2_median": float(np.median(dz.min(1))),
            "gen_to_zoo_mean_l2_median": float(np.median(np.linalg.norm(generated - mean, axis=1))),
            "zoo_to_zoo_mean_l2_median": float(np.median(np.linalg.norm(zoo - mean, axis=1))),
            "zoo_norm_median": float(np.median(np.linalg.norm(zoo, axis=1))), "nearest": nn_idx}


def disagreement(a: np.ndarray, b: np.ndarray, regression: bool) -> float:
    """Median over pairs of how differently two adapters predict the test rows: the share of rows whose class
    differs, or for regression the mean absolute score difference."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    per_pair = np.abs(a - b).mean(1) if regression else (a != b).mean(1)
    return float(np.median(per_pair))


def zoo_pairs(arrays: dict, gap: int, limit: int = 5) -> list[tuple[int, int]]:
    """Up to `limit` (i, j) capture pairs of one run `gap` steps apart, i scored on test at collect time."""
    seed, step, tested = arrays["seed"], arrays["step"], arrays["test_pred"]
    where = {(int(s), int(t)): i for i, (s, t) in enumerate(zip(seed, step))}
    pairs = [(i, where[int(seed[i]), int(step[i]) - gap]) for i in sorted(tested)
             if (int(seed[i]), int(step[i]) - gap) in where]
    return pairs[-limit:]


class Plan:
    """Every adapter the report scores, as (task, split, vectors) jobs for the scorer pool; results by key."""

    def __init__(self):
        self.jobs: list[tuple[str, str, np.ndarray]] = []
        self.keys: list[tuple] = []

    def add(self, key: tuple, task: str, split: str, vectors: np.ndarray) -> None:
        if len(vectors):
            self.keys.append(key)
            self.jobs.append((task, split, np.asarray(vectors, np.float32)))

    def score(self, meta: ZooMeta, splits: dict, workers: Optional[int]) -> dict:
        """Score every job on a scorer pool over the tasks' named splits; key → (n, R) predictions."""
        from raypdiff.scoring import ScorerPool

        pool = ScorerPool(meta.base_model, meta.lora, meta.eval["batch_size"],
                          {t: (meta.tasks[t].spec, meta.tasks[t].layout, s) for t, s in splits.items()},
                          workers=workers)
        try:
            with tqdm(total=sum(len(v) for _, _, v in self.jobs), desc="score adapters", unit="adapter") as bar:
                return dict(zip(self.keys, pool.predict(self.jobs, bar)))
        finally:
            pool.close()


def weight_average_on_val(zoo: str, workers: Optional[int] = None) -> dict:
    """Per task of a zoo: its captures' val scores (mean, best) beside the val score of their weight average (the
    mean vector), the comparison that picks a zoo's training schedule without reading test."""
    from raypdiff.domains import load_splits
    from raypdiff.zoo.store import check, task_arrays

    meta, arrays = check(zoo), task_arrays(zoo)
    data, plan = load_splits(meta, list(arrays)), Plan()
    for t, a in arrays.items():
        plan.add(("wa", t), t, "val", a["vector"].mean(0, keepdims=True))
    preds = plan.score(meta, {t: {"val": data[t].val} for t in arrays}, workers)
    return {t: {"metric": meta.tasks[t].metric, "captures": len(a["value"]), "zoo_mean": float(a["value"].mean()),
                "zoo_best": float(a["value"].max()),
                "weight_average": float(metric_rows(meta.tasks[t].metric, preds["wa", t], data[t].val.labels)[0])}
            for t, a in arrays.items()}


def _check_counts(workers: Optional[int], **counts: int) -> None:
    for name, n in {**counts, "workers": 1 if workers is None else workers}.items():  # None: one per cluster CPU
        if n < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1, got {n}")


def _load(gen_path: str, tasks: Optional[list[str]], zoo: Optional[str]):
    """The generator, the task names (validated), and the zoo's meta, splits and per-task arrays."""
    from raypdiff.domains import load_splits
    from raypdiff.zoo.store import check, task_arrays

    from raypdiff.domains import require_text

    gen = Generator(gen_path)
    require_text(gen.domain, "evaluate", gen.path)
    names = tasks or gen.task_names
    for t in names:
        gen.spec(t)
    zoo = zoo or gen.ckpt.zoo
    meta = check(zoo)
    return gen, names, meta, load_splits(meta, names), task_arrays(zoo, test=True)


def evaluate(gen_path: str, out_dir: str, num: int = 10, seed: int = 0, matrix_num: int = 10,
             tasks: list[str] | None = None, guidance: float | None = None, sampler: str | None = None,
             quality: float | None = None, recon_num: int | None = None, workers: Optional[int] = None,
             bootstrap: int = 1000, subset_rows: int = 200, zoo: Optional[str] = None) -> dict:
    """num generated adapters per task, recon_num (default num) zoo vectors reconstructed, matrix_num per
    condition × task cell. The matrix and the behavioural novelty read the first subset_rows test rows (they would
    be most of the scoring otherwise);
    workers: scoring actors (default: one per cluster CPU). guidance / sampler / quality: sampling settings other
    than the generator's own. zoo: the zoo to compare with (default: the one the generator was trained on; a sweep
    trial trained on a subsample compares with the whole). The report (`held_out`), written by `write`."""
    recon_num = num if recon_num is None else recon_num
    _check_counts(num=num, recon_num=recon_num, matrix_num=matrix_num, subset_rows=subset_rows,
                  bootstrap=bootstrap, workers=workers)
    gen, names, meta, data, arrays = _load(gen_path, tasks, zoo)
    sampling = {"guidance": gen.cfg.diffusion.guidance if guidance is None else guidance,
                "sampler": sampler or gen.cfg.diffusion.sampler, "quality": gen.resolve_quality(quality), "seed": seed,
                "temperature": gen.cfg.diffusion.temperature}
    out = writable(out_dir, "--out")  # before the scoring: an unusable --out fails at once, not minutes later
    report = held_out(gen, names, meta, data, arrays, sampling, num=num, recon_num=recon_num,
                      matrix_num=min(matrix_num, num), subset_rows=subset_rows, bootstrap=bootstrap, workers=workers)
    with local_folder(out, last=("report.json",)) as local:  # a bucket's report.json names a whole report
        write(report, local)
    return report


def write(report: dict, out: Path) -> list[Path]:
    """report.json, report.md and report.png in out, from the report alone."""
    return reports.write(out, "report", report, markdown, plot)


def held_out(gen: Generator, names: list[str], meta: ZooMeta, data: dict, arrays: dict, sampling: dict, num: int,
             recon_num: int, matrix_num: int, subset_rows: int, bootstrap: int, workers: Optional[int]) -> dict:
    """The report as a plain dict (report.json): every adapter sampled and scored on the scorer pool, then each
    task's figures, its novelty and the condition × task matrix. sampling: guidance, sampler, quality, seed."""
    seed = sampling["seed"]
    fits = {c: [s for s in names if gen.layout(s) == gen.layout(c)] for c in names}
    plan, kept, gen_seconds = _sample(gen, names, meta, arrays, sampling, num, recon_num, matrix_num, fits)
    subset = {t: list(range(min(subset_rows, len(data[t].test)))) for t in names}
    preds = plan.score(meta, {t: {"val": data[t].val, "test": data[t].test, "subset": data[t].test.take(subset[t])}
                              for t in names}, workers)
    boots = {t: Bootstrap(gen.spec(t).metric, data[t].test.labels, bootstrap, seed) for t in names}
    mboots = {t: Bootstrap(gen.spec(t).metric, data[t].test.labels[subset[t]], bootstrap, seed) for t in names}
    own = {t: preds["gen", t, "test"][:matrix_num][:, subset[t]] for t in names}  # the matrix's diagonal
    report: dict = {"splits": {t: {"train": data[t].splits["train"]["rows"], "val": len(data[t].val),
                                   "test": len(data[t].test)} for t in names},
                    "tasks": {t: _figures(t, gen.spec(t), meta.tasks[t], arrays[t], kept[t], preds, data[t].val.labels,
                                          boots[t]) for t in names},
                    "novelty": {t: _novelty(t, kept[t], arrays[t], preds, subset[t], gen.spec(t).is_regression)
                                for t in names},
                    **_conditions(names, fits, own, preds, mboots),
                    "sampling": sampling, "bootstrap": bootstrap, "subset_rows": {t: len(r) for t, r in subset.items()}}
    report["targets"] = targets(report)
    report["generate_seconds_per_adapter"] = float(np.median(gen_seconds))
    return report


def _sample(gen: Generator, names: list[str], meta: ZooMeta, arrays: dict, sampling: dict, num: int, recon_num: int,
            matrix_num: int, fits: dict) -> tuple[Plan, dict, list[float]]:
    """Sample every task's adapters and queue every scoring job: the plan, per task what the figures read back
    (novelty distances, capture pairs, the zoo rows scored), and seconds per generated adapter."""
    from raypdiff import lora

    base = meta.base_config()
    guidance, sampler, quality, seed = (sampling[k] for k in ("guidance", "sampler", "quality", "seed"))
    # Condition c's draws serve as c's generated adapters and, de-normalized with another task's statistics, as c's
    # row of the condition matrix: a row then differs from the diagonal only through the condition.
    plan, kept, gen_seconds = Plan(), {}, []
    for t in names:
        a = arrays[t]
        t0 = time.perf_counter()
        x = gen.normalized(gen.conditions(t, num, quality), seed, guidance, sampler)  # (num, P_max)
        vecs = gen.denormalize(t, x)
        gen_seconds.append((time.perf_counter() - t0) / num)
        pick = np.linspace(0, len(a["vector"]) - 1, min(recon_num, len(a["vector"]))).round().astype(int)
        recon = gen.reconstruct(t, a["vector"][pick])
        dist = novelty_distances(vecs, a["vector"], recon, a["vector"][pick])
        init = lora.build(base.model, base.lora, gen.spec(t), int(a["seed"].min()), meta.tasks[t].label_mean)
        nearest = sorted(set(dist["nearest"].tolist()) - set(a["test_pred"]))
        pairs = {"neighbours": zoo_pairs(a, meta.capture.stride), "50_steps_apart": zoo_pairs(a, 50)}
        untested = sorted({j for ps in pairs.values() for _, j in ps} - set(a["test_pred"]))
        tied = [int(i) for i in val_ties(a["value"]) if int(i) not in a["test_pred"]]  # collect scored the first only
        kept[t] = {"dist": dist, "pairs": pairs, "zoo_rows": nearest + untested, "zoo_tied": tied}
        for split in ("val", "test"):
            plan.add(("gen", t, split), t, split, vecs)
            plan.add(("recon", t, split), t, split, recon)
        if tied:
            plan.add(("zoo_tied", t), t, "test", a["vector"][tied])
        plan.add(("wa", t), t, "test", a["vector"].mean(0, keepdims=True))
        plan.add(("init", t), t, "test", lora.flatten(init)[None])
        plan.add(("zoo", t), t, "subset", a["vector"][nearest + untested])
        for s in fits[t]:
            if s != t:
                plan.add(("matrix", t, s), s, "subset", gen.denormalize(s, x[:matrix_num]))
    return plan, kept, gen_seconds


def _figures(t: str, spec: TaskSpec, info: TaskInfo, a: dict, kept: dict, preds: dict, val_labels: np.ndarray,
             boot: Bootstrap) -> dict:
    """One task's test figures (zoo, baselines, reconstructed and generated adapters, paired differences) and val
    figures. info: the task's zoo meta; a: its zoo arrays."""
    tested = sorted(a["test_pred"])  # the stated sample scored at collect time (every test_every-th + best)
    zoo_preds = np.stack([a["test_pred"][i] for i in tested])
    tied = dict(zip(kept["zoo_tied"], preds.get(("zoo_tied", t), [])))  # val-tied captures collect did not score
    z_best = np.stack([a["test_pred"].get(int(i), tied.get(int(i))) for i in val_ties(a["value"])])
    last = [i for i in range(len(a["step"])) if a["step"][i] == a["step"].max()]
    g_val = metric_rows(spec.metric, preds["gen", t, "val"], val_labels)
    r_val = metric_rows(spec.metric, preds["recon", t, "val"], val_labels)
    g_test, r_test = preds["gen", t, "test"], preds["recon", t, "test"]
    g_best, r_best = g_test[val_ties(g_val)], r_test[val_ties(r_val)]
    wa = preds["wa", t]
    return {
        "metric": spec.metric,
        "test": {
            "zoo": {**boot.mean(zoo_preds), "n": len(tested), "scores": [float(a["test_value"][i]) for i in tested],
                    "best_by_val": boot.point(z_best), "best_by_val_ci": interval(boot.draws(z_best)),
                    "best_by_val_ties": len(z_best),
                    "last": boot.point(np.stack([a["test_pred"][i] for i in last]))},
            "weight_average": boot.point(wa), "weight_average_ci": interval(boot.draws(wa)),
            "majority": info.majority,
            "base_init": boot.point(preds["init", t]),
            "recon": {**boot.mean(r_test), "best_by_val": boot.point(r_best), "best_by_val_ties": len(r_best),
                      "n": len(r_test), "scores": metric_rows(spec.metric, r_test, boot.labels).tolist(),
                      "val_scores": r_val.tolist()},
            "generated": {**boot.mean(g_test), "best_by_val": boot.point(g_best), "best_by_val_ties": len(g_best),
                          "n": len(g_test), "scores": metric_rows(spec.metric, g_test, boot.labels).tolist(),
                          "val_scores": g_val.tolist()},
            "diff": {"gen_vs_zoo_mean": boot.diff(g_test, zoo_preds),
                     "gen_vs_weight_average": boot.diff(g_test, wa),
                     "gen_best_vs_zoo_best": boot.diff(g_best, z_best),
                     "recon_vs_zoo_mean": boot.diff(r_test, zoo_preds)},
        },
        "val": {"zoo_mean": float(a["value"].mean()), "zoo_best": float(a["value"].max()),
                "generated_mean": float(g_val.mean()), "generated_best": float(g_val.max()),
                "recon_mean": float(r_val.mean())},
    }


def _novelty(t: str, kept: dict, a: dict, preds: dict, rows: list[int], reg: bool) -> dict:
    """One task's novelty: the parameter distances, and how differently generated adapters predict the first test
    rows than their nearest zoo vectors (and zoo captures than their neighbours in the same run)."""
    zoo_sub = {i: p[rows] for i, p in a["test_pred"].items()}  # captures' predictions on the subset
    zoo_sub.update(zip(kept["zoo_rows"], preds.get(("zoo", t), [])))
    dist = kept["dist"]
    near = np.stack([zoo_sub[i] for i in dist["nearest"]])
    return {
        **{k: v for k, v in dist.items() if k != "nearest"},
        "gen_vs_nearest_zoo_disagreement": disagreement(preds["gen", t, "test"][:, rows], near, reg),
        **{f"zoo_{gap}_disagreement":
           disagreement(np.stack([zoo_sub[i] for i, _ in ps]), np.stack([zoo_sub[j] for _, j in ps]), reg)
           if ps else None for gap, ps in kept["pairs"].items()},
        "disagreement_unit": "mean |score difference|" if reg else "share of test rows predicted differently"}


def _conditions(names: list[str], fits: dict, own: dict, preds: dict, mboots: dict) -> dict:
    """The condition × task matrix on the first test rows, and per task its own condition against the best other."""
    matrix = {c: {s: mboots[s].mean(own[c] if s == c else preds["matrix", c, s]) for s in fits[c]} for c in names}
    versus = {}
    for s in names:
        others = [c for c in names if c != s and s in fits[c]]
        if not others:
            versus[s] = {"status": "no competitor"}
            continue
        rival = max(others, key=lambda c: matrix[c][s]["mean"])
        d = mboots[s].diff(own[s], preds["matrix", rival, s])
        versus[s] = {"status": {"higher": "wins", "lower": "loses"}.get(verdict(d["ci"]), "no difference"),
                     "best_other": rival, **d}
    return {"condition_matrix": matrix, "own_condition": versus}


def evaluate_generated(gen_path: str, out_dir: str, num: int = 10, seed: int = 0, workers: Optional[int] = None,
                       bootstrap: int = 1000, zoo: Optional[str] = None) -> dict:
    """The lean report a sweep trial needs: only the generated adapters are scored, on val (the objective; picks
    best-by-val) and test (mean with its interval), beside what costs nothing to add: the zoo's collect-time test
    scores and the majority class. Writes report.json."""
    _check_counts(num=num, bootstrap=bootstrap, workers=workers)
    gen, names, meta, data, arrays = _load(gen_path, None, zoo)
    quality = gen.resolve_quality(None)
    plan = Plan()
    for t in names:
        x = gen.normalized(gen.conditions(t, num, quality), seed, gen.cfg.diffusion.guidance, gen.cfg.diffusion.sampler)
        vecs = gen.denormalize(t, x)
        for split in ("val", "test"):
            plan.add(("gen", t, split), t, split, vecs)
    preds = plan.score(meta, {t: {"val": data[t].val, "test": data[t].test} for t in names}, workers)
    report: dict = {"scope": "generated", "tasks": {}, "bootstrap": bootstrap,
                    "sampling": {"guidance": gen.cfg.diffusion.guidance, "sampler": gen.cfg.diffusion.sampler,
                                 "quality": quality, "seed": seed, "temperature": gen.cfg.diffusion.temperature}}
    for t in names:
        a, spec = arrays[t], gen.spec(t)
        boot = Bootstrap(spec.metric, data[t].test.labels, bootstrap, seed)
        g_val = metric_rows(spec.metric, preds["gen", t, "val"], data[t].val.labels)
        g_test = preds["gen", t, "test"]
        zoo_preds = np.stack([a["test_pred"][i] for i in sorted(a["test_pred"])])
        report["tasks"][t] = {
            "metric": spec.metric,
            "test": {"generated": {**boot.mean(g_test), "best_by_val": boot.point(g_test[val_ties(g_val)]),
                                   "n": len(g_test), "scores": metric_rows(spec.metric, g_test, boot.labels).tolist()},
                     "zoo": {**boot.mean(zoo_preds), "n": len(zoo_preds)}, "majority": meta.tasks[t].majority},
            "val": {"generated_mean": float(g_val.mean()), "generated_best": float(g_val.max()),
                    "zoo_mean": float(a["value"].mean())}}
    reports.write_json(Location.of(out_dir, "--out") / "report.json", report)
    return report


def targets(report: dict) -> dict:
    """The held-out targets per task: generated mean ≥ zoo mean − 0.5 point; generated best-by-val ≥ zoo
    best-by-val − 0.5; generated mean not below the weight average beyond its interval."""
    out = {}
    for t, r in report["tasks"].items():
        x = r["test"]
        out[t] = {"mean_vs_zoo": x["generated"]["mean"] >= x["zoo"]["mean"] - TARGET_POINTS,
                  "best_vs_zoo_best": x["generated"]["best_by_val"] >= x["zoo"]["best_by_val"] - TARGET_POINTS,
                  "not_below_weight_average": x["diff"]["gen_vs_weight_average"]["ci"][1] >= 0}
    return out


def flat_metrics(report: dict) -> dict[str, float]:
    """The report's test figures as MLflow metric names (task.kind.stat) → values."""
    out = {"generate_seconds_per_adapter": report["generate_seconds_per_adapter"]}
    for t, r in report["tasks"].items():
        x = r["test"]
        for kind in ("zoo", "recon", "generated"):
            out[f"{t}.{kind}.mean"], out[f"{t}.{kind}.best_by_val"] = x[kind]["mean"], x[kind]["best_by_val"]
        for k in ("weight_average", "majority", "base_init"):
            out[f"{t}.{k}"] = x[k]
        for k, d in x["diff"].items():
            out[f"{t}.diff.{k}"] = d["value"]
    return out


def _diff(d: dict) -> str:
    lo, hi = (100 * c for c in d["ci"])
    return f"{100 * d['value']:+.2f} [{lo:+.2f}, {hi:+.2f}] ({verdict(d['ci'])})"


def markdown(report: dict) -> str:
    s = report["sampling"]
    quality = "" if s.get("quality") is None else f", quality {s['quality']:g}"
    lines = [f"All figures on each task's TEST rows (never read by training, ranking or picking); best-by-val = the "
             f"adapter with the best VAL score (the mean of those tied there). Intervals: 95% bootstrap over test "
             f"rows ({report['bootstrap']} resamples). Sampling: {s['sampler'].upper()}, guidance {s['guidance']:g}{quality}, temperature "
             f"{s.get('temperature', 1.0):g}.", "",
             *table(["task", "metric", "rows train/val/test", "majority", "base + init head", "weight average",
                     "zoo mean (n)", "zoo best-by-val", "zoo last", "recon mean", "recon best-by-val",
                     "generated mean (n)", "generated best-by-val"])]
    for t, r in report["tasks"].items():
        x, sp = r["test"], report["splits"][t]
        z, g, rc = x["zoo"], x["generated"], x["recon"]
        lines.append(f"| {t} | {r['metric']} | {sp['train']}/{sp['val']}/{sp['test']} | {x['majority']:.3f} | "
                     f"{x['base_init']:.3f} | {cell(x['weight_average'], x['weight_average_ci'])} | "
                     f"{cell(z['mean'], z['ci'])} ({z['n']}) | {z['best_by_val']:.3f} | {z['last']:.3f} | "
                     f"{rc['mean']:.3f} | {rc['best_by_val']:.3f} | {cell(g['mean'], g['ci'])} ({g['n']}) | "
                     f"{g['best_by_val']:.3f} |")
    lines += ["", "Paired differences in points (95% interval; \"no difference\" when it spans 0):", "",
              *table(["task", "generated − zoo mean", "generated − weight average",
                      "gen best-by-val − zoo best-by-val", "recon − zoo mean", "targets met (mean, best, ≥ w.avg)"])]
    for t, r in report["tasks"].items():
        d, tg = r["test"]["diff"], report["targets"][t]
        marks = " ".join("✓" if tg[k] else "✗" for k in ("mean_vs_zoo", "best_vs_zoo_best", "not_below_weight_average"))
        lines.append(f"| {t} | {_diff(d['gen_vs_zoo_mean'])} | {_diff(d['gen_vs_weight_average'])} | "
                     f"{_diff(d['gen_best_vs_zoo_best'])} | {_diff(d['recon_vs_zoo_mean'])} | {marks} |")
    lines += ["", "Novelty (medians). Parameters: L2 from each generated vector to its nearest zoo vector, from each "
              "reconstruction to its original and to the nearest zoo vector (the decoder's floor), between zoo "
              "neighbours, and to the zoo's mean vector. Behaviour: disagreement on the first test rows (as for the matrix "
              "below; classification: share "
              "of rows predicted differently; regression: mean |score difference|).", "",
              *table(["task", "gen→zoo L2", "cos", "recon→own L2", "recon→zoo L2", "zoo↔zoo L2", "gen→zoo mean",
                      "zoo→zoo mean", "gen vs nearest zoo", "zoo neighbours", "zoo 50 steps apart"])]
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    for t, n in report["novelty"].items():
        lines.append(f"| {t} | {n['gen_nearest_l2_median']:.3f} | {n['gen_nearest_cos_median']:.4f} | "
                     f"{n['recon_own_l2_median']:.3f} | {n['recon_nearest_l2_median']:.3f} | "
                     f"{n['zoo_neighbour_l2_median']:.3f} | {n['gen_to_zoo_mean_l2_median']:.3f} | "
                     f"{n['zoo_to_zoo_mean_l2_median']:.3f} | {n['gen_vs_nearest_zoo_disagreement']:.3f} | "
                     f"{fmt(n['zoo_neighbours_disagreement'])} | {fmt(n['zoo_50_steps_apart_disagreement'])} |")
    names = list(report["tasks"])
    rows = ", ".join(f"{t} {n}" for t, n in report["subset_rows"].items())
    lines += ["", "Condition × task on the first test rows of each task (" + rows + "); rows: the condition generating; "
              "columns: the task scored, de-normalized with its statistics; mean over the cell's adapters [95% "
              "interval]; – = layouts differ:", "",
              *table(["condition", *names])]
    for c, row in report["condition_matrix"].items():
        lines.append(f"| {c} | " + " | ".join(cell(row[s]["mean"], row[s]["ci"]) if s in row else "–" for s in names)
                     + " |")
    lines += ["", "Own condition against the best other condition on the same task: " + "; ".join(
        f"{t}: {o['status']}" + (f" (vs {o['best_other']}, {_diff(o)})" if "best_other" in o else "")
        for t, o in report["own_condition"].items())]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Per task: test scores of zoo / reconstructed / generated adapters as strips (bar: their mean), with the
    weight average, the zoo's best-by-val and the majority class as lines; the y axis zoomed to the data."""
    names = list(report["tasks"])
    rng = np.random.default_rng(0)
    with plots.figure(path, (2.6 * len(names) + 0.5, 3.4), dpi=100, rect=(0, 0.08, 1, 1), ncols=len(names),
                      squeeze=False) as (fig, axes):
        for ax, t in zip(axes[0], names):
            _strips(ax, t, report["tasks"][t], rng)
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=6, fontsize=7)


def _strips(ax, name: str, r: dict, rng: np.random.Generator) -> None:
    """One task's panel of `plot`."""
    x = r["test"]
    groups = {k: np.asarray(x[k]["scores"]) for k in ("zoo", "recon", "generated")}
    for i, (label, values) in enumerate(groups.items()):
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(values)), values, s=10, alpha=0.7, label=label)
        ax.hlines(values.mean(), i - 0.3, i + 0.3, color="black", lw=1.5)
    data = np.concatenate([*groups.values(), [x["weight_average"], x["zoo"]["best_by_val"]]])
    pad = 0.15 * (data.max() - data.min()) + 1e-3
    lo, hi = data.min() - pad, data.max() + pad
    title = name
    for label, v, colour in (("weight average", x["weight_average"], "tab:green"),
                             ("zoo best-by-val", x["zoo"]["best_by_val"], "tab:purple"),
                             ("majority", x["majority"], "tab:red")):
        if lo <= v <= hi:
            ax.axhline(v, color=colour, ls="--", lw=1, label=label)
        else:  # zooming to the adapters matters more than showing a far-off baseline
            title += f"\n{label} {v:.3f} (off scale)"
    ax.set_ylim(lo, hi)
    ax.set_xticks(range(len(groups)), list(groups), fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.set_ylabel(f"test {r['metric']}", fontsize=7)
