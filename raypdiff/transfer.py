"""Which body should a new task's head read? On hold-out folds: the base model's, the nearest or the retrieved training
task's, a fold generator's, or the task's own (oracle), each with a head built from the same k examples per label;
beside SetFit and the majority class. Only the k examples pick anything (leave-one-out over them)."""
from __future__ import annotations

import json
import sys
import time
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from raypdiff import checkpoint, heads, plots
from raypdiff.config import derive
from raypdiff.errors import ConfigError
from raypdiff.fewshot import draw_per_label
from raypdiff.newtask import Builder, Built, generated_bodies, tuned
from raypdiff.reports import cell, flip_rates, format_ci, share, table
from raypdiff.stats import Bootstrap, mean_ci
from raypdiff.tasks import Split, TaskData, TaskSpec, majority_class
from raypdiff.zoo.store import ZooMeta

# every method's head reads its body's mean-pooled, L2-normalized features; "auto" is the product's route (the base
# body or the best generated one, by leave-one-out); multitask: one body trained on every training task of the fold;
# oracle: the task's own best-by-val zoo body; +tune: that adapter fine-tuned on the k examples (raypdiff.warmstart);
# finetune: the same budget from the base model and a zero head
# generated: the denoise-only generator (the paper's method); generated+taskloss: the same fold's generator trained
# further through the task loss (taskloss.steps > 0: raypdiff.episodes); generated+setfit: SetFit's contrastive steps
# and head from the generated+head adapter's body (merged into SetFit's encoder), at SetFit's k
METHODS = ("majority", "base+prototype", "base+logistic", "base+head", "nearest+head", "retrieved+head",
           "multitask+head", "generated+head", "generated+taskloss+head", "auto+head", "finetune", "base+head+tune",
           "generated+head+tune", "oracle+head", "setfit", "generated+setfit")
TASKLOSS_PREFIX = "taskloss_"  # the fold's task-loss generator: <fold>/taskloss_generator
TUNED = ("finetune", "base+head+tune", "generated+head+tune")
SETFIT = ("setfit", "generated+setfit")  # trained per task at SetFit's k
MULTITASK_FILE = "multitask.safetensors"


def best_bodies(builder: Builder, meta: ZooMeta, arrays: dict, tasks: list[str]) -> dict[str, np.ndarray]:
    """Each task's best-by-val zoo capture as a body (its LoRA matrices; the head dropped)."""
    return {t: builder.body_of(arrays[t]["vector"][int(np.argmax(arrays[t]["value"]))],
                               meta.layout(t)) for t in tasks}


def support(spec: TaskSpec, train: Split, k: int, rng: np.random.Generator) -> list:
    """k examples per label (regression: 2k rows), as (texts, label) pairs, in draw order per label."""
    if spec.is_regression:
        idx = rng.choice(len(train), min(2 * k, len(train)), replace=False)
        return [(train.texts[i], float(train.labels[i])) for i in idx]
    return draw_per_label(train, spec, k, rng)


def nested_index(spec: TaskSpec, examples: list, k: int) -> list[int]:
    """Positions of the first k examples of each label of a larger support (regression: the first 2k), so that every
    k of a draw shares its rows with the larger ones."""
    if spec.is_regression:
        return list(range(min(2 * k, len(examples))))
    seen: dict[int, int] = {}
    out = []
    for i, (_, y) in enumerate(examples):
        seen[y] = seen.get(y, 0) + 1
        if seen[y] <= k:
            out.append(i)
    return out


def nested(spec: TaskSpec, examples: list, k: int) -> list:
    return [examples[i] for i in nested_index(spec, examples, k)]


def as_split(spec: TaskSpec, examples: list) -> Split:
    return Split([t for t, _ in examples],
                 np.asarray([y for _, y in examples], np.float32 if spec.is_regression else np.int64))


def retrieve(spec: TaskSpec, labels: np.ndarray, features: dict[str, np.ndarray]) -> tuple[str, dict]:
    """The training body whose features (body → (n, H), the examples' rows) give the examples the best leave-one-out
    score (prototype head; ridge for regression), LoraHub-style selection by the user's data alone; every score."""
    kind = "ridge" if spec.is_regression else "prototype"
    scores = {t: heads.leave_one_out(kind, x, labels, spec.num_labels, spec.metric) for t, x in features.items()}
    return max(scores, key=scores.get), scores


