"""Tasks: metrics, majority baselines, built-in loaders on the real data, custom YAML tasks, row samples, and the
rule for a missing data folder (the three splits themselves: test_splits.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import missing_data

from raypdiff.config import ConfigError, load_config
from raypdiff.tasks import (BUILTIN, TaskSpec, builtin_spec, load_split, load_task, majority_baseline, resolve_specs,
                            score, subset_indices)

# ---- metrics ----

# (metric, preds, labels, expected) — all hand-computed
METRIC_CASES = [
    ("accuracy", [1, 0, 1, 1], [1, 0, 0, 1], 0.75),
    ("accuracy", [0, 0, 0], [0, 0, 0], 1.0),
    ("accuracy", [2, 1, 0], [0, 1, 2], 1 / 3),  # multi-class
    ("accuracy", [1, 1], [0, 0], 0.0),
    # f1 on label 1: tp=2 fp=1 fn=1 → 4/6
    ("f1", [1, 1, 1, 0, 0], [1, 1, 0, 1, 0], 2 / 3),
    ("f1", [1, 1, 0], [1, 1, 0], 1.0),
    ("f1", [0, 0, 0], [1, 1, 0], 0.0),  # no positive predictions
    ("f1", [0, 0, 0], [0, 0, 0], 0.0),  # no positives at all (degenerate, defined as 0)
    ("f1", [1, 1, 1, 1], [1, 1, 0, 0], 2 / 3),  # tp=2 fp=2 fn=0 → 4/6
    # mcc: tp=2 tn=1 fp=1 fn=1 → (2-1)/sqrt(3*3*2*2) = 1/6
    ("mcc", [1, 1, 1, 0, 0], [1, 1, 0, 1, 0], 1 / 6),
    ("mcc", [1, 0, 1, 0], [1, 0, 1, 0], 1.0),
    ("mcc", [0, 1, 0, 1], [1, 0, 1, 0], -1.0),
    ("mcc", [1, 1, 1, 1], [1, 0, 1, 0], 0.0),  # constant predictions → 0
    ("mcc", [1, 0, 1, 0], [1, 1, 1, 1], 0.0),  # constant labels → 0
    ("pearson", [1.0, 2.0, 3.0], [2.0, 4.0, 6.0], 1.0),
    ("pearson", [1.0, 2.0, 3.0], [3.0, 2.0, 1.0], -1.0),
    ("pearson", [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0], 0.8),  # cov 1.0 / var 1.25
    ("pearson", [2.5, 2.5, 2.5], [1.0, 2.0, 3.0], 0.0),  # constant predictions → 0, not nan
    ("pearson", [1.0, 2.0, 3.0], [4.0, 4.0, 4.0], 0.0),  # constant labels → 0
]


@pytest.mark.parametrize("metric,preds,labels,expected", METRIC_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(METRIC_CASES)])
def test_score(metric, preds, labels, expected):
    got = score(metric, np.array(preds), np.array(labels))
    assert isinstance(got, float)
    assert got == pytest.approx(expected, abs=1e-12)


def test_score_unknown_metric():
    with pytest.raises(ConfigError, match="bleu"):
        score("bleu", np.array([1]), np.array([1]))


# (metric, labels, expected majority-baseline score)
MAJORITY_CASES = [
    ("accuracy", [0, 1, 1, 1], 0.75),
    ("accuracy", [2, 2, 0, 1, 2], 0.6),
    ("accuracy", [0, 1], 0.5),  # a tie
    ("f1", [0, 1, 1, 1], 2 * 3 / (2 * 3 + 1 + 0)),  # always 1: tp=3 fp=1 fn=0 → 6/7
    ("f1", [0, 0, 0, 1], 0.0),  # always 0 → no tp
    ("mcc", [0, 1, 1, 1], 0.0),
    ("pearson", [0.5, 1.5, 4.0], 0.0),
]


@pytest.mark.parametrize("metric,labels,expected", MAJORITY_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(MAJORITY_CASES)])
def test_majority_baseline(metric, labels, expected):
    assert majority_baseline(metric, np.array(labels)) == pytest.approx(expected)


# (metric, train labels, scored labels, expected): the class is the train majority, whatever the scored rows hold
MAJORITY_FROM_TRAIN_CASES = [
    ("accuracy", [1, 1, 0], [0, 0, 0, 1], 0.25),
    ("accuracy", [0, 0, 1], [0, 0, 0, 1], 0.75),
    ("accuracy", [2, 2, 1, 0], [0, 1, 1, 2, 1], 0.2),
    ("f1", [1, 1, 0], [0, 0, 1, 1], 2 * 2 / (2 * 2 + 2 + 0)),  # always 1: tp=2 fp=2 → 4/6
    ("f1", [0, 0, 1], [0, 1, 1, 1], 0.0),  # always 0, though 1 is the scored majority
    ("mcc", [1, 1, 0], [0, 1], 0.0),
]


@pytest.mark.parametrize("metric,train,labels,expected", MAJORITY_FROM_TRAIN_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(MAJORITY_FROM_TRAIN_CASES)])
def test_majority_baseline_uses_train_labels(metric, train, labels, expected):
    got = majority_baseline(metric, np.array(labels), train_labels=np.array(train))
    assert got == pytest.approx(expected)


# ---- built-in tasks on the real data ----

# (task, train rows, dev rows, dev label counts or None for regression) — from glue/README.md, extra/README.md
BUILTIN_CASES = [
    ("SST-2", 20000, 872, {0: 428, 1: 444}),
    ("RTE", 2490, 277, None),  # label strings; counts checked below
    ("CoLA", 8551, 1043, {0: 322, 1: 721}),
    ("MRPC", 3668, 408, {0: 129, 1: 279}),
    ("STS-B", 5749, 1500, None),
    ("TREC", 5452, 500, {0: 9, 1: 138, 2: 94, 3: 65, 4: 81, 5: 113}),
    ("SICK-E", 4500, 500, {0: 74, 1: 282, 2: 144}),
    ("WNLI", 635, 71, {0: 40, 1: 31}),
]


@pytest.mark.parametrize("name,n_train,n_dev,dev_counts", BUILTIN_CASES, ids=[c[0] for c in BUILTIN_CASES])
def test_builtin_task_rows(data_dir, name, n_train, n_dev, dev_counts):
    spec = builtin_spec(name, str(data_dir))
    dev = load_split(spec, "dev")
    assert len(dev) == n_dev and dev.labels.shape == (n_dev,)
    assert all(len(t) == len(spec.text_fields) and all(isinstance(s, str) and s for s in t) for t in dev.texts)
    if dev_counts is not None:
        assert dev.labels.dtype == np.int64
        values, counts = np.unique(dev.labels, return_counts=True)
        assert dict(zip(values.tolist(), counts.tolist())) == dev_counts
    train = load_split(spec, "train")
    assert len(train) == n_train


def test_rte_string_labels(data_dir):
    dev = load_split(builtin_spec("RTE", str(data_dir)), "dev")
    # entailment 146 / not_entailment 131, mapped through label_names
    assert dev.labels.tolist().count(0) == 146 and dev.labels.tolist().count(1) == 131


def test_cola_headerless(data_dir):
    spec = builtin_spec("CoLA", str(data_dir))
    assert spec.columns == ["source", "label", "mark", "sentence"]
    dev = load_split(spec, "dev")
    assert dev.texts[0] == ("The sailors rode the breeze clear of the rocks.",)
    assert dev.labels[0] == 1


def test_mrpc_pairs(data_dir):
    dev = load_split(builtin_spec("MRPC", str(data_dir)), "dev")
    first = dev.texts[0]
    assert len(first) == 2 and first[0].startswith("He said the foodservice pie business")
    assert first[1].startswith('"The foodservice pie business')  # QUOTE_NONE keeps the stray quote


def test_stsb_regression(data_dir):
    spec = builtin_spec("STS-B", str(data_dir))
    assert spec.is_regression and spec.num_labels == 1 and spec.metric == "pearson"
    dev = load_split(spec, "dev")
    assert dev.labels.dtype == np.float32
    assert dev.labels[0] == pytest.approx(5.0)
    assert 0.0 <= dev.labels.min() and dev.labels.max() <= 5.0
    assert dev.labels.mean() == pytest.approx(2.364, abs=1e-3)


def test_trec_six_labels(data_dir):
    spec = builtin_spec("TREC", str(data_dir))
    assert spec.num_labels == 6 and not spec.is_regression
    assert sorted(set(load_split(spec, "dev").labels.tolist())) == list(range(6))


def test_builtin_names_and_errors(data_dir):
    assert {"SST-2", "CoLA", "STS-B", "TREC", "AGNews"} <= set(BUILTIN)
    with pytest.raises(ConfigError, match="unknown task 'SST2'"):
        builtin_spec("SST2", str(data_dir))
    with pytest.raises(ConfigError, match="data.root"):
        builtin_spec("TREC", None)  # extra tasks have no hub fallback
    with pytest.raises(ConfigError, match="data file not found"):
        load_split(builtin_spec("SST-2", str(data_dir / "nope")), "dev")


def test_load_task_test_sample(data_dir):
    spec = builtin_spec("RTE", str(data_dir))
    data = load_task(spec, val_examples=20, test_examples=20, seed=3)
    full = load_split(spec, "dev")
    idx = data.splits["test"]["rows"]
    assert data.splits["test"]["file"] == "dev" and len(data.test) == 20 and idx == sorted(idx)
    assert data.test.texts == [full.texts[i] for i in idx]
    assert data.test.labels.tolist() == full.labels[idx].tolist()
    assert load_task(spec, 20, 20, 3).splits == data.splits
    assert len(load_task(spec, 20, 1000, 0).test) == 277  # fewer rows than test_examples → all of them


# ---- row samples ----

@pytest.mark.parametrize("n,k,seed", [(10, 3, 0), (100, 10, 1), (872, 500, 0), (5, 5, 0), (5, 100, 0), (1, 1, 9)])
def test_subset_indices(n, k, seed):
    idx = subset_indices(n, k, seed)
    assert len(idx) == min(n, k)
    assert idx == sorted(idx) and len(set(idx)) == len(idx)
    assert all(isinstance(i, int) and 0 <= i < n for i in idx)
    assert subset_indices(n, k, seed) == idx  # deterministic
    if n <= k:
        assert idx == list(range(n))


def test_subset_depends_on_seed():
    assert subset_indices(1000, 50, 0) != subset_indices(1000, 50, 1)


# ---- custom tasks from files ----

ROWS = [("good film", "pos"), ("bad film", "neg"), ("great", "pos"), ("awful", "neg"), ("fine", "pos")]


def _write(path, fmt, rows, header=("text", "y")):
    import pandas as pd

    df = pd.DataFrame(rows, columns=list(header))
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "tsv":
        path.write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(dict(zip(header, r))) + "\n" for r in rows))
    elif fmt == "parquet":
        df.to_parquet(path)
    return str(path)


def _custom(tmp_path, fmt, rows=ROWS, **kw):
    d = dict(name="mine", description="Sentiment of a tiny review.", text_fields=["text"], label_field="y",
             metric="accuracy", label_names=["neg", "pos"],
             train=_write(tmp_path / f"train.{fmt}", fmt, rows), dev=_write(tmp_path / f"dev.{fmt}", fmt, rows))
    d.update(kw)
    return d


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_custom_task_formats(tmp_path, fmt):
    (spec,) = resolve_specs([_custom(tmp_path, fmt)], None)
    full = load_split(spec, "train")
    assert len(full) == 5 and full.texts[0] == ("good film",)
    assert full.labels.tolist() == [1, 0, 1, 0, 1]
    data = load_task(spec, val_examples=3, test_examples=3, seed=0)
    (held,) = data.splits["val"]["rows"]  # 5 train rows: at most a fifth, 1, is carved out for val
    assert data.val.texts == [full.texts[held]]
    assert data.train.texts == [t for i, t in enumerate(full.texts) if i != held]
    assert len(data.test) == 3 and data.splits["test"]["rows"] == sorted(data.splits["test"]["rows"])


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_custom_task_integer_labels(tmp_path, fmt):
    rows = [("a", 0), ("b", 1), ("c", 2)]
    (spec,) = resolve_specs([_custom(tmp_path, fmt, rows, label_names=["x", "y", "z"])], None)
    assert load_split(spec, "dev").labels.tolist() == [0, 1, 2]


def test_custom_pair_regression_task(tmp_path):
    rows = [("a cat", "a dog", 1.5), ("x", "y", 0.0), ("sun", "moon", "4.25")]
    train = _write(tmp_path / "t.tsv", "tsv", rows, header=("s1", "s2", "sim"))
    spec = TaskSpec(name="sim", description="How similar.", text_fields=["s1", "s2"], label_field="sim",
                    metric="pearson", label_names=None, train=train, dev=train)
    split = load_split(spec, "train")
    assert split.texts[0] == ("a cat", "a dog")
    assert split.labels.dtype == np.float32 and split.labels.tolist() == [1.5, 0.0, 4.25]


def test_custom_task_from_yaml_config(tmp_path):
    train = _write(tmp_path / "train.csv", "csv", ROWS)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"""
