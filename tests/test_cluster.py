"""cluster.yaml against Ray's own cluster-launcher schema, and a zoo built by `ray job submit` on a real Ray head.

The integration test starts its own `ray start --head --block` in a private temp dir and process group and
stops it by signalling that group (never `ray stop`, which would kill every Ray on the machine).
"""
from __future__ import annotations

import copy
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.full  # end to end: the full tier

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]  # the `ray` command of this interpreter


# ---- (a) the cluster-launcher config ----

def _prepared(config: dict) -> dict:
    """What `ray up` validates: the config merged with the provider's defaults.yaml (see commands._bootstrap_config)."""
    from ray.autoscaler._private.util import prepare_config

    return prepare_config(copy.deepcopy(config))


def _validate(config: dict) -> None:
    from ray.autoscaler._private.util import validate_config

    validate_config(_prepared(config))


@pytest.fixture(scope="module")
def cluster_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_validates_against_ray_schema(cluster_config):
    _validate(cluster_config)  # raises jsonschema.ValidationError / ValueError when invalid
    # Also valid as written, before defaults fill the gaps.
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cluster_config, schema)


def test_cluster_yaml_content(cluster_config):
    c = cluster_config
    assert c["provider"]["type"] == "aws" and c["provider"]["region"]
    types = c["available_node_types"]
    assert c["head_node_type"] in types
    workers = {k: v for k, v in types.items() if k != c["head_node_type"]}
    gpu = [v for v in workers.values() if v["resources"].get("GPU", 0) >= 1]
    cpu = [v for v in workers.values() if v["resources"].get("CPU", 0) >= 1 and not v["resources"].get("GPU")]
    assert gpu and cpu, "needs a CPU worker type and a GPU worker type"
    for v in workers.values():
        assert 0 <= v["min_workers"] <= v["max_workers"] <= c["max_workers"]
    setup = "\n".join(c["setup_commands"])
    assert "raypdiff" in setup and "torch" in setup
    header = CLUSTER_YAML.read_text().split("cluster_name:")[0]
    for needle in ("ray up cluster.yaml", "ray job submit", "jobs/collect.py", "data.root", "output_dir"):
        assert needle in header, f"header comment should mention {needle}"


@pytest.mark.parametrize("breakage", ["unknown_top_level_key", "negative_resource", "string_max_workers",
                                      "unknown_head_node_type", "min_workers_over_global_max"])
def test_broken_cluster_config_is_rejected(cluster_config, breakage):
    import jsonschema

    c = copy.deepcopy(cluster_config)
    if breakage == "unknown_top_level_key":
        c["max_wrokers"] = 3
    elif breakage == "negative_resource":
        c["available_node_types"]["gpu_worker"]["resources"]["GPU"] = -1
    elif breakage == "string_max_workers":
        c["available_node_types"]["cpu_worker"]["max_workers"] = "eight"
    elif breakage == "unknown_head_node_type":
        c["head_node_type"] = "no_such_type"
    elif breakage == "min_workers_over_global_max":
        c["available_node_types"]["cpu_worker"]["min_workers"] = c["max_workers"] + 1
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        _validate(c)


# ---- (b) a zoo collected through `ray job submit` on a real local head ----

