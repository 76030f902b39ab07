"""The README's commands, every output on a bucket of a real S3 API server (moto) on loopback, each `python -m
raypdiff.cli` on a private Ray with credentials in its environment only; in order: collect killed and resumed, train
killed and resumed from the bucket's checkpoints, generate, serve and evaluate from the bucket, the secret in no saved
file. A test whose input an earlier test did not leave on its worker's bucket (xdist ran them apart) builds it first."""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import httpx
import pyarrow.fs as pafs
import pytest
from helpers import RaypdiffProcess, data_root, s3_server, start_server, stop_server

from raypdiff import storage
from raypdiff.checkpoint import GENERATOR_FILE
from raypdiff.errors import ConfigError
from raypdiff.storage import Location
from raypdiff.zoo.store import SHARDS, check, read_meta

pytestmark = pytest.mark.full

BUCKET, SECRET = "raypdiff-e2e", "e2e-s3cret-never-saved-9c1d"
Z, G, A, E = f"s3://{BUCKET}/zoo", f"s3://{BUCKET}/gen", f"s3://{BUCKET}/adapters", f"s3://{BUCKET}/eval"


@pytest.fixture(scope="module")
def bucket():
    tmp = Path(tempfile.mkdtemp(prefix="rps3", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    common = ["-q", "-c", "configs/tiny_gen.yaml", f"data.root={data_root()}", f"collect.output_dir={Z}",
              f"trainer.output_dir={G}", f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
              f"tracking.artifact_location=s3://{BUCKET}/mlartifacts", "collect.ray_address=local"]
    try:
        with s3_server(BUCKET, SECRET) as env:
            yield {"env": env, "tmp": tmp, "common": common}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def keys(prefix: str) -> list[str]:
    """Every object key under s3://BUCKET/prefix, as bucket/key."""
    fs = Location.of(f"s3://{BUCKET}").fs
    infos = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}".rstrip("/"), recursive=True, allow_not_found=True))
    return [i.path for i in infos if i.type == pafs.FileType.File]


def run(b: dict, name: str, args: list[str]) -> RaypdiffProcess:
    return RaypdiffProcess(args, b["tmp"] / "ray", b["tmp"] / f"{name}.log")


def completes(b: dict, name: str, args: list[str], timeout: float) -> None:
    proc = run(b, name, args)
    try:
        assert proc.proc.wait(timeout=timeout) == 0, proc.tail()
    finally:
        proc.close()


def have_zoo() -> bool:
    try:
        return check(Z).complete
    except ConfigError:  # none there yet
        return False


def zoo_args(b: dict) -> list[str]:
    return ["collect", *b["common"], "train.steps=30", "collect.max_in_flight=1", "collect.max_retries=0"]


def train_args(b: dict) -> list[str]:
    return ["train", *b["common"], "autoencoder.steps=300", "diffusion.steps=300", "trainer.checkpoint_every=50"]


def wait_for(what, timeout: float, proc: RaypdiffProcess):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.proc.poll() is None:
        got = what()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"gave up waiting ({proc.proc.poll()=}):\n{proc.tail()}")


@pytest.mark.timeout(600)
def test_collect_to_a_bucket_resumes_after_a_worker_is_killed(bucket):
    args = zoo_args(bucket)
    first = run(bucket, "collect1", args)
    shards = Location.of(Z) / SHARDS
    try:
        landed = wait_for(lambda: shards.files("*.parquet"), 300, first)  # one task done, the other running
        victim = wait_for(lambda: first.workers("ray::collect_one"), 60, first)[0]
        victim.send_signal(signal.SIGKILL)
        assert first.proc.wait(timeout=120) != 0
        assert "a re-run resumes" in first.tail()
    finally:
        first.close()
    kept = {f.name: f.stat() for f in landed}
    assert len(kept) == 1 and not read_meta(Z, allow_incomplete=True).complete
    completes(bucket, "collect2", args, 300)
    meta = check(Z)  # every shard whole, the zoo complete
    assert meta.complete and len(shards.files("*.parquet")) == 2
    assert {f.name: f.stat() for f in shards.files("*.parquet") if f.name in kept} == kept  # not collected again
    assert not [f for f in shards.files() if f.name.endswith(".tmp")]


