"""raypdiff.scoring on the real base model and real rows: the Ray `ScorerPool` (2 actors, chunks of 2 vectors)
returns exactly the in-process `Scorer`'s predictions, in job order, for jobs of different lengths over a
classification and a regression task; those predictions score like `lora.evaluate`; a progress bar hears of
every vector once.

Ray runs in this process on a private temp dir (address="local": never another Ray on the machine) and is shut
down after the module."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from raypdiff import lora
from raypdiff.config import Config
from raypdiff.tasks import TaskSpec, builtin_spec, load_task, score, spec_to_dict

BASE = {"base": "all-MiniLM-L6-v2", "max_length": 32, "dtype": "float32"}
LORA = {"r": 4, "alpha": 16, "dropout": 0.0, "target_modules": ["query", "value"]}
BATCH = 4  # smaller than the splits: several batches, in length order, scattered back to row order
TASKS = ("SST-2", "STS-B")  # accuracy (classification), pearson (regression)

# (task, split, number of vectors): lengths 3, 1, 5, 2, 4, 1 → 2, 1, 3, 1, 2, 1 chunks of at most 2
JOBS = [("SST-2", "val", 3), ("STS-B", "test", 1), ("SST-2", "test", 5), ("STS-B", "val", 2),
        ("STS-B", "subset", 4), ("SST-2", "subset", 1)]


@pytest.fixture(scope="module")
def one_thread():
    """The actors score with one torch thread; so does the in-process reference (bitwise-equal regression
    scores need the same reduction order)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tasks(data_dir):
    """name → (spec dict, layout json, {"val", "test", "subset"} splits): 8 val rows, 12 test rows, 5 of them
    as the subset."""
    cfg = Config.from_dict({"model": BASE, "lora": LORA})
    out = {}
    for name in TASKS:
        spec = builtin_spec(name, str(data_dir))
        data = load_task(spec, 8, 12, 0)
        layout = lora.layout_of(lora.build(cfg.model, cfg.lora, spec)).to_json()
        out[name] = (spec_to_dict(spec), layout, {"val": data.val.take(range(8)), "test": data.test.take(range(12)),
                                                  "subset": data.test.take(range(5))})
    return out


@pytest.fixture(scope="module")
def jobs(tasks):
    """Distinct vectors per job: a built adapter (seeded head, LoRA A) plus noise that makes LoRA B non-zero."""
    cfg = Config.from_dict({"model": BASE, "lora": LORA})
    rng = np.random.default_rng(0)
    base = {}
    for name, (spec, _, _) in tasks.items():  # label_mean: STS-B's head bias (ignored for SST-2)
        base[name] = lora.flatten(lora.build(cfg.model, cfg.lora, TaskSpec(**spec), seed=1, label_mean=2.5))
    return [(t, split, (base[t] + rng.normal(0, 0.05, size=(n, base[t].size))).astype(np.float32))
            for t, split, n in JOBS]


@pytest.fixture(scope="module")
def local_ray():
    import ray

    tmp = Path(tempfile.mkdtemp(prefix="rps", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", "RAY_TMPDIR", "RAY_USAGE_STATS_ENABLED")}
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.update(RAY_TMPDIR=str(tmp), RAY_USAGE_STATS_ENABLED="0")
    assert not ray.is_initialized()
    try:
        ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024 ** 2, include_dashboard=False,
                 log_to_driver=False, _temp_dir=str(tmp / "ray"))
        yield ray
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)


class Bar:
    """Records what tqdm.update would have been given."""

    def __init__(self):
        self.updates: list[int] = []

    def update(self, n: int = 1) -> None:
        self.updates.append(n)


@pytest.fixture(scope="module")
def reference(tasks, jobs, one_thread):
    """The in-process Scorer's predictions, job by job."""
    from raypdiff.scoring import Scorer

    scorer = Scorer(BASE, LORA, BATCH, tasks)
    return [scorer.predict(t, split, vecs) for t, split, vecs in jobs]


def test_scorer_shapes_and_dtypes(tasks, jobs, reference):
    for (t, split, vecs), got in zip(jobs, reference):
        rows = tasks[t][2][split]
        assert got.shape == (len(vecs), len(rows))
        assert got.dtype == (np.float32 if t == "STS-B" else np.int64)
        assert np.isfinite(got).all()
        if t == "SST-2":
            assert set(np.unique(got)) <= {0, 1}
    # the noise makes the vectors, and so their predictions, differ
    sts = reference[JOBS.index(("STS-B", "subset", 4))]
    assert len({tuple(r) for r in sts.tolist()}) == 4


def test_scorer_predictions_score_like_lora_evaluate(tasks, jobs, reference):
    """score(metric, Scorer's predictions) == lora.evaluate of the same vector on the same rows."""
    cfg = Config.from_dict({"model": BASE, "lora": LORA})
    tok = lora.load_tokenizer(cfg.model)
    models = {}
    for (t, split, vecs), preds in zip(jobs, reference):
        spec_dict, layout, rows = tasks[t]
        spec = TaskSpec(**spec_dict)
        model = models.setdefault(t, lora.build(cfg.model, cfg.lora, spec))
        batches = lora.eval_batches(tok, rows[split], cfg.model.max_length, BATCH)
        for v, p in zip(vecs, preds):
            lora.load_vector(model, v, lora.Layout.from_json(layout))
            assert score(spec.metric, p, rows[split].labels) == lora.evaluate(model, batches, spec, rows[split].labels,
                                                                              "float32")


def test_pool_matches_scorer_in_job_order(local_ray, tasks, jobs, reference):
    from raypdiff.scoring import ScorerPool

    pool = ScorerPool(BASE, LORA, BATCH, tasks, workers=2, chunk=2)
    try:
        assert len(pool.actors) == 2
        bar = Bar()
        got = pool.predict(jobs, bar)
        assert len(got) == len(jobs)
        for (t, split, vecs), want, have in zip(jobs, reference, got):
            assert have.dtype == want.dtype and have.shape == want.shape, (t, split)
            np.testing.assert_array_equal(have, want, err_msg=f"{t} {split}")
        # one update per chunk, of its size: every vector counted exactly once
        assert sum(bar.updates) == sum(len(v) for _, _, v in jobs)
        assert sorted(bar.updates) == sorted(min(2, len(v) - i) for _, _, v in jobs for i in range(0, len(v), 2))
        # a second call on the same actors (models and batches cached there) gives the same again, no bar needed
        again = pool.predict(jobs[::-1])
        for want, have in zip(reference[::-1], again):
            np.testing.assert_array_equal(have, want)
    finally:
        pool.close()
