"""The many-task suite: derived tasks (one-vs-rest, label pairs, label-swapped twins) as data, configs/suite.yaml on
the real data, and hold-out folds that never put a held-out task or its twin in its fold's training set."""
from __future__ import annotations

import numpy as np
import pytest

from raypdiff.cli import main
from raypdiff.config import ConfigError, load_config
from raypdiff.holdout import family_folds, kfold, twin_groups
from raypdiff.tasks import load_split, resolve_specs

ROWS = [("a", "x"), ("b", "y"), ("c", "z"), ("d", "x"), ("e", "z"), ("f", "y")]


def _base(tmp_path, **kw) -> dict:
    path = tmp_path / "rows.csv"
    path.write_text("text,y\n" + "".join(f"{t},{y}\n" for t, y in ROWS))
    d = dict(name="base", description="Three letters.", text_fields=["text"], label_field="y", metric="accuracy",
             label_names=["x", "y", "z"], train=str(path), dev=str(path), family="letters")
    d.update(kw)
    return d


# (derived entries after the base task, task to read, its expected texts, its expected label ids)
DERIVED = [
    ("one-vs-rest", [dict(name="is-z", source="base", description="z or not.", label_names=["other", "z"],
                          relabel={"other": ["x", "y"], "z": ["z"]})], "is-z", "abcdef", [0, 0, 1, 0, 1, 0]),
    ("pair drops other rows", [dict(name="xz", source="base", description="x or z.", label_names=["x", "z"])],
     "xz", "acde", [0, 1, 0, 1]),
    ("pair in reverse order", [dict(name="zx", source="base", description="z or x.", label_names=["z", "x"])],
     "zx", "acde", [1, 0, 1, 0]),
    ("a label may take one source label by name", [dict(name="xy", source="base", description="x or y.",
                                                        label_names=["x", "yes"], relabel={"x": "x", "yes": ["y"]})],
     "xy", "abdf", [0, 1, 0, 1]),
    ("twin of a derived task composes down to the source", [
        dict(name="xz", source="base", description="x or z.", label_names=["x", "z"]),
        dict(name="zx", source="xz", twin_of="xz", description="z or x.", label_names=["z", "x"])],
     "zx", "acde", [1, 0, 1, 0]),
    ("relabel of a one-vs-rest composes", [
        dict(name="is-z", source="base", description="z or not.", label_names=["other", "z"],
             relabel={"other": ["x", "y"], "z": ["z"]}),
        dict(name="not-z", source="is-z", twin_of="is-z", description="not z, or z.", label_names=["z", "other"])],
     "not-z", "abcdef", [1, 1, 0, 1, 0, 1]),
]


@pytest.mark.parametrize("derived,task,texts,labels", [c[1:] for c in DERIVED], ids=[c[0] for c in DERIVED])
def test_derived_task_rows(tmp_path, derived, task, texts, labels):
    specs = {s.name: s for s in resolve_specs([_base(tmp_path), *derived], None)}
    split = load_split(specs[task], "train")
    assert "".join(t for (t,) in split.texts) == texts
    assert split.labels.tolist() == labels
    assert specs[task].family == "letters"  # inherited from the source
    assert specs[task].source_label_names == ["x", "y", "z"]


XZ = dict(name="xz", source="base", description="x or z.", label_names=["x", "z"])
# (derived entries, text the ConfigError must contain)
BAD_DERIVED = [
    ([dict(XZ, label_names=["x", "w"])], "'w' is not a label of base"),
    ([dict(XZ, relabel={"x": ["x"], "z": ["q"]})], "'q' is not a label of base"),
    ([dict(XZ, relabel={"x": ["x"]})], "relabel must map exactly the labels"),
    ([dict(XZ, relabel={"x": ["x", "z"], "z": ["z"]})], "each used once"),
    ([dict(XZ, relabel={"x": [], "z": ["z"]})], "one or more source labels"),
    ([dict(XZ, description="")], "its own description"),
    ([dict(XZ, label_names=None)], "needs label_names"),
    ([dict(XZ, source="nope")], "unknown task 'nope'"),
    ([dict(XZ, metric="f1", label_names=["x", "y", "z"])], "metric f1 is for 2-label tasks"),
    ([XZ, dict(XZ, name="zx", twin_of="xz")], "in reverse order"),
    ([XZ, dict(XZ, name="zx", twin_of="xz", label_names=["z", "x"], relabel={"z": ["x"], "x": ["z"]})],
     "same source labels"),
    ([XZ, dict(XZ, name="zx", twin_of="xz", label_names=["z", "x"], family="other")], "share a family"),
    ([XZ, dict(XZ, name="zx", twin_of="xz", label_names=["z", "x"], text_fields=["y"])], "same rows"),
    ([dict(XZ, twin_of="gone")], "no such other task"),
    ([dict(XZ, twin_of="xz")], "no such other task"),
]


@pytest.mark.parametrize("derived,match", BAD_DERIVED, ids=[m for _, m in BAD_DERIVED])
def test_bad_derived_task(tmp_path, derived, match):
    with pytest.raises(ConfigError, match=match):
        resolve_specs([_base(tmp_path), *derived], None)


def test_regression_source_refused(tmp_path):
    with pytest.raises(ConfigError, match="regression"):
        resolve_specs([_base(tmp_path, label_names=None, metric="pearson"),
                       dict(XZ, source="base")], None)


