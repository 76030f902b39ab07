"""Outputs on a local disk or an S3 bucket through one code path: raypdiff.storage, the zoo's shard store, the
generator checkpoint and MLflow artifacts, each run against a real S3 API server (moto) on loopback, in process."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import BUCKET, SECRET

from raypdiff import checkpoint, storage, tracking
from raypdiff.config import Config, ConfigError
from raypdiff.storage import Location
from raypdiff.zoo.derive import select_tasks, subsample
from raypdiff.zoo.store import (SHARDS, Capture, TaskInfo, ZooMeta, check, fingerprint, get_vector, load_table,
                                shard_name, shard_problem, task_arrays, write_shard)


def objects(loc: Location) -> list[str]:
    import pyarrow.fs as pafs

    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True, allow_not_found=True))
    return sorted(i.path[len(loc.path) + 1:] for i in infos if i.type == pafs.FileType.File)


@pytest.mark.parametrize("given,uri,local", [
    ("runs/zoo", False, True), ("file:///tmp/zoo", False, True), ("s3://bucket/zoo", True, False),
    ("gs://bucket/zoo", True, False)])
def test_is_uri(given, uri, local):
    assert storage.is_uri(given) is uri
    if local:
        assert Location.of(given).is_local and str(Location.of(given)).startswith("/")


@pytest.mark.parametrize("given,message", [
    ("s3:///zoo", "a URI needs a bucket"), ("nosuchproto://bucket/zoo", "nosuchproto:// URIs need an fsspec driver")])
def test_bad_uris_fail_in_one_line(given, message):
    with pytest.raises(ConfigError, match=message):
        Location.of(given)


@pytest.mark.parametrize("given,message", [
    ("s3://AKIAKEY:topsecret@bucket/zoo", "URIs take no user, password or query"),
    ("s3://bucket/zoo?endpoint_override=localhost:9000", "URIs take no user, password or query")])
def test_credentials_in_a_uri_are_refused_without_echoing_them(given, message):
    with pytest.raises(ConfigError, match=message) as e:
        Location.of(given, "collect.output_dir")
    assert str(e.value).startswith("collect.output_dir: ") and "topsecret" not in str(e.value)


@pytest.mark.parametrize("key", ["uri", "artifact_location"])
def test_a_password_in_a_tracking_setting_is_refused(key):
    with pytest.raises(ConfigError, match=f"tracking.{key}: holds a password"):
        Config.from_dict({"tracking": {key: "postgresql://mlflow:hunter2@db/mlflow"}})


@pytest.mark.parametrize("zoo_dir,db", [("/x/zoo", "/x/mlflow.db"), ("file:///x/zoo", "/x/mlflow.db"),
                                        ("/x/zoo/../zoo", "/x/mlflow.db")])
def test_default_tracking_store_sits_beside_a_local_zoo(zoo_dir, db):
    assert tracking.tracking_uri(Config.from_dict({"collect": {"output_dir": zoo_dir}})) == f"sqlite:///{db}"


def test_a_bucketed_zoo_needs_a_tracking_store():
    cfg = Config.from_dict({"collect": {"output_dir": "s3://bucket/zoo"}})
    with pytest.raises(ConfigError, match="tracking.uri: set it"):
        tracking.tracking_uri(cfg)


def test_write_read_list_and_no_temporary_left(where):
    (where / "a.txt").write_text("one")
    (where / "sub" / "b.parquet").write_bytes(b"\x00" * 10)
    (where / "sub" / "c.parquet").write_bytes(b"")
    assert (where / "a.txt").read_text() == "one" and (where / "a.txt").is_file() and where.is_dir()
    assert [f.name for f in (where / "sub").files("*.parquet")] == ["b.parquet", "c.parquet"]
    assert (where / "sub" / "b.parquet").stat()[0] == 10
    assert (where / "none").files() == [] and not (where / "none").exists()
    assert objects(where) == ["a.txt", "sub/b.parquet", "sub/c.parquet"]  # no .tmp left behind


def test_a_failed_write_leaves_nothing(where):
    target = where / "shard.parquet"
    with pytest.raises(RuntimeError):
        with target.temporary() as tmp:
            with tmp.fs.open_output_stream(tmp.path) as f:
                f.write(b"half a shard")
            raise RuntimeError("the worker died here")
    assert not target.exists() and objects(where) == []


def test_move_copy_remove(where):
    (where / "x").write_text("x")
    (where / "x").move_to(where / "d" / "y")
    (where / "d" / "y").copy_to(where / "z")
    assert objects(where) == ["d/y", "z"] and (where / "z").read_text() == "x"
    (where / "d").remove_tree()
    assert objects(where) == ["z"]


def test_unwritable_says_why_for_a_missing_bucket(s3):
    assert "NO_SUCH_BUCKET" in Location.of("s3://no-such-bucket-here/zoo").unwritable()
    assert Location.of(f"s3://{BUCKET}/probe").unwritable() is None


def test_a_local_location_passes_as_a_path_and_a_uri_does_not(s3, tmp_path):
    import os

    assert os.fspath(Location.of(tmp_path / "x")) == str(tmp_path / "x") == str(Path(Location.of(tmp_path / "x")))
    with pytest.raises(ConfigError, match=f"s3://{BUCKET}/x: needs a local path here, not a URI"):
        os.fspath(Location.of(f"s3://{BUCKET}/x"))


def test_local_copy_and_local_folder_round_trip(where, tmp_path):
    with storage.local_folder(where / "adapters") as out:
        (out / "adapter_000").mkdir(parents=True)
        (out / "adapter_000" / "adapter_config.json").write_text("{}")
    assert objects(where / "adapters") == ["adapter_000/adapter_config.json"]
    with storage.local_copy(where / "adapters") as local:
        assert (local / "adapter_000" / "adapter_config.json").read_text() == "{}"


def test_local_folder_uploads_the_named_files_last_and_nothing_on_an_error(where, monkeypatch):
    written = []
    write = Location.write_bytes
    monkeypatch.setattr(Location, "write_bytes", lambda self, data: (written.append(self.name), write(self, data)))
    with storage.local_folder(where / "r", last=("report.json",), setting="--out") as out:
        out.mkdir(parents=True, exist_ok=True)  # as its callers do (writable): for a disk, the folder itself
        for name in ("report.json", "report.md", "report.png"):
            (out / name).write_text(name)
        assert objects(where / "r") == ([] if not where.is_local else ["report.json", "report.md", "report.png"])
    assert objects(where / "r") == ["report.json", "report.md", "report.png"]
    assert written[-1:] == ([] if where.is_local else ["report.json"])  # a reader of report.json sees a whole report
    with pytest.raises(RuntimeError), storage.local_folder(where / "failed", setting="--out") as out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text("half")
        raise RuntimeError("the scoring failed")
    assert objects(where / "failed") == ([] if not where.is_local else ["report.md"])


def test_local_folder_fetches_what_a_resumed_run_reads_back(where):
    (where / "r" / "pictures.json").write_text("{}")
    with storage.local_folder(where / "r", fetch=("pictures.json", "map.png")) as out:
        assert (out / "pictures.json").read_text() == "{}" and not (out / "map.png").exists()
        (out / "holdout.json").write_text("{}")
    assert objects(where / "r") == ["holdout.json", "pictures.json"]


def test_writable_names_the_setting(where, tmp_path):
    assert storage.writable(where / "sweep", "sweep.output_dir") == where / "sweep"
    (tmp_path / "file").write_text("")
    bad = "s3://no-such-bucket-here/sweep" if not where.is_local else str(tmp_path / "file" / "sweep")
    with pytest.raises(ConfigError, match=r"^sweep.output_dir: \S+ is not writable \(.+\)$"):
        storage.writable(bad, "sweep.output_dir")
    with pytest.raises(ConfigError, match="^--out: s3:///r: a URI needs a bucket"):
        with storage.local_folder("s3:///r", setting="--out"):
            pass


def test_cached_copy_is_fetched_once_per_version(where, monkeypatch, tmp_path):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    (where / "pipeline" / "unet" / "w.bin").write_bytes(b"1")
    first = storage.cached_copy(where / "pipeline", "vision.base_dir")
    assert (first / "unet" / "w.bin").read_bytes() == b"1"
    if where.is_local:
        assert first == where.local() / "pipeline"
        return
    monkeypatch.setattr(Location, "download", lambda *a: pytest.fail("fetched again"))
    assert storage.cached_copy(where / "pipeline") == first
    monkeypatch.undo()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    time.sleep(1.1)  # S3 keeps modification times to the second
    (where / "pipeline" / "unet" / "w.bin").write_bytes(b"22")  # a retrained base: fetched again
    second = storage.cached_copy(where / "pipeline")
    assert second != first and (second / "unet" / "w.bin").read_bytes() == b"22"
    assert sorted(p.name for p in (tmp_path / "tmp" / "raypdiff-cache").iterdir()) == sorted([first.name, second.name])


def test_the_vision_base_pipeline_is_read_from_a_bucket(where):
    from raypdiff.vision.domain import pipeline_source

    cfg = Config.from_dict({"domain": "vision", "condition": {"encoder": "onehot"},
                            "vision": {"base_dir": str(where / "base")}})
    with pytest.raises(ConfigError, match=f"no vision base pipeline in {where / 'base' / 'pipeline'}: build it"):
        pipeline_source(cfg)
    (where / "base" / "pipeline" / "model_index.json").write_text("{}")
    assert (Path(pipeline_source(cfg)) / "model_index.json").read_text() == "{}"


# ---- the zoo's shard store ----

TASKS, SEEDS, ROWS, LAYOUT = ["a", "b"], [0, 1], 3, [["w", [2, 3]]]


def make_zoo(where: Location) -> Location:
    """A small zoo written by the store's own writers (shards, then meta.json marked complete)."""
    rng = np.random.default_rng(0)
    for t in TASKS:
        for s in SEEDS:
            write_shard(where / SHARDS / shard_name(t, s), t, s, "accuracy", [1, 2, 3],
                        list(rng.random(ROWS)), rng.standard_normal((ROWS, 6)).astype(np.float32),
                        [0.5, None, 0.6], [np.zeros(4, np.float32), None, np.ones(4, np.float32)])
    meta = ZooMeta(complete=True, base_model={}, lora={}, capture=Capture(ROWS, 1, SEEDS), train={}, eval={},
                   tasks={t: TaskInfo(spec={}, metric="accuracy", num_labels=2, splits={}, label_mean=0.5, majority=0.5,
                                      layout=LAYOUT) for t in TASKS}, versions={})
    (where / "meta.json").write_text(json.dumps(meta.to_dict()))
    return where


