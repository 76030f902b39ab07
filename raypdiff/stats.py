"""Metrics vectorized over leading axes, and paired bootstrap intervals over test rows."""
from __future__ import annotations

import numpy as np


def metric_rows(metric: str, preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """preds, labels: (..., R) → (...) metric values; the same numbers as tasks.score, many at once."""
    p, y = np.asarray(preds), np.asarray(labels)
    if metric == "accuracy":
        return (p == y).mean(-1)
    if metric == "pearson":
        p, y = p.astype(np.float64), y.astype(np.float64)
        pc, yc = p - p.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
        den = np.sqrt((pc ** 2).sum(-1) * (yc ** 2).sum(-1))
        return np.where(den > 0, (pc * yc).sum(-1) / np.where(den > 0, den, 1), 0.0)
    if metric == "macro_f1":  # the mean F1 over the labels present in labels or predictions (scikit-learn's)
        f1s, present = [], []
        for c in range(int(max(p.max(), y.max())) + 1):
            tp = ((p == c) & (y == c)).sum(-1).astype(np.float64)
            wrong = ((p == c) != (y == c)).sum(-1).astype(np.float64)  # fp + fn
            present.append(tp + wrong > 0)
            f1s.append(np.where(tp > 0, 2 * tp / np.maximum(2 * tp + wrong, 1), 0.0))
        present = np.stack(present)
        return (np.stack(f1s) * present).sum(0) / np.maximum(present.sum(0), 1)
    tp = ((p == 1) & (y == 1)).sum(-1).astype(np.float64)
    fp = ((p == 1) & (y == 0)).sum(-1).astype(np.float64)
    fn = ((p == 0) & (y == 1)).sum(-1).astype(np.float64)
    if metric == "f1":
        return np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    if metric == "mcc":
        tn = ((p == 0) & (y == 0)).sum(-1).astype(np.float64)
        den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return np.where(den > 0, (tp * tn - fp * fn) / np.where(den > 0, den, 1), 0.0)
    raise ValueError(f"unknown metric {metric!r}")


class Bootstrap:
    """B resamples of one task's test rows, shared by every method so differences are paired."""

    def __init__(self, metric: str, labels: np.ndarray, num: int = 1000, seed: int = 0):
        self.metric, self.labels = metric, np.asarray(labels)
        self.idx = np.random.default_rng(seed).integers(0, len(labels), (num, len(labels)))  # (B, R)

    def point(self, preds: np.ndarray) -> float:
        """preds (n, R) → the mean over the n adapters of their metric on all rows."""
        return float(metric_rows(self.metric, np.atleast_2d(preds), self.labels).mean())

    def draws(self, preds: np.ndarray) -> np.ndarray:
        """preds (n, R) → (B,): the adapters' mean metric on each resample of the rows."""
        preds = np.atleast_2d(preds)
        y = self.labels[self.idx]  # (B, R)
        return np.mean([metric_rows(self.metric, p[self.idx], y) for p in preds], axis=0)

    def mean(self, preds: np.ndarray) -> dict:
        """{"mean", "ci"}: the point value and its 95% percentile interval."""
        return {"mean": self.point(preds), "ci": interval(self.draws(preds))}

    def diff(self, a: np.ndarray, b: np.ndarray) -> dict:
        """{"value", "ci"} of mean(a) − mean(b), paired over the same resampled rows."""
        return {"value": self.point(a) - self.point(b), "ci": interval(self.draws(a) - self.draws(b))}


def val_ties(values) -> np.ndarray:
    """The indices sharing the best val score. A best-by-val figure is their mean test score: the expected score of
    picking by val when val cannot tell them apart (200 val rows move accuracy in steps of 0.005, so ties are common),
    rather than whichever happens to come first."""
    v = np.asarray(values, dtype=np.float64)
    return np.flatnonzero(v >= v.max() - 1e-12)


def interval(draws: np.ndarray) -> list[float]:
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return [float(lo), float(hi)]


def mean_ci(values, num: int, rng: np.random.Generator) -> tuple[float, list[float]]:
    """values (n,) → their mean and its 95% interval over num resamples of the n values (tasks, say)."""
    v = np.asarray(values)
    return float(v.mean()), interval(v[rng.integers(0, len(v), (num, len(v)))].mean(1))


def verdict(ci: list[float]) -> str:
    """A difference whose interval spans 0 is no difference."""
    return "higher" if ci[0] > 0 else "lower" if ci[1] < 0 else "no difference"
