"""bench/fewshot.py on one real task at a tiny size (base body + built heads vs SetFit, the real setfit package on the
packaged model), and macro-F1 against scikit-learn's."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO

from raypdiff.stats import metric_rows
from raypdiff.tasks import score


def test_macro_f1_is_scikit_learns():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for labels in (2, 3, 6):
        y, p = rng.integers(0, labels, (20, 50)), rng.integers(0, labels, (20, 50))
        p[:5] = 0  # some predictions of one class only
        want = [f1_score(a, b, average="macro") for a, b in zip(y, p)]
        np.testing.assert_allclose(metric_rows("macro_f1", p, y), want, atol=1e-12)
        assert score("macro_f1", p[0], y[0]) == pytest.approx(want[0])


@pytest.mark.full  # SetFit trains, in a fresh interpreter
def test_fewshot_bench_on_one_task(data_dir, tmp_path):
    r = subprocess.run([sys.executable, "bench/fewshot.py", "--data-root", str(data_dir), "--tasks", "CR", "--k", "2,4",
                        "--setfit-k", "2", "--draws", "1", "--bootstrap", "100", "--work", str(tmp_path / "w"),
                        "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "fewshot.json").read_text())
    assert set(report["summary"]) == {"2", "4"}
    k2 = report["summary"]["2"]
    assert {"base+prototype", "base+logistic", "base+auto", "majority", "setfit"} <= set(k2)
    assert "setfit" not in report["summary"]["4"]  # SetFit only at --setfit-k
    assert sum(k2["base+auto vs setfit"].values()) == 1
    for block in report["summary"].values():
        for m, v in block.items():
            if "macro_f1" in v:
                assert v["ci"][0] - 1e-9 <= v["macro_f1"] <= v["ci"][1] + 1e-9, (m, v)
    for m, v in report["tasks"]["CR"]["k"]["2"]["methods"].items():
        for metric in ("accuracy", "macro_f1"):
            est = v[metric]
            assert est["ci"][0] - 1e-9 <= est["mean"] <= est["ci"][1] + 1e-9, (m, metric, est)
    assert k2["setfit"]["seconds_per_adapter"] > k2["base+auto"]["seconds_per_adapter"]
    assert (tmp_path / "out" / "fewshot.md").read_text().startswith("# New tasks without a zoo")
    again = subprocess.run([sys.executable, "bench/fewshot.py", "--data-root", str(data_dir), "--tasks", "CR", "--k",
                            "2,4", "--setfit-k", "2", "--draws", "1", "--bootstrap", "100", "--work",
                            str(tmp_path / "w"), "--out", str(tmp_path / "out2")], cwd=REPO, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]  # resumed: the finished task is read back, not re-run
    assert json.loads((tmp_path / "out2" / "fewshot.json").read_text())["summary"] == report["summary"]