class TaskRun:
    """One held-out task: test features per body, cached, so that every method reads the same rows once."""

    def __init__(self, builder: Builder, spec: TaskSpec, data: TaskData):
        self.builder, self.spec, self.data = builder, spec, data
        self.cache: dict[str, np.ndarray] = {}

    def predict(self, key: str, built: Built) -> np.ndarray:
        if key not in self.cache:
            self.cache[key] = self.builder.features(built.body, self.data.test)
        return built.head.predict(self.cache[key])

    def build(self, examples: list, bodies: dict[str, np.ndarray], head: str = "auto") -> Built:
        return self.builder.build(self.spec, examples, bodies, head)


def warm_starts(run: TaskRun, ex: list, base: Built, base_s: float, g: Built, gen_s: float, seed: int,
                tag: str) -> list[tuple[str, np.ndarray, float]]:
    """The warm starts from the base and the generated adapter, and plain fine-tuning at their budget: (method, test
    predictions, seconds per adapter: building the start, then tuning)."""
    out = []
    for method, start, start_s in (("finetune", None, 0.0), ("base+head+tune", base, base_s),
                                   ("generated+head+tune", g, gen_s)):
        t0 = time.time()
        w = tuned(run.builder, run.spec, ex, start, seed=seed)
        s = time.time() - t0 + start_s
        out.append((method, run.predict(f"{method}@{tag}", w), s))
    return out


def score_tuned(builder: Builder, gen, spec: TaskSpec, data: TaskData, max_k: int, tune_ks: list[int], draws: int,
                num: int, seed: int, bootstrap: int) -> dict:
    """The TUNED methods alone for a task scored before they existed, from the same supports and starts as
    score_task: k → {methods, seconds, preds}."""
    run = TaskRun(builder, spec, data)
    zero = np.zeros(builder.body_layout.size, np.float32)
    supports = [support(spec, data.train, max_k, np.random.default_rng([seed, zlib.crc32(spec.name.encode()), d]))
                for d in range(draws)]
    out = {}
    for k in tune_ks:
        preds: dict[str, list] = {}
        secs: dict[str, list] = {}
        for d, full in enumerate(supports):
            ex = nested(spec, full, k)
            t0 = time.time()
            base = run.build(ex, {"base": zero})
            base_s = time.time() - t0
            t0 = time.time()
            g = run.build(ex, generated_bodies(gen, builder, spec, ex, num, seed + d))
            gen_s = time.time() - t0
            for m, p, s in warm_starts(run, ex, base, base_s, g, gen_s, seed + d, f"k{k}d{d}"):
                preds.setdefault(m, []).append(p)
                secs.setdefault(m, []).append(s)
        out[str(k)] = {"methods": methods_scores(spec, data, preds, bootstrap, seed),
                       "seconds": {m: float(np.median(s)) for m, s in secs.items()},
                       "preds": {m: np.stack(p) for m, p in preds.items()}}
    return out


