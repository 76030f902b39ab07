"""Unseen tasks: the head relabeling and prototype baselines as tables, zoo task selection, and `raypdiff holdout`
end to end on a tiny suite (real local Ray, real generators): no fold's generator sees its held-out tasks or their
twins, every method is scored with an interval, and a re-run reuses finished folds (read back from a bucket)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import BUCKET
from helpers import REPO, private_ray_env

from raypdiff import checkpoint
from raypdiff.config import ConditionConfig, ConfigError
from raypdiff.conditions import make_encoder
from raypdiff.lora import Layout
from raypdiff.storage import Location
from raypdiff.tasks import Split, TaskSpec
from raypdiff.unseen import METHODS, map_head, prototype
from raypdiff.zoo.derive import select_tasks
from raypdiff.zoo.store import read_meta

LAYOUT = Layout(("base_model.model.bert.layer.0.lora_A.weight", "base_model.model.classifier.weight",
                 "base_model.model.classifier.bias"), ((2, 3), (3, 2), (3,)))
VEC = np.arange(LAYOUT.size, dtype=np.float32)  # lora 0..5 | head weight rows [6 7] [8 9] [10 11] | bias 12 13 14

# (source label order, target label order, expected vector)
HEADS = [
    (["a", "b", "c"], ["a", "b", "c"], VEC),
    (["a", "b", "c"], ["c", "b", "a"], np.r_[0:6, 10, 11, 8, 9, 6, 7, 14, 13, 12]),
    (["a", "b", "c"], ["b", "c", "a"], np.r_[0:6, 8, 9, 10, 11, 6, 7, 13, 14, 12]),
    (["a", "b", "c"], ["x", "y", "z"], VEC),  # other names: by position
    (["a", "b", "c"], ["a", "b", "x"], VEC),
    (None, None, VEC),  # regression
]


@pytest.mark.parametrize("src,dst,expected", HEADS, ids=[f"{s}->{d}" for s, d, _ in HEADS])
def test_map_head(src, dst, expected):
    np.testing.assert_array_equal(map_head(VEC, LAYOUT, src, dst), np.asarray(expected, np.float32))


def _spec(labels):
    return TaskSpec(name="t", description="d", text_fields=["text"], label_field="label",
                    metric="accuracy" if labels else "pearson", label_names=labels, train="-", dev="-")


@pytest.fixture(scope="module")
def minilm():
    return make_encoder(ConditionConfig())


def test_prototype_nearest_centroid(minilm):
    examples = [(("a wonderful, moving film",), 1), (("an awful, boring mess",), 0), (("I loved every minute",), 1)]
    rows = Split([("truly great acting and a lovely story",), ("dull and terrible",)], np.array([1, 0]))
    assert prototype(minilm, _spec(["negative", "positive"]), examples, rows).tolist() == [1, 0]
    # a label without examples is never predicted
    assert set(prototype(minilm, _spec(["a", "b", "c"]), [(("x",), 0), (("y",), 2)], rows).tolist()) <= {0, 2}


def test_prototype_regression_stays_within_example_scores(minilm):
    examples = [(("a cat sits", "a cat is sitting"), 5.0), (("a cat sits", "stocks fell"), 0.0)]
    rows = Split([("a dog runs", "a dog is running"), ("a dog runs", "rain in spain")], np.array([5.0, 0.0]))
    p = prototype(minilm, _spec(None), examples, rows)
    assert p.dtype == np.float32 and ((0 <= p) & (p <= 5)).all() and p[0] > p[1]


def test_select_tasks(tiny_zoo, tmp_path):
    out = select_tasks(tiny_zoo, ["STS-B"], tmp_path / "sel")
    meta = read_meta(out)
    assert list(meta.tasks) == ["STS-B"] and meta.derived["selection"]["tasks"] == ["STS-B"]
    assert [p.name for p in (out / "shards").files()] == ["STS-B__seed0.parquet"]
    assert select_tasks(tiny_zoo, ["STS-B"], tmp_path / "sel") == out  # reused
    with pytest.raises(ConfigError, match="task QNLI is not in the zoo"):
        select_tasks(tiny_zoo, ["QNLI"], tmp_path / "other")


@pytest.mark.full
def test_holdout_end_to_end(holdout_zoo, data_dir, s3):
    """holdout.output_dir on a bucket: the folds' generators, the report and the re-run's resumption from it."""
    tmp = Path(tempfile.mkdtemp(prefix="rph", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    out = Location.of(f"s3://{BUCKET}/holdout") / "kfold"
    try:
        uri = f"sqlite:///{tmp / 'mlflow.db'}"  # tmp is absolute → sqlite:////tmp/...
        common = ["-c", "configs/tiny_holdout.yaml", f"data.root={data_dir}", f"tracking.uri={uri}"]
        env = private_ray_env(tmp / "ray")  # with the S3 server's address and credentials
        cmd = [sys.executable, "-m", "raypdiff.cli", "holdout", "--zoo", str(holdout_zoo), "-q", *common,
               f"holdout.output_dir=s3://{BUCKET}/holdout"]
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "4 held-out tasks (kfold), skipped 1" in r.stdout
        report = json.loads((out / "holdout.json").read_text())
        assert report["skipped"] == {"STS-B": "no training task has 1 output(s): no head to generate"}
        held = [t for f in report["folds"] for t in f["heldout"]]
        assert sorted(held) == ["CR", "MPQA", "SST-2", "SST-2-swapped", "STS-B"]  # each task held out once
        for fold in report["folds"]:
            names = checkpoint.load(out / fold["fold"] / "generator").task_names
            assert not set(names) & set(fold["heldout"])  # never trained on what it is scored on
            assert {"SST-2", "SST-2-swapped"} <= set(fold["heldout"]) or not {"SST-2", "SST-2-swapped"} & set(
                fold["heldout"])  # twins held out together
            assert len(names) == fold["train_tasks"]
            assert sorted([*names, *fold["heldout"]]) == sorted(held)  # and on every other task
        assert sorted(report["tasks"]) == ["CR", "MPQA", "SST-2", "SST-2-swapped"]
        for t, methods in report["tasks"].items():
            assert report["nearest_zoo_task"][t] not in ("STS-B", t)
            for m in METHODS:
                lo, hi = methods[m]["ci"]
                assert 0 <= lo <= methods[m]["mean"] <= hi <= 1, (t, m)
        assert set(report["average"]) == set(METHODS)
        assert set(report["above_by_mean"]) == {"generated > majority", "generated > nearest_task",
                                                 "generated_finetune > finetune"}
        assert all(0 <= n <= 4 for n in report["above_by_mean"].values())
        assert set(report["sensitivity"]) == {"k=0", "k=2", "random_labels"}
        assert report["flip"]["tasks"] == 4 and list(report["flip"]["twins"]) == ["SST-2-swapped | SST-2"]
        assert 0 <= report["flip"]["twins_mean"] <= 1
        path = report["pictures"]["path"]
        assert (path["from"], path["to"]) == ("SST-2-swapped", "SST-2")  # the held-out twin pair
        assert all(len(v) == len(path["alphas"]) for v in path["scores"].values())
        assert report["pictures"]["map"]["points"] > 0
        for name in ("holdout.md", "holdout.png", "map.png", "path.png"):
            assert (out / name).stat()[0] > 0, name
        assert "| SST-2 | " in (out / "holdout.md").read_text()
        import mlflow

        mlflow.set_tracking_uri(uri)
        (run,) = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
                  if r.info.run_name == "holdout-kfold"]
        assert run.data.metrics["average.generated"] == pytest.approx(report["average"]["generated"])
        assert {"holdout.json", "map.png", "path.png"} <= {a.path for a in mlflow.MlflowClient().list_artifacts(
            run.info.run_id)}
        # fold generators are tracked, not registered: the registry's model stays the one `raypdiff train` made
        assert mlflow.MlflowClient().search_registered_models() == []
        # a re-run reads the finished folds back from the bucket: no training, the same report
        generators = {p: t for p, t in out.tree() if "/generator/" in p}
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert json.loads((out / "holdout.json").read_text()) == report
        assert {p: t for p, t in out.tree() if "/generator/" in p} == generators
        assert not [p for p, _ in out.tree() if p.endswith(".tmp")]
        # another partition into the same folder is refused, not merged with the saved folds
        r = subprocess.run([*cmd, "holdout.folds=3"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2
        assert r.stderr.strip().splitlines()[-1].startswith("raypdiff: error: ") and "holds out other tasks" in r.stderr
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
