"""Tasks the generator never saw: per hold-out fold, a generator trained without the fold's tasks (nor their twins)
makes adapters for each from its description and k labeled examples, scored on test beside majority, a prototype
classifier, the nearest zoo task's adapter, LoRA fine-tuned on the same k examples, and the in-zoo oracle."""
from __future__ import annotations

import functools
import json
import math
import sys
import time
import zlib
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from raypdiff import plots, reports
from raypdiff.config import Config, ConfigError, derive
from raypdiff.reports import cell, flip_rates, share, table
from raypdiff.stats import Bootstrap, metric_rows, val_ties
from raypdiff.storage import Location, local_folder, writable
from raypdiff.tasks import Split, TaskData, TaskSpec, majority_class
from raypdiff.zoo.store import ZooMeta

PICTURES = ("pictures.json", "map.png", "path.png")  # made once, from one fold's generator
# oracle_pick_by_val: the generated adapter picked on the held-out task's val rows, which its user does not have
METHODS = ("majority", "prototype", "nearest_task", "finetune", "generated", "oracle_pick_by_val",
           "generated_finetune", "oracle")


def map_head(vector: np.ndarray, layout, src: Optional[list[str]], dst: Optional[list[str]]) -> np.ndarray:
    """A classifier's flat vector with its head's output rows reordered from label order `src` to `dst` when both
    name the same labels (e.g. a twin); otherwise unchanged, labels taken by position."""
    if src is None or dst is None or src == dst or sorted(src) != sorted(dst):
        return vector
    order = [src.index(n) for n in dst]
    out, pos = vector.copy(), 0
    for name, shape in zip(layout.names, layout.shapes):
        size = math.prod(shape)
        if name.rsplit(".", 2)[-2] in ("classifier", "score") and shape[0] == len(src):  # the task head
            out[pos:pos + size] = vector[pos:pos + size].reshape(shape)[order].ravel()
        pos += size
    return out


def prototype(encoder, spec: TaskSpec, examples: list, rows: Split) -> np.ndarray:
    """Predictions on `rows` from the k examples' sentence embeddings (the condition encoder; MiniLM is also the
    base model): the nearest class centroid (a label without examples is never predicted); for regression, the
    similarity-weighted mean example score."""
    ex = encoder.encode([" / ".join(t) for t, _ in examples])  # (k, C), L2-normalized
    x = encoder.encode([" / ".join(t) for t in rows.texts])  # (R, C)
    y = np.asarray([v for _, v in examples])
    if spec.is_regression:
        w = np.maximum(x @ ex.T, 0) + 1e-6  # (R, k)
        return (w @ y.astype(np.float64) / w.sum(1)).astype(np.float32)
    sims = np.full((len(x), spec.num_labels), -np.inf)
    for j in range(spec.num_labels):
        if (y == j).any():
            sims[:, j] = x @ ex[y == j].mean(0)
    return sims.argmax(1)


def finetune(cfg: Config, meta: ZooMeta, spec: TaskSpec, layout, examples: list, start: Optional[np.ndarray],
             seed: int) -> np.ndarray:
    """LoRA fine-tuned on the k examples alone for holdout.finetune_steps, from a fresh adapter or from `start`,
    on the zoo's base model and LoRA settings."""
    from raypdiff import lora

    h, base = cfg.holdout, meta.base_config()
    labels = np.asarray([y for _, y in examples], np.float32 if spec.is_regression else np.int64)
    model = lora.build(base.model, base.lora, spec, seed, float(labels.mean()) if spec.is_regression else None)
    if start is not None:
        lora.load_vector(model, start, layout)
    train = derive(cfg.train, {"lr": h.finetune_lr, "head_lr": None, "warmup_steps": 0, "decay_steps": 0,
                               "per_task": {}, "batch_size": min(cfg.train.batch_size, len(examples))}, "train.")
    lora.finetune(model, lora.load_tokenizer(base.model), Split([t for t, _ in examples], labels), train,
                  h.finetune_steps, base.model.max_length, seed, base.model.dtype, set(), lambda step, vec: None)
    return lora.flatten(model)