def test_zoo_reads_the_same_from_a_bucket_as_from_a_disk(where, tmp_path):
    local = make_zoo(Location.of(tmp_path / "ref"))
    there = make_zoo(where)
    assert check(there).tasks == check(local).tasks
    a, b = task_arrays(there, test=True), task_arrays(local, test=True)
    for t in TASKS:
        np.testing.assert_array_equal(a[t]["vector"], b[t]["vector"])
        assert sorted(a[t]["test_pred"]) == [0, 2, 3, 5]
    np.testing.assert_array_equal(get_vector(there, "a", 1, 2), get_vector(local, "a", 1, 2))


def test_fingerprint_follows_the_contents(where):
    there = make_zoo(where)
    before = fingerprint(there)
    assert fingerprint(there) == before
    write_shard(there / SHARDS / shard_name("a", 0), "a", 0, "accuracy", [1, 2, 3], [0.1] * 3,
                np.zeros((ROWS, 6), np.float32), [None] * 3, [None] * 3)
    assert fingerprint(there) != before


def test_a_damaged_shard_is_named_with_its_uri(where):
    there = make_zoo(where)
    (there / SHARDS / shard_name("b", 1)).write_bytes(b"not parquet")
    with pytest.raises(ConfigError, match=rf"{str(there)}/shards/b__seed1.parquet: unreadable"):
        check(there)


