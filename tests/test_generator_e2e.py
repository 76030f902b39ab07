"""End to end on real data: the session's tiny zoo and tiny generator (tests/conftest.py: `raypdiff collect`, then
`train` on Ray Train with MLflow tracking into a temp SQLite store), then `generate` (zoo task and free
description), `evaluate`, `train` again, and every bad input of those verbs → exit 2 with one
`raypdiff: error:` line. `raypdiff pipeline` end to end: tests/test_bench_scripts.py::test_demo (bench/demo.py).

Ray commands run as subprocesses with a private RAY_TMPDIR (never another Ray on the machine); generate/evaluate run
in-process through `raypdiff.cli.main`.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import private_ray_env

from safetensors.torch import save_file

from raypdiff import checkpoint, cli
from raypdiff.newtask import TaskAdapter
from raypdiff.stats import val_ties

pytestmark = pytest.mark.full  # end to end: the full tier

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "tiny_gen.yaml"
TASKS = {"SST-2": 2, "STS-B": 1}  # task → num_labels, as in configs/tiny_gen.yaml


def run_cli(args: list[str], tmp: Path, name: str, timeout: float) -> None:
    log = tmp / f"{name}.log"
    with open(log, "w") as fh:
        # cwd=tmp: MLflow puts a new experiment's artifacts under ./mlruns of the working directory
        proc = subprocess.run([sys.executable, "-m", "raypdiff.cli", *args], cwd=tmp, env=private_ray_env(tmp / "ray"),
                              stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
    assert proc.returncode == 0, f"raypdiff {args[0]} exited {proc.returncode}:\n{log.read_text()[-4000:]}"


@pytest.fixture(scope="module")
def built(tiny_zoo, tiny_generator, data_dir):
    """The session's configs/tiny_gen.yaml generator (registered in its own MLflow store) on the tiny zoo (2 tasks ×
    3 captures), and a scratch folder; yields the paths. Tests that would change the zoo copy it first."""
    tmp = Path(tempfile.mkdtemp(prefix="rpe", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    try:
        yield {"tmp": tmp, "zoo": tiny_zoo, "gen": tiny_generator["dir"], "uri": tiny_generator["uri"],
               "data": data_dir}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_adapter(folder: Path, num_labels: int):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from raypdiff.lora import resolve_base

    base = AutoModelForSequenceClassification.from_pretrained(resolve_base("all-MiniLM-L6-v2"), num_labels=num_labels)
    return PeftModel.from_pretrained(base, str(folder)).eval()


def check_adapters(out: Path, num: int, num_labels: int) -> dict:
    """N PEFT folders + manifest.json; each folder loads on the base and runs a forward pass."""
    from transformers import AutoTokenizer

    from raypdiff.lora import resolve_base

    manifest = json.loads((out / "manifest.json").read_text())
    names = [f"adapter_{i:03d}" for i in range(num)]
    assert sorted(p.name for p in out.iterdir()) == sorted(names + ["manifest.json"])
    assert [Path(a).name for a in manifest["adapters"]] == names
    tok = AutoTokenizer.from_pretrained(resolve_base("all-MiniLM-L6-v2"))
    batch = tok(["a fine film", "a dull film"], return_tensors="pt", padding=True)
    for name in names:
        assert (out / name / "adapter_config.json").is_file()
        assert (out / name / "adapter_model.safetensors").is_file()
        model = load_adapter(out / name, num_labels)
        with torch.no_grad():
            logits = model(**batch).logits
        assert logits.shape == (2, num_labels) and torch.isfinite(logits).all()
    return manifest


def test_generator_file_and_registered_model(built):
    import mlflow

    assert (built["gen"] / checkpoint.GENERATOR_FILE).is_file()
    summary = json.loads((built["gen"] / "train_summary.json").read_text())
    assert summary["final"]["phase"] == "diffusion" and summary["final"]["step"] == 20
    client = mlflow.MlflowClient(tracking_uri=built["uri"])
    versions = client.search_model_versions("name='raypdiff-generator'")
    assert len(versions) >= 1, "no version of raypdiff-generator in the tracking store"
    run = client.get_run(versions[0].run_id)
    assert run.info.status == "FINISHED" and "ae_loss" in run.data.metrics and "diffusion_loss" in run.data.metrics


@pytest.mark.parametrize("task", list(TASKS))
def test_generate_task_writes_loadable_adapters(built, task, tmp_path):
    from raypdiff.generate import Generator
    from raypdiff.lora import flatten

    out = tmp_path / "adapters"
    assert cli.main(["generate", "--generator", str(built["gen"]), "--task", task, "--num", "2",
                     "--out", str(out)]) == 0
    manifest = check_adapters(out, 2, TASKS[task])
    assert manifest["task"] == task and manifest["layout_task"] == task and manifest["num"] == 2
    assert manifest["quality"] == 1.0  # asks for the top of the zoo by default
    assert manifest["base_model"]["base"] == "all-MiniLM-L6-v2"
    # the folders hold exactly the sampled vectors (same seed, same default guidance)
    g = Generator(built["gen"])
    want = g.vectors(g.conditions(task, 2), task, seed=0)
    for i in range(2):
        np.testing.assert_allclose(flatten(load_adapter(out / f"adapter_{i:03d}", TASKS[task])), want[i], rtol=0, atol=0)


def test_generate_from_description_and_examples(built, tmp_path):
    examples = tmp_path / "examples.jsonl"
    examples.write_text('{"text": "a joyous, moving film", "label": "pos"}\n\n'
                        '{"text": "tedious and flat", "label": "neg"}\n{"text": "loved it", "label": 1}\n')
    out = tmp_path / "custom"
    assert cli.main(["generate", "--generator", str(built["gen"]), "--description",
                     "Is this product review positive or negative?", "--label-names", "neg,pos",
                     "--examples", str(examples), "--num", "2", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["label_names"] == ["neg", "pos"] and manifest["examples"] == 3
    assert manifest["body"] in ("base", "generated:0", "generated:1") and manifest["head"] in ("prototype", "logistic")
    assert set(manifest["leave_one_out"]) == {"base", "generated:0", "generated:1"}  # every candidate was scored
    adapter = TaskAdapter(manifest["adapters"][0])
    assert adapter.predict(["a joyous, moving film", "tedious and flat"]).shape == (2,)


def test_description_with_a_label_count_no_zoo_task_has(built, tmp_path):
    """Three labels (the zoo has 2-label SST-2 and regression STS-B): the body comes from the generator all the
    same, the head from the examples; nothing is skipped."""
    examples = tmp_path / "examples.jsonl"
    examples.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in [
        ("the match ended two to one", "sport"), ("the striker scored twice", "sport"),
        ("shares fell sharply today", "business"), ("the bank raised rates", "business"),
        ("a new phone was released", "tech"), ("the chip is twice as fast", "tech")]))
    out = tmp_path / "three"
    assert cli.main(["generate", "--generator", str(built["gen"]), "--description", "What is this headline about?",
                     "--label-names", "sport,business,tech", "--examples", str(examples), "--bodies", "generated",
                     "--num", "2", "--tune-steps", "2", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["body"].startswith("generated:") and manifest["tune_steps"] == 2  # then tuned on the examples
    assert TaskAdapter(manifest["adapters"][0]).logits(["the striker scored"]).shape == (1, 3)


@pytest.fixture
def inproc_ray(built, monkeypatch):
    """`evaluate` scores on Ray actors from this process: a private local Ray (own temp dir, no RAY_ADDRESS),
    shut down after the test so nothing outlives it."""
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(built["tmp"] / "ri"))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    assert not ray.is_initialized()
    yield
    ray.shutdown()


REPORT_KEYS = {"splits", "tasks", "novelty", "condition_matrix", "own_condition", "sampling", "bootstrap",
               "subset_rows", "targets", "generate_seconds_per_adapter"}
METRIC = {"SST-2": "accuracy", "STS-B": "pearson"}


def assert_in_ci(value: float, ci: list, what: str) -> None:
    assert len(ci) == 2 and np.isfinite([value, *ci]).all(), (what, value, ci)
    assert ci[0] - 1e-9 <= value <= ci[1] + 1e-9, f"{what}: {value} outside its interval {ci}"


def check_report(report: dict, zoo: Path, num: int, recon_num: int, tasks: list[str]) -> None:
    """The held-out report's structure, and the figures that must agree with each other and with the zoo."""
    from raypdiff.zoo.store import task_arrays

    meta = json.loads((zoo / "meta.json").read_text())
    arrays = task_arrays(zoo, test=True)
    assert set(report) == REPORT_KEYS
    for key in ("splits", "tasks", "novelty", "condition_matrix", "own_condition", "targets", "subset_rows"):
        assert set(report[key]) == set(tasks), key
    for t in tasks:
        r, a, info = report["tasks"][t], arrays[t], meta["tasks"][t]
        assert report["splits"][t] == {"train": info["splits"]["train"]["rows"], "val": 16, "test": 24}
        assert r["metric"] == METRIC[t] and set(r) == {"metric", "test", "val"}
        x = r["test"]

        # zoo: the captures scored on test at collect time (every 2nd from the last, and the best by val)
        tested = sorted(a["test_pred"])
        z = x["zoo"]
        assert z["n"] == len(tested) and 2 <= z["n"] <= 3
        np.testing.assert_allclose(z["scores"], a["test_value"][tested], atol=1e-6)
        assert z["mean"] == pytest.approx(np.mean(z["scores"]), abs=1e-5)  # rescored now = scored at collect time
        ties = val_ties(a["value"])  # best-by-val: the mean test score of the captures tied at the best val score
        assert z["best_by_val_ties"] == len(ties)
        if all(int(i) in a["test_pred"] for i in ties):  # else evaluate scored the rest itself
            assert z["best_by_val"] == pytest.approx(np.mean(a["test_value"][ties]), abs=1e-5)
        assert z["last"] == pytest.approx(a["test_value"][int(np.argmax(a["step"]))], abs=1e-5)
        assert_in_ci(z["mean"], z["ci"], f"{t} zoo mean")
        assert_in_ci(z["best_by_val"], z["best_by_val_ci"], f"{t} zoo best-by-val")

        # baselines
        assert_in_ci(x["weight_average"], x["weight_average_ci"], f"{t} weight average")
        assert x["majority"] == info["majority"]
        if METRIC[t] == "pearson":
            assert x["majority"] == 0.0
        assert np.isfinite(x["base_init"])

        # reconstructed and generated adapters
        for kind, n in (("recon", recon_num), ("generated", num)):
            g = x[kind]
            assert set(g) == {"mean", "ci", "best_by_val", "best_by_val_ties", "n", "scores", "val_scores"}, kind
            assert g["n"] == len(g["scores"]) == len(g["val_scores"]) == n
            assert g["mean"] == pytest.approx(np.mean(g["scores"]), abs=1e-9)
            ties = val_ties(g["val_scores"])
            assert g["best_by_val_ties"] == len(ties) >= 1
            assert g["best_by_val"] == pytest.approx(np.mean(np.asarray(g["scores"])[ties]), abs=1e-9)
            assert_in_ci(g["mean"], g["ci"], f"{t} {kind} mean")

        # paired differences: value = difference of the points above, each inside its interval
        d = x["diff"]
        assert set(d) == {"gen_vs_zoo_mean", "gen_vs_weight_average", "gen_best_vs_zoo_best", "recon_vs_zoo_mean"}
        gen, rec = x["generated"], x["recon"]
        for k, want in (("gen_vs_zoo_mean", gen["mean"] - z["mean"]),
                        ("gen_vs_weight_average", gen["mean"] - x["weight_average"]),
                        ("gen_best_vs_zoo_best", gen["best_by_val"] - z["best_by_val"]),
                        ("recon_vs_zoo_mean", rec["mean"] - z["mean"])):
            assert d[k]["value"] == pytest.approx(want, abs=1e-9), k
            assert_in_ci(d[k]["value"], d[k]["ci"], f"{t} {k}")

        # val: what the picks read
        v = r["val"]
        assert set(v) == {"zoo_mean", "zoo_best", "generated_mean", "generated_best", "recon_mean"}
        assert v["zoo_mean"] == pytest.approx(float(a["value"].mean())) and v["zoo_best"] == float(a["value"].max())
        assert v["generated_best"] >= v["generated_mean"] - 1e-12

        # novelty: parameter distances and behavioural disagreement
        nv = report["novelty"][t]
        for k in ("gen_nearest_l2_median", "recon_own_l2_median", "recon_nearest_l2_median",
                  "zoo_neighbour_l2_median", "gen_to_zoo_mean_l2_median", "zoo_to_zoo_mean_l2_median",
                  "zoo_norm_median"):
            assert np.isfinite(nv[k]) and nv[k] >= 0, k
        assert -1 - 1e-6 <= nv["gen_nearest_cos_median"] <= 1 + 1e-6
        assert "nearest" not in nv  # indices stay out of the report
        assert nv["zoo_50_steps_apart_disagreement"] is None  # 6 training steps: no capture 50 steps back
        for k in ("gen_vs_nearest_zoo_disagreement", "zoo_neighbours_disagreement"):
            assert nv[k] >= 0, k
            if METRIC[t] != "pearson":
                assert nv[k] <= 1, k
        assert nv["disagreement_unit"] == ("mean |score difference|" if METRIC[t] == "pearson"
                                           else "share of test rows predicted differently")

        # the condition matrix: SST-2's 2-label head and STS-B's 1-output head have different layouts, so
        # each condition only fits its own task
        assert set(report["condition_matrix"][t]) == {t}
        cell = report["condition_matrix"][t][t]
        assert set(cell) == {"mean", "ci"}
        assert_in_ci(cell["mean"], cell["ci"], f"{t} matrix")
        assert report["own_condition"][t] == {"status": "no competitor"}

        # targets: one bool per target, as the figures say
        tg = report["targets"][t]
        assert tg == {"mean_vs_zoo": gen["mean"] >= z["mean"] - 0.005,
                      "best_vs_zoo_best": gen["best_by_val"] >= z["best_by_val"] - 0.005,
                      "not_below_weight_average": d["gen_vs_weight_average"]["ci"][1] >= 0}
        assert all(type(b) is bool for b in tg.values())
    assert report["generate_seconds_per_adapter"] > 0