def score_task(builder: Builder, gen, spec: TaskSpec, data: TaskData, train_bodies: dict[str, np.ndarray],
               shared: Optional[np.ndarray], oracle: Optional[np.ndarray], ks: list[int], draws: int,
               setfit_ks: list[int], num: int, seed: int, bootstrap: int, tune_ks: tuple[int, ...] = (),
               tasked=None, drawn: int = 0) -> dict:
    """Per k: every method's test predictions (over `draws` support draws), scores with intervals, seconds per
    adapter, and which body each picked. train_bodies: the fold's training tasks' best-by-val bodies; shared: the
    fold's multi-task body; oracle: the task's own; tune_ks: the k with warm starts (TUNED); tasked: the fold's
    task-loss generator (None: not trained); drawn: the k per label the supports are drawn at when above max(ks) (a
    k added to a task scored before takes the first k of the same draws)."""
    from raypdiff.baselines import setfit

    run = TaskRun(builder, spec, data)
    zero = np.zeros(builder.body_layout.size, np.float32)
    task_rng = zlib.crc32(spec.name.encode())
    supports = [support(spec, data.train, max(drawn, *ks), np.random.default_rng([seed, task_rng, d]))
                for d in range(draws)]
    t0 = time.time()  # every training body's features of the largest support, once per draw; each k takes its rows
    support_x = [{t: builder.features(b, as_split(spec, full)) for t, b in train_bodies.items()} for full in supports]
    support_s = (time.time() - t0) / draws
    out: dict = {"metric": spec.metric, "test_rows": len(data.test), "threads": torch.get_num_threads(), "k": {}}
    for k in ks:
        preds: dict[str, list] = {}
        secs: dict[str, list] = {}
        picked: dict[str, list] = {}

        def add(method: str, p: np.ndarray, s: float, body: Optional[str] = None) -> None:
            preds.setdefault(method, []).append(p)
            secs.setdefault(method, []).append(s)
            if body is not None:
                picked.setdefault(method, []).append(body)

        for d, full in enumerate(supports):
            ex = nested(spec, full, k)
            if not spec.is_regression:
                add("majority", np.full(len(data.test), majority_class(data.train.labels)), 0.0)
                for kind in ("prototype", "logistic"):
                    t0 = time.time()
                    b = run.build(ex, {"base": zero}, kind)
                    add(f"base+{kind}", *timed(run, "base", b, t0))
            t0 = time.time()
            base = run.build(ex, {"base": zero})
            base_s = time.time() - t0
            add("base+head", run.predict("base", base), base_s)
            t0 = time.time()
            near_task = gen.task_condition(spec, ex, 1, list(train_bodies))[1]
            b = run.build(ex, {near_task: train_bodies[near_task]})
            add("nearest+head", *timed(run, f"task:{near_task}", b, t0), near_task)
            t0 = time.time()
            idx = nested_index(spec, full, k)
            best, _ = retrieve(spec, as_split(spec, ex).labels, {t: x[idx] for t, x in support_x[d].items()})
            b = run.build(ex, {best: train_bodies[best]})
            p, s = timed(run, f"task:{best}", b, t0)
            # its time: this k's features of every body (a share of the largest support's), ranking, the head
            add("retrieved+head", p, s + support_s * len(ex) / len(full), best)
            if shared is not None:
                t0 = time.time()
                b = run.build(ex, {"multitask": shared})
                add("multitask+head", *timed(run, "multitask", b, t0))
            t0 = time.time()
            cands = generated_bodies(gen, builder, spec, ex, num, seed + d)
            g = run.build(ex, cands)
            gen_s = time.time() - t0
            add("generated+head", run.predict(f"{g.body_source}@k{k}d{d}", g), gen_s, g.body_source)
            if tasked is not None:
                t0 = time.time()
                b = run.build(ex, {f"taskloss:{n}": v for n, v in
                                   generated_bodies(tasked, builder, spec, ex, num, seed + d).items()})
                add("generated+taskloss+head", *timed(run, f"{b.body_source}@k{k}d{d}", b, t0), b.body_source)
            # the product's route: the base body and the generated ones, ties to the base (it is listed first)
            a = base if max(base.loo["base"].values()) >= max(g.loo[g.body_source].values()) else g
            key = "base" if a is base else f"{g.body_source}@k{k}d{d}"
            add("auto+head", run.predict(key, a), base_s + gen_s, a.body_source)
            if k in tune_ks:
                for m, p, s in warm_starts(run, ex, base, base_s, g, gen_s, seed + d, f"k{k}d{d}"):
                    add(m, p, s)
            if oracle is not None:
                t0 = time.time()
                b = run.build(ex, {"own": oracle})
                add("oracle+head", *timed(run, "own", b, t0))
            if k in setfit_ks and not spec.is_regression:
                p, s = setfit(builder.model_cfg.base, ex, data.test.texts, seed=seed + d)
                add("setfit", p, s)
                p, s = setfit(builder.model_cfg.base, ex, data.test.texts, seed=seed + d, deltas=builder.deltas(g.body))
                add("generated+setfit", p, gen_s + s, g.body_source)
        out["k"][str(k)] = {"methods": methods_scores(spec, data, preds, bootstrap, seed),
                            "seconds": {m: float(np.median(s)) for m, s in secs.items()}, "picked": picked,
                            "preds": {m: np.stack(p) for m, p in preds.items()}}
    return out


def timed(run: TaskRun, key: str, built: Built, t0: float) -> tuple[np.ndarray, float]:
    """The built adapter's test predictions and the seconds since t0 to build it (the test rows' features, shared by
    every method, are not the adapter's time)."""
    s = time.time() - t0
    return run.predict(key, built), s


def methods_scores(spec: TaskSpec, data: TaskData, preds: dict, bootstrap: int, seed: int) -> dict:
    """method → {metric name: {mean, ci}}: the task's own metric, and macro-F1 for classification."""
    names = [spec.metric] + ([] if spec.is_regression or spec.metric == "macro_f1" else ["macro_f1"])
    boots = {n: Bootstrap(n, data.test.labels, bootstrap, seed) for n in names}
    return {m: {n: b.mean(np.stack(p)) for n, b in boots.items()} for m, p in preds.items()}