def _scorer(meta: ZooMeta, splits: dict[str, dict[str, Split]]):
    """A plain scorer over the zoo's tasks' named splits (in the driver: on 2 CPUs one process with 2 threads
    scores as fast as the Ray actor pool, bench/results/scoring.md)."""
    from raypdiff.scoring import Scorer

    return Scorer(meta.base_model, meta.lora, meta.eval["batch_size"],
                  {t: (meta.tasks[t].spec, meta.tasks[t].layout, s) for t, s in splits.items()})


def _rng(seed: int, task: str, *more: int) -> np.random.Generator:
    """The draws for one held-out task: the same wherever they are made (scores, pictures), per purpose."""
    return np.random.default_rng([seed, zlib.crc32(task.encode()), *(m + 2 for m in more)])


def score_task(gen, cfg: Config, meta: ZooMeta, arrays: dict, spec: TaskSpec,
               data: TaskData) -> tuple[dict, np.ndarray]:
    """Every method on one held-out task's test rows (mean and 95% interval), condition sensitivity, and the
    generated adapters' test predictions (for the twin flip check)."""
    from raypdiff.conditions import draw_examples, example_rows

    h, t = cfg.holdout, spec.name
    examples = draw_examples(data.train, h.examples, _rng(h.seed, t))
    layout = meta.layout(t)
    scorer = _scorer(meta, {t: {"val": data.val, "test": data.test}})
    boot = Bootstrap(spec.metric, data.test.labels, h.bootstrap, h.seed)

    def generated(ex: list) -> tuple[np.ndarray, str]:
        """(num, P) adapters from the description and `ex` (seeded noise: the same per call), and the zoo task
        whose layout and statistics they take."""
        cond, nearest, _ = gen.free_condition(spec.description, example_rows(spec, ex), spec.label_names, h.num)
        return gen.vectors(cond, nearest, h.seed), nearest

    vecs, nearest = generated(examples)
    g_val = metric_rows(spec.metric, scorer.predict(t, "val", vecs), data.val.labels)  # (num,): the oracle pick only
    g_test = scorer.predict(t, "test", vecs)  # (num, R)
    best = val_ties(g_val)
    near = arrays[nearest]
    near_vec = map_head(near["vector"][int(np.argmax(near["value"]))], layout, gen.spec(nearest).label_names,
                        spec.label_names)
    # the warm start is the first generated adapter, chosen without labels: best-by-val would give it val rows
    tuned = np.stack([near_vec, finetune(cfg, meta, spec, layout, examples, None, h.seed),
                      finetune(cfg, meta, spec, layout, examples, vecs[0], h.seed)])
    p = scorer.predict(t, "test", tuned)  # (3, R)
    oracle = arrays[t]["test_pred"]
    constant = np.full(len(data.test), majority_class(data.train.labels))
    methods = {"majority": boot.mean(constant), "prototype": boot.mean(prototype(gen.encoder, spec, examples, data.test)),
               "nearest_task": boot.mean(p[0]), "finetune": boot.mean(p[1]), "generated": boot.mean(g_test),
               "oracle_pick_by_val": boot.mean(g_test[best]), "generated_finetune": boot.mean(p[2]),
               "oracle": boot.mean(np.stack([oracle[i] for i in sorted(oracle)]))}
    out = {"metric": spec.metric, "nearest_zoo_task": nearest, "examples": len(examples), "methods": methods,
           "diff": {"generated - nearest_task": boot.diff(g_test, p[0]),
                    "generated_finetune - finetune": boot.diff(p[2], p[1])}}
    sensitivity = {}
    for k in h.k_values:  # fewer or more examples, and the same examples with random labels
        ex_k = draw_examples(data.train, k, _rng(h.seed, t, k))
        sensitivity[f"k={k}"] = boot.point(scorer.predict(t, "test", generated(ex_k)[0]))
    if not spec.is_regression:
        noise = _rng(h.seed, t, -1).integers(0, spec.num_labels, len(examples))
        sensitivity["random_labels"] = boot.point(scorer.predict(t, "test", generated(
            [(x, int(y)) for (x, _), y in zip(examples, noise)])[0]))
    out["sensitivity"] = sensitivity
    if spec.num_labels == 2:  # the same examples with their labels flipped should flip the predictions
        flipped = scorer.predict(t, "test", generated([(x, 1 - int(y)) for x, y in examples])[0])
        out["flip"] = {"flipped_examples": float((flipped == 1 - g_test).mean()), "score": boot.point(flipped)}
    return out, g_test


