"""raypdiff.stats on tiny arrays: `metric_rows` is `tasks.score` over leading axes (random and degenerate inputs),
the paired bootstrap (point value, draws, paired differences, seeding), `interval` and `verdict`. No model, no
data files: every case runs in milliseconds."""
from __future__ import annotations

import numpy as np
import pytest

from raypdiff.stats import Bootstrap, interval, metric_rows, val_ties, verdict
from raypdiff.tasks import METRICS, score


def draw(metric: str, shape: tuple, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(preds of `shape`, labels of shape[-1]): class ids 0/1 (float scores for pearson)."""
    r = np.random.default_rng(seed)
    if metric == "pearson":
        return r.normal(size=shape).astype(np.float32), r.uniform(0, 5, size=shape[-1]).astype(np.float32)
    return r.integers(0, 2, size=shape), r.integers(0, 2, size=shape[-1])


def looped(metric: str, preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """tasks.score row by row over every leading axis."""
    flat = preds.reshape(-1, preds.shape[-1])
    return np.array([score(metric, p, labels) for p in flat]).reshape(preds.shape[:-1])


# ---------------------------------------------------------------- metric_rows == tasks.score

SHAPES = [(7,), (3, 7), (2, 3, 11), (5, 1, 40)]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
def test_metric_rows_matches_score_on_random_inputs(metric, shape):
    preds, labels = draw(metric, shape, seed=len(shape))
    got = metric_rows(metric, preds, labels)
    assert got.shape == shape[:-1]
    np.testing.assert_allclose(got, looped(metric, preds, labels), rtol=1e-9, atol=1e-12)


# (metric, preds rows, labels, expected per row; each row also checked against tasks.score)
DEGENERATE = [
    ("accuracy", [[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0]], [1, 0, 1, 0], [0.5, 0.5, 1.0]),
    ("f1", [[0, 0, 0, 0], [1, 1, 1, 1]], [0, 0, 0, 0], [0.0, 0.0]),  # no positive label → f1 0
    ("f1", [[0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], [1, 1, 0, 0], [0.0, 2 / 3, 2 / 3]),  # no predicted positive
    ("f1", [[1, 1, 0, 0]], [1, 1, 0, 0], [1.0]),
    ("mcc", [[1, 1, 1, 1], [0, 0, 0, 0]], [1, 0, 1, 0], [0.0, 0.0]),  # constant predictions → 0
    ("mcc", [[1, 0, 1, 0], [0, 1, 0, 1]], [1, 1, 1, 1], [0.0, 0.0]),  # constant labels → 0
    ("mcc", [[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0]], [1, 0, 1, 0], [1.0, -1.0, 0.0]),
    ("pearson", [[2.0, 2.0, 2.0, 2.0], [0.1, 0.1, 0.1, 0.1], [1.0, 2.0, 3.0, 4.0]], [0.5, 1.0, 1.5, 2.0],
     [0.0, 0.0, 1.0]),  # constant predictions (also one float32 cannot hold exactly) → 0
    ("pearson", [[4.0, 3.0, 2.0, 1.0]], [0.5, 1.0, 1.5, 2.0], [-1.0]),
    ("pearson", [[1.0, 2.0, 3.0, 4.0]], [3.0, 3.0, 3.0, 3.0], [0.0]),  # constant labels → 0
]


@pytest.mark.parametrize("metric,preds,labels,expected", DEGENERATE,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(DEGENERATE)])
def test_metric_rows_degenerate_cases(metric, preds, labels, expected):
    dtype = np.float32 if metric == "pearson" else np.int64
    preds, labels = np.asarray(preds, dtype), np.asarray(labels, dtype)
    got = metric_rows(metric, preds, labels)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    np.testing.assert_allclose(got, looped(metric, preds, labels), atol=1e-12)
    assert np.isfinite(got).all()
    # the same rows stacked under one more leading axis give the same numbers
    np.testing.assert_allclose(metric_rows(metric, np.stack([preds, preds]), labels), [got, got], atol=1e-12)


def test_metric_rows_broadcasts_labels_per_resample():
    """Labels with leading axes too (Bootstrap's (B, R) resampled labels) pair row for row with the preds."""
    preds, labels = draw("mcc", (4, 9), seed=3)
    many = np.stack([np.roll(labels, k) for k in range(4)])  # (4, 9): one label row per pred row
    np.testing.assert_allclose(metric_rows("mcc", preds, many),
                               [score("mcc", p, y) for p, y in zip(preds, many)], atol=1e-12)


def test_metric_rows_unknown_metric():
    with pytest.raises(ValueError, match="'auc'"):
        metric_rows("auc", np.zeros(3), np.zeros(3))


# ---------------------------------------------------------------- Bootstrap

@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("n", [1, 4])
def test_bootstrap_point_is_the_mean_of_per_adapter_scores(metric, n):
    preds, labels = draw(metric, (n, 15), seed=n)
    boot = Bootstrap(metric, labels, num=50, seed=0)
    assert boot.point(preds) == pytest.approx(np.mean([score(metric, p, labels) for p in preds]), abs=1e-12)
    if n == 1:  # one adapter: (R,) and (1, R) are the same thing
        assert boot.point(preds[0]) == boot.point(preds)


@pytest.mark.parametrize("metric", METRICS)
def test_bootstrap_draws_rescore_each_resample(metric):
    preds, labels = draw(metric, (3, 12), seed=7)
    boot = Bootstrap(metric, labels, num=20, seed=4)
    assert boot.idx.shape == (20, 12) and boot.idx.min() >= 0 and boot.idx.max() < 12
    want = [np.mean([score(metric, p[rows], labels[rows]) for p in preds]) for rows in boot.idx]
    np.testing.assert_allclose(boot.draws(preds), want, atol=1e-12)
    m = boot.mean(preds)
    assert set(m) == {"mean", "ci"} and m["mean"] == boot.point(preds)
    assert m["ci"] == interval(boot.draws(preds))


@pytest.mark.parametrize("metric", METRICS)
def test_paired_diff_with_itself_is_exactly_zero(metric):
    preds, labels = draw(metric, (3, 16), seed=2)
    d = Bootstrap(metric, labels, num=200, seed=1).diff(preds, preds)
    assert d == {"value": 0.0, "ci": [0.0, 0.0]}
    assert verdict(d["ci"]) == "no difference"


@pytest.mark.parametrize("metric", METRICS)
def test_paired_diff_is_the_difference_of_draws(metric):
    a, labels = draw(metric, (2, 16), seed=5)
    b, _ = draw(metric, (3, 16), seed=6)
    boot = Bootstrap(metric, labels, num=100, seed=3)
    d = boot.diff(a, b)
    assert d["value"] == pytest.approx(boot.point(a) - boot.point(b), abs=1e-12)
    assert d["ci"] == interval(boot.draws(a) - boot.draws(b))
    flipped = boot.diff(b, a)  # antisymmetric, interval mirrored
    assert flipped["value"] == pytest.approx(-d["value"], abs=1e-12)
    np.testing.assert_allclose(flipped["ci"], [-d["ci"][1], -d["ci"][0]], atol=1e-12)


def test_paired_diff_sees_a_consistent_gap():
    """Right on every row vs wrong on every row: the interval is far from 0 and the verdict says so."""
    labels = np.array([0, 1] * 10)
    boot = Bootstrap("accuracy", labels, num=100, seed=0)
    d = boot.diff(labels[None], 1 - labels[None])
    assert d == {"value": 1.0, "ci": [1.0, 1.0]} and verdict(d["ci"]) == "higher"
    assert verdict(boot.diff(1 - labels[None], labels[None])["ci"]) == "lower"


@pytest.mark.parametrize("seed", [0, 1, 123])
def test_bootstrap_is_seeded(seed):
    preds, labels = draw("accuracy", (2, 30), seed=9)
    a, b = Bootstrap("accuracy", labels, 64, seed), Bootstrap("accuracy", labels, 64, seed)
    np.testing.assert_array_equal(a.idx, b.idx)
    np.testing.assert_array_equal(a.draws(preds), b.draws(preds))
    assert a.mean(preds) == b.mean(preds)
    other = Bootstrap("accuracy", labels, 64, seed + 1)
    assert not np.array_equal(a.idx, other.idx)


# ---------------------------------------------------------------- val_ties

# (val scores, the indices tied at the best): a best-by-val figure averages their test scores
VAL_TIES = [
    ([0.8, 0.9, 0.85], [1]),
    ([0.89, 0.89, 0.885, 0.89], [0, 1, 3]),  # 200 val rows: accuracy moves in steps of 0.005
    ([0.7], [0]),
    ([0.5, 0.5], [0, 1]),
    ([-0.2, -0.1, -0.1 - 1e-9], [1]),  # a real gap (a Pearson correlation, say) is no tie
    (np.float32([0.89, 0.89]), [0, 1]),
]


@pytest.mark.parametrize("values,expected", VAL_TIES, ids=[f"case{i}" for i in range(len(VAL_TIES))])
def test_val_ties(values, expected):
    assert val_ties(values).tolist() == expected


# ---------------------------------------------------------------- interval, verdict

# (draws, expected [lo, hi]): numpy's linear-interpolated 2.5th / 97.5th percentiles
INTERVALS = [
    (np.arange(1001, dtype=float), [25.0, 975.0]),  # 0..1000: the percentiles are the values themselves
    (np.arange(1001, dtype=float)[::-1], [25.0, 975.0]),  # order does not matter
    (np.full(50, 0.7), [0.7, 0.7]),  # no spread, no width
    (np.array([3.0]), [3.0, 3.0]),
    (np.array([0.0, 1.0]), [0.025, 0.975]),
    (np.linspace(-1, 1, 401), [-0.95, 0.95]),
]


@pytest.mark.parametrize("draws,expected", INTERVALS, ids=[f"case{i}" for i in range(len(INTERVALS))])
def test_interval(draws, expected):
    got = interval(draws)
    assert isinstance(got, list) and all(type(v) is float for v in got)
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_interval_of_a_normal_sample():
    draws = np.random.default_rng(0).normal(2.0, 0.5, size=200_000)
    lo, hi = interval(draws)
    assert lo == pytest.approx(2.0 - 1.95996 * 0.5, abs=0.01) and hi == pytest.approx(2.0 + 1.95996 * 0.5, abs=0.01)


VERDICTS = [
    ([0.01, 0.2], "higher"),
    ([1e-12, 1e-9], "higher"),
    ([-0.2, -0.01], "lower"),
    ([-1e-9, -1e-12], "lower"),
    ([-0.1, 0.1], "no difference"),
    ([0.0, 0.1], "no difference"),  # touching 0 is not clearing it
    ([-0.1, 0.0], "no difference"),
    ([0.0, 0.0], "no difference"),
]


@pytest.mark.parametrize("ci,expected", VERDICTS, ids=[str(c) for c, _ in VERDICTS])
def test_verdict(ci, expected):
    assert verdict(ci) == expected