def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _clean_env(token: str | None = None) -> dict:
    """Our environment without any pointer to another Ray; with `token`, Ray token auth using that token."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    if token is not None:
        # Ray 2.60 turns token auth on for `ray start` when ~/.ray/auth_token exists, but clients only send a
        # token when RAY_AUTH_MODE=token; give the head, its jobs and our clients one private token.
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    return env


def _descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _stop_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the process group we started (and any descendant that left it), then SIGKILL what remains."""
    import psutil

    kids = _descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    _, alive = psutil.wait_procs(kids, timeout=5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    if proc.poll() is None:
        proc.wait(timeout=10)


def _wait_dashboard(url: str, headers: dict, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ray start exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            req = urllib.request.Request(f"{url}/api/jobs/", headers=headers)
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError as e:
            last = e
        time.sleep(1.0)
    print(f"last dashboard error: {last!r}")
    pytest.fail(f"dashboard at {url} did not answer within {timeout:.0f}s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def ray_head():
    """A private Ray head: `ray start --head --block` in its own session, its own temp dir and ports."""
    tmp = Path(tempfile.mkdtemp(prefix="rph", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    gcs, dash, agent_http, agent_grpc, rt_env, metrics, nm, om, client = _free_ports(9)
    log = tmp / "ray_start.log"
    token = secrets.token_hex(32)
    cmd = [*RAY_CLI, "start", "--head", "--block",
           f"--port={gcs}", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", "--num-cpus=2",
           "--include-dashboard=true", f"--temp-dir={tmp / 'ray'}", "--disable-usage-stats",
           f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--runtime-env-agent-port={rt_env}", f"--metrics-export-port={metrics}",
           f"--node-manager-port={nm}", f"--object-manager-port={om}", f"--ray-client-server-port={client}"]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_clean_env(token), cwd=tmp,
                                start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        headers = {"Authorization": f"Bearer {token}"}
        _wait_dashboard(url, headers, proc, log)
        yield {"url": url, "tmp": tmp, "log": log, "token": token, "headers": headers}
    finally:
        _stop_group(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def check_zoo(zoo: Path, tasks: dict[str, list[int]], seeds: list[int]) -> None:
    """meta complete, one shard per (task, seed), exactly the expected rows, no duplicates, layout-sized vectors."""
    from raypdiff.zoo.store import load_table, read_meta, shard_name

    meta = read_meta(zoo)  # raises if the zoo is incomplete
    assert meta.complete is True
    assert sorted(meta.tasks) == sorted(tasks)
    shards = sorted(p.name for p in (zoo / "shards").iterdir())
    assert shards == sorted(shard_name(t, s) for t in tasks for s in seeds), shards  # no leftover temp files
    t = load_table(zoo)
    assert t.num_rows == sum(len(steps) for steps in tasks.values()) * len(seeds)
    keys = list(zip(t["task"].to_pylist(), t["seed"].to_pylist(), t["step"].to_pylist()))
    assert len(set(keys)) == len(keys), "duplicate (task, seed, step) rows"
    assert sorted(keys) == sorted((task, s, step) for task, steps in tasks.items() for s in seeds for step in steps)
    for name, info in meta.tasks.items():
        size = sum(math.prod(shape) for _, shape in info.layout)
        rows = [v for task, v in zip(t["task"].to_pylist(), t["vector"].to_pylist()) if task == name]
        assert rows and all(len(v) == size for v in rows), f"{name}: vectors are not {size} long"
        assert all(math.isfinite(x) for v in rows for x in v[:50])
    assert all(math.isfinite(v) for v in t["value"].to_pylist())
    # The shards folder reads as one Parquet dataset, as ray.data.read_parquet (raypdiff.zoo.dataset) reads it.
    import pyarrow.parquet as pq

    ds = pq.read_table(zoo / "shards")
    assert ds.num_rows == t.num_rows and set(ds.column_names) >= {"task", "seed", "step", "value", "vector"}


@pytest.mark.timeout(600)
def test_ray_job_submit_builds_zoo(data_dir, ray_head, tmp_path):  # data_dir first: no data, no Ray head started
    out = tmp_path
    zoo = out / "zoo"
    sid = f"raypdiff-test-{os.getpid()}-{int(time.time())}"
    # --working-dir uploads the repo (.gitignore'd paths are skipped); keep VCS and local outputs out too.
    runtime_env = {"excludes": [".git", "runs", "mlruns", "bench", "*.egg-info", "__pycache__", "*.db"]}
    cmd = [*RAY_CLI, "job", "submit", "--address", ray_head["url"], "--submission-id", sid,
           "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env), "--",
           "python", "jobs/collect.py", "-c", "configs/tiny.yaml", f"data.root={data_dir}",
           f"collect.output_dir={zoo}", f"tracking.uri=sqlite:///{out}/mlflow.db"]
    r = subprocess.run(cmd, cwd=REPO, env=_clean_env(ray_head["token"]), capture_output=True, text=True, timeout=480)
    from ray.job_submission import JobStatus, JobSubmissionClient  # HTTP only: no ray.init here

    client = JobSubmissionClient(ray_head["url"], headers=ray_head["headers"])
    deadline = time.time() + 60
    status = client.get_job_status(sid)
    while not status.is_terminal() and time.time() < deadline:
        time.sleep(2)
        status = client.get_job_status(sid)
    logs = client.get_job_logs(sid)
    assert status == JobStatus.SUCCEEDED, (
        f"job {sid}: {status}\n--- submit rc={r.returncode} stderr ---\n{r.stderr[-3000:]}\n"
        f"--- job logs ---\n{logs[-5000:]}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| SST-2 |" in logs and "| STS-B |" in logs  # the driver printed its summary table

    steps = [4, 5, 6]  # tiny.yaml: train.steps=6, capture.num=3, stride 1 → the last three steps
    check_zoo(zoo, {"SST-2": steps, "STS-B": steps}, seeds=[0])
    assert (zoo / "layout.json").is_file() and (zoo / "config.yaml").is_file()
    assert (out / "mlflow.db").is_file(), "tracking.uri was not honoured"
    meta = json.loads((zoo / "meta.json").read_text())
    assert meta["versions"]["ray"] and meta["base_model"]["max_length"] == 32