def test_evaluate_writes_report(built, tmp_path, inproc_ray):
    out = tmp_path / "report"
    assert cli.main(["evaluate", "--generator", str(built["gen"]), "--out", str(out), "--num", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    check_report(report, built["zoo"], num=2, recon_num=2, tasks=list(TASKS))
    assert report["sampling"] == {"guidance": 2.0, "sampler": "ddim", "quality": 1.0, "seed": 0,
                                  "temperature": 1.0}  # the generator's own
    assert report["bootstrap"] == 1000 and report["subset_rows"] == {t: 24 for t in TASKS}  # 24 < 200 test rows
    md = (out / "report.md").read_text()
    assert all(t in md for t in TASKS) and "1000 resamples" in md
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_sampling_overrides(built, tmp_path, inproc_ray):
    """--guidance / --sampler / --quality / --seed replace the generator's sampling settings and the report says so;
    --tasks limits it, --recon-num sets the reconstructions apart from --num; --bootstrap, --subset-rows and
    --workers are honoured."""
    out = tmp_path / "report"
    args = ["evaluate", "--generator", str(built["gen"]), "--out", str(out), "--num", "2", "--tasks", "SST-2"]
    assert cli.main([*args, "--guidance", "0", "--sampler", "ddpm", "--quality", "0.5", "--recon-num", "1",
                     "--matrix-num", "1", "--seed", "3", "--bootstrap", "200", "--subset-rows", "10",
                     "--workers", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    check_report(report, built["zoo"], num=2, recon_num=1, tasks=["SST-2"])
    assert report["sampling"] == {"guidance": 0.0, "sampler": "ddpm", "quality": 0.5, "seed": 3,
                                  "temperature": 1.0}
    assert report["bootstrap"] == 200 and report["subset_rows"] == {"SST-2": 10}
    md = (out / "report.md").read_text()
    assert "Sampling: DDPM, guidance 0, quality 0.5, temperature 1." in md and "200 resamples" in md and "SST-2 10" in md
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- bad input: exit 2 and exactly one `raypdiff: error:` line ----

def other_base(tmp: Path, kind: str) -> str:
    """A loadable base model other than the generator's: a tiny BERT (another LoRA layout) or all-MiniLM-L6-v2's
    architecture with fresh weights (the same layout, different model)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    from raypdiff.lora import resolve_base

    path = resolve_base("all-MiniLM-L6-v2")
    tok = AutoTokenizer.from_pretrained(path)
    if kind == "tiny-bert":
        conf = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=37)
    else:
        conf = AutoConfig.from_pretrained(path)
    torch.manual_seed(1)
    out = tmp / kind
    AutoModelForSequenceClassification.from_config(conf).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def bad_generator(built: dict, tmp: Path, kind: str) -> str:
    if kind == "missing":
        return str(tmp / "nope" / checkpoint.GENERATOR_FILE)
    if kind == "empty-dir":
        (tmp / "empty").mkdir()
        return str(tmp / "empty")
    p = tmp / checkpoint.GENERATOR_FILE
    if kind == "text-file":
        p.write_text("this is not a checkpoint\n")
    elif kind == "foreign-tensors":
        save_file({"model": torch.zeros(3)}, str(p))
    elif kind == "pickle":
        p = tmp / checkpoint.LEGACY_FILE
        torch.save({"model": torch.zeros(3)}, p)
    else:  # a generator checkpoint whose base model is another one
        ckpt = checkpoint.load(built["gen"])
        ckpt.base_model["base"] = other_base(tmp, kind)
        checkpoint.save(p, ckpt)
    return str(p)


# (generator kind, extra args, text the error must contain)
BAD = [
    ("good", ["--task", "CoLA"], "unknown task 'CoLA'"),
    ("good", ["--task", "sst-2"], "unknown task"),
    ("good", ["--description", ""], "--description"),
    ("good", ["--description", "   ", "--label-names", "neg,pos"], "--description"),
    ("good", ["--description", "Sentiment.", "--label-names", "neg,pos", "--examples", "@neutral"], "'neutral'"),
    ("good", ["--description", "Sentiment.", "--label-names", "neg,pos", "--examples", "@index"], "label 2"),
    ("good", ["--description", "Sentiment.", "--label-names", "neg,pos", "--examples", "@nojson"], "not JSON"),
    ("good", ["--description", "Sentiment.", "--label-names", "neg,pos", "--examples", "@missing"], "--examples"),
    ("good", ["--description", "Three-way.", "--label-names", "a,b,c"], "--examples"),
    ("good", ["--description", "Two-way.", "--label-names", "a,b", "--examples", "@nojson", "--head", "ridge"],
     "not JSON"),
    ("good", ["--description", "Two-way.", "--label-names", "neg,pos", "--examples", "@two", "--tune-steps", "-1"],
     "--tune-steps: must be >= 0"),
    ("good", [], "give one of --task"),
    ("good", ["--task", "SST-2", "--quality", "1.5"], "--quality: must be in [0, 1]"),
    ("good", ["--task", "SST-2", "--quality", "-1"], "--quality: must be in [0, 1]"),
    ("good", ["--task", "SST-2", "--description", "x"], "give one of --task"),
    ("missing", ["--task", "SST-2"], "not found"),
    ("empty-dir", ["--task", "SST-2"], "not found"),
    ("text-file", ["--task", "SST-2"], "not a raypdiff generator"),
    ("foreign-tensors", ["--task", "SST-2"], "not a raypdiff generator"),
    ("pickle", ["--task", "SST-2"], "raypdiff migrate"),
    ("tiny-bert", ["--task", "SST-2"], "layout"),
    ("same-layout", ["--task", "SST-2"], "base model"),
]
EXAMPLES = {"neutral": '{"text": "meh", "label": "neutral"}\n', "index": '{"text": "meh", "label": 2}\n',
            "two": '{"text": "fine", "label": "pos"}\n{"text": "awful", "label": "neg"}\n',
            "nojson": '{"text": "ok", "label": "pos"}\nnot json\n'}


def _id(p) -> str:
    values = p.values if hasattr(p, "values") else p
    return f"{values[0]}:{' '.join(values[1])[:40]}"


@pytest.mark.parametrize("kind,args,match", BAD, ids=[_id(p) for p in BAD])
def test_generate_bad_input(built, tmp_path, capsys, kind, args, match):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # as in a fresh `raypdiff` process (an earlier model load may have turned it off)
    gen = str(built["gen"]) if kind == "good" else bad_generator(built, tmp_path, kind)
    args = list(args)
    for i, a in enumerate(args):
        if a.startswith("@"):
            f = tmp_path / f"{a[1:]}.jsonl"
            if a[1:] in EXAMPLES:
                f.write_text(EXAMPLES[a[1:]])
            args[i] = str(f)
    out = tmp_path / "out"
    capsys.readouterr()
    assert cli.main(["generate", "--generator", gen, *args, "--num", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raypdiff: error: "), err
    assert match in err[0], err[0]
    assert not out.exists(), "an adapter folder was written for a refused request"


@pytest.mark.parametrize("args,match", [(["--num", "0"], "--num: must be >= 1"),
                                        (["--recon-num", "0"], "--recon-num: must be >= 1"),
                                        (["--matrix-num", "-1"], "--matrix-num: must be >= 1"),
                                        (["--subset-rows", "0"], "--subset-rows: must be >= 1"),
                                        (["--bootstrap", "0"], "--bootstrap: must be >= 1"),
                                        (["--workers", "0"], "--workers: must be >= 1"),
                                        (["--workers", "-2"], "--workers: must be >= 1"),
                                        (["--quality", "2"], "--quality: must be in [0, 1]"),
                                        (["--tasks", "CoLA"], "unknown task 'CoLA'")])
def test_evaluate_bad_counts(built, tmp_path, capsys, args, match):
    capsys.readouterr()
    assert cli.main(["evaluate", "--generator", str(built["gen"]), "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raypdiff: error: ") and match in err[0], err


@pytest.mark.parametrize("kind", ["missing", "text-file"])
def test_evaluate_bad_generator(built, tmp_path, capsys, kind):
    gen = bad_generator(built, tmp_path, kind)
    capsys.readouterr()
    assert cli.main(["evaluate", "--generator", gen, "--out", str(tmp_path / "r"), "--num", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raypdiff: error: "), err


@pytest.mark.timeout(600)
def test_train_again_into_the_same_folder(built):
    """Ray Train resumes whatever run it finds under the same storage name; `raypdiff train` names the run after
    its settings and the zoo, so the same command reuses its finished run (here, the session generator's, in a copy
    of its folder) and other settings train afresh."""
    from raypdiff.config import load_config
    from raypdiff.train import run_name

    tmp = built["tmp"]
    gen = tmp / "again_gen"
    shutil.copytree(built["gen"], gen)
    before = checkpoint.load(gen).ae
    common = ["train", "-q", "-c", str(CONFIG), f"data.root={Path(built['data']).resolve()}",
              f"collect.output_dir={built['zoo']}", f"trainer.output_dir={gen}", "tracking.enabled=false"]
    run_cli(common, tmp, "train_again", timeout=300)
    after = checkpoint.load(gen).ae
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(list(gen.glob("ray/generator-*"))) == 1
    # what trains afresh instead: another setting or another zoo is another run (the same folder, another name)
    name = run_name(load_config(CONFIG, common[4:]), str(built["zoo"]))
    assert run_name(load_config(CONFIG, [*common[4:], "trainer.seed=1"]), str(built["zoo"])) != name
    assert run_name(load_config(CONFIG, [*common[4:], "trainer.output_dir=/elsewhere"]), str(built["zoo"])) == name
    # the sampling temperature names the run only where training samples (the task-loss stage)
    assert run_name(load_config(CONFIG, [*common[4:], "diffusion.temperature=0.5"]), str(built["zoo"])) == name
    staged = [*common[4:], "taskloss.steps=2"]
    assert run_name(load_config(CONFIG, [*staged, "diffusion.temperature=0.5"]), str(built["zoo"])) != run_name(
        load_config(CONFIG, staged), str(built["zoo"]))
    assert (gen / "ray" / name).is_dir()