def folds_for(cfg: Config, specs: list[TaskSpec]):
    from raypdiff.holdout import family_folds, family_groups, kfold

    h = cfg.holdout
    if h.scheme == "families":
        return family_groups(specs, h.folds)
    return kfold(specs, h.folds, h.seed) if h.scheme == "kfold" else family_folds(specs)


def run_fold(cfg: Config, zoo_dir: str, meta: ZooMeta, arrays: Callable[[], dict], fold, out: Location,
             progress: bool = True) -> dict:
    """Train the fold's generator on its training tasks (a re-run reuses it), then score its held-out tasks.
    meta: the zoo's checked meta.json; arrays(): its task_arrays with test predictions, read on first use."""
    from raypdiff.domains import load_splits
    from raypdiff.train import fold_generator

    heads = {meta.tasks[x].num_labels for x in fold.train}  # a generated head takes a training task's shape
    skipped = {t: f"no training task has {meta.tasks[t].num_labels} output(s): no head to generate"
               for t in fold.heldout if meta.tasks[t].num_labels not in heads}
    scored = [t for t in fold.heldout if t not in skipped]
    result = {"fold": fold.name, "heldout": list(fold.heldout), "train_tasks": len(fold.train), "train_seconds": 0.0,
              "score_seconds": 0.0, "tasks": {}, "twins": {}, "skipped": skipped}
    if not scored:
        return result  # nothing to score: no generator to train
    gen = fold_generator(cfg, zoo_dir, list(fold.train), out, "holdout.output_dir", progress)
    result["train_seconds"] = json.loads((out / "generator" / "train_summary.json").read_text())["train_seconds"]
    t0 = time.time()
    data = load_splits(meta, scored)
    preds = {}
    for t in scored:
        if progress:
            print(f"{fold.name}: scoring held-out task {t}", file=sys.stderr)
        result["tasks"][t], preds[t] = score_task(gen, cfg, meta, arrays(), TaskSpec(**meta.tasks[t].spec), data[t])
    for t in scored:  # twins are held out together and read the same test rows; label i of one is n-1-i of the other
        twin = meta.tasks[t].spec.get("twin_of")
        if twin in preds:
            n = meta.tasks[t].num_labels
            result["twins"][f"{t} | {twin}"] = float((preds[t] == n - 1 - preds[twin]).mean())
    result["score_seconds"] = time.time() - t0
    return result


def run(cfg: Config, zoo_dir: str, progress: bool = True) -> dict:
    """Every fold of holdout.scheme (finished folds are read back, not re-run); writes holdout.json."""
    from raypdiff.zoo.store import check, task_arrays

    from raypdiff.domains import require_text

    meta = check(zoo_dir)
    require_text(meta.domain, "holdout", zoo_dir)
    arrays = functools.cache(lambda: task_arrays(zoo_dir, test=True))  # the whole zoo: read once, if needed
    specs = [TaskSpec(**info.spec) for info in meta.tasks.values()]
    out = writable(cfg.holdout.output_dir, "holdout.output_dir") / cfg.holdout.scheme
    folds, results = folds_for(cfg, specs), []
    for fold in folds:  # each fold's generator and fold.json go straight to out: a re-run continues from them
        path = out / fold.name / "fold.json"
        if not path.is_file():
            result = run_fold(cfg, zoo_dir, meta, arrays, fold, path.parent, progress)
            reports.write_json(path, result)
        results.append(json.loads(path.read_text()))
        if results[-1]["heldout"] != list(fold.heldout):
            raise ConfigError(f"{path} holds out other tasks than this config's {fold.name} (another holdout.seed, "
                              f"holdout.folds or zoo?); use a new holdout.output_dir")
    report = summarize(results, cfg.holdout.scheme)
    with local_folder(out, last=("holdout.json",), fetch=PICTURES) as local:
        pics = local / "pictures.json"
        # from a fold holding out a twin pair if any: its path is the flip
        if not pics.is_file() and report["task_count"]:
            i = next((i for i, r in enumerate(results) if r["twins"]),
                     next(i for i, r in enumerate(results) if r["tasks"]))
            reports.write_json(pics, pictures(cfg, meta, arrays(), folds[i], results[i], out / folds[i].name, local))
        report["pictures"] = json.loads(pics.read_text()) if pics.is_file() else None
        reports.write(local, "holdout", report, markdown, plot if report["task_count"] else None)
        if cfg.tracking.enabled:
            from raypdiff import tracking

            metrics = {f"average.{m}": v for m, v in report["average"].items()}
            files = [local / n for n in ("holdout.json", "holdout.md", "holdout.png", "map.png", "path.png")]
            tracking.log_report(cfg, f"holdout-{cfg.holdout.scheme}", metrics, [f for f in files if f.is_file()])
    return report