def flip_checks(builder: Builder, gen, spec: TaskSpec, data: TaskData, k: int, max_k: int, num: int, seed: int,
                twin: Optional[tuple[TaskSpec, TaskData]] = None) -> dict:
    """Binary tasks, generated+head at k per label (draw 0): the share of test predictions that flip when the examples'
    labels are flipped; with `twin` (its label-swapped twin: the same rows, names reversed), the share of test rows
    where the twin's adapter, built from the same examples under its own description and label order, predicts the
    opposite label."""
    run = TaskRun(builder, spec, data)
    ex = nested(spec, support(spec, data.train, max_k, np.random.default_rng([seed, zlib.crc32(spec.name.encode()), 0])),
                k)  # draw 0's examples at k, as score_task scored them
    g = run.build(ex, generated_bodies(gen, builder, spec, ex, num, seed))
    p = run.predict("g", g)
    flipped = [(x, 1 - y) for x, y in ex]
    f = run.build(flipped, generated_bodies(gen, builder, spec, flipped, num, seed))
    out = {"flipped_examples": float((run.predict("f", f) == 1 - p).mean())}
    if twin is not None:
        tspec, tdata = twin
        trun = TaskRun(builder, tspec, tdata)
        t = trun.build(flipped, generated_bodies(gen, builder, tspec, flipped, num, seed))
        out["twin_opposite"] = float((trun.predict("t", t) == 1 - p).mean())
    return out


def prepare_fold(cfg, zoo_dir: str, meta: ZooMeta, fold, out: Path, multitask_steps: int,
                 progress: bool = True) -> None:
    """What a fold's tasks are scored with, each kept under out: its generator (trained on the fold's training tasks
    only, denoising alone), with taskloss.steps > 0 its task-loss generator (that generator trained on through the
    task-loss stage), and with multitask_steps > 0 the multi-task body trained on the same tasks."""
    from safetensors.numpy import save_file

    from raypdiff.domains import load_splits
    from raypdiff.multitask import train_body
    from raypdiff.train import fold_generator

    plain = fold_generator(derive(cfg, {"taskloss.steps": 0}), zoo_dir, list(fold.train), out, "output folder",
                           progress)
    if tasked_fold(cfg, meta, fold):  # the same generator, trained on through the task-loss stage
        fold_generator(cfg, zoo_dir, list(fold.train), out, "output folder", progress, TASKLOSS_PREFIX, plain)
    if multitask_steps and not (out / MULTITASK_FILE).is_file():
        t0 = time.time()
        data = load_splits(meta, list(fold.train))
        tasks = {t: (TaskSpec(**meta.tasks[t].spec), data[t].train) for t in fold.train}
        body = train_body(Builder(cfg.model, cfg.lora), tasks, multitask_steps, cfg.train.batch_size, cfg.train.lr,
                          cfg.holdout.seed)
        save_file({"body": body}, str(out / MULTITASK_FILE), metadata={
            "steps": str(multitask_steps), "tasks": json.dumps(list(fold.train)), "seconds": f"{time.time() - t0:.1f}"})


def tasked_fold(cfg, meta: ZooMeta, fold) -> bool:
    """Whether the fold gets a task-loss generator: taskloss.steps > 0 and a classification task to draw episodes
    from among its training tasks."""
    return bool(cfg.taskloss.steps) and any(not TaskSpec(**meta.tasks[t].spec).is_regression for t in fold.train)


def claim(lock: Path) -> bool:
    """Take a task for this process: its lock file names our pid; a lock whose process is gone is taken over."""
    import os

    try:
        with lock.open("x") as f:
            f.write(str(os.getpid()))
        return True
    except FileExistsError:
        try:
            os.kill(int(lock.read_text() or 0), 0)
            return False  # alive: another scorer has it
        except (ProcessLookupError, ValueError):
            lock.write_text(str(os.getpid()))
            return True