def test_a_leftover_temporary_is_not_a_shard(where):
    there = make_zoo(where)
    (there / SHARDS / ".a__seed0.parquet.1234abcd.tmp").write_bytes(b"half a shard from a killed writer")
    assert check(there).complete and len(load_table(there)) == len(TASKS) * len(SEEDS) * ROWS


def test_a_read_error_on_a_bucket_moves_nothing(s3):
    with pytest.raises(ConfigError, match="cannot read it now .*nothing was moved"):
        shard_problem(f"s3://no-such-bucket-here/zoo/{SHARDS}/a__seed0.parquet", "a", 0, 6, ROWS)


def test_derived_zoos_on_a_bucket(where):
    there = make_zoo(where / "full")
    picked = select_tasks(there, ["b"], where / "only_b")
    assert list(check(picked).tasks) == ["b"]
    assert objects(picked) == ["meta.json", "shards/b__seed0.parquet", "shards/b__seed1.parquet"]
    sub = subsample(there, 3, seed=1, out_dir=where / "sub")
    assert sum(len(v["vector"]) for v in task_arrays(sub).values()) == 3 * len(TASKS)
    assert json.loads((sub / "meta.json").read_text())["subsample"]["of"] == str(there)


# ---- the generator checkpoint ----

def test_checkpoint_round_trip_on_a_bucket(tiny_state, s3):
    cfg, state, prep = tiny_state
    saved = checkpoint.from_training(cfg, state, prep)
    folder = Location.of(f"s3://{BUCKET}/gen")
    checkpoint.save(folder / checkpoint.GENERATOR_FILE, saved)
    back = checkpoint.load(str(folder))  # the folder, by URI
    for k, v in saved.ae.items():
        assert np.array_equal(back.ae[k].numpy(), v.numpy())
    assert back.task_names == saved.task_names and objects(folder) == [checkpoint.GENERATOR_FILE]
    with pytest.raises(ConfigError, match=f"generator not found at s3://{BUCKET}/nothing"):
        checkpoint.load(f"s3://{BUCKET}/nothing")


