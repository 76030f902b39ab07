"""The held-out protocol: every task has three disjoint, fixed splits — train (fine-tuning only), val (every
selection) and test (reports only) — and no fine-tuning step, condition example or quality rank reads val or test."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from raypdiff import domains, lora
from raypdiff.config import ConfigError, load_config
from raypdiff.tasks import TaskSpec, builtin_spec, load_split, load_task, spec_to_dict
from raypdiff.zoo.collect import _bar, collect_one, progress_mode
from raypdiff.zoo.store import read_meta, shard_name

# ---- GLUE tasks: val carved from the train file, test = the dev file ----

# (task, val_examples, test_examples, split_seed, train-file rows, dev rows, val rows expected)
GLUE_CASES = [
    ("RTE", 500, 2000, 0, 2490, 277, 498),  # val capped at a fifth of the train file
    ("MRPC", 500, 2000, 0, 3668, 408, 500),
    ("MRPC", 40, 100, 5, 3668, 408, 40),  # test: a sample of 100 dev rows
    ("RTE", 16, 277, 1, 2490, 277, 16),  # test_examples == dev rows → all of them
]


@pytest.mark.parametrize("task,val_n,test_n,seed,n_train,n_dev,expect_val", GLUE_CASES,
                         ids=[f"{c[0]}-val{c[1]}-test{c[2]}-seed{c[3]}" for c in GLUE_CASES])
def test_glue_splits_are_disjoint_and_fixed(data_dir, task, val_n, test_n, seed, n_train, n_dev, expect_val):
    spec = builtin_spec(task, str(data_dir))
    data = load_task(spec, val_n, test_n, seed)
    full, dev = load_split(spec, "train"), load_split(spec, "dev")
    assert (len(full), len(dev)) == (n_train, n_dev)

    # val: train-file rows, and fine-tuning gets exactly the others (by index: GLUE repeats some sentences)
    val_rows = data.splits["val"]["rows"]
    assert data.splits["val"]["file"] == "train" and len(set(val_rows)) == len(val_rows) == expect_val
    assert val_rows == sorted(val_rows) and all(0 <= i < n_train for i in val_rows)
    train_rows = sorted(set(range(n_train)) - set(val_rows))
    assert data.splits["train"] == {"file": "train", "rows": n_train - expect_val}
    assert data.train.texts == [full.texts[i] for i in train_rows]
    assert data.train.labels.tolist() == full.labels[train_rows].tolist()
    assert data.val.texts == [full.texts[i] for i in val_rows]
    assert data.val.labels.tolist() == full.labels[val_rows].tolist()

    # test: the dev file, all of it when it fits in test_examples
    test_rows = data.splits["test"]["rows"]
    assert data.splits["test"]["file"] == "dev" and len(test_rows) == min(n_dev, test_n)
    if n_dev <= test_n:
        assert test_rows == list(range(n_dev))
    assert data.test.texts == [dev.texts[i] for i in test_rows]
    assert data.test.labels.tolist() == dev.labels[test_rows].tolist()

    # fixed: the same rows on every call, and as meta.json stores them (JSON)
    again = load_task(spec, val_n, test_n, seed)
    assert again.splits == data.splits == json.loads(json.dumps(data.splits))
    assert again.train.texts == data.train.texts and again.val.texts == data.val.texts
    assert load_task(spec, val_n, test_n, seed + 1).splits["val"]["rows"] != val_rows


# ---- custom tasks: their own val / test files win ----

N_ROWS = {"train": 20, "dev": 7, "val": 12, "test": 9}


def _rows(tmp_path, name: str, n: int) -> str:
    """`n` rows whose texts name their file and index ("val row 3"), so a text identifies its row."""
    p = tmp_path / f"{name}.csv"
    p.write_text("text,y\n" + "".join(f"{name} row {i},{i % 2}\n" for i in range(n)))
    return str(p)


def _spec(tmp_path, files, **rows) -> TaskSpec:
    n = {**N_ROWS, **rows}
    return TaskSpec(name="rows", description="Whether a numbered row is odd.", text_fields=["text"], label_field="y",
                    metric="accuracy", label_names=["even", "odd"], **{f: _rows(tmp_path, f, n[f]) for f in files})


# (files the task names, file val rows come from, file test rows come from, val rows, test rows, train rows)
# with val_examples=10, test_examples=8
CUSTOM_CASES = [
    (("train", "dev"), "train", "dev", 4, 7, 16),  # val: a fifth of 20 train rows; test: all 7 dev rows
    (("train", "dev", "val"), "val", "dev", 10, 7, 20),  # val: 10 of the val file's 12; train keeps all 20
    (("train", "dev", "test"), "train", "test", 4, 8, 16),  # the test file wins over dev
    (("train", "val", "test"), "val", "test", 10, 8, 20),  # no dev file at all
    (("train", "dev", "val", "test"), "val", "test", 10, 8, 20),
]


@pytest.mark.parametrize("files,val_file,test_file,n_val,n_test,n_train", CUSTOM_CASES,
                         ids=["+".join(c[0]) for c in CUSTOM_CASES])
def test_custom_task_split_files(tmp_path, files, val_file, test_file, n_val, n_test, n_train):
    spec = _spec(tmp_path, files)
    data = load_task(spec, val_examples=10, test_examples=8, seed=0)
    assert data.splits["val"]["file"] == val_file and data.splits["test"]["file"] == test_file
    assert (len(data.val), len(data.test), len(data.train)) == (n_val, n_test, n_train)
    assert data.splits["train"]["rows"] == n_train
    assert data.val.texts == [(f"{val_file} row {i}",) for i in data.splits["val"]["rows"]]
    assert data.test.texts == [(f"{test_file} row {i}",) for i in data.splits["test"]["rows"]]
    trained = {t for (t,) in data.train.texts}
    assert all(t.startswith("train row ") for t in trained)
    assert trained.isdisjoint(t for (t,) in data.val.texts + data.test.texts)
    assert len(trained) + (n_val if val_file == "train" else 0) == N_ROWS["train"]


def test_one_train_row_needs_a_val_file(tmp_path):
    with pytest.raises(ConfigError, match="at least 2 rows to carve val"):
        load_task(_spec(tmp_path, ("train", "dev"), train=1), 10, 8, 0)
    data = load_task(_spec(tmp_path, ("train", "dev", "val"), train=1), 10, 8, 0)
    assert data.train.texts == [("train row 0",)] and len(data.val) == 10


def test_two_train_rows_give_one_to_val(tmp_path):
    data = load_task(_spec(tmp_path, ("train", "dev"), train=2), 10, 8, 0)
    assert len(data.train) == len(data.val) == 1 and data.train.texts != data.val.texts


def test_no_val_file_to_load(tmp_path):
    with pytest.raises(ConfigError, match="names no val file"):
        load_split(_spec(tmp_path, ("train", "dev")), "val")


# ---- no fine-tuning step sees a val or test row ----

@pytest.mark.parametrize("files", [("train", "dev"), ("train", "dev", "val")], ids=["val-carved", "val-file"])
def test_collect_one_trains_on_train_rows_only(tmp_path, monkeypatch, files):
    """A whole collect_one (fine-tune, capture, score) on a task whose texts are unique: every row that reaches a
    training batch is a train row (and every train row does), and scoring reads exactly val and test."""
    counts = {"train": 40, "dev": 12, "val": 10}
    spec = _spec(tmp_path, files, **counts)
    cfg = load_config(None, ["model.max_length=16", "train.steps=12", "train.batch_size=4", "train.warmup_steps=1",
                             "train.per_task={}", "capture.num=2", "eval.val_examples=8", "eval.test_examples=6",
                             "eval.test_every=1", "eval.batch_size=8", "collect.num_cpus=1"])
    data = load_task(spec, cfg.eval.val_examples, cfg.eval.test_examples, cfg.eval.split_seed)
    tok = lora.load_tokenizer(cfg.model)
    which = {}  # token ids → (file, row): every text is unique, so its ids name one row
    for name in files:
        for i, enc in enumerate(lora.encode(tok, load_split(spec, name), cfg.model.max_length)):
            which[tuple(enc["input_ids"])] = (name, i)
    assert len(which) == sum(counts[f] for f in files)

    trained, scored = set(), set()
    real = lora.collate

    def spy(tokenizer, rows, labels=None):  # training batches carry labels; scoring batches do not
        (scored if labels is None else trained).update(which[tuple(r["input_ids"])] for r in rows)
        return real(tokenizer, rows, labels)

    monkeypatch.setattr(lora, "collate", spy)
    (tmp_path / "shards").mkdir()
    collect_one(cfg.to_dict(), spec_to_dict(spec), data, 0, str(tmp_path), progress="off")

    s = data.splits
    val = {(s["val"]["file"], i) for i in s["val"]["rows"]}
    test = {(s["test"]["file"], i) for i in s["test"]["rows"]}
    train = {("train", i) for i in range(counts["train"])} - val
    assert len(train) == s["train"]["rows"] == len(data.train)
    assert trained.isdisjoint(val | test), sorted(trained & (val | test))
    assert trained == train  # 12 steps x 4 rows cover every train row
    assert scored == val | test

    import pyarrow.parquet as pq

    shard = pq.read_table(tmp_path / "shards" / shard_name("rows", 0)).to_pandas()
    assert len(shard) == 2 and np.isfinite(shard.value).all() and np.isfinite(shard.test_value).all()
    assert all(len(p) == len(test) for p in shard.test_pred)


# ---- which captures are scored on test ----

# (captures, test_every, val values, captures scored on test): every n-th from the last, plus the best by val
TESTED_CASES = [
    (3, 2, [0.1, 0.2, 0.3], [0, 2]),
    (3, 2, [0.1, 0.9, 0.3], [0, 1, 2]),
    (5, 10, [0.5, 0.1, 0.1, 0.1, 0.1], [0, 4]),
    (5, 1, [0.1] * 5, [0, 1, 2, 3, 4]),
    (1, 10, [0.4], [0]),
    (10, 4, [0.0] * 9 + [1.0], [1, 5, 9]),
]


@pytest.mark.parametrize("num,every,values,expected", TESTED_CASES, ids=range(len(TESTED_CASES)))
def test_tested_captures(num, every, values, expected):
    assert domains.tested_captures(num, every, values) == expected


# ---- the generator selects on val: quality ranks and condition examples ----

def test_prepare_ranks_on_val_and_draws_examples_from_train(tiny_zoo, repo_dir, monkeypatch):
    """train.prepare's task_values (the reference of every quality rank) are the shards' val `value` column, and
    its condition examples come from each task's fine-tuning rows (the train file minus val)."""
    import pyarrow.parquet as pq

    from raypdiff import conditions, train

    drawn_from = {}
    real = conditions.condition_bank

    def spy(cfg, specs, trains):
        drawn_from.update(trains)
        return real(cfg, specs, trains)

    monkeypatch.setattr(conditions, "condition_bank", spy)
    prep = train.prepare(load_config(repo_dir / "configs" / "tiny_gen.yaml", []), str(tiny_zoo))
    meta = read_meta(tiny_zoo)
    assert set(prep["task_values"]) == set(drawn_from) == set(meta.tasks)
    for task, info in meta.tasks.items():
        shard = pq.read_table(tiny_zoo / "shards" / shard_name(task, 0))
        np.testing.assert_array_equal(prep["task_values"][task], shard["value"].to_numpy())
        spec = TaskSpec(**info.spec)
        full = load_split(spec, "train")
        held = set(info.splits["val"]["rows"])
        assert len(drawn_from[task]) == info.splits["train"]["rows"] == len(full) - len(held)
        assert drawn_from[task].texts == [t for i, t in enumerate(full.texts) if i not in held]
        shown = [tuple(e["text"]) if isinstance(e["text"], list) else (e["text"],) for e in prep["examples"][task]]
        assert shown and set(shown) <= set(drawn_from[task].texts)  # the page's prefill: fine-tuning rows too


def test_progress_lines_off_a_terminal(capsys, monkeypatch):
    """Off a terminal a worker prints one line per quarter (Ray's bars were redrawn on every forwarded line there)."""
    import io

    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert progress_mode(True) == "lines" and progress_mode(False) == "off"
    monkeypatch.undo()
    bar = _bar("lines", 10, "SST-2/s0")
    for _ in range(10):
        bar.update(1)
    assert capsys.readouterr().out.splitlines() == ["SST-2/s0: 25% (3/10)", "SST-2/s0: 50% (5/10)",
                                                    "SST-2/s0: 75% (8/10)", "SST-2/s0: 100% (10/10)"]