def save_task(tasks_dir: Path, task: str, r: dict) -> None:
    """A scored task: its predictions (.npz) and the rest (.json), each written whole before it replaces the old."""
    for name, write in ((f"{task}.npz", lambda f: np.savez(f, **{f"{k}|{m}": p for k, v in r["k"].items()
                                                               for m, p in v["preds"].items()})),
                        (f"{task}.json", lambda f: f.write(json.dumps({**r, "k": {
                            k: {n: x for n, x in v.items() if n != "preds"} for k, v in r["k"].items()}},
                            indent=1).encode()))):
        tmp = tasks_dir / f".{name}.tmp"
        with tmp.open("wb") as f:
            write(f)
        tmp.replace(tasks_dir / name)


def lacks(path: Path, scored: dict, ks: list[int], tune_ks: list[int]) -> tuple[list[int], list[int]]:
    """What a scored task (scored: its .json's "k") lacks: the k of ks it was not scored at, and the k of tune_ks it
    was scored at without warm starts. A k above the one its supports were drawn at cannot be added (new draws, not
    nested)."""
    new = [k for k in ks if str(k) not in scored]
    if new and max(new) > drawn_at(scored):
        raise ConfigError(f"{path}: scored on supports of {drawn_at(scored)} per label, so --k {max(new)} needs new "
                          "draws; score it into another --work")
    return new, [k for k in tune_ks if str(k) in scored and not all(m in scored[str(k)]["methods"] for m in TUNED)]


def drawn_at(scored: dict) -> int:
    """The k per label a scored task's supports were drawn at: the largest it was scored at."""
    return max(int(k) for k in scored)


def run_fold(cfg, zoo_dir: str, meta: ZooMeta, arrays: dict, fold, out: Path, ks: list[int], draws: int,
             setfit_ks: list[int], num: int, multitask_steps: int, train: bool = True, progress: bool = True,
             reverse: bool = False, tune_ks: tuple[int, ...] = ()) -> dict:
    """One fold: its generator and multi-task body (prepare_fold; train=False waits for another process to make
    them), then every held-out task scored, each kept in out/tasks/<task>.json (+ .npz) so a re-run resumes (a task
    scored before its warm starts existed, or without some k of ks, gets them added). Several processes may score one
    fold (reverse: from its last task): a task's .lock says another has it."""
    from safetensors import safe_open

    from raypdiff.domains import load_splits
    from raypdiff.generate import Generator

    gen_dir, tasked_dir = out / "generator", out / f"{TASKLOSS_PREFIX}generator"
    want = ([gen_dir / "train_summary.json"] + ([out / MULTITASK_FILE] if multitask_steps else [])
            + ([tasked_dir / "train_summary.json"] if tasked_fold(cfg, meta, fold) else []))
    if train:
        prepare_fold(cfg, zoo_dir, meta, fold, out, multitask_steps, progress)
    while not all(p.is_file() for p in want):
        time.sleep(20)
    time.sleep(2)
    gen = Generator(gen_dir)
    tasked = Generator(tasked_dir) if tasked_fold(cfg, meta, fold) else None
    for g, where in ((gen, gen_dir), (tasked, tasked_dir)):
        assert g is None or set(g.task_names) == set(fold.train), f"{where}: a generator of another fold"
    h = cfg.holdout
    builder = Builder(cfg.model, cfg.lora)
    bodies = best_bodies(builder, meta, arrays, list(fold.train))
    shared = None
    if multitask_steps:
        with safe_open(str(out / MULTITASK_FILE), "np") as f:
            assert json.loads(f.metadata()["tasks"]) == list(fold.train), f"{out}: a multi-task body of another fold"
            shared = f.get_tensor("body")
    for g in (gen, tasked):
        if g is not None:
            g.encoder  # loaded once, before any method is timed
    own = best_bodies(builder, meta, arrays, [t for t in fold.heldout if t in arrays])
    data = load_splits(meta, list(fold.heldout))
    specs = {t: TaskSpec(**meta.tasks[t].spec) for t in fold.heldout}
    tasks_dir = out / "tasks"
    tasks_dir.mkdir(parents=True, exist_ok=True)
    for t in reversed(fold.heldout) if reverse else fold.heldout:
        path = tasks_dir / f"{t}.json"
        r = json.loads(path.read_text()) if path.is_file() else None
        new_ks, untuned = lacks(path, r["k"], ks, list(tune_ks)) if r else (None, None)
        if (new_ks, untuned) == ([], []) or not claim(tasks_dir / f"{t}.lock"):
            continue
        if progress:
            adds = [f"k = {new_ks}"] * bool(new_ks) + [f"warm starts at k = {untuned}"] * bool(untuned)
            print(f"{fold.name}: {t}" + (f" ({'; '.join(adds)})" if adds else ""), file=sys.stderr, flush=True)
        if r:
            old = load_preds(out, t)
            drawn = drawn_at(r["k"])
            for k, v in r["k"].items():
                v["preds"] = old[k]
            if untuned:
                extra = score_tuned(builder, gen, specs[t], data[t], drawn, untuned, draws, num, h.seed, h.bootstrap)
                for k, v in extra.items():
                    for part in ("methods", "seconds", "preds"):
                        r["k"][k][part] = {**r["k"][k][part], **v[part]}
            if new_ks:
                added = score_task(builder, gen, specs[t], data[t], bodies, shared, own.get(t), new_ks, draws,
                                   [k for k in setfit_ks if k in new_ks], num, h.seed, h.bootstrap,
                                   tuple(k for k in tune_ks if k in new_ks), tasked, drawn)["k"]
                r["k"] = dict(sorted({**r["k"], **added}.items(), key=lambda kv: int(kv[0])))
            save_task(tasks_dir, t, r)
            continue
        t0 = time.time()
        r = score_task(builder, gen, specs[t], data[t], bodies, shared, own.get(t), ks, draws, setfit_ks, num,
                       h.seed, h.bootstrap, tune_ks, tasked)
        if specs[t].num_labels == 2:
            fk = 8 if 8 in ks else max(ks)
            twin = specs[t].twin_of
            r["flip"] = flip_checks(builder, gen, specs[t], data[t], fk, max(ks), num, h.seed,
                                    (specs[twin], data[twin]) if twin in specs else None)
        r["seconds"] = time.time() - t0
        save_task(tasks_dir, t, r)
    while not all((tasks_dir / f"{t}.json").is_file() for t in fold.heldout):
        time.sleep(10)  # another process is scoring the rest
    return fold_result(fold, out, multitask_steps)