tasks:
  - SST-2
  - name: mine
    description: Sentiment of a tiny review.
    text_fields: [text]
    label_field: y
    metric: f1
    label_names: [neg, pos]
    train: {train}
    dev: {train}
""")
    cfg = load_config(cfg_file)
    specs = resolve_specs(cfg.tasks, "/unused")
    assert [s.name for s in specs] == ["SST-2", "mine"] and specs[1].metric == "f1"
    assert load_split(specs[1], "dev").labels.tolist() == [1, 0, 1, 0, 1]


# (changes to a valid custom task, text the ConfigError must contain)
BAD_SPECS = [
    (dict(description=" "), "description"),
    (dict(text_fields=[]), "text_fields"),
    (dict(text_fields=["a", "b", "c"]), "text_fields"),
    (dict(metric="bleu"), "metric"),
    (dict(label_names=None), "pearson"),
    (dict(metric="pearson"), "pearson"),
    (dict(label_names=["only"]), "label_names"),
    (dict(metric="f1", label_names=["a", "b", "c"]), "f1"),
    (dict(train=None), "train and dev"),
    (dict(dev=None), r"train and dev \(or test\)"),
    (dict(colour="red"), "colour"),  # an unknown key
]


@pytest.mark.parametrize("change,match", BAD_SPECS, ids=[m for _, m in BAD_SPECS])
def test_bad_custom_spec(tmp_path, change, match):
    entry = _custom(tmp_path, "csv")
    entry.update(change)
    with pytest.raises(ConfigError, match=match):
        resolve_specs([entry], None)


# (file format, rows, header, spec changes, ConfigError text)
BAD_FILES = [
    ("csv", ROWS, ("text", "label"), {}, "missing column 'y'"),
    ("tsv", ROWS, ("sentence", "y"), {}, "missing column 'text'"),
    ("csv", [("ok", "pos"), ("huh", "maybe")], ("text", "y"), {}, "row 1: label 'maybe' is outside"),
    ("csv", [("ok", 1), ("huh", 2)], ("text", "y"), {}, "label '2' is outside"),
    ("jsonl", [("ok", 1), ("huh", -1)], ("text", "y"), {}, "label -1 is outside"),
    ("csv", [], ("text", "y"), {}, "empty"),
    ("tsv", [], ("text", "y"), {}, "empty"),
    ("csv", [("a", "high")], ("text", "y"), dict(label_names=None, metric="pearson"), "'high' is not a number"),
]


@pytest.mark.parametrize("fmt,rows,header,change,match", BAD_FILES, ids=[c[-1] for c in BAD_FILES])
def test_bad_custom_file(tmp_path, fmt, rows, header, change, match):
    path = _write(tmp_path / f"f.{fmt}", fmt, rows, header=header)
    entry = dict(name="mine", description="d", text_fields=["text"], label_field="y", metric="accuracy",
                 label_names=["neg", "pos"], train=path, dev=path)
    entry.update(change)
    (spec,) = resolve_specs([entry], None)
    with pytest.raises(ConfigError, match=match):
        load_split(spec, "dev")


# ---- the data root: missing locally → skip; missing under CI=true → fail (conftest's data_dir) ----

@pytest.mark.parametrize("has_glue,ci,action", [(True, False, None), (True, True, None),
                                                (False, False, "skip"), (False, True, "fail")])
def test_missing_data_rule(tmp_path, has_glue, ci, action):
    if has_glue:
        (tmp_path / "glue").mkdir()
    got = missing_data(tmp_path, ci)
    if action is None:
        assert got is None
    else:
        assert got[0] == action and str(tmp_path) in got[1] and "RAYPDIFF_DATA_DIR" in got[1]


def test_unsupported_file_type(tmp_path):
    p = tmp_path / "rows.xlsx"
    p.write_text("x")
    spec = TaskSpec(name="mine", description="d", text_fields=["text"], label_field="y", metric="accuracy",
                    label_names=["a", "b"], train=str(p), dev=str(p))
    with pytest.raises(ConfigError, match="unsupported file type"):
        load_split(spec, "train")