@pytest.mark.timeout(1200)
def test_train_on_a_bucket_resumes_after_the_driver_is_killed(bucket):
    if not have_zoo():
        completes(bucket, "collect", zoo_args(bucket), 300)
    args = train_args(bucket)

    def registered() -> bool:
        """The Ray Train controller has registered a checkpoint in the bucket (see test_train_fault)."""
        snaps = [k for k in keys("gen/ray") if k.endswith("/checkpoint_manager_snapshot.json")]
        return any(json.loads(Location.of(f"s3://{k}").read_text()).get("latest_checkpoint_result") for k in snaps)

    first = run(bucket, "train1", args)
    try:
        wait_for(registered, 400, first)
        first.scan()
        os.killpg(first.proc.pid, signal.SIGKILL)  # the driver and its Ray: nothing finishes the run
        first.proc.wait(timeout=30)
    finally:
        first.close()
    assert not (Location.of(G) / GENERATOR_FILE).exists()
    completes(bucket, "train2", args, 600)
    summary = json.loads((Location.of(G) / "train_summary.json").read_text())
    assert summary["generator"] == f"{G}/{GENERATOR_FILE}"
    assert summary["final"]["resumed"] is True, summary["final"]  # from the bucket's checkpoint, not step 0
    assert any(k.endswith(f"/{GENERATOR_FILE}") for k in keys("mlartifacts")), "no generator in MLflow's bucket"


@pytest.mark.timeout(1500)
def test_generate_serve_and_evaluate_on_the_bucket_and_no_secret_is_saved(bucket):
    if not (Location.of(G) / GENERATOR_FILE).exists():
        if not have_zoo():
            completes(bucket, "collect", zoo_args(bucket), 300)
        completes(bucket, "train", train_args(bucket), 600)
    completes(bucket, "generate", ["generate", "--generator", G, "--task", "SST-2", "--num", "2", "--out", A], 300)
    manifest = json.loads((Location.of(A) / "manifest.json").read_text())
    assert manifest["adapters"] == [f"{A}/adapter_000", f"{A}/adapter_001"] and manifest["generator"].startswith(G)
    with storage.local_copy(manifest["adapters"][0]) as folder:
        from peft import PeftConfig

        assert PeftConfig.from_pretrained(str(folder)).peft_type == "LORA"
    proc, url = start_server(["--generator", G, f"serve.store_dir=s3://{BUCKET}/served"], bucket["tmp"],
                             env=bucket["env"])
    try:
        r = httpx.post(f"{url}/v1/adapters", json={"task": "SST-2", "num": 1}, timeout=120)
        assert r.status_code == 200, r.text
        p = httpx.post(f"{url}/v1/predict", json={"adapter_id": r.json()["adapters"][0]["id"],
                                                   "texts": ["a fine film"]}, timeout=120)
        assert p.status_code == 200 and len(p.json()["predictions"]) == 1, p.text
        adapter = r.json()["adapters"][0]["id"]
        stored = {k.rpartition("/")[2] for k in keys(f"served/{adapter}")}
        assert {"adapter_config.json", "adapter_model.safetensors", "raypdiff.json"} <= stored, stored
        z = httpx.get(f"{url}/v1/adapters/{adapter}", timeout=60)
        assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
    finally:
        stop_server(proc)
    # evaluate --out on the bucket: the report uploaded whole (report.json last), MLflow given its files
    args = ["evaluate", "--generator", G, "--out", E, "--tasks", "SST-2", "--num", "2", "--matrix-num", "1",
            "--bootstrap", "50", "--subset-rows", "10", "--workers", "1", *bucket["common"][1:]]
    completes(bucket, "evaluate", args, 300)
    assert sorted(k.rpartition("/")[2] for k in keys("eval")) == ["report.json", "report.md", "report.png"]
    assert list(json.loads((Location.of(E) / "report.json").read_text())["tasks"]) == ["SST-2"]
    assert any(k.endswith("/report.json") for k in keys("mlartifacts")), "no report in MLflow's bucket"
    # the secret is in the environment only: not in any object of the bucket, nor any file the runs wrote
    saved = keys("")
    assert len(saved) > 10
    leaked = [k for k in saved if SECRET.encode() in Location.of(f"s3://{k}").read_bytes()]
    leaked += [str(f) for f in bucket["tmp"].rglob("*") if f.is_file() and SECRET.encode() in f.read_bytes()]
    assert not leaked, leaked