def fold_result(fold, out: Path, multitask_steps: int) -> dict:
    """What a fold has scored so far: its held-out tasks' results (a task not scored yet is left out) and timings."""
    from safetensors import safe_open

    tasks_dir = out / "tasks"
    summary = out / "generator" / "train_summary.json"
    return {"fold": fold.name, "heldout": list(fold.heldout), "train_tasks": len(fold.train),
            "train_seconds": json.loads(summary.read_text())["train_seconds"] if summary.is_file() else None,
            "multitask_seconds": float(safe_open(str(out / MULTITASK_FILE), "np").metadata()["seconds"])
            if multitask_steps and (out / MULTITASK_FILE).is_file() else None,
            "taskloss": stage_curve(out / f"{TASKLOSS_PREFIX}generator"),
            "tasks": {t: json.loads((tasks_dir / f"{t}.json").read_text()) for t in fold.heldout
                      if (tasks_dir / f"{t}.json").is_file()}}


def stage_curve(gen_dir: Path) -> Optional[dict]:
    """A task-loss generator's stage: its seconds (the whole run), at each logged step the mean episode loss of the
    last 50 episodes, at each check the validation episodes' loss, and the step whose weights it kept (None: the
    fold has no such generator)."""
    if not (gen_dir / checkpoint.GENERATOR_FILE).is_file():
        return None
    task = [h for h in checkpoint.load(gen_dir).history if h["phase"] == "task"]
    train = [h for h in task if "task_loss" in h]
    checks = [h for h in task if "val_episode_loss" in h]
    picked = [h["picked_step"] for h in task if "picked_step" in h]
    return {"train_seconds": json.loads((gen_dir / "train_summary.json").read_text())["train_seconds"],
            "steps": [h["step"] for h in train], "episode_loss_mean50": [h.get("episode_loss_mean50") for h in train],
            "val_steps": [h["step"] for h in checks], "val_episode_loss": [h["val_episode_loss"] for h in checks],
            "picked_step": picked[-1] if picked else None}


def load_preds(out: Path, task: str) -> dict[str, dict[str, np.ndarray]]:
    """k → method → (draws, R) test predictions of a scored task."""
    z = np.load(out / "tasks" / f"{task}.npz", allow_pickle=False)
    res: dict = {}
    for key in z.files:
        k, m = key.split("|")
        res.setdefault(k, {})[m] = z[key]
    return res


