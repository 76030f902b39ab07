"""Test rows feed nothing: a generator trained on a zoo whose test scores and test predictions are scrambled is
the same generator (it samples identical vectors)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import REPO, private_ray_env

from raypdiff.generate import Generator

pytestmark = pytest.mark.full  # end to end: the full tier

CONFIG = REPO / "configs" / "tiny_gen.yaml"  # the same zoo settings as configs/tiny.yaml, the tiny_zoo fixture's


def scramble_test_columns(zoo: Path, seed: int = 0) -> None:
    """Give every capture scored on test a random test score and shuffled test predictions (val `value` and the
    vectors untouched)."""
    rng = np.random.default_rng(seed)
    for f in sorted((zoo / "shards").glob("*.parquet")):
        t = pq.read_table(f)
        values = [None if v is None else float(rng.uniform()) for v in t["test_value"].to_pylist()]
        preds = [None if p is None else rng.permutation(p).tolist() for p in t["test_pred"].to_pylist()]
        t = t.set_column(t.schema.get_field_index("test_value"), "test_value", pa.array(values, pa.float64()))
        t = t.set_column(t.schema.get_field_index("test_pred"), "test_pred", pa.array(preds, pa.list_(pa.float32())))
        pq.write_table(t, f)


def train(zoo: Path, out: Path, data_dir: Path, ray_tmp: Path) -> Path:
    r = subprocess.run([sys.executable, "-m", "raypdiff.cli", "train", "-q", "-c", str(CONFIG), f"data.root={data_dir}",
                        f"collect.output_dir={zoo}", f"trainer.output_dir={out}", "tracking.enabled=false"],
                       cwd=REPO, env=private_ray_env(ray_tmp), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return out  # the generator folder


@pytest.mark.timeout(1800)
def test_scrambled_test_scores_train_the_same_generator(tiny_zoo, tiny_generator, data_dir, tmp_path):
    """Against the session's generator: the same settings on the unscrambled zoo (its MLflow tracking draws no
    random numbers)."""
    shuffled = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, shuffled)
    scramble_test_columns(shuffled)
    before = pq.read_table(tiny_zoo / "shards" / "SST-2__seed0.parquet")
    after = pq.read_table(shuffled / "shards" / "SST-2__seed0.parquet")
    assert after["test_value"].to_pylist() != before["test_value"].to_pylist()  # scrambled
    assert after["value"].equals(before["value"]) and after["vector"].equals(before["vector"])
    ray_tmp = Path(tempfile.mkdtemp(prefix="rpl", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    try:
        b = Generator(train(shuffled, tmp_path / "gen_b", data_dir, ray_tmp))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    a = Generator(tiny_generator["dir"])
    for task in ("SST-2", "STS-B"):
        va = a.vectors(a.conditions(task, 3), task, seed=5)
        vb = b.vectors(b.conditions(task, 3), task, seed=5)
        np.testing.assert_array_equal(va, vb)
