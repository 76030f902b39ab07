"""The style zoo on a real local Ray (`raypdiff collect` with domain: vision) over a tiny base: shards of captured
UNet LoRAs scored by denoising error, a captured vector that round-trips exactly through diffusers' LoRA loading, and
a generator trained on it (Ray Train, image conditions) whose `generate --style-images` LoRAs load and change the
pipeline's output; bad style-image folders are one error line."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import REPO, private_ray_env
from raypdiff import lora
from raypdiff.config import ConfigError, load_config
from raypdiff.lora import Layout
from raypdiff.vision import fashion
from raypdiff.vision.base import FashionPipeline, new_pipeline
from raypdiff.vision.style_lora import add_lora, write_lora
from raypdiff.vision.t2i import fit

CONFIG = REPO / "configs" / "tiny_vision.yaml"


@pytest.fixture(scope="module")
def style_zoo():
    """A tiny base saved where the config's vision.base_dir points, then the zoo collected from it by the CLI."""
    if not Path(fashion.DEBIAN_DIR).is_dir():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    tmp = Path(tempfile.mkdtemp(prefix="rpz", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    over = [f"vision.base_dir={tmp / 'base'}", f"collect.output_dir={tmp / 'zoo'}"]
    cfg = load_config(CONFIG, over)
    x, y = fashion.load("test")
    pipe = new_pipeline(cfg.vision)
    fit(pipe, cfg.vision, x[:64], y[:64], steps=2)
    pipe.save_pretrained(tmp / "base" / "pipeline")
    over.append(f"trainer.output_dir={tmp / 'gen'}")
    for verb in ("collect", "train"):
        cmd = [sys.executable, "-m", "raypdiff.cli", verb, "-q", "-c", str(CONFIG), *over]
        r = subprocess.run(cmd, cwd=REPO, env=private_ray_env(tmp / "ray"), capture_output=True, text=True,
                           timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
    yield cfg, tmp
    shutil.rmtree(tmp, ignore_errors=True)


def test_style_zoo_shards(style_zoo):
    from raypdiff.zoo.store import check, task_arrays

    cfg, tmp = style_zoo
    meta = check(tmp / "zoo")
    assert meta.domain == "vision" and list(meta.tasks) == ["inverted", "edges"]
    assert len(meta.base_model["unet_sha256"]) == 64 and meta.base_model["vision"]["style_images"] == 64
    arrays = task_arrays(tmp / "zoo", test=True)
    for name, a in arrays.items():
        size = Layout.from_json(meta.tasks[name].layout).size
        assert a["vector"].shape == (3, size) and list(a["step"]) == [4, 5, 6]
        assert (a["value"] < 0).all()  # minus a denoising MSE
        assert sorted(a["test_pred"]) and all(p.shape == (32,) for p in a["test_pred"].values())
    assert meta.tasks["edges"].splits["val"] == {"file": "train", "rows": [60000 - 32, 60000]}


def test_style_zoo_vector_loads_exactly_in_diffusers(style_zoo, tmp_path):
    from raypdiff.zoo.store import task_arrays

    cfg, tmp = style_zoo
    vec = task_arrays(tmp / "zoo")["edges"]["vector"][-1]
    pipe = FashionPipeline.from_pretrained(tmp / "base" / "pipeline")
    base = pipe(["a bag"], 3, torch.Generator().manual_seed(0))
    layout = add_lora(pipe, cfg.lora, seed=0)
    lora.load_vector(pipe.unet, vec, layout)
    styled = pipe(["a bag"], 3, torch.Generator().manual_seed(0))
    assert not np.array_equal(styled, base)
    fresh = FashionPipeline.from_pretrained(tmp / "base" / "pipeline")
    fresh.load_lora_weights(write_lora(vec, layout, cfg.lora, tmp_path / "edges"))
    np.testing.assert_array_equal(fresh(["a bag"], 3, torch.Generator().manual_seed(0)), styled)


@pytest.mark.parametrize("over,match", [
    (["tasks=[sepia]"], "'sepia' is not a built-in style"),
    (["vision.base_dir=/nonexistent/base"], "no vision base pipeline in /nonexistent/base/pipeline"),
    (["lora.target_modules=[query]"], "the unet has no module 'query'")])
def test_style_zoo_bad_input(style_zoo, over, match):
    from raypdiff.zoo.collect import prepare

    _, tmp = style_zoo
    base = [f"vision.base_dir={tmp / 'base'}", f"collect.output_dir={tmp / 'bad'}"]
    with pytest.raises(ConfigError, match=match):
        prepare(load_config(CONFIG, base + over), progress=False)


def _generate(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "raypdiff.cli", "generate", "--generator", str(tmp / "gen"), "--num", "2", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_generate_from_style_images(style_zoo, tmp_path, fmnist_test):
    from PIL import Image

    from raypdiff.vision.styles import DEFAULT_STYLES, apply

    _, tmp = style_zoo
    x, _ = fmnist_test
    (tmp_path / "style").mkdir()
    edges = next(s for s in DEFAULT_STYLES if s.name == "edges")
    for i, img in enumerate(apply(edges, x[500:504])):
        Image.fromarray(img).resize((64, 64)).save(tmp_path / "style" / f"{i}.png")  # any size >= 16 px
    r = _generate(tmp, "--style-images", str(tmp_path / "style"), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["images"] == 4 and manifest["nearest_task"] in ("inverted", "edges")
    pipe = FashionPipeline.from_pretrained(tmp / "base" / "pipeline")
    base = pipe(["a coat"], 3, torch.Generator().manual_seed(0))
    pipe.load_lora_weights(manifest["adapters"][0])
    assert not np.array_equal(pipe(["a coat"], 3, torch.Generator().manual_seed(0)), base)


@pytest.mark.parametrize("make,match", [
    (lambda d: None, "no images in it"),
    (lambda d: (d / "a.png").write_bytes(b"not a png"), "is not a readable image"),
    (lambda d: __import__("PIL.Image").Image.new("L", (8, 8)).save(d / "small.png"), "8x8 px"),
])
def test_generate_bad_style_images(style_zoo, tmp_path, make, match):
    _, tmp = style_zoo
    (tmp_path / "style").mkdir()
    make(tmp_path / "style")
    r = _generate(tmp, "--style-images", str(tmp_path / "style"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and match in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("args,match", [
    (["generate", "--task", "edges", "--num", "1"], None),  # a zoo style by name
    (["generate", "--description", "Edges.", "--num", "1"], "a style generator takes --task"),
    (["evaluate", "--num", "1"], "evaluate works on text zoos and generators"),
])
def test_style_generator_verbs(style_zoo, tmp_path, args, match):
    _, tmp = style_zoo
    cmd = [sys.executable, "-m", "raypdiff.cli", args[0], "--generator", str(tmp / "gen"), *args[1:],
           "--out", str(tmp_path / "out")]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    if match is None:
        assert r.returncode == 0, r.stderr[-3000:]
        assert (tmp_path / "out" / "adapter_000" / "pytorch_lora_weights.safetensors").is_file()
    else:
        assert r.returncode == 2 and match in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("cfg,match", [
    ({"condition": {"encoder": "mobilenet"}}, "needs domain: vision"),
    ({"domain": "vision", "tasks": ["edges"]}, "domain: vision needs mobilenet"),
])
def test_domain_and_encoder_must_agree(cfg, match):
    from raypdiff.config import Config

    with pytest.raises(ConfigError, match=match):
        Config.from_dict(cfg)


def test_vision_eval(style_zoo, s3):
    """`raypdiff vision-eval` on the tiny zoo, style_eval.output_dir on a bucket: every method scored with intervals
    that hold their estimates, paired against the base,
    a generator trained without the held-out style, grids and the interpolation strip written there; a style not in
    the zoo is one error line. --heldout-only scores the held-out style alone, by the same held-out generator."""
    import json

    from conftest import BUCKET
    from raypdiff.storage import Location

    cfg, tmp = style_zoo
    out = Location.of(f"s3://{BUCKET}/vision-eval")
    over = [f"vision.base_dir={tmp / 'base'}", f"collect.output_dir={tmp / 'zoo'}", f"trainer.output_dir={tmp / 'gen'}",
            f"style_eval.output_dir={out}", "style_eval.per_class=2", "style_eval.num=2",
            "style_eval.zoo_captures=2", "style_eval.judge_images=64", "style_eval.judge_steps=20",
            "style_eval.bootstrap=5", "style_eval.interpolate_points=3"]
    cmd = [sys.executable, "-m", "raypdiff.cli", "vision-eval", "-q", "-c", str(CONFIG), *over]
    env = private_ray_env(tmp / "ray")
    r = subprocess.run([*cmd, "style_eval.heldout_styles=[edges]"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "vision.json").read_text())
    assert set(report["styles"]) == {"inverted", "edges"} and set(report["heldout_styles"]) == {"edges"}
    for kind, methods in (("styles", ["base", "zoo_mean", "zoo_best", "weight_average", "generated",
                                       "generated_best"]),
                          ("heldout_styles", ["base", "nearest_style", "weight_average", "generated", "generated_best",
                                              "zoo_best"])):
        for res in report[kind].values():
            for m in methods:
                assert 0 <= res[m]["style_acc"] <= 1 and 0 <= res[m]["class_acc"] <= 1 and res[m]["fd"] > 0
            assert set(res["paired"]) == {*(f"{m} - base" for m in methods[1:]),
                                          f"generated - {'zoo_mean' if kind == 'styles' else 'nearest_style'}"}
            for r in [*(res[m] for m in methods), *res["paired"].values()]:  # every interval holds its estimate
                for k in ("style_acc", "kid", "class_acc"):
                    assert r[f"{k}_ci"][0] - 1e-9 <= r[k] <= r[f"{k}_ci"][1] + 1e-9, (k, r)
    assert report["heldout_styles"]["edges"]["nearest"] == "inverted"  # the only style its generator saw
    # is the condition read: the held-out generator from 1, condition.k (2) and 16 of the style's images, and noise
    read = report["condition_read"]["k"]["edges"]
    variants = ["k=1", "k=2", "k=16", "random images"]
    assert [m for m in read if m != "paired"] == ["base", *variants]
    assert set(read["paired"]) == {f"{m} - base" for m in variants}
    assert read["k=2"] == report["heldout_styles"]["edges"]["generated"]  # the same LoRAs, sampled once
    # swapped images: edges with its nearest seen style; a share that follows both ways is at most either side's
    (pair, swap), = report["condition_read"]["swap"].items()
    assert pair == "edges / inverted" and swap["a_from_a"] == pytest.approx(read["k=2"]["style_acc"])
    assert 0 <= swap["follows"] <= min(swap["a_from_a"], swap["b_from_b"])
    assert swap["a_from_a"] + swap["b_from_a"] <= 1 and swap["a_from_b"] + swap["b_from_b"] <= 1
    assert report["targets"]["swaps"] == 1
    assert json.loads((out / "heldout_generator" / "train_summary.json").read_text())
    assert [p["weight"] for p in report["interpolation"]] == [0.0, 0.5, 1.0]
    assert report["zoo"]["styles"] == 2 and report["zoo"]["captures"] == 6
    for name in ("vision.md", "vision.png", "interpolation.png", "grid_seen_inverted.png", "grid_heldout_edges.png",
                 "grid_condition_edges.png"):
        assert (out / name).is_file() and (out / name).stat()[0] > 0, name
    bad = subprocess.run([*cmd, "style_eval.heldout_styles=[sepia]"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "style_eval: style 'sepia' is not in the zoo" in bad.stderr
    # --heldout-only: no generator on the whole zoo (none where trainer.output_dir points); the held-out generator
    # kept in the output folder is reused, so the held-out style's figures are the full run's
    only = [*cmd, f"trainer.output_dir={tmp / 'no_generator'}"]
    only.insert(only.index("vision-eval") + 1, "--heldout-only")
    r = subprocess.run([*only, "style_eval.heldout_styles=[edges]"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    held = json.loads((out / "vision.json").read_text())
    assert held["styles"] == {} and held["interpolation"] == [] and not (tmp / "no_generator").exists()
    assert held["heldout_styles"] == report["heldout_styles"] and held["condition_read"] == report["condition_read"]
    assert held["targets"]["seen_styles"] == 0 and held["targets"]["swaps"] == 1
    assert "not scored (--heldout-only)" in (out / "vision.md").read_text() and "swaps followed" in r.stdout
    for extra, match in ((["style_eval.heldout_styles=[]"], "style_eval.heldout_styles is empty"),
                         (["style_eval.heldout_styles=[edges]", "--generator", str(tmp / "gen")], "drop --generator")):
        bad = subprocess.run([*only, *extra], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and match in bad.stderr, bad.stderr


def test_vision_eval_zoo_only(style_zoo):
    """`raypdiff vision-eval --zoo-only`: no generator (none exists where trainer.output_dir points); the base, the zoo
    mean and the best capture per style with intervals that hold their estimates, paired against the base; a style
    counts as learned exactly when its numbers say so; zoo.md and a grid per style."""
    import json

    cfg, tmp = style_zoo
    out = tmp / "zoo_only"
    over = [f"vision.base_dir={tmp / 'base'}", f"collect.output_dir={tmp / 'zoo'}",
            f"trainer.output_dir={tmp / 'no_generator'}", f"style_eval.output_dir={out}", "style_eval.per_class=2",
            "style_eval.zoo_captures=2", "style_eval.judge_images=64", "style_eval.judge_steps=20",
            "style_eval.bootstrap=5"]
    r = subprocess.run([sys.executable, "-m", "raypdiff.cli", "vision-eval", "--zoo-only", "-q", "-c", str(CONFIG),
                        *over], cwd=REPO, env=private_ray_env(tmp / "ray"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "zoo.json").read_text())
    assert set(report["styles"]) == {"inverted", "edges"} and not (tmp / "no_generator").exists()
    for s, res in report["styles"].items():
        assert set(res) == {"base", "zoo_mean", "zoo_best", "paired"}
        assert set(res["paired"]) == {"zoo_mean - base", "zoo_best - base"}
        for x in [res["base"], res["zoo_mean"], res["zoo_best"], *res["paired"].values()]:
            for k in ("style_acc", "kid", "class_acc"):
                assert x[f"{k}_ci"][0] - 1e-9 <= x[k] <= x[f"{k}_ci"][1] + 1e-9, (s, k, x)
        for x in (res["base"], res["zoo_mean"], res["zoo_best"]):  # top 3 of plain + 2 styles: every label
            assert set(x["called"]) <= {"plain", *report["styles"]}
            assert sum(x["called"].values()) == pytest.approx(1, abs=2e-3)
            assert x["called"].get(s, 0) == pytest.approx(x["style_acc"], abs=1e-3)
        learned = (res["zoo_mean"]["style_acc"] >= 0.8 and res["paired"]["zoo_mean - base"]["style_acc_ci"][0] > 0
                   and res["zoo_mean"]["class_acc"] >= 0.6)
        assert (s in report["learned"]) == learned, s
    assert report["zoo"]["lora"]["target_modules"] == cfg.lora.target_modules and report["zoo"]["captures"] == 6
    assert report["zoo"]["train_lr"] == cfg.train.lr
    judges = report["judges"]  # per style on as many real test images each, so their mean is the overall figure
    for k in ("style", "class"):
        by_style = judges[f"{k}_test_acc_by_style"]
        assert set(by_style) == set(report["styles"]) and all(0 <= a <= 1 for a in by_style.values())
        assert np.mean(list(by_style.values())) == pytest.approx(judges[f"{k}_test_acc"])
    md = (out / "zoo.md").read_text()
    assert f"{cfg.train.steps} steps at lr {cfg.train.lr:g}" in md
    assert f"edges {judges['class_test_acc_by_style']['edges']:.2f}" in md
    assert md.startswith("# The style zoo's LoRAs") and f"{len(report['learned'])} of 2" in md and "judge calls" in md
    assert (out / "grid_seen_inverted.png").stat().st_size > 0 and not (out / "interpolation.png").exists()
    assert f"{len(report['learned'])}/2" in r.stdout


def test_bench_style_zoo(style_zoo):
    """bench/style_zoo.py on the tiny base: an attention zoo and a LoCon zoo, each judged without a generator on the
    val draw; the summary names each variant's LoRA and what it learned, as its reports say."""
    import json

    cfg, tmp = style_zoo
    work, out = tmp / "bench_work", tmp / "bench_out"
    over = [f"vision.base_dir={tmp / 'base'}", "style_eval.per_class=2", "style_eval.zoo_captures=2",
            "style_eval.judge_images=64", "style_eval.judge_steps=20", "style_eval.bootstrap=5"]
    r = subprocess.run([sys.executable, "bench/style_zoo.py", "--config", str(CONFIG), "--work", str(work), "--out",
                        str(out), *over], cwd=REPO, env=private_ray_env(tmp / "ray"), capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "style_zoo.json").read_text())
    assert list(summary["variants"]) == ["attention", "locon"] and summary["eval_seed"] == 1
    modules = {n: v["zoo"]["lora"]["target_modules"] for n, v in summary["variants"].items()}
    assert modules["attention"] == ["to_q", "to_k", "to_v", "to_out.0"]
    assert modules["locon"] == [*modules["attention"], "conv1", "conv2", "proj_in", "proj_out"]
    for n, v in summary["variants"].items():
        report = json.loads((work / n / "report" / "zoo.json").read_text())
        assert v["learned"] == report["learned"] and v["zoo"]["captures"] == 6 and v["zoo"]["seeds"] == [0]
    md = (out / "style_zoo.md").read_text()
    # each variant names its whole recipe: r 4 whatever the config's rank (the tiny config's is 2)
    assert {n: v["zoo"]["lora"]["r"] for n, v in summary["variants"].items()} == {"attention": 4, "locon": 4}
    assert md.startswith("# Does the style zoo learn its styles?") and "| locon | r 4 on" in md
    assert {v["lr"] for v in summary["variants"].values()} == {cfg.train.lr}  # neither variant names a rate
    real = summary["variants"]["attention"]["judges"]["class_test_acc_by_style"]["edges"]
    assert f"| edges | {real:.2f} |" in md  # the class judge's ceiling on real edges images beside the style
    assert (out / "style_zoo_locon_inverted.png").stat().st_size > 0