# pairs counted by paired interval over test rows, per task (macro-F1; the task's metric for regression)
COMPARE = (("generated+head", "base+head"), ("generated+taskloss+head", "base+head"),
           ("generated+taskloss+head", "generated+head"), ("generated+head", "nearest+head"),
           ("generated+head", "retrieved+head"),
           ("generated+head", "multitask+head"), ("multitask+head", "base+head"),
           ("auto+head", "base+head"), ("auto+head", "setfit"), ("base+head", "setfit"), ("retrieved+head", "base+head"),
           ("generated+head+tune", "base+head+tune"), ("generated+head+tune", "finetune"), ("base+head+tune", "finetune"),
           ("base+head+tune", "base+head"), ("base+head+tune", "setfit"), ("generated+head+tune", "setfit"),
           ("generated+setfit", "setfit"))


def summarize(folds: list[dict], preds: dict[str, dict], labels: dict[str, np.ndarray], metrics: dict[str, str],
              bootstrap: int, seed: int) -> dict:
    """Per k and method: the macro-F1 average over classification tasks (and the task-metric average over every task)
    with 95% intervals over tasks, median seconds per adapter; COMPARE pairs counted by paired interval; flip rates;
    per family, the generated-minus-base average."""
    from raypdiff.stats import verdict

    tasks = {t: r for f in folds for t, r in f["tasks"].items()}

    def avg(vals: list[float], *key) -> dict:  # its own draws per figure: none moves when other k or methods are added
        mean, ci = mean_ci(vals, bootstrap, np.random.default_rng([seed, zlib.crc32(repr(key).encode())]))
        return {"mean": mean, "ci": ci, "tasks": len(vals)}

    out: dict = {"k": {}}
    for k in next(iter(tasks.values()))["k"]:
        rows = {t: r["k"][k] for t, r in tasks.items() if k in r["k"]}
        block: dict = {"macro_f1": {}, "task_metric": {}, "seconds_per_adapter": {}, "paired": {}}
        for m in METHODS:
            cls = [r["methods"][m]["macro_f1"]["mean"] for r in rows.values() if m in r["methods"]
                   and "macro_f1" in r["methods"][m]]
            own = [r["methods"][m][metrics[t]]["mean"] for t, r in rows.items() if m in r["methods"]]
            if cls:
                block["macro_f1"][m] = avg(cls, k, m, "macro_f1")
            if own:
                block["task_metric"][m] = avg(own, k, m, "task_metric")
                block["seconds_per_adapter"][m] = float(np.median([r["seconds"][m] for r in rows.values()
                                                                   if m in r["seconds"]]))
        for a, b in COMPARE:
            v, d = [], []
            for t, r in rows.items():
                if a in r["methods"] and b in r["methods"]:
                    name = metrics[t] if metrics[t] in ("pearson", "spearman") else "macro_f1"
                    p = preds[t][k]
                    v.append(verdict(Bootstrap(name, labels[t], bootstrap, seed).diff(p[a], p[b])["ci"]))
                    if name == "macro_f1":
                        d.append(r["methods"][a][name]["mean"] - r["methods"][b][name]["mean"])
            if v:  # per task by paired interval over test rows; the average difference with an interval over tasks
                block["paired"][f"{a} vs {b}"] = {**{w: v.count(w) for w in ("higher", "lower", "no difference")},
                                                  "mean_diff": avg(d, k, a, b)}
        out["k"][k] = block
    out["flip"] = flip_rates([r["flip"]["flipped_examples"] for r in tasks.values() if "flip" in r],
                             {t: r["flip"]["twin_opposite"] for t, r in tasks.items()
                              if "twin_opposite" in r.get("flip", {})})
    return out


def per_family(tasks: dict[str, dict], families: dict[str, str], k: str, a: str, b: str) -> dict[str, dict]:
    """family → {tasks, mean macro-F1 of a − b}: where a body helps or costs."""
    out: dict[str, list] = {}
    for t, r in tasks.items():
        m = r["k"][k]["methods"]
        if a in m and b in m and "macro_f1" in m[a]:
            out.setdefault(families[t], []).append(m[a]["macro_f1"]["mean"] - m[b]["macro_f1"]["mean"])
    return {f: {"tasks": len(v), "mean_diff": float(np.mean(v))} for f, v in sorted(out.items())}