def pictures(cfg: Config, meta: ZooMeta, arrays: dict, fold, result: dict, fold_dir: Location, out: Path) -> dict:
    """From one fold's generator: the latent map (its zoo tasks, and adapters generated for every task,
    held-out ones from their description and examples) and a condition path between two tasks with the same head
    (a held-out task and its twin when there is one, else its nearest zoo task), scored on both tasks' test rows.
    fold_dir: the fold's folder (its generator); out: the local folder the pictures go to."""
    from raypdiff.conditions import draw_examples, example_rows
    from raypdiff.generate import Generator
    from raypdiff.latents import interpolate, latent_map, plot_map, plot_path
    from raypdiff.domains import load_splits

    h = cfg.holdout
    gen = Generator(fold_dir / "generator")
    scored = list(result["tasks"])
    specs = {t: TaskSpec(**meta.tasks[t].spec) for t in scored}
    data = load_splits(meta, scored)
    conds = {t: gen.conditions(t, h.num) for t in gen.task_names}
    for t, spec in specs.items():
        examples = example_rows(spec, draw_examples(data[t].train, h.examples, _rng(h.seed, t)))
        conds[t] = gen.free_condition(spec.description, examples, spec.label_names, h.num)[0]
    m = latent_map(gen, arrays, conds, seed=h.seed)
    plot_map(m, scored, out / "map.png", f"{fold.name}: zoo latents (dots), generated (x; stars: held out)")
    twins = [(t, specs[t].twin_of) for t in scored if specs[t].twin_of in specs]
    a, b = twins[0] if twins else (scored[0], result["tasks"][scored[0]]["nearest_zoo_task"])
    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    vecs = interpolate(gen, conds[a][0], conds[b][0], result["tasks"][a]["nearest_zoo_task"], alphas, h.seed)
    both = load_splits(meta, [a, b])
    scorer = _scorer(meta, {t: {"test": both[t].test} for t in (a, b)})
    scores = {t: metric_rows(meta.tasks[t].metric, scorer.predict(t, "test", vecs), both[t].test.labels).tolist()
              for t in (a, b)}
    plot_path(alphas, scores, a, b, out / "path.png")
    return {"fold": fold.name, "map": {"points": len(m["task"]), "png": "map.png"},
            "path": {"from": a, "to": b, "alphas": alphas, "scores": scores, "png": "path.png"}}


