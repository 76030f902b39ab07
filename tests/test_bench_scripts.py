"""Every bench script still runs: each one as a subprocess on the smallest real inputs (the session's tiny zoo and
generator, configs/tiny*.yaml, a few overrides), on a private Ray, writing into a temp folder (--out), never into
bench/results/; the JSON and Markdown it writes are checked. bench/unseen.py and bench/fewshot.py have their own tests
(test_bench_unseen.py, test_fewshot.py); bench/serve_load.py and bench/vision.py are covered through what they drive
(test_serve*.py: the served app and its page; test_vision_*.py: vision-base, the style zoo, its generator,
vision-eval). bench/device_check.sh runs here as on a machine without CUDA (--device cpu)."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import REPO, private_ray_env

pytestmark = pytest.mark.full  # subprocesses, Ray, trained fixtures

RESULTS = REPO / "bench" / "results"
TASKS = {"SST-2", "STS-B"}  # configs/tiny*.yaml


def bench(script: str, args: list, timeout: float = 600) -> subprocess.CompletedProcess:
    """python bench/<script> <args> from the repo root on a private local Ray (its temp files removed after)."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rpb", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    try:
        r = subprocess.run([sys.executable, f"bench/{script}", *map(str, args)], cwd=REPO,
                           env=private_ray_env(ray_tmp), capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert r.returncode == 0, f"bench/{script} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


@contextmanager
def untouched(*names: str):
    """The files a script writes by default (bench/results/<name>) are not created or changed meanwhile."""
    def stamp():
        return {n: (RESULTS / n).stat().st_mtime_ns if (RESULTS / n).exists() else None for n in names}

    before = stamp()
    yield
    assert stamp() == before, "a bench script wrote into bench/results/"


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def table_rows(md: str) -> list[list[str]]:
    """The cells of every Markdown table row below a header separator."""
    rows, in_table = [], False
    for line in md.splitlines():
        if line.startswith("|---"):
            in_table = True
        elif in_table and line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
        else:
            in_table = False
    return rows


def test_zoo_probes(tiny_zoo, tmp_path):
    out = tmp_path / "out"
    with untouched("zoo_probes.json", "zoo_probes.md", "tiny_probes.json"):
        bench("zoo_probes.py", [tiny_zoo, "--name", "tiny_probes", "--out", out])
    runs = json.loads((out / "tiny_probes.json").read_text())["runs"]
    assert [r["task"] for r in runs] == sorted(TASKS)
    for r in runs:  # configs/tiny.yaml's settings, read back from the zoo's config.yaml
        assert (r["zoo"], r["lora_r"], r["steps"], r["captures"], r["val_rows"]) == (str(tiny_zoo), 4, 6, 3, 16)
        assert r["lr"] == r["head_lr"] > 0 and r["targets"] == ["query", "value"]
        assert -1 <= r["worst"] <= r["mean"] <= r["best"] <= 1
    assert {r["task"]: r["metric"] for r in runs} == {"SST-2": "accuracy", "STS-B": "pearson"}
    rows = table_rows((out / "tiny_probes.md").read_text())
    assert [row[0] for row in rows] == sorted(TASKS) and all(len(row) == 13 for row in rows)


def test_zoo(tiny_zoo, data_dir, tmp_path):
    """bench/zoo.py on a copy of the tiny zoo with its own config: collect resumes (nothing left to run), the summary
    and the wall time are written."""
    zoo, out = tmp_path / "zoo", tmp_path / "out"
    shutil.copytree(tiny_zoo, zoo)
    shards = {p: p.stat().st_mtime_ns for p in (zoo / "shards").iterdir()}
    with untouched("zoo.json", "zoo.md", "zoo_tiny.json"):
        bench("zoo.py", ["--config", "configs/tiny.yaml", "--data-root", data_dir, "--name", "zoo_tiny", "--out", out,
                         f"collect.output_dir={zoo}", "tracking.enabled=false"])
    assert {p: p.stat().st_mtime_ns for p in (zoo / "shards").iterdir()} == shards  # resumed, not re-collected
    r = json.loads((out / "zoo_tiny.json").read_text())
    assert set(r["tasks"]) == TASKS and r["zoo_dir"] == str(zoo) and r["config"] == "configs/tiny.yaml"
    assert finite(r["wall_seconds"]) and r["wall_seconds"] > 0
    for t, s in r["tasks"].items():
        assert s["n"] == 3 and -1 <= s["worst"] <= s["mean"] <= s["best"] <= 1, (t, s)
    md = (out / "zoo_tiny.md").read_text()
    assert md.startswith("# Checkpoint zoo (configs/tiny.yaml") and "Wall time:" in md
    assert {row[0] for row in table_rows(md)} == TASKS


def test_scoring(tiny_zoo, tmp_path):
    out = tmp_path / "out"
    with untouched("scoring.json", "scoring.md"):
        bench("scoring.py", ["--zoo", tiny_zoo, "--task", "SST-2", "--num", 2, "--out", out])
    r = json.loads((out / "scoring.json").read_text())
    assert (r["task"], r["rows"], r["adapters"]) == ("SST-2", 24, 2)  # tiny.yaml: 24 test rows
    assert r["same_predictions"] is True  # the pool predicts what one process does
    assert r["pool"]["actors"] >= 1 and r["pool"]["threads_each"] == 1 and r["in_process"]["threads"] >= 1
    for way in ("in_process", "pool"):
        assert finite(r[way]["seconds"]) and r[way]["seconds"] > 0
        assert r[way]["adapters_per_s"] == pytest.approx(2 / r[way]["seconds"])
    rows = table_rows((out / "scoring.md").read_text())
    assert [row[0] for row in rows] == ["one process (before)", "Ray actor pool (evaluate)"]


def test_precision(tmp_path):
    out = tmp_path / "out"
    with untouched("precision.json", "precision.md"):
        bench("precision.py", ["--repeats", 5, "--train-batch", 2, "--score-batch", 4, "--length", 16, "--out", out])
    r = json.loads((out / "precision.json").read_text())
    cases = {"train_step_len16": ("train", 2, 16), "train_step_len8": ("train", 2, 8), "score_len16": ("score", 4, 16)}
    assert {n: (c["kind"], c["batch"], c["length"]) for n, c in r["cases"].items()} == cases
    for name in cases:
        for d in ("float32", "bfloat16"):
            assert len(r["times"][d][name]) == 5 and all(finite(t) and t > 0 for t in r["times"][d][name])
            assert min(r["times"][d][name]) <= r[d][name] <= max(r["times"][d][name])  # the median
        assert r["ratio"][name] == pytest.approx(r["bfloat16"][name] / r["float32"][name])
    assert r["threads"] == 1 and r["repeats"] == 5 and r["resolved_auto"] in ("float32", "bfloat16")
    md = (out / "precision.md").read_text()
    assert [row[0] for row in table_rows(md)] == list(cases) and f"resolves to **{r['resolved_auto']}**" in md


def test_collect_scaling(data_dir, tmp_path):
    """Two real collections (1 and 2 workers), shrunk by overrides to two (SST-2, seed) jobs of 2 captures."""
    out = tmp_path / "out"
    small = ["capture.seeds=[0,1]", "train.steps=3", "capture.num=2", "capture.stride=1", "eval.val_examples=16",
             "eval.test_examples=16", "eval.test_every=2", "model.max_length=32", "train.batch_size=8",
             "train.warmup_steps=1"]
    with untouched("collect_scaling.json", "collect_scaling.md"):
        bench("collect_scaling.py", ["--data-root", data_dir, "--out", out, *small])
    r = json.loads((out / "collect_scaling.json").read_text())
    assert r["config"][-len(small):] == small and set(r["runs"]) == {"1", "2"}
    for w, run in r["runs"].items():
        assert run["workers"] == int(w) and run["checkpoints"] == 4  # 2 jobs × 2 captures
        assert finite(run["wall_seconds"]) and run["ckpt_per_min"] == pytest.approx(4 / (run["wall_seconds"] / 60))
        assert r["ckpt_per_min"][w] == run["ckpt_per_min"] and 100 < run["peak_rss_mb"] < 64_000  # torch is loaded
    assert r["efficiency"] == pytest.approx(r["ckpt_per_min"]["2"] / (2 * r["ckpt_per_min"]["1"]))
    md = (out / "collect_scaling.md").read_text()
    assert md.startswith("# Collection scaling (1 vs 2 Ray workers, 2 × SST-2 jobs, 4 checkpoints)")
    assert [row[0] for row in table_rows(md)] == ["1", "2"] and f"Parallel efficiency: {r['efficiency']:.2f}" in md


def test_ddp(tiny_zoo, data_dir, tmp_path):
    """bench/ddp.py, 300 steps a phase: trainer.num_workers=2 splits each global batch over 2 DDP workers on Ray
    Train; its losses at the end of each phase (the mean of the last 3 logged) are within a third of one worker's
    (different draws, the same expected gradient), and both learned."""
    out = tmp_path / "out"
    out.mkdir()
    with untouched("ddp.json", "ddp.md"):
        bench("ddp.py", ["--zoo", tiny_zoo, "--data-root", data_dir, "--config", "configs/tiny_gen.yaml", "--steps",
                         300, "--out", out])
    r = json.loads((out / "ddp.json").read_text())
    assert r["steps_per_phase"] == 300 and r["zoo"] == str(tiny_zoo) and [x["workers"] for x in r["runs"]] == [1, 2]
    for x in r["runs"]:
        assert 0 < x["train_seconds"] <= x["wall_seconds"]
        for phase in ("ae", "diffusion"):
            first, tail = x[f"{phase}_first_loss"], x[f"{phase}_tail_loss"]
            assert finite(first) and finite(tail) and first > 0 and 0 <= tail < first, (phase, x)
    for phase in ("ae", "diffusion"):
        one, two = (x[f"{phase}_tail_loss"] for x in r["runs"])
        assert abs(two - one) <= one / 3, f"{phase}: 1 worker {one:.4f}, 2 workers {two:.4f}"
    assert r["speedup"] == pytest.approx(r["runs"][0]["train_seconds"] / r["runs"][1]["train_seconds"])
    md = (out / "ddp.md").read_text()
    assert [row[0] for row in table_rows(md)] == ["1", "2"] and f"{r['speedup']:.2f}x" in md


def test_generator(tiny_generator, tiny_zoo, data_dir, tmp_path):
    """bench/generator.py re-evaluating the session's trained generator (given as its folder): the held-out report,
    generation vs fine-tuning timed (--finetune-only first: the main run reads its time back), to the zoo's best."""
    out = tmp_path / "out"
    common = ["--zoo", tiny_zoo, "--data-root", data_dir, "--threads", 1, "--out", out]
    with untouched("generator.json", "generator.md", "generator.png", "finetune_time.json", "gen_tiny.json"):
        bench("generator.py", [*common, "--finetune-only"])
        timed = json.loads((out / "finetune_time.json").read_text())
        assert (timed["task"], timed["threads"], timed["steps"]) == ("SST-2", 1, 6) and timed["seconds"] > 0
        bench("generator.py", [*common, "--config", "configs/tiny_gen.yaml", "--generator", tiny_generator["dir"],
                               "--num", 2, "--recon-num", 2, "--matrix-num", 1, "--zoo-seconds", 10, "--name",
                               "gen_tiny", f"trainer.output_dir={tmp_path / 'gen'}", "tracking.enabled=false"])
    r = json.loads((out / "gen_tiny.json").read_text())
    assert set(r["tasks"]) == TASKS and r["overrides"] == [f"trainer.output_dir={tmp_path / 'gen'}",
                                                            "tracking.enabled=false"]
    for t, x in r["tasks"].items():
        for way in ("zoo", "generated"):
            est = x["test"][way]
            assert -1 - 1e-9 <= est["ci"][0] - 1e-9 <= est["mean"] <= est["ci"][1] + 1e-9 <= 1 + 2e-9, (t, way, est)
    s = r["speed"]
    assert (s["task"], s["threads"], s["finetune_steps"], s["zoo_s"]) == ("SST-2", 1, 6, 10)
    assert s["finetune_s"] == timed["seconds"]  # read back, not timed again
    assert finite(s["generate_s"]) and s["generate_s"] > 0
    assert s["speedup"] == pytest.approx(s["finetune_s"] / s["generate_s"]) and finite(s["break_even_adapters"])
    train_s = json.loads((tiny_generator["dir"] / "train_summary.json").read_text())["train_seconds"]
    assert s["train_s"] == train_s and s["amortized_s"] == pytest.approx(10 + train_s)
    best = s["to_zoo_best"]
    assert (best["task"], best["n"]) == ("SST-2", 2) and 0 <= best["test"] <= 1 and best["reached"] == (
        best["test"] >= best["zoo_best_by_val_test"])
    assert (out / "gen_tiny.png").stat().st_size > 0 and (tmp_path / "gen" / "report_gen_tiny").is_dir()
    md = (out / "gen_tiny.md").read_text()
    assert md.startswith("# Generator vs zoo on held-out test rows") and "![](gen_tiny.png)" in md and table_rows(md)


def test_ablation(tiny_zoo, data_dir, tmp_path):
    """bench/ablation.py on configs/tiny_sweep.yaml, one trial (the default row): collect reuses a copy of the tiny zoo,
    the sweep runs on Ray Tune, its tables and plot are copied to --out."""
    zoo, out = tmp_path / "zoo", tmp_path / "out"
    shutil.copytree(tiny_zoo, zoo)
    shards = {p: p.stat().st_mtime_ns for p in (zoo / "shards").iterdir()}
    with untouched("ablation.json", "ablation.md", "ablation.png"):
        bench("ablation.py", ["--data-root", data_dir, "--config", "configs/tiny_sweep.yaml", "--out", out,
                              f"collect.output_dir={zoo}", f"sweep.output_dir={tmp_path / 'sweep'}",
                              "sweep.axes={normalize: [batch]}", "tracking.enabled=false"])
    assert {p: p.stat().st_mtime_ns for p in (zoo / "shards").iterdir()} == shards  # the complete zoo was reused
    s = json.loads((out / "ablation.json").read_text())
    assert s["trials"] == s["finished"] == 1 and not s["failed"] and s["defaults"]["normalize"] == "batch"
    assert set(s["zoo_test"]) == TASKS
    row = s["axes"]["normalize"]["batch"]
    assert set(row["tasks"]) == TASKS
    for t in row["tasks"].values():
        assert t["test_ci"][0] <= t["test"] <= t["test_ci"][1] and -1 <= t["val"] <= 1
    assert "## normalize (default: batch)" in (out / "ablation.md").read_text()
    assert (out / "ablation.png").stat().st_size > 0


def test_demo(data_dir, tmp_path):
    """bench/demo.py: the whole pipeline (`raypdiff pipeline`: collect → train → generate → evaluate, tracked in
    MLflow) on configs/tiny_gen.yaml with model.dtype=float32; a second call reads the finished path back instead of
    running it again."""
    work = tmp_path / "work"
    args = ["--data-root", data_dir, "--config", "configs/tiny_gen.yaml", "--dtypes", "float32", "--work", work]
    bench("demo.py", [*args, "--out", tmp_path / "out"], timeout=900)
    r = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert r["config"] == "configs/tiny_gen.yaml" and r["overrides"] == [] and r["machine"]["cpus"] >= 1
    (run,) = r["runs"]
    assert run["dtype"] == "float32" and set(run["tasks"]) == TASKS
    assert 0 < run["train_seconds"] <= run["wall_seconds"]
    meta = json.loads((work / "float32" / "zoo" / "meta.json").read_text())
    assert meta["base_model"]["dtype"] == "float32"  # the path ran at the dtype asked for
    for t, x in run["tasks"].items():
        assert -1 <= x["generated_min"] <= x["generated_mean"] <= 1 and -1 <= x["zoo_mean"] <= 1, (t, x)
        assert x["generated_ci"][0] - 1e-9 <= x["generated_mean"] <= x["generated_ci"][1] + 1e-9
        assert all(finite(x[k]) for k in ("generated_best_by_val", "zoo_best_by_val", "weight_average", "majority"))
        assert set(x["targets"]) == {"mean_vs_zoo", "best_vs_zoo_best", "not_below_weight_average"}
        assert all(isinstance(v, bool) for v in x["targets"].values())
    assert run["all_met"] == all(all(x["targets"].values()) for x in run["tasks"].values())
    made = work / "float32"
    assert (made / "generator" / "generator.safetensors").is_file()
    for t in TASKS:
        manifest = json.loads((made / "adapters" / t / "manifest.json").read_text())
        assert manifest["task"] == t and len(manifest["adapters"]) == 2
    report = json.loads((made / "adapters" / "report" / "report.json").read_text())
    assert set(report["tasks"]) == TASKS and report["tasks"]["SST-2"]["test"]["generated"]["mean"] == pytest.approx(
        run["tasks"]["SST-2"]["generated_mean"])
    # one MLflow run for the evaluation, with the report's flat test figures and its files
    import mlflow

    from raypdiff.evaluate import flat_metrics

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{made / 'mlflow.db'}")
    runs = [x for x in client.search_runs([e.experiment_id for e in client.search_experiments()])
            if x.info.run_name == "evaluate"]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    want = flat_metrics(report)
    assert {f"{t}.generated.mean" for t in TASKS} <= set(want) and runs[0].data.metrics == pytest.approx(want)
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id)} == {"report.json", "report.md", "report.png"}
    md = (tmp_path / "out" / "demo.md").read_text()
    assert md.startswith("# The main job on both precision paths (`configs/tiny_gen.yaml`)")
    assert sorted((row[0], row[1]) for row in table_rows(md)) == [("float32", t) for t in sorted(TASKS)]
    done = work / "float32" / "result.json"
    stamps = {p: p.stat().st_mtime_ns for p in (done, work / "float32" / "zoo" / "meta.json")}
    t0 = time.time()
    bench("demo.py", [*args, "--out", tmp_path / "out2"], timeout=300)
    assert time.time() - t0 < 120 and {p: p.stat().st_mtime_ns for p in stamps} == stamps  # read, not rerun
    assert json.loads((tmp_path / "out2" / "demo.json").read_text())["runs"] == r["runs"]