# ---- MLflow artifacts ----

def test_mlflow_artifacts_go_to_the_bucket_and_no_secret_is_saved(s3, tmp_path):
    report = tmp_path / "report.md"
    report.write_text("# a report\n")
    cfg = Config.from_dict({"tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "bucketed",
                                         "artifact_location": f"s3://{BUCKET}/mlartifacts"}})
    run_id = tracking.log_report(cfg, "evaluate", {"score": 1.0}, [report])
    assert f"{run_id}/artifacts/report.md" in "\n".join(objects(Location.of(f"s3://{BUCKET}/mlartifacts")))
    assert SECRET.encode() not in (tmp_path / "mlflow.db").read_bytes()
    relative = Config.from_dict({"tracking": {"uri": cfg.tracking.uri, "experiment": "relative",
                                              "artifact_location": "rel/mlartifacts"}})
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        for _ in range(2):  # MLflow stores it made absolute: the second run must not see another location
            tracking.log_report(relative, "evaluate", {"score": 1.0}, [report])
    # the experiment keeps its location: another one asked of it is an error, not a silent split
    other = Config.from_dict({**cfg.to_dict(), "tracking": {**cfg.to_dict()["tracking"],
                                                             "artifact_location": f"s3://{BUCKET}/elsewhere"}})
    with pytest.raises(ConfigError, match="tracking.artifact_location: the experiment 'bucketed' keeps its artifacts"):
        tracking.log_report(other, "evaluate", {"score": 1.0}, [report])
