"""End to end on real data: a tiny zoo and a tiny generator built once with the `raypdiff` CLI (collect, then
train on Ray Train with MLflow tracking into a temp SQLite store), then `generate` (zoo task and free
description), `evaluate`, and every bad input of those verbs → exit 2 with one `raypdiff: error:` line.

The two Ray commands run as subprocesses with a private RAY_TMPDIR (never another Ray on the machine);
generate/evaluate run in-process through `raypdiff.cli.main`.
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

from raypdiff import cli

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
def built(data_dir):
    """configs/tiny_gen.yaml: zoo (2 tasks × 3 captures) → generator; yields the paths."""
    tmp = Path(tempfile.mkdtemp(prefix="rpe", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    zoo, gen = tmp / "zoo", tmp / "gen"
    uri = f"sqlite:///{tmp / 'mlflow.db'}"  # tmp is absolute → sqlite:////tmp/...
    common = ["-c", str(CONFIG), f"data.root={Path(data_dir).resolve()}", f"collect.output_dir={zoo}"]
    try:
        run_cli(["collect", "-q", *common, "tracking.enabled=false"], tmp, "collect", timeout=900)
        run_cli(["train", "-q", *common, f"trainer.output_dir={gen}", f"tracking.uri={uri}"], tmp, "train",
                timeout=900)
        yield {"tmp": tmp, "zoo": zoo, "gen": gen, "uri": uri, "data": data_dir}
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

    assert (built["gen"] / "generator.pt").is_file()
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
    manifest = check_adapters(out, 2, 2)
    assert manifest["nearest_task"] == "SST-2"  # the only 2-label task in the zoo
    assert manifest["label_names"] == ["neg", "pos"] and manifest["examples"] == 3


def test_evaluate_writes_report(built, tmp_path):
    out = tmp_path / "report"
    assert cli.main(["evaluate", "--generator", str(built["gen"]), "--out", str(out), "--num", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert {"tasks", "condition_matrix", "novelty"} <= set(report)
    assert set(report["tasks"]) == set(report["novelty"]) == set(report["condition_matrix"]) == set(TASKS)
    for t, r in report["tasks"].items():
        assert r["generated"]["n"] == 2
        for kind in ("original", "recon", "generated"):
            assert np.isfinite([r[kind]["mean"], r[kind]["best"]]).all()
        assert report["condition_matrix"][t][t] == report["condition_matrix"][t][t]  # a number, not NaN
    md = (out / "report.md").read_text()
    assert all(t in md for t in TASKS)
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["sampling"] == {"guidance": 2.0, "sampler": "ddim", "quality": 1.0}  # the generator's own


def test_evaluate_sampling_overrides(built, tmp_path):
    """--guidance / --sampler / --quality replace the generator's sampling settings and the report says so;
    --tasks limits it, --recon-num sets the reconstructions apart from --num."""
    out = tmp_path / "report"
    args = ["evaluate", "--generator", str(built["gen"]), "--out", str(out), "--num", "2", "--tasks", "SST-2"]
    assert cli.main([*args, "--guidance", "0", "--sampler", "ddpm", "--quality", "0.5", "--recon-num", "1",
                     "--matrix-num", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"]["SST-2"]["recon"]["n"] == 1 and report["tasks"]["SST-2"]["generated"]["n"] == 2
    assert report["sampling"] == {"guidance": 0.0, "sampler": "ddpm", "quality": 0.5}
    assert set(report["tasks"]) == set(report["condition_matrix"]) == {"SST-2"}
    assert "Sampling: DDPM, guidance 0, quality 0.5." in (out / "report.md").read_text()


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
        return str(tmp / "nope" / "generator.pt")
    if kind == "empty-dir":
        (tmp / "empty").mkdir()
        return str(tmp / "empty")
    p = tmp / "generator.pt"
    if kind == "text-file":
        p.write_text("this is not a checkpoint\n")
    elif kind == "foreign-torch":
        torch.save({"model": torch.zeros(3)}, p)
    else:  # a generator checkpoint whose base model is another one
        payload = torch.load(built["gen"] / "generator.pt", weights_only=False)
        payload["base_model"]["base"] = other_base(tmp, kind)
        torch.save(payload, p)
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
    ("good", ["--description", "Three-way.", "--label-names", "a,b,c"], "3 labels"),
    ("good", [], "either --task"),
    ("good", ["--task", "SST-2", "--quality", "1.5"], "--quality: must be in [0, 1]"),
    ("good", ["--task", "SST-2", "--quality", "-1"], "--quality: must be in [0, 1]"),
    ("good", ["--task", "SST-2", "--description", "x"], "either --task"),
    ("missing", ["--task", "SST-2"], "not found"),
    ("empty-dir", ["--task", "SST-2"], "not found"),
    ("text-file", ["--task", "SST-2"], "not a raypdiff generator"),
    ("foreign-torch", ["--task", "SST-2"], "not a raypdiff generator"),
    ("tiny-bert", ["--task", "SST-2"], "layout"),
    ("same-layout", ["--task", "SST-2"], "base model"),
]
EXAMPLES = {"neutral": '{"text": "meh", "label": "neutral"}\n', "index": '{"text": "meh", "label": 2}\n',
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
    its settings and the zoo, so the same command reuses its finished run and other settings train afresh."""
    tmp = built["tmp"]
    gen = tmp / "again_gen"
    common = ["train", "-q", "-c", str(CONFIG), f"data.root={Path(built['data']).resolve()}",
              f"collect.output_dir={built['zoo']}", f"trainer.output_dir={gen}", "tracking.enabled=false"]
    weights = []
    for i, seed in enumerate((0, 0, 1)):
        run_cli([*common, f"trainer.seed={seed}"], tmp, f"train_again_{i}", timeout=300)
        weights.append(torch.load(gen / "generator.pt", weights_only=False)["ae"])

    def same(a: dict, b: dict) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    assert same(weights[0], weights[1])
    assert not same(weights[0], weights[2]), "trainer.seed=1 resumed the seed-0 run instead of training"
    assert len(list(gen.glob("ray/generator-*"))) == 2


@pytest.mark.timeout(600)
def test_pipeline_on_the_collected_zoo(built):
    """`raypdiff pipeline`: collect (the zoo is complete: nothing to do) → train → generate → evaluate."""
    tmp = built["tmp"]
    gen, adapters = tmp / "pipe_gen", tmp / "pipe_adapters"
    run_cli(["pipeline", "-q", "-c", str(CONFIG), f"data.root={Path(built['data']).resolve()}",
             f"collect.output_dir={built['zoo']}", f"trainer.output_dir={gen}", f"generate.output_dir={adapters}",
             f"tracking.uri=sqlite:///{tmp / 'pipe_mlflow.db'}"], tmp, "pipeline", timeout=550)
    assert (gen / "generator.pt").is_file()
    for task, num_labels in TASKS.items():
        manifest = json.loads((adapters / task / "manifest.json").read_text())
        assert manifest["task"] == task and len(manifest["adapters"]) == 2
    report = json.loads((adapters / "report" / "report.json").read_text())
    assert set(report["tasks"]) == set(TASKS)
    assert (adapters / "report" / "report.md").is_file() and (adapters / "report" / "report.png").is_file()