def test_demo_schedule(data_dir, tmp_path):
    """bench/demo_schedule.py on configs/tiny_gen.yaml: one zoo per schedule (constant, and the last 3 of 6 steps
    decayed), each task's captures and their weight average scored on val; a second call reuses the zoos."""
    work, out = tmp_path / "work", tmp_path / "out"
    args = ["--data-root", data_dir, "--config", "configs/tiny_gen.yaml", "--work", work, "--variants", "s6d0", "s6d3"]
    bench("demo_schedule.py", [*args, "--out", out], timeout=600)
    r = json.loads((out / "demo_schedule.json").read_text())
    assert r["captures"] == 3 and r["seeds"] == [0] and list(r["variants"]) == ["s6d0", "s6d3"]
    for name, v in r["variants"].items():
        meta = json.loads((work / name / "zoo" / "meta.json").read_text())
        assert (v["steps"], v["decay_steps"]) == ((6, 0) if name == "s6d0" else (6, 3))
        assert meta["train"]["decay_steps"] == v["decay_steps"]  # the zoo was trained on the schedule it is named for
        assert set(v["tasks"]) == TASKS and v["collect_seconds"] > 0 and v["dtype"] in ("float32", "bfloat16")
        for t, x in v["tasks"].items():
            assert x["captures"] == 3 and -1 <= x["zoo_mean"] <= x["zoo_best"] <= 1 and -1 <= x["weight_average"] <= 1
    assert r["variants"]["s6d0"]["tasks"] != r["variants"]["s6d3"]["tasks"]
    md = (out / "demo_schedule.md").read_text()
    assert [(row[0], row[1], row[2]) for row in table_rows(md)] == [
        (s, d, t) for s, d in (("6", "0"), ("6", "3")) for t in sorted(TASKS)]
    stamps = {p: p.stat().st_mtime_ns for p in work.glob("*/zoo/shards/*.parquet")}
    bench("demo_schedule.py", [*args, "--out", tmp_path / "out2"], timeout=300)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # the zoos were reused, not collected again
    assert json.loads((tmp_path / "out2" / "demo_schedule.json").read_text())["variants"] == r["variants"]
    bad = subprocess.run([sys.executable, "bench/demo_schedule.py", "--variants", "s6"], cwd=REPO, capture_output=True,
                         text=True)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1] == (
        "--variants: 's6' is not sSTEPSdDECAY, e.g. s200d80")