def _specs(tmp_path, n_groups: int, twins: int, families: int):
    """n_groups tasks derived from one base (the first `twins` of them with a twin), spread over families."""
    entries = [_base(tmp_path)]
    for i in range(n_groups):
        fam = f"f{i % families}"
        entries.append(dict(XZ, name=f"t{i}", family=fam))
        if i < twins:
            entries.append(dict(XZ, name=f"t{i}-swapped", twin_of=f"t{i}", label_names=["z", "x"], family=fam))
    return resolve_specs(entries, None)[1:]


def _assert_no_leak(folds, specs):
    groups = twin_groups(specs)
    held_once = sorted(t for f in folds for t in f.heldout)
    for f in folds:
        assert not set(f.heldout) & set(f.train)
        assert set(f.heldout) | set(f.train) == {s.name for s in specs}
        for g in groups:  # a twin pair is held out together or not at all
            assert set(g) <= set(f.heldout) or not set(g) & set(f.heldout), (f.name, g)
    return held_once


# (task groups, of them with a twin, families, k)
FOLD_CASES = [(6, 0, 2, 2), (6, 3, 3, 3), (10, 10, 2, 5), (7, 2, 7, 7), (5, 4, 1, 2)]


@pytest.mark.parametrize("n,twins,families,k", FOLD_CASES, ids=[str(c) for c in FOLD_CASES])
def test_kfold_holds_every_task_out_once_with_its_twin(tmp_path, n, twins, families, k):
    specs = _specs(tmp_path, n, twins, families)
    folds = kfold(specs, k, seed=0)
    assert len(folds) == k and all(f.heldout for f in folds)
    assert _assert_no_leak(folds, specs) == sorted(s.name for s in specs)  # each task exactly once
    sizes = [len(f.heldout) for f in folds]
    assert max(sizes) - min(sizes) <= 2  # the largest group (a twin pair) is 2
    assert [f.heldout for f in kfold(specs, k, seed=0)] == [f.heldout for f in folds]  # seeded


@pytest.mark.parametrize("n,twins,families,k", [c for c in FOLD_CASES if c[2] > 1], ids=str)
def test_family_folds(tmp_path, n, twins, families, k):
    specs = _specs(tmp_path, n, twins, families)
    folds = family_folds(specs)
    assert [f.name for f in folds] == [f"family-f{i}" for i in range(families)]
    assert _assert_no_leak(folds, specs) == sorted(s.name for s in specs)
    for f in folds:
        assert {s.family for s in specs if s.name in f.heldout} == {f.name.removeprefix("family-")}


@pytest.mark.parametrize("k", [1, 4])
def test_kfold_bad_k(tmp_path, k):
    with pytest.raises(ConfigError, match=r"k: must be 2\.\.3"):
        kfold(_specs(tmp_path, 3, 1, 1), k)


def test_family_folds_need_families(tmp_path):
    specs = resolve_specs([_base(tmp_path, family=None), dict(XZ, family=None)], None)
    with pytest.raises(ConfigError, match="task base .* has no family"):
        family_folds(specs)
    with pytest.raises(ConfigError, match="2\\+ families"):
        family_folds(_specs(tmp_path, 3, 0, 1))


# ---- configs/suite.yaml on the real data ----

def test_suite_loads_every_task(data_dir, packaged_data, capsys):
    assert main(["tasks", "-c", "configs/suite.yaml", f"data.root={data_dir}", "--json"]) == 0
    import json

    rows = {r["task"]: r for r in json.loads(capsys.readouterr().out)}
    cfg = load_config("configs/suite.yaml")
    specs = {s.name: s for s in resolve_specs(cfg.tasks, str(data_dir))}
    assert len(rows) == len(specs) >= 40
    assert len({r["family"] for r in rows.values()}) >= 5 and all(r["family"] for r in rows.values())
    assert all(r["train"] >= 1000 and r["val"] == cfg.eval.val_examples and r["test"] >= 100 for r in rows.values())
    assert len(specs) * cfg.capture.num * len(cfg.capture.seeds) >= 2500 and cfg.condition.pooling == "set"
    descriptions = [s.description for s in specs.values()]
    assert len(set(descriptions)) == len(descriptions)  # each task has its own
    twins = [s for s in specs.values() if s.twin_of]
    assert len(twins) >= 8
    for s in twins:  # same rows, labels reversed: every test label id is flipped (binary twins)
        a, b = load_split(s, "test"), load_split(specs[s.twin_of], "test")
        assert a.texts == b.texts and np.array_equal(a.labels, 1 - b.labels)
    derived = [s for s in specs.values() if s.source and not s.twin_of]
    assert {s.source for s in derived} == {"AGNews", "TREC", "SICK-E"}


def test_tasks_command_lists_folds(data_dir, packaged_data, capsys):
    assert main(["tasks", "-c", "configs/suite.yaml", f"data.root={data_dir}", "--folds", "5"]) == 0
    out = capsys.readouterr().out
    assert "53 tasks, 13 families, 11 label-swapped twins" in out
    assert out.count("fold-") == 5 and "family-topic: holds out 12" in out


def test_tasks_command_bad_suite(tmp_path, capsys):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("tasks:\n  - SST-2\n  - {name: x, source: SST-2, description: d, label_names: [positive, good]}\n")
    assert main(["tasks", "-c", str(cfg), "data.root=/unused"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["raypdiff: error: task x: relabel good: 'good' is not a label of SST-2 ['negative', 'positive']"]
