"""A damaged zoo (configs/tiny.yaml's, copied per case): `raypdiff train` refuses it before Ray starts with one error
line naming the shard and the repair; `raypdiff collect` with the zoo's config repairs it, setting the bad shards
aside in <zoo>/damaged/ and collecting them again."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, private_ray_env

from raypdiff import cli, lora
from raypdiff.zoo.store import check, load_table, shard_name, shard_problem

SST, STSB = shard_name("SST-2", 0), shard_name("STS-B", 0)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _rewrite(path: Path, change) -> None:
    """Apply change(vectors: list of (P,) arrays) and write the shard back with its own schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    vectors = [np.asarray(v, np.float32) for v in t["vector"].to_pylist()]
    change(vectors)
    field = t.schema.field("vector")
    pq.write_table(t.set_column(t.schema.get_field_index("vector"), field, pa.array(vectors, field.type)), path)


def _nan(vectors):
    vectors[1][7] = np.nan


def _short(vectors):
    vectors[0] = vectors[0][:-1]


def _drop_row(path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(pq.read_table(path).slice(0, 2), path)


# Each case damages a copy's shards folder and returns the name of the file the error must name.

def _truncated(d):
    _truncate(d / SST)
    return SST


def _nan_in_vector(d):
    _rewrite(d / STSB, _nan)
    return STSB


def _vector_too_short(d):
    _rewrite(d / SST, _short)
    return SST


def _row_missing(d):
    _drop_row(d / STSB)
    return STSB


def _task_not_in_meta(d):
    shutil.copy(d / SST, d / "RTE__seed0.parquet")
    return "RTE__seed0.parquet"


def _seed_not_in_meta(d):
    shutil.copy(d / SST, d / "SST-2__seed1.parquet")
    return "SST-2__seed1.parquet"


def _another_tasks_rows(d):
    shutil.copy(d / STSB, d / SST)
    return SST


def _shard_missing(d):
    (d / STSB).unlink()
    return STSB


# (damage, text the error line must contain)
DAMAGE = [
    pytest.param(_truncated, "unreadable", id="truncated"),
    pytest.param(_nan_in_vector, "NaN or Inf", id="nan-in-vector"),
    pytest.param(_vector_too_short, "vectors of length", id="vector-too-short"),
    pytest.param(_row_missing, "2 rows, the zoo's capture.num is 3", id="row-missing"),
    pytest.param(_task_not_in_meta, "a shard meta.json does not list", id="task-not-in-meta"),
    pytest.param(_seed_not_in_meta, "a shard meta.json does not list", id="seed-not-in-meta"),
    pytest.param(_another_tasks_rows, "rows of another (task, seed)", id="another-tasks-rows"),
    pytest.param(_shard_missing, "missing", id="shard-missing"),
]


@pytest.fixture
def no_ray(monkeypatch):
    """train must fail in `prepare`, before Ray starts: make starting it a test failure."""
    import ray

    def refuse(*a, **k):
        raise AssertionError("Ray was started for a zoo that should have been rejected first")

    monkeypatch.setattr(ray, "init", refuse)
    yield
    assert not ray.is_initialized()


@pytest.mark.parametrize("damage,match", DAMAGE)
def test_train_refuses_damaged_zoo(tiny_zoo, tmp_path, capsys, no_ray, damage, match):
    copy = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, copy)
    name = damage(copy / "shards")
    rc = cli.main(["train", "-q", "--zoo", str(copy), "-c", str(REPO / "configs" / "tiny_gen.yaml"),
                   f"trainer.output_dir={tmp_path / 'gen'}", "tracking.enabled=false"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(err) == 1, "\n".join(err[-10:])
    assert err[0].startswith(f"raypdiff: error: {copy / 'shards' / name}: "), err[0]
    assert match in err[0] and f"re-run `raypdiff collect -c {copy / 'config.yaml'}`" in err[0], err[0]
    assert not any((tmp_path / "gen").glob("generator.*"))


@pytest.mark.timeout(900)
def test_collect_repairs_damaged_shards(tiny_zoo):
    """One collect with the zoo's own config over a truncated shard, a NaN shard and a shard of a task the config
    does not list: the three move to <zoo>/damaged/ unchanged, the two listed ones are collected again and the
    zoo passes `zoo.store.check`."""
    tmp = Path(tempfile.mkdtemp(prefix="rpr", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    try:
        copy = tmp / "zoo"
        shutil.copytree(tiny_zoo, copy)
        shards = copy / "shards"
        _truncate(shards / SST)
        _rewrite(shards / STSB, _nan)
        shutil.copy(tiny_zoo / "shards" / SST, shards / "RTE__seed0.parquet")
        damaged = {f.name: f.read_bytes() for f in shards.iterdir()}

        r = subprocess.run([sys.executable, "-m", "raypdiff.cli", "collect", "-c", str(copy / "config.yaml"),
                            f"collect.output_dir={copy}", "tracking.enabled=false"],
                           cwd=REPO, env=private_ray_env(tmp / "ray"), capture_output=True, text=True, timeout=800)
        assert r.returncode == 0, r.stderr[-3000:]

        assert {f.name: f.read_bytes() for f in (copy / "damaged").iterdir()} == damaged
        assert sorted(f.name for f in shards.iterdir()) == [SST, STSB]
        for name, problem in ((SST, "unreadable"), (STSB, "NaN or Inf")):
            assert f"{shards / name}: {problem}" in r.stderr and "collecting it again" in r.stderr
        assert f"{shards / 'RTE__seed0.parquet'}: not a (task, seed) of this config" in r.stderr

        meta = check(copy)  # raises unless every listed shard is whole, finite and of the right layout
        assert meta.complete is True
        for task in ("SST-2", "STS-B"):
            size = lora.Layout.from_json(meta.tasks[task].layout).size
            assert shard_problem(shards / shard_name(task, 0), task, 0, size, 3) is None
        t = load_table(copy).to_pandas()
        assert sorted(zip(t.task, t.step)) == [(task, s) for task in ("SST-2", "STS-B") for s in (4, 5, 6)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
