"""Unseen tasks, bodies + built heads (raypdiff.transfer, bench/unseen.py): nested supports and folds of whole families
as tables; the bench end to end on a five-task suite (real local Ray, real fold generators, real SetFit), resumed."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, private_ray_env

from raypdiff import checkpoint
from raypdiff.config import ConfigError, load_config
from raypdiff.domains import load_splits
from raypdiff.holdout import family_groups
from raypdiff.tasks import Split, TaskSpec
from raypdiff.newtask import Builder
from raypdiff.transfer import METHODS, SETFIT, TUNED, TaskRun, nested, summarize, support
from raypdiff.zoo.store import check


def spec(labels=("neg", "pos"), family="f", name="t") -> TaskSpec:
    return TaskSpec(name=name, description="d", text_fields=["text"], label_field="label",
                    metric="accuracy" if labels else "pearson", label_names=list(labels) if labels else None,
                    train="-", dev="-", family=family)


SPLIT = Split([(f"row {i}",) for i in range(40)], np.arange(40) % 2)


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_smaller_k_is_the_first_k_of_each_label(k):
    full = support(spec(), SPLIT, 8, np.random.default_rng(0))
    assert [y for _, y in full].count(0) == 8 and [y for _, y in full].count(1) == 8
    sub = nested(spec(), full, k)
    assert [y for _, y in sub].count(0) == k and [y for _, y in sub].count(1) == k
    assert all(x in full for x in sub)
    for j in (0, 1):  # the first k of the label, in draw order
        assert [x for x, y in sub if y == j] == [x for x, y in full if y == j][:k]


def test_regression_support_is_2k_rows_nested():
    reg = Split([(f"row {i}",) for i in range(40)], np.linspace(0, 5, 40).astype(np.float32))
    full = support(spec(None), reg, 8, np.random.default_rng(0))
    assert len(full) == 16 and len({x for x, _ in full}) == 16 and nested(spec(None), full, 2) == full[:4]


def scored(ks: list[str], methods: list[str], rng: np.random.Generator, rows: int = 30) -> tuple[dict, dict]:
    """A task's results at ks as run_fold keeps them (methods' macro-F1 means, seconds) and its test predictions."""
    preds = {k: {m: rng.integers(0, 2, (1, rows)) for m in methods} for k in ks}
    res = {"k": {k: {"methods": {m: {"accuracy": {"mean": float(rng.random())}, "macro_f1": {"mean": float(rng.random())}}
                                 for m in methods}, "seconds": {m: 0.1 for m in methods}} for k in ks}}
    return res, preds


def test_summary_figures_do_not_move_when_other_k_or_methods_are_added():
    rng = np.random.default_rng(0)
    both = {f"t{i}": scored(["2", "4"], ["base+head", "generated+head", "auto+head"], rng) for i in range(6)}
    labels = {t: np.arange(30) % 2 for t in both}
    metrics = {t: "accuracy" for t in both}

    def summary(ks: list[str], methods: list[str]) -> dict:
        tasks = {t: {"k": {k: {part: {m: v for m, v in r["k"][k][part].items() if m in methods}
                               for part in ("methods", "seconds")} for k in ks}} for t, (r, _) in both.items()}
        preds = {t: {k: p[k] for k in ks} for t, (_, p) in both.items()}
        return summarize([{"tasks": tasks}], preds, labels, metrics, 50, 0)["k"]

    full = summary(["2", "4"], ["base+head", "generated+head", "auto+head"])
    assert summary(["4"], ["base+head", "generated+head", "auto+head"])["4"] == full["4"]
    fewer = summary(["4"], ["base+head", "generated+head"])["4"]
    assert fewer["macro_f1"]["generated+head"] == full["4"]["macro_f1"]["generated+head"]
    assert fewer["paired"]["generated+head vs base+head"] == full["4"]["paired"]["generated+head vs base+head"]


FAMILIES = {"a": 5, "b": 4, "c": 3, "d": 2, "e": 1}


@pytest.mark.parametrize("k,sizes", [(2, [8, 7]), (3, [5, 5, 5]), (5, [5, 4, 3, 2, 1])])
def test_family_groups_hold_out_whole_families(k, sizes):
    specs = [spec(family=f, name=f"{f}{i}") for f, n in FAMILIES.items() for i in range(n)]
    folds = family_groups(specs, k)
    assert sorted(len(f.heldout) for f in folds) == sorted(sizes)
    assert sorted(t for f in folds for t in f.heldout) == sorted(s.name for s in specs)  # each task once
    for f in folds:
        held = {t[0] for t in f.heldout}
        assert not held & {t[0] for t in f.train}  # no held-out family among the training tasks


@pytest.mark.parametrize("k", [1, 6])
def test_family_groups_bad_k_is_one_line(k):
    specs = [spec(family=f, name=f"{f}{i}") for f, n in FAMILIES.items() for i in range(n)]
    with pytest.raises(ConfigError, match="holdout.folds: must be 2..5"):
        family_groups(specs, k)


def test_bench_unseen_end_to_end(holdout_zoo, data_dir, tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    shutil.copytree(holdout_zoo, tmp_path / "zoo")  # complete: the bench's collect step reuses it
    ray_tmp = Path(tempfile.mkdtemp(prefix="rpu", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    args = [sys.executable, "bench/unseen.py", "--data-root", str(data_dir), "--config", "configs/tiny_holdout.yaml",
            "--k", "2,4", "--setfit-k", "2", "--num", "2", "--multitask-steps", "6", "--tune-k=", "--work", str(work),
            "--out", str(out),
            "holdout.folds=2", "tracking.enabled=false", f"collect.output_dir={tmp_path / 'zoo'}", "taskloss.steps=2",
            "taskloss.val_episodes=3"]
    env = private_ray_env(ray_tmp)
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads((out / "unseen.json").read_text())
    rep = r["families"]["report"]
    assert rep["task_count"] == 5  # every task scored, the regression one (STS-B) included: nothing skipped
    for k in ("2", "4"):
        # macro-F1 averages classification tasks; the one task-loss generator here scores STS-B alone (regression)
        assert set(r["families"]["k"][k]) == set(METHODS) - set(TUNED) - {"generated+taskloss+head"} - (
            set(SETFIT) if k == "4" else set())
        for m, v in r["families"]["k"][k].items():
            assert v["ci"][0] <= v["mean"] <= v["ci"][1], (k, m)
    for t, x in rep["tasks"].items():
        for k, block in x["k"].items():
            for m, s in block["methods"].items():
                for name, est in s.items():
                    assert est["ci"][0] <= est["mean"] <= est["ci"][1], (t, k, m, name)
    folds = {f["fold"]: f for f in rep["folds"]}
    for f in folds.values():  # a retrieved or nearest body is always one of the fold's training tasks
        for t in f["heldout"]:
            for k, block in rep["tasks"][t]["k"].items():
                for m in ("nearest+head", "retrieved+head"):
                    assert not set(block["picked"][m]) & set(f["heldout"]), (t, m)
    tasked = [f for f in folds.values() if (work / "families" / f["fold"] / "taskloss_generator").is_dir()]
    assert len(tasked) == 1  # the other fold trains on STS-B alone: no classification task to draw episodes from
    assert [f["taskloss"] for f in folds.values() if f not in tasked] == [None]
    for f in tasked:  # taskloss.steps > 0: a second generator per fold, trained on to the task-loss stage
        gens = {p: checkpoint.load(work / "families" / f["fold"] / p) for p in ("generator", "taskloss_generator")}
        assert gens["generator"].cfg.taskloss.steps == 0 and gens["taskloss_generator"].cfg.taskloss.steps == 2
        assert gens["generator"].task_names == gens["taskloss_generator"].task_names
        for k, v in gens["generator"].ae.items():  # trained on from the denoise-only generator, not trained again
            assert torch.equal(gens["taskloss_generator"].ae[k], v), k
        start = len(gens["generator"].history)
        assert gens["taskloss_generator"].history[:start] == gens["generator"].history
        summary = json.loads((work / "families" / f["fold"] / "taskloss_generator" / "train_summary.json").read_text())
        assert summary["final"]["phase"] == "task" and summary["final"]["step"] == 2
        curve = f["taskloss"]  # the stage's episode loss, logged at its last step, in the report and its Markdown
        assert curve["steps"] == [2] and np.isfinite(curve["episode_loss_mean50"][0]) and curve["train_seconds"] > 0
        assert curve["val_steps"] == [0, 2] and all(np.isfinite(curve["val_episode_loss"]))  # checked at start and end
        assert curve["picked_step"] == curve["val_steps"][int(np.argmin(curve["val_episode_loss"]))]
        assert f"Task-loss stage of {f['fold']}: episode loss" in (out / "unseen.md").read_text()
        assert f": kept step {curve['picked_step']}'s weights" in (out / "unseen.md").read_text()
        for t in f["heldout"]:
            for block in rep["tasks"][t]["k"].values():
                assert all(b.startswith("taskloss:generated:") for b in block["picked"]["generated+taskloss+head"])
    assert "generated+taskloss+head vs generated+head" in r["families"]["report"]["summary"]["k"]["2"]["paired"]
    for t, x in rep["tasks"].items():  # SetFit from the generated+head adapter's body, at SetFit's k
        if x["metric"] != "pearson":
            assert x["k"]["2"]["picked"]["generated+setfit"] == x["k"]["2"]["picked"]["generated+head"]
            assert x["k"]["2"]["seconds"]["generated+setfit"] > x["k"]["2"]["seconds"]["generated+head"]
    assert r["families"]["flip"]["tasks"] == 4 and r["families"]["flip"]["flipped_examples_mean"] is not None
    assert (out / "unseen.md").read_text().startswith("# Unseen tasks") and (out / "unseen.png").stat().st_size > 0
    t0 = time.time()  # a re-run reuses the fold generators and the scored tasks
    before = {p: p.stat().st_mtime for p in work.rglob("tasks/*.json")}
    subprocess.run(args[:2] + ["--stage", "score"] + args[2:], cwd=REPO, env=env, check=True, capture_output=True,
                   timeout=600)
    assert {p: p.stat().st_mtime for p in work.rglob("tasks/*.json")} == before and time.time() - t0 < 120
    old = {p: dict(np.load(p)) for p in work.rglob("tasks/*.npz")}
    i = args.index("--tune-k=")  # warm starts asked for later are added to the scored tasks; the rest is kept
    subprocess.run(args[:i] + ["--tune-k", "2"] + args[i + 1:], cwd=REPO, env=env, check=True, capture_output=True,
                   timeout=600)
    r = json.loads((out / "unseen.json").read_text())
    assert set(r["families"]["k"]["2"]) == set(METHODS) - {"generated+taskloss+head"} and not set(TUNED) & set(r["families"]["k"]["4"])
    for p, preds in old.items():
        new = np.load(p)
        assert set(new.files) == set(preds) | {f"2|{m}" for m in TUNED}
        for key, v in preds.items():
            np.testing.assert_array_equal(new[key], v)
    old = {p: dict(np.load(p)) for p in work.rglob("tasks/*.npz")}
    tuned = args[:i] + ["--tune-k", "2"] + args[i + 1:]
    j = tuned.index("--k") + 1  # a smaller k asked for later is added from the same draws; the rest is kept
    subprocess.run(tuned[:j] + ["1,2,4"] + tuned[j + 1:], cwd=REPO, env=env, check=True, capture_output=True,
                   timeout=600)
    r = json.loads((out / "unseen.json").read_text())
    assert list(r["families"]["k"]) == ["1", "2", "4"]
    assert set(r["families"]["k"]["1"]) == set(r["families"]["k"]["4"])  # k = 1: no SetFit, no warm starts asked
    for p, preds in old.items():
        new = np.load(p)
        methods = {k: {f.split("|", 1)[1] for f in new.files if f.startswith(f"{k}|")} for k in ("1", "4")}
        assert set(new.files) == set(preds) | {f"1|{m}" for m in methods["1"]} and methods["1"] == methods["4"]
        for key, v in preds.items():
            np.testing.assert_array_equal(new[key], v)
    tasks = r["families"]["report"]["tasks"]
    assert all(list(x["k"]) == ["1", "2", "4"] for x in tasks.values())
    # k = 1 is the first example of each label of the draws that k = 2 and 4 were scored on: recomputed here
    cfg = load_config(REPO / "configs/tiny_holdout.yaml", [f"data.root={data_dir}", f"collect.output_dir={tmp_path / 'zoo'}"])
    meta = check(tmp_path / "zoo")
    t = next(t for t, x in tasks.items() if x["metric"] != "pearson")
    s, data = TaskSpec(**meta.tasks[t].spec), load_splits(meta, [t])[t]
    drawn = support(s, data.train, 4, np.random.default_rng([cfg.holdout.seed, zlib.crc32(t.encode()), 0]))
    builder = Builder(cfg.model, cfg.lora)
    run = TaskRun(builder, s, data)
    b = run.build(nested(s, drawn, 1), {"base": np.zeros(builder.body_layout.size, np.float32)}, "prototype")
    fold = next(f["fold"] for f in r["families"]["report"]["folds"] if t in f["heldout"])
    scored = np.load(work / "families" / fold / "tasks" / f"{t}.npz")["1|base+prototype"][0]
    assert (run.predict("base", b) == scored).mean() >= 0.99
    bigger = subprocess.run(tuned[:j] + ["2,8"] + tuned[j + 1:], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert bigger.returncode != 0 and "scored on supports of 4 per label, so --k 8 needs new draws" in bigger.stderr
    # one fold's report (--folds): its tasks alone, and the note says which folds it covers
    first = r["families"]["report"]["folds"][0]
    o = args.index("--out") + 1
    done = subprocess.run(args[:2] + ["--stage", "report", "--folds", first["fold"]] + args[2:o] + [str(tmp_path / "one")]
                          + args[o + 1:], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "unseen.json").read_text())["families"]["report"]
    assert set(one["tasks"]) == set(first["heldout"]) and [f["fold"] for f in one["folds"]] == [first["fold"]]
    assert f"1 of 2 folds ({first['fold']}; --folds)" in one["note"]
