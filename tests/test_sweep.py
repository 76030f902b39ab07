"""Ablation sweeps: the plan and its overrides as tables of tiny cases, bad sweep configs (one line, exit 2), and
`raypdiff sweep` on configs/tiny_sweep.yaml on a real local Ray: trials end to end, MLflow parent + nested runs read
back from the SQLite store, and a sweep whose driver is killed resuming without re-running finished trials."""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from conftest import BUCKET
from helpers import REPO, RaypdiffProcess

from raypdiff.config import ConfigError, load_config
from raypdiff.storage import Location
from raypdiff.sweep import plan, trial_config


def test_default_plan_is_one_axis_at_a_time_around_the_defaults():
    cfg = load_config(REPO / "configs" / "sweep.yaml", [])
    names = [t["name"] for t in plan(cfg, 200)]
    assert names[:2] == ["default,seed=0", "default,seed=1"]
    assert names[2:] == ["captures=10", "captures=25", "captures=50", "captures=100", "normalize=none", "normalize=task",
                         "condition=onehot", "condition=description", "condition=k1", "condition=k16",
                         "condition=no_quality", "latent=16", "latent=32", "latent=128", "latent=256",
                         "noise=none", "noise=input", "noise=latent"]


def test_grid_plan_is_every_combination():
    cfg = load_config(None, ["sweep.mode=grid", "sweep.axes={normalize: [none, task], latent: [16, 32, 64]}"])
    trials = plan(cfg, 100)
    assert len(trials) == 6 and len({t["name"] for t in trials}) == 6
    assert {(t["settings"]["normalize"], t["settings"]["latent"]) for t in trials} == \
        {(n, z) for n in ("none", "task") for z in (16, 32, 64)}


@pytest.mark.parametrize("axis,value,expect", [
    ("normalize", "task", {"normalize.mode": "task"}),
    ("latent", 16, {"autoencoder.latent": 16}),
    ("noise", "none", {"autoencoder.input_noise": 0.0, "autoencoder.latent_noise": 0.0}),
    ("noise", "input", {"autoencoder.input_noise": 0.001, "autoencoder.latent_noise": 0.0}),
    ("noise", "latent", {"autoencoder.input_noise": 0.0, "autoencoder.latent_noise": 0.1}),
    ("noise", "both", {"autoencoder.input_noise": 0.001, "autoencoder.latent_noise": 0.1}),
    ("condition", "onehot", {"condition.encoder": "onehot"}),
    ("condition", "description", {"condition.k": 0, "condition.quality": True}),
    ("condition", "k16", {"condition.k": 16, "condition.quality": True}),
    ("condition", "no_quality", {"condition.quality": False, "condition.k": 4}),
])
def test_axis_values_set_the_config(axis, value, expect):
    cfg = load_config(None, [])
    got = trial_config(cfg, {"settings": {axis: value}, "seed": 3}).to_dict()
    for key, v in expect.items():
        section, field = key.split(".")
        assert got[section][field] == v
    assert got["trainer"]["seed"] == 3 and got["tracking"]["enabled"] is False


