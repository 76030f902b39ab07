"""The vision domain's scorers: a small CNN trained here on real Fashion-MNIST (classes, and styles), the Fréchet and
kernel distances in its feature space, and the style report's intervals."""
from __future__ import annotations

import numpy as np
import pytest

from raypdiff.vision import classify
from raypdiff.vision.styles import DEFAULT_STYLES, apply


def test_class_classifier_learns(fmnist_test):
    x, y = fmnist_test
    model = classify.train(x[:3000], y[:3000], 10, steps=150, seed=0)
    acc = (classify.predict(model, x[5000:6000]) == y[5000:6000]).mean()
    assert acc >= 0.65  # chance 0.10; ~0.8 after 150 steps here
    padded = np.pad(x[5000:5010], ((0, 0), (2, 2), (2, 2)))  # a 32 px sample is cropped back to 28
    np.testing.assert_array_equal(classify.predict(model, padded), classify.predict(model, x[5000:5010]))


def test_style_classifier_learns(fmnist_test):
    x, _ = fmnist_test
    styles = DEFAULT_STYLES[:4]
    imgs = np.concatenate([apply(s, x[:600], seed=0) for s in styles])
    labels = np.repeat(np.arange(len(styles)), 600)
    model = classify.train(imgs, labels, len(styles), steps=80, seed=0)
    held = np.concatenate([apply(s, x[1000:1200], seed=1) for s in styles])
    assert (classify.predict(model, held) == np.repeat(np.arange(len(styles)), 200)).mean() >= 0.9


def test_frechet():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2000, 4)), rng.normal(size=(2000, 4))
    assert classify.frechet(a, a) == pytest.approx(0, abs=1e-6)
    assert classify.frechet(a, b) < 0.05  # same distribution
    shifted = classify.frechet(a, b + 1.0)  # mean shift of 1 in each of 4 dims → ~4
    assert shifted == pytest.approx(4.0, abs=0.3)
    assert classify.frechet(b + 1.0, a) == pytest.approx(shifted, rel=1e-6)
    assert classify.frechet(a, 2 * b) == pytest.approx(4 * (1 + 4 - 2 * 2), abs=0.5)  # var 1 vs 4: (1-2)^2 per dim


def test_kid_is_unbiased_where_frechet_grows_on_subsets():
    """Halves of a feature set estimate the whole set's kernel distance (their mean over halves is the whole's), but
    the Fréchet distance of halves runs above the whole's: the reason the style report's intervals resample KID."""
    rng = np.random.default_rng(0)
    a, real = rng.normal(size=(200, 8)), rng.normal(0.3, 1.0, size=(300, 8))
    assert classify.kid(a, real) == pytest.approx(classify.kid(real, a), rel=1e-12)
    assert abs(classify.kid(rng.normal(size=(300, 8)), real[:, ::-1] - 0.3)) < 0.05  # same distribution: ~0
    whole_kid, whole_fd = classify.kid(a, real), classify.frechet(a, real)
    halves = [rng.permutation(200)[:100] for _ in range(300)]
    half_kid = np.mean([classify.kid(a[h], real) for h in halves])
    half_fd = np.mean([classify.frechet(a[h], real) for h in halves])
    assert half_kid == pytest.approx(whole_kid, rel=0.05)
    assert half_fd > 1.1 * whole_fd