def markdown(report: dict) -> str:
    lines = [f"# Unseen tasks: which body a built head should read ({report['scheme']}, {report['task_count']} tasks)",
             "", report["note"], ""]
    for k, block in report["summary"]["k"].items():
        n = max(v["tasks"] for v in block["task_metric"].values())
        lines += [f"## k = {k} examples per label" + (f" ({n} of {report['task_count']} tasks)"
                                                       if n < report["task_count"] else ""), "",
                  *table(["method", "macro-F1 (classification)", "interval over tasks", "task metric (all tasks)",
                          "s per adapter"])]
        for m in METHODS:
            c, o = block["macro_f1"].get(m), block["task_metric"].get(m)
            if c or o:
                lines.append(f"| {m} | {c['mean']:.3f} | {format_ci(c['ci'])} | "
                             f"{o['mean']:.3f} ({o['tasks']}) | {block['seconds_per_adapter'][m]:.2f} |"
                             if c else f"| {m} | | | {o['mean']:.3f} ({o['tasks']}) | "
                                       f"{block['seconds_per_adapter'][m]:.2f} |")
        lines += ["", *table(["comparison", "average macro-F1 difference [interval over tasks]",
                              "tasks higher / lower / no difference (paired interval over test rows)"])]
        lines += [f"| {p} | {w['mean_diff']['mean']:+.3f} [{w['mean_diff']['ci'][0]:+.3f}, "
                  f"{w['mean_diff']['ci'][1]:+.3f}] | {w['higher']} / {w['lower']} / {w['no difference']} |"
                  for p, w in block["paired"].items()]
        lines.append("")
    f = report["summary"]["flip"]
    lines += [f"Flipping the examples' labels flips {share(f['flipped_examples_mean'])} of generated+head's test "
              f"predictions ({f['tasks']} binary tasks); a label-swapped twin built from the same examples predicts "
              f"the opposite label on {share(f['twins_mean'])} of rows ({len(f['twins'])} twins).", ""]
    for fold in report["folds"]:
        c = fold.get("taskloss")
        if c and c["episode_loss_mean50"] and None not in c["episode_loss_mean50"]:
            checks = (f"; validation episodes (the training tasks' val rows) "
                      + ", ".join(f"{v:.3f} at step {s}" for s, v in zip(c["val_steps"], c["val_episode_loss"]))
                      + f": kept step {c['picked_step']}'s weights") if c.get("val_steps") else ""
            lines += [f"Task-loss stage of {fold['fold']}: episode loss (mean of the last 50 episodes) "
                      + ", ".join(f"{v:.3f} at step {s}" for s, v in zip(c["steps"], c["episode_loss_mean50"]))
                      + f"{checks}; {c['train_seconds']:.0f} s.", ""]
    for key, what in (("per_family", "generated+head minus base+head"),
                      ("per_family_taskloss", "generated+taskloss+head minus generated+head")):
        if report.get(key):
            lines += [f"Per family, {what} (macro-F1, k = 8): " + "; ".join(
                f"{fam} {v['mean_diff']:+.3f} ({v['tasks']})" for fam, v in report[key].items()), ""]
    lines += ["## Per task (macro-F1, or the task's metric for regression; mean over draws [95% interval over test "
              "rows]; the body each method picked)", ""]
    for t, r in report["tasks"].items():
        for k, v in r["k"].items():
            cells = ", ".join(f"{m} {next(iter(s.values()))['mean']:.3f}" if "macro_f1" not in s else
                              f"{m} {cell(s['macro_f1']['mean'], s['macro_f1']['ci'])}"
                              for m, s in v["methods"].items())
            picks = "; ".join(f"{m}: {', '.join(p)}" for m, p in v["picked"].items())
            lines.append(f"- {t} (k={k}): {cells}. Bodies: {picks}")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> Path:
    """macro-F1 average over tasks against k per label, one line per method, intervals shaded."""
    ks = list(report["summary"]["k"])
    with plots.figure(path, (7, 4.5)) as (fig, ax):
        for m in METHODS:
            pts = [(int(k), report["summary"]["k"][k]["macro_f1"][m]) for k in ks
                   if m in report["summary"]["k"][k]["macro_f1"]]
            if not pts:
                continue
            x = [p[0] for p in pts]
            y = np.array([p[1]["mean"] for p in pts])
            lo, hi = np.array([p[1]["ci"] for p in pts]).T
            ax.plot(x, y, "o-" if len(x) > 1 else "s", label=m, ms=4)
            ax.fill_between(x, lo, hi, alpha=0.1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("examples per label (k)")
        ax.set_ylabel("macro-F1, average over held-out tasks")
        ax.set_title(f"unseen tasks ({report['scheme']}): heads built on each body")
        ax.legend(fontsize=7, ncol=2)
    return path
