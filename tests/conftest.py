"""Shared fixtures: the real data root (the repo's sibling `shared/data`, or RAYPDIFF_DATA_DIR; missing → skip,
or fail under CI=true), and the tiny zoos and generator built once per run on a private local Ray, shared by
pytest-xdist's workers (`-n 2`). Tiers: a test that uses a trained fixture or a Ray cluster is in the full tier (marker `full`), as are the files
and tests marked so; the default run is the rest."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from filelock import FileLock
from helpers import REPO, data_root, in_ci, missing_data, private_ray_env, s3_server


os.environ.setdefault("RAYPDIFF_DASHBOARD", "0")  # every local Ray the tests start (raypdiff.cluster.connect)

FULL_FIXTURES = {"tiny_zoo", "holdout_zoo", "tiny_generator", "local_ray", "ray_head", "style_zoo"}  # trained fixtures and Ray clusters


SPREAD = {"test_bench_scripts.py"}  # files of independent tests that xdist may spread over its workers one by one


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if FULL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.full)
        if item.path.name not in SPREAD:  # (`--dist loadgroup`) a file's module fixtures are built once, in order
            item.add_marker(pytest.mark.xdist_group(item.path.name))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    problem = missing_data(root, in_ci())
    if problem is not None:
        action, msg = problem
        if action == "fail":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def packaged_data() -> None:
    """The packages that ship the packaged tasks' rows (skip where absent; under CI=true, fail: .ci/run installs
    them)."""
    from raypdiff import packaged

    absent = packaged.missing()
    if absent:
        msg = f"packaged tasks need {', '.join(absent)}: {packaged.INSTALL}"
        if in_ci():
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def repo_dir() -> Path:
    return REPO


def built_once(factory: pytest.TempPathFactory, name: str, build) -> Path:
    """`build(folder)` run once per test run, however many xdist workers ask: the first builds under a lock, the
    others wait and reuse its folder; a build that failed is tried again by the next. pytest keeps the folder with its
    run's temp files (the last three runs)."""
    root = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this run
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def cli(args: list[str], what: str) -> None:
    """`raypdiff <args>` on a private Ray (its temp files in a short /tmp folder: socket paths stay < 108 chars)."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rpf", dir="/tmp"))
    try:
        r = subprocess.run([sys.executable, "-m", "raypdiff.cli", *args], cwd=REPO, env=private_ray_env(ray_tmp),
                           capture_output=True, text=True, timeout=900)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert r.returncode == 0, f"{what}: {r.stderr[-3000:]}"


@pytest.fixture(scope="session")
def tiny_zoo(data_dir, tmp_path_factory) -> Path:
    """configs/tiny.yaml's zoo (SST-2 and STS-B, seed 0, 3 captures each). Shared: tests that damage a zoo copy
    it first."""
    return built_once(tmp_path_factory, "tiny_zoo", lambda d: cli(
        ["collect", "-q", "-c", "configs/tiny.yaml", f"data.root={data_dir}", f"collect.output_dir={d / 'zoo'}",
         "tracking.enabled=false"], "tiny zoo")) / "zoo"


@pytest.fixture(scope="session")
def holdout_zoo(data_dir, tmp_path_factory) -> Path:
    """configs/tiny_holdout.yaml's zoo (five small tasks, a twin pair and a regression task among them), for the
    unseen-task runs. Shared, read only."""
    return built_once(tmp_path_factory, "holdout_zoo", lambda d: cli(
        ["collect", "-q", "-c", "configs/tiny_holdout.yaml", f"data.root={data_dir}",
         f"collect.output_dir={d / 'zoo'}", "tracking.enabled=false"], "holdout zoo")) / "zoo"


@pytest.fixture(scope="session")
def tiny_generator(tiny_zoo, data_dir, tmp_path_factory) -> dict:
    """configs/tiny_gen.yaml's generator trained on `tiny_zoo` and registered in its own MLflow store:
    {"dir", "uri" (the store), "model" (models:/ URI)}."""
    def build(d: Path) -> None:
        cli(["train", "-q", "-c", "configs/tiny_gen.yaml", "--zoo", str(tiny_zoo), f"data.root={data_dir}",
             f"trainer.output_dir={d / 'gen'}", f"tracking.uri={store(d)}"], "tiny generator")

    def store(d: Path) -> str:
        return f"sqlite:///{d / 'mlflow.db'}"  # d is absolute → sqlite:////tmp/...

    d = built_once(tmp_path_factory, "tiny_generator", build)
    return {"dir": d / "gen", "uri": store(d), "model": "models:/raypdiff-generator/1"}


@pytest.fixture(scope="session")
def tiny_state():
    """A tiny generator's training state, in process (no Ray): (config, state, prep) as train.fit leaves them."""
    from test_generator_units import make_prep, run_fit, tiny_cfg, tiny_data

    cfg = tiny_cfg(ae_steps=3, diff_steps=3)
    _, norm, data, bank = tiny_data()
    state, _, _ = run_fit(cfg, data)
    return cfg, state, make_prep(norm, bank)


@pytest.fixture(scope="session")
def fmnist_test():
    """Fashion-MNIST's 10,000 test images and labels (skipped where the Debian package is not installed)."""
    from raypdiff.config import ConfigError
    from raypdiff.vision import fashion

    try:
        return fashion.load("test")
    except ConfigError as e:
        pytest.skip(str(e))


# ---- object storage: a real S3 API server (moto) in this process, on loopback ----

BUCKET = "raypdiff-test"
SECRET = "s3cret-never-written-anywhere-7f3a"


@pytest.fixture(scope="session")
def s3():
    """A loopback S3 server and a bucket; credentials only in the environment, as a user would set them."""
    with s3_server(BUCKET, SECRET) as env:
        yield env


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path):
    """The same test on a local folder and on a bucket prefix of its own."""
    from raypdiff.storage import Location

    if request.param == "local":
        return Location.of(tmp_path / "out")
    request.getfixturevalue("s3")
    return Location.of(f"s3://{BUCKET}/{request.node.name.replace('[', '-').rstrip(']')}")