@pytest.mark.parametrize("per_class", [2, 10])
def test_style_scores_hold_their_estimates(per_class):
    """StyleScorer on judges' features of real-shaped images: every interval (accuracies, KID, paired differences)
    contains its own estimate, the KID from the kernel values it keeps equals classify.kid, and fd has no interval."""
    import torch

    from raypdiff.vision.evaluate import RESAMPLED, Judges, StyleScorer, paired

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    judges = Judges(classify.SmallCNN(3), classify.SmallCNN(10), ["a", "b"])
    labels = np.repeat(np.arange(10), per_class)
    real = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    sc = StyleScorer(judges, "b", real, labels, num=50, seed=0)
    adapters = [[sc.rows(rng.integers(0, 256, (len(labels), 32, 32), dtype=np.uint8)) for _ in range(n)]
                for n in (1, 3)]
    scored = [sc.score(rows) for rows in adapters]
    feats = adapters[0][0]["features"]
    assert scored[0][0]["kid"] == pytest.approx(classify.kid(feats, sc.real), rel=1e-9)
    assert scored[0][0]["fd"] == pytest.approx(classify.frechet(feats, sc.real)) and "fd_ci" not in scored[0][0]
    called, pred = scored[1][0]["called"], np.concatenate([r["called"] for r in adapters[1]])
    assert 1 <= len(called) <= 3 and list(called.values()) == sorted(called.values(), reverse=True)
    for name, share in called.items():  # the style judge's labels over all three adapters' samples
        assert share == pytest.approx(np.mean(pred == ["plain", "a", "b"].index(name)), abs=5e-4)
    diff = paired(scored[1][0], scored[0][0], scored[1][1], scored[0][1])
    for res in (scored[0][0], scored[1][0], diff):
        for k in RESAMPLED:
            lo, hi = res[f"{k}_ci"]
            assert lo - 1e-12 <= res[k] <= hi + 1e-12, (k, res[k], lo, hi)


def test_bench_judges_picks_on_val(fmnist_test, tmp_path):
    """bench/judges.py on two tiny candidates (the config's default among them): each candidate's judges scored on
    every style's real val and test images; the pick is the best class accuracy on the worst style's val images."""
    import json
    import subprocess
    import sys

    from helpers import REPO

    r = subprocess.run([sys.executable, "bench/judges.py", "--images", "64", "--steps", "10,40", "--out",
                        str(tmp_path), "style_eval.judge_images=64", "style_eval.judge_steps=10"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "judges.json").read_text())
    rows = summary["candidates"]
    assert [(c["judge_images"], c["judge_steps"]) for c in rows] == [(64, 10), (64, 40)]
    assert summary["default"] == {"judge_images": 64, "judge_steps": 10}
    for c in rows:
        for key in ("style_val_acc", "class_val_acc", "style_test_acc", "class_test_acc"):
            by_style = c[f"{key}_by_style"]
            assert len(by_style) == len(DEFAULT_STYLES) and all(0 <= a <= 1 for a in by_style.values())
            assert np.mean(list(by_style.values())) == pytest.approx(c[key])  # as many images per style
        assert c["class_val_worst"]["acc"] == min(c["class_val_acc_by_style"].values())
    best = max(rows, key=lambda c: (c["class_val_worst"]["acc"], c["class_val_acc"], -c["seconds"]))
    assert summary["pick"] == {"judge_images": best["judge_images"], "judge_steps": best["judge_steps"]}
    md = (tmp_path / "judges.md").read_text()
    assert md.startswith("# The vision judges")
    marks = {tuple(int(x.split()[0]) for x in line.split("|")[1:3]): line.split("|")[1]
             for line in md.splitlines() if line.startswith("| 64")}
    assert "(default)" in marks[(64, 10)] and "(pick)" in marks[(best["judge_images"], best["judge_steps"])]
    assert sum("(pick)" in m for m in marks.values()) == 1


@pytest.mark.parametrize("zoo, text", [
    ({"train_steps": 200, "train_lr": 1e-3}, "200 steps at lr 0.001"),
    ({"train_steps": 200, "train_lr": None, "train_per_task": {}}, "200 steps"),
    ({"train_steps": 200, "train_lr": 1e-3, "train_per_task": {"dotted": {"steps": 600}, "outline": {"steps": 600},
                                                               "inverted": {"lr": 3e-3, "steps": 400}}},
     "200 steps at lr 0.001; 600 steps for dotted, outline; lr 0.003, 400 steps for inverted"),
])
def test_recipe_names_per_style_training(zoo, text):
    from raypdiff.vision.evaluate import recipe

    assert recipe(zoo) == text