@pytest.mark.parametrize("override,match", [
    ("sweep.axes={depth: [1, 2]}", "sweep.axes.depth: unknown axis"),
    ("sweep.axes={normalize: [task, layer]}", "sweep.axes.normalize: 'layer' is not one of"),
    ("sweep.axes={latent: [16, -1]}", "sweep.axes.latent: -1 is not a positive integer"),
    ("sweep.axes={latent: [16, 16]}", "sweep.axes.latent: duplicate values"),
    ("sweep.axes={}", "sweep.axes: name at least one axis"),
    ("sweep.mode=random", "sweep.mode: 'random' is not one of"),
    ("sweep.seeds=[]", "sweep.seeds: give distinct seeds"),
    ("sweep.num=0", "sweep.num: must be >= 1"),
])
def test_bad_sweep_config_is_one_error(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def _nested_runs(uri: str) -> tuple[list, list]:
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parents = [r for r in runs if r.info.run_name == "sweep"]
    nested = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, nested


def _terminated(tune: Location, name: str) -> bool:
    """Whether Tune's saved experiment state (on the bucket) records trial `name` as finished."""
    for f, _ in tune.tree():
        if not Path(f).name.startswith("experiment_state-") or not f.endswith(".json"):
            continue
        try:
            trials = [json.loads(t[0]) for t in json.loads((tune / f).read_text())["trial_data"]]
        except (ValueError, KeyError, OSError):  # being rewritten
            continue
        if any(t["config"]["trial"] == name and t["status"] == "TERMINATED" for t in trials):
            return True
    return False


def test_sweep_on_a_bucket_killed_and_resumed_with_asha(tiny_zoo, data_dir, s3):
    """Two trials one at a time, sweep.output_dir on a bucket (Tune's state, the trials and the tables all land
    there), ASHA on (sweep.asha, grace 1). The driver is SIGKILLed once the first trial has finished; the same command
    then completes the sweep without re-running it. ASHA reads the training loss of every report, the last one
    included: the first trial (alone at its rung) runs to its evaluation, and every trial is either in the tables or
    listed as stopped early, having trained for fewer reports. MLflow holds one parent run and a nested run per
    trial."""
    tmp = Path(tempfile.mkdtemp(prefix="rpw", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    out = Location.of(f"s3://{BUCKET}/sweep")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    args = ["sweep", "-q", "-c", "configs/tiny_sweep.yaml", "--zoo", str(tiny_zoo), f"data.root={data_dir}",
            f"sweep.output_dir={out}", "sweep.axes={latent: [8, 2]}", "sweep.asha=true", "sweep.asha_grace=1",
            f"tracking.uri={uri}"]
    first_report = out / "trials" / "default,seed=0" / "report" / "report.json"
    try:
        proc = RaypdiffProcess(args, tmp / "ray", tmp / "first.log")
        try:
            deadline = time.time() + 600
            while not _terminated(out / "tune", "default,seed=0") and proc.proc.poll() is None \
                    and time.time() < deadline:
                time.sleep(2)  # until Tune's saved state has the trial as finished: what a resume reads
            assert _terminated(out / "tune", "default,seed=0"), proc.tail()
        finally:
            proc.close()  # SIGKILL: the driver and every process below it
        assert first_report.is_file()
        stamp = first_report.stat()
        assert not (out / "sweep.json").exists()

        again = RaypdiffProcess(args, tmp / "ray2", tmp / "second.log")
        try:
            assert again.proc.wait(timeout=900) == 0, again.tail()
        finally:
            again.close()
        assert f"tables: {out}/sweep.md" in again.log.read_text()
        assert first_report.stat() == stamp  # the finished trial was not run again
        s = json.loads((out / "sweep.json").read_text())
        finished = set(s["axes"]["latent"])
        assert "8" in finished and not s["failed"]
        assert len(finished) + len(s["stopped"]) == s["trials"] == 2
        assert s["zoo_test"].keys() == {"SST-2", "STS-B"}
        for v in finished:
            row = s["axes"]["latent"][v]
            assert set(row["tasks"]) == {"SST-2", "STS-B"}
            for t in row["tasks"].values():
                assert t["test_ci"][0] <= t["test"] <= t["test_ci"][1] and -1 <= t["val"] <= 1
        iterations = {}
        for f, _ in (out / "tune").tree():
            if f.endswith("/result.json"):
                rows = [json.loads(x) for x in (out / "tune" / f).read_text().splitlines() if x.strip()]
                iterations[rows[-1]["config"]["trial"]] = rows[-1]["training_iteration"]
        for name in s["stopped"]:
            assert iterations[name] < iterations["default,seed=0"]
        assert (out / "sweep.png").stat()[0] > 5000
        assert "## latent (default: 8)" in (out / "sweep.md").read_text()
        import mlflow

        parents, nested = _nested_runs(uri)
        assert len(parents) == 1 and sorted(r.info.run_name for r in nested) == ["default,seed=0", "latent=2"]
        assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in nested)
        assert all("val" in r.data.metrics and "SST-2.test" in r.data.metrics for r in nested
                   if r.info.run_name not in s["stopped"])
        assert "sweep.md" in {a.path for a in mlflow.MlflowClient().list_artifacts(parents[0].info.run_id)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_sweep_asks_for_more_captures_than_the_zoo_has(tiny_zoo, data_dir, tmp_path):
    import subprocess
    import sys

    from helpers import private_ray_env

    r = subprocess.run([sys.executable, "-m", "raypdiff.cli", "sweep", "-q", "-c", "configs/tiny_sweep.yaml", "--zoo",
                        str(tiny_zoo), f"data.root={data_dir}", f"sweep.output_dir={tmp_path / 's'}",
                        "sweep.axes={captures: [2, 5]}", "tracking.enabled=false"], cwd=REPO, capture_output=True,
                       text=True, timeout=300, env=private_ray_env(tmp_path / "ray"))
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == ("raypdiff: error: captures=5: the zoo has 3 captures from each of 1 "
                                                 "seed(s) per task; ask for 1 to 3")
    assert not (tmp_path / "ray").exists()  # refused before Ray started


def two_seed_zoo(tiny_zoo: Path, out: Path) -> Path:
    """tiny_zoo with its seed-0 runs copied as seed 1 (rows relabelled): a zoo of two runs per task."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raypdiff.zoo.store import SHARDS, shard_name

    shutil.copytree(tiny_zoo, out)
    meta = json.loads((out / "meta.json").read_text())
    for t in meta["tasks"]:
        table = pq.read_table(out / SHARDS / shard_name(t, 0))
        seed = table.schema.get_field_index("seed")
        table = table.set_column(seed, table.schema.field(seed), pa.array([1] * table.num_rows, table["seed"].type))
        pq.write_table(table, out / SHARDS / shard_name(t, 1))
    meta["capture"]["seeds"] = [0, 1]
    (out / "meta.json").write_text(json.dumps(meta))
    return out


@pytest.mark.parametrize("per_task,shares", [(2, [1, 1]), (5, [3, 2]), (6, [3, 3])])
def test_subsample_shares_captures_over_seeds(tiny_zoo, tmp_path, per_task, shares):
    """An odd count splits as evenly as it can (the first seed one more); the subsample passes the zoo check and is
    the same rows when asked again."""
    import pyarrow.parquet as pq

    from raypdiff.zoo.derive import subsample
    from raypdiff.zoo.store import SHARDS, check, shard_name

    zoo = two_seed_zoo(tiny_zoo, tmp_path / "zoo")
    sub = subsample(zoo, per_task, 0, tmp_path / "sub")
    check(sub)
    for t in ("SST-2", "STS-B"):
        assert [pq.read_table(sub / SHARDS / shard_name(t, s)).num_rows for s in (0, 1)] == shares
    again = subsample(zoo, per_task, 0, tmp_path / "again")
    for f in (sub / SHARDS).files():
        assert pq.read_table(f).equals(pq.read_table(again / SHARDS / f.name))
    for bad in (1, 7):
        with pytest.raises(ConfigError, match=f"captures={bad}: .* ask for 2 to 6$"):
            subsample(zoo, bad, 0, tmp_path / f"bad{bad}")