def test_demo_temperature(tiny_generator, tmp_path):
    """bench/demo_temperature.py on the session's generator: per temperature and seed, the val scores of the generated
    adapters; temperature 1 gives what the generator samples by its own settings, another temperature other ones."""
    out = tmp_path / "out"
    bench("demo_temperature.py", ["--generators", tiny_generator["dir"], "--temperatures", "1,0.25", "--seeds", "0,1",
                                  "--num", 2, "--out", out], timeout=600)
    r = json.loads((out / "demo_temperature.json").read_text())
    assert (r["temperatures"], r["seeds"], r["num"]) == ([1.0, 0.25], [0, 1], 2)
    (g,) = r["generators"]
    assert set(g["tasks"]) == TASKS and g["dtype"] in ("float32", "bfloat16")
    for t, x in g["tasks"].items():
        assert set(x["temperatures"]) == {"1.0", "0.25"} and -1 <= x["weight_average"] <= 1
        for v in x["temperatures"].values():
            assert len(v["mean"]) == len(v["lowest"]) == 2
            assert all(-1 <= lo <= m <= 1 for lo, m in zip(v["lowest"], v["mean"]))
    assert any(g["tasks"][t]["temperatures"]["1.0"] != g["tasks"][t]["temperatures"]["0.25"] for t in TASKS)
    md = (out / "demo_temperature.md").read_text()
    assert sorted((row[1], row[2]) for row in table_rows(md)) == sorted(
        (t, temp) for t in TASKS for temp in ("1.0", "0.25"))


