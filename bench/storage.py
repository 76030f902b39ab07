"""The storage path's cost: the tiny zoo collected and its generator trained with outputs on the local disk and on an
S3 API server on loopback (moto, started here), and the zoo's shard store alone (write, list + read, check) at the
project's capture size. Writes bench/results/storage.{json,md} (--out: another folder).

    python bench/storage.py --data-root ../shared/data [--reps 3] [--shards 20] [--params 37000]
"""
import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from raypdiff import storage
from raypdiff.cluster import connect
from raypdiff.config import load_config
from raypdiff.storage import Location
from raypdiff.train import train_generator
from raypdiff.zoo.collect import collect
from raypdiff.zoo.store import SHARDS, Capture, TaskInfo, ZooMeta, check, load_table, shard_name, write_shard

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "bench" / "results"
BUCKET = "raypdiff-bench"


def start_s3() -> object:
    """A loopback S3 server and a bucket; its address and throwaway credentials go into this process's environment
    before Ray starts, so Ray's workers inherit them (as they would a user's)."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server._server.server_address[:2]
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}")
    storage._filesystem.cache_clear()
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return server


def shard_io(where: Location, shards: int, rows: int, params: int) -> dict:
    """Seconds to write `shards` shards of rows × params float32 vectors, to list and read them back (load_table),
    and to check them (zoo.store.check: every shard opened and validated)."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((rows, params)).astype(np.float32)
    steps, values = list(range(rows)), list(rng.random(rows))
    where.remove_tree()
    t0 = time.perf_counter()
    for s in range(shards):
        write_shard(where / SHARDS / shard_name("bench", s), "bench", s, "accuracy", steps, values, vectors,
                    [None] * rows, [None] * rows)
    write_s = time.perf_counter() - t0
    task = TaskInfo(spec={}, metric="accuracy", num_labels=2, splits={}, label_mean=None, majority=None,
                    layout=[["w", [params]]])
    meta = ZooMeta(complete=True, base_model={}, lora={}, capture=Capture(rows, 1, list(range(shards))), train={},
                   eval={}, tasks={"bench": task}, versions={})
    (where / "meta.json").write_text(json.dumps(meta.to_dict()))
    t0 = time.perf_counter()
    table = load_table(where)
    read_s = time.perf_counter() - t0
    assert table.num_rows == shards * rows
    t0 = time.perf_counter()
    check(where)
    check_s = time.perf_counter() - t0
    return {"write_s": write_s, "read_s": read_s, "check_s": check_s}


def pipeline(root: Location, data_root: str) -> dict:
    """Seconds to collect the tiny zoo under `root` and train its generator there."""
    cfg = load_config(ROOT / "configs" / "tiny_gen.yaml", [
        f"data.root={data_root}", f"collect.output_dir={root / 'zoo'}", f"trainer.output_dir={root / 'gen'}",
        "tracking.enabled=false", "collect.ray_address=local"])
    t0 = time.time()
    collect(cfg, progress=False)
    collect_s = time.time() - t0
    t0 = time.time()
    train_generator(cfg, str(root / "zoo"), progress=False)
    return {"collect_s": collect_s, "train_s": time.time() - t0}


def median_of(reps: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in reps) for k in reps[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", help="folder holding glue/<TASK>/{train,dev}.tsv (for the pipeline timing)")
    p.add_argument("--reps", type=int, default=3, help="repetitions of the shard-store timing (medians reported)")
    p.add_argument("--shards", type=int, default=20, help="shards per shard-store timing")
    p.add_argument("--rows", type=int, default=40, help="captures per shard")
    p.add_argument("--params", type=int, default=37000, help="parameters per capture (the default zoo's LoRA size)")
    p.add_argument("--pipeline-reps", type=int, default=2, help="collect + train runs per backend (medians)")
    p.add_argument("--skip-pipeline", action="store_true", help="only the shard-store timing (no Ray)")
    p.add_argument("--out", default=str(RESULTS), help="results folder")
    args = p.parse_args()
    if not args.skip_pipeline and not args.data_root:
        p.error("--data-root is needed for the collect + train timing (or --skip-pipeline)")
    server = start_s3()
    if not args.skip_pipeline:  # Ray started before any timing, so neither backend's collect pays for it
        connect("local", progress=False)
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "settings": {"shards": args.shards, "rows": args.rows, "params": args.params, "reps": args.reps,
                           "pipeline_reps": 0 if args.skip_pipeline else args.pipeline_reps},
              "backends": {}}
    with tempfile.TemporaryDirectory(prefix="rpbs") as tmp:
        roots = {"local disk": Location.of(Path(tmp) / "local"),
                 "S3 on loopback (moto)": Location.of(f"s3://{BUCKET}/bench")}
        mb = args.shards * args.rows * args.params * 4 / 2 ** 20
        for name, root in roots.items():
            t = median_of([shard_io(root / "shards_only", args.shards, args.rows, args.params)
                           for _ in range(args.reps)])
            result["backends"][name] = {"shard_store": {**t, "megabytes": mb, "write_mb_s": mb / t["write_s"],
                                                        "read_mb_s": mb / t["read_s"]}}
        if not args.skip_pipeline:
            # an untimed run first (Ray's workers import torch and load the base model once), then the backends in
            # turn, so that neither is always the first
            pipeline(Location.of(Path(tmp) / "warmup"), args.data_root)
            runs = {name: [] for name in roots}
            for i in range(args.pipeline_reps):
                for name, root in list(roots.items())[::-1 if i % 2 else 1]:
                    runs[name].append(pipeline(root / f"rep{i}", args.data_root))
            for name in roots:
                result["backends"][name]["pipeline"] = median_of(runs[name])
    server.stop()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "storage.json").write_text(json.dumps(result, indent=1))
    (out / "storage.md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    s = r["settings"]
    local, s3 = r["backends"].values()
    lines = [f"# Storage: local disk vs S3 on loopback ({r['machine']['cpus']} CPUs)", "",
             f"Shard store alone: {s['shards']} shards of {s['rows']} captures × {s['params']:,} float32 parameters "
             f"({local['shard_store']['megabytes']:.0f} MB), median of {s['reps']}:", "",
             "| backend | write s (MB/s) | list + read s (MB/s) | check s |", "|---|---|---|---|"]
    for name, b in r["backends"].items():
        t = b["shard_store"]
        lines.append(f"| {name} | {t['write_s']:.2f} ({t['write_mb_s']:.0f}) | {t['read_s']:.2f} "
                     f"({t['read_mb_s']:.0f}) | {t['check_s']:.2f} |")
    ratio = s3["shard_store"]["write_s"] / local["shard_store"]["write_s"]
    read = s3["shard_store"]["read_s"] / local["shard_store"]["read_s"]
    lines += ["", f"S3 / local: write {ratio:.1f}×, read {read:.1f}×."]
    if "pipeline" in local:
        lines += ["", "The tiny zoo (configs/tiny_gen.yaml: 2 tasks, 1 seed) collected and its generator trained on one "
                  "Ray, after an untimed warm-up run, the backends taking turns at going first; median of "
                  f"{s['pipeline_reps']}:", "", "| backend | collect s | train s |", "|---|---|---|"]
        for name, b in r["backends"].items():
            lines.append(f"| {name} | {b['pipeline']['collect_s']:.1f} | {b['pipeline']['train_s']:.1f} |")
    lines += ["", "The loopback server is moto (Python) on the same CPUs: a real object store adds network latency "
              "and removes this server's CPU cost; read the ratios as this machine's, not a cloud's."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