def summarize(folds: list[dict], scheme: str) -> dict:
    """Per held-out task: each method's {mean, ci}; per method: the average over tasks and how many tasks the
    generated adapter's paired interval puts above the nearest task / fine-tuning; flip rates."""
    tasks = {t: r for f in folds for t, r in f["tasks"].items()}
    average = {m: float(np.mean([r["methods"][m]["mean"] for r in tasks.values()])) if tasks else None for m in METHODS}
    wins = {d: sum(r["diff"][d]["ci"][0] > 0 for r in tasks.values())
            for d in ("generated - nearest_task", "generated_finetune - finetune")}
    above = {f"{a} > {b}": sum(r["methods"][a]["mean"] > r["methods"][b]["mean"] for r in tasks.values())
             for a, b in (("generated", "majority"), ("generated", "nearest_task"), ("generated_finetune", "finetune"))}
    flips = [r["flip"]["flipped_examples"] for r in tasks.values() if "flip" in r]
    sens = list(dict.fromkeys(k for r in tasks.values() for k in r["sensitivity"]))  # k=0, 1, 4, 16, random
    keep = ("fold", "heldout", "train_tasks", "train_seconds", "score_seconds")
    return {"scheme": scheme, "folds": [{k: f[k] for k in keep} for f in folds],
            "tasks": {t: {m: r["methods"][m] for m in METHODS} for t, r in tasks.items()},
            "nearest_zoo_task": {t: r["nearest_zoo_task"] for t, r in tasks.items()},
            "average": average, "higher_by_interval": wins, "above_by_mean": above, "task_count": len(tasks),
            "skipped": {t: why for f in folds for t, why in f["skipped"].items()},
            "sensitivity": {k: float(np.mean([r["sensitivity"][k] for r in tasks.values() if k in r["sensitivity"]]))
                            for k in sens},
            "flip": flip_rates(flips, {k: v for f in folds for k, v in f["twins"].items()})}


def markdown(report: dict) -> str:
    """The report as tables: methods averaged over held-out tasks, then per task with 95% intervals."""
    lines = [f"# Unseen tasks ({report['scheme']}): {report['task_count']} held-out tasks", "",
             "Each task scored on its test rows by a generator that never saw it (nor its twin); mean [95% bootstrap "
             "interval over test rows]. Oracle columns read what a new task's user does not have: oracle_pick_by_val "
             "the task's val rows, oracle its own zoo adapters.", "", *table(["method", "average over tasks"])]
    lines += [f"| {m} | {'n/a' if v is None else f'{v:.4f}'} |" for m, v in report["average"].items()]
    lines += ["", "Tasks where the paired interval puts the first above the second: " + ", ".join(
        f"{d}: {n} of {report['task_count']}" for d, n in report["higher_by_interval"].items()),
        "Tasks where the first's mean is above the second's (no interval): " + ", ".join(
        f"{d}: {n} of {report['task_count']}" for d, n in report["above_by_mean"].items()), ""]
    lines += table(["task", "nearest zoo task", *METHODS])
    for t, r in report["tasks"].items():
        lines.append(f"| {t} | {report['nearest_zoo_task'][t]} | " + " | ".join(
            cell(r[m]["mean"], r[m]["ci"]) for m in METHODS) + " |")
    flip = report["flip"]
    lines += ["", "Condition sensitivity (generated mean on test, averaged over tasks): " + ", ".join(
        f"{k} {v:.4f}" for k, v in report["sensitivity"].items()),
        f"Flipped examples flip {share(flip['flipped_examples_mean'])} of predictions ({flip['tasks']} binary "
        f"tasks); label-swapped twins predict opposite labels on {share(flip['twins_mean'])} of test rows "
        f"({len(flip['twins'])} pairs)."]
    if report["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{t} ({why})" for t, why in report["skipped"].items())]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> Path:
    """Per held-out task, each method's test mean with its interval; the average over tasks in the title."""
    tasks = list(report["tasks"])
    width = 0.8 / len(METHODS)
    with plots.figure(path, (max(8, 0.6 * len(tasks) * len(METHODS) / 4), 5)) as (fig, ax):
        for i, m in enumerate(METHODS):
            r = [report["tasks"][t][m] for t in tasks]
            mean = np.array([x["mean"] for x in r])
            err = np.abs(np.array([x["ci"] for x in r]).T - mean)
            ax.bar(np.arange(len(tasks)) + (i - len(METHODS) / 2) * width, mean, width, yerr=err, capsize=1,
                   label=f"{m} ({report['average'][m]:.3f})")
        ax.set_xticks(np.arange(len(tasks)), tasks, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("test metric")
        ax.set_title(f"held-out tasks ({report['scheme']}); legend: average over tasks")
        ax.legend(fontsize=7, ncol=2)
    return path