STYLE_STAGES = ["style_collect", "style_train", "style_generate", "style_samples"]


def test_device_check(data_dir, fmnist_test, tmp_path):
    """bench/device_check.sh with --device cpu (what it does on a machine without CUDA), its style stages (the text
    stages' CLI calls run on the same tiny configs throughout the full tier): every stage runs on the CPU and passes,
    each GPU part is named as skipped, and the stages the current code keeps on the CPU say why; a --work folder
    holding other files, and an unknown --domains, are refused before anything runs."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rpd", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("not ours")
    out, work = tmp_path / "out", tmp_path / "work"

    def check(work_dir: Path, timeout: float, domains: str = "style") -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "bench/device_check.sh", "--device", "cpu", "--data-root", str(data_dir),
                               "--work", str(work_dir), "--out", str(out), "--domains", domains], cwd=REPO,
                              env=private_ray_env(ray_tmp), capture_output=True, text=True, timeout=timeout)

    try:
        with untouched("device.json", "device.md"):
            refused = check(tmp_path / "other", 120)
            assert refused.returncode == 2 and "holds files this check did not make" in refused.stderr
            assert (tmp_path / "other" / "keep.txt").exists() and not out.exists()
            refused = check(work, 120, "text,vision")
            assert refused.returncode == 2 and "--domains text,vision: give text, style or text,style" in refused.stderr
            assert not work.exists()
            r = check(work, 900)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert r.returncode == 0, f"device_check.sh exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    j = json.loads((out / "device.json").read_text())
    assert j["device"] == "cpu" and j["finished"] is j["ok"] is True and j["style_skipped"] is None
    assert j["work"] == str(work)
    stages = {s["name"]: s for s in j["stages"]}
    assert [s["name"] for s in j["stages"]] == STYLE_STAGES and j["domains"] == ["style"]
    for name, s in stages.items():
        assert s["device"] == "cpu" and s["ok"] is True and s["error"] is None and "cpu_rerun" not in s, s
        assert finite(s["seconds"]) and s["seconds"] > 0 and (work / "logs" / f"{name}.log").is_file() == (
            name != "style_samples")  # the samples are drawn in the check's own process
        assert (s["gpu_memory"] is None) == (not j["machine"]["nvidia_smi"])
        assert s["skipped"] == [f"{p} (no CUDA device)" for p in s["gpu_parts"]]
    assert {n: s["gpu_parts"] for n, s in stages.items() if s["gpu_parts"]} == {
        "style_train": ["trainer.use_gpu=true"], "style_samples": ["the SD pipeline on cuda"]}
    assert {n for n, s in stages.items() if s["cpu_only"]} == {"style_collect", "style_generate"}
    assert sum(s["seconds"] for s in j["stages"]) <= j["wall_seconds"]
    assert stages["style_generate"]["facts"]["adapters"] == 2
    assert stages["style_samples"]["facts"] == {"device": "cpu", "samples": [4, 28, 28], "lora_changes_samples": True}
    md = (out / "device.md").read_text()
    assert md.startswith("# Device check on cpu") and "Every stage passed: yes." in md
    assert [row[0] for row in table_rows(md)] == STYLE_STAGES


def test_storage(tmp_path):
    """bench/storage.py's shard-store timing (no Ray) on both backends: its own loopback S3 server, small shards."""
    out = tmp_path / "out"
    with untouched("storage.json", "storage.md"):
        bench("storage.py", ["--skip-pipeline", "--reps", "1", "--shards", "2", "--rows", "3",
                             "--params", "50", "--out", out], timeout=300)
    j = json.loads((out / "storage.json").read_text())
    assert list(j["backends"]) == ["local disk", "S3 on loopback (moto)"]
    for b in j["backends"].values():
        assert all(finite(b["shard_store"][k]) and b["shard_store"][k] > 0 for k in ("write_s", "read_s", "check_s"))
        assert "pipeline" not in b
    rows = table_rows((out / "storage.md").read_text())
    assert [r[0] for r in rows] == ["local disk", "S3 on loopback (moto)"]
