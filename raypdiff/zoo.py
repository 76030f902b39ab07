"""The checkpoint zoo: one Ray Task per (task, seed) fine-tunes LoRA and writes its captured vectors as one shard.

Layout of a zoo folder:
  shards/<task>__seed<seed>.parquet  rows (task, seed, step, metric, value, test_value, test_pred, vector), written
                                     atomically; value: the val metric (every capture); test_value / test_pred: the
                                     test metric and per-row outputs (a stated sample of captures, else null):
                                     predictions for text, denoising errors for styles
  meta.json                          layouts, base model, LoRA, the splits' rows, versions; "complete" flag
  layout.json, config.yaml           parameter layout per task; the config that built the zoo
A shard is written whole or not at all, so a retried or re-run task never duplicates rows, and a re-run
only collects the (task, seed) pairs whose shard is missing. The folder may be a local path or a URI (s3://...).
"""
from __future__ import annotations

import hashlib
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from raypdiff import plots
from raypdiff.config import Config, ConfigError
from raypdiff.domains import domain_for
from raypdiff.storage import Location, Where

SHARDS = "shards"


def shard_name(task: str, seed: int) -> str:
    return f"{task}__seed{seed}.parquet"


def _schema():
    import pyarrow as pa

    return pa.schema([("task", pa.string()), ("seed", pa.int32()), ("step", pa.int32()), ("metric", pa.string()),
                      ("value", pa.float64()), ("test_value", pa.float64()), ("test_pred", pa.list_(pa.float32())),
                      ("vector", pa.list_(pa.float32()))])


def _list_array(rows: np.ndarray):
    """(N, D) float32 → a pyarrow list<float32> array without a Python loop."""
    import pyarrow as pa

    n, d = rows.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * d)
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(rows, dtype=np.float32).reshape(-1)))


def write_shard(path: Where, task: str, seed: int, metric: str, steps: list[int], values: list[float],
                vectors: np.ndarray, test_values: list[Optional[float]], test_preds: list[Optional[np.ndarray]]) -> None:
    """Atomic: written under a temporary name, then moved into place, so readers never see half a shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(steps)
    preds = pa.array([None if p is None else np.asarray(p, np.float32) for p in test_preds], pa.list_(pa.float32()))
    table = pa.table([pa.array([task] * n), pa.array([seed] * n, pa.int32()), pa.array(steps, pa.int32()),
                      pa.array([metric] * n), pa.array(values, pa.float64()), pa.array(test_values, pa.float64()),
                      preds, _list_array(vectors)], schema=_schema())
    with Location.of(path).temporary() as tmp:
        pq.write_table(table, tmp.path, filesystem=tmp.fs)


def collect_one(cfg_dict: dict, spec_dict: dict, data, seed: int, out_dir: str, progress: str = "bars") -> dict:
    """One (task, seed) of the configured domain: fine-tune, capture, score, write the shard."""
    cfg = Config.from_dict(cfg_dict)
    domain = domain_for(cfg.domain)
    spec = domain.spec(spec_dict)
    path = Location.of(out_dir) / SHARDS / shard_name(spec.name, seed)
    if path.exists():  # a retry after the shard landed, or a re-run: nothing to do
        return summarize_shard(path)
    num, steps = cfg.capture.num, cfg.train.for_task(spec.name).steps
    bar = _bar(progress, steps + num + len(range(num - 1, -1, -cfg.eval.test_every)) + 1, f"{spec.name}/s{seed}")
    run = domain.run(cfg, spec, data, seed, bar)
    bar.close()
    write_shard(path, spec.name, seed, run.metric, run.steps, run.values, run.vectors, run.test_values,
                run.test_preds)
    return summarize_shard(path)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class _LineBar:
    """Progress as plain lines at each quarter, for a driver whose output is not a terminal: there, Ray's bars are
    redrawn on every forwarded log line and each update appeared two or three times in the log."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.n, self.shown = max(total, 1), desc, 0, 0

    def update(self, n: int = 1) -> None:
        self.n += n
        quarter = 4 * self.n // self.total
        if quarter > self.shown:
            self.shown = quarter
            print(f"{self.desc}: {min(100, 25 * quarter)}% ({self.n}/{self.total})", flush=True)

    def close(self) -> None:
        if self.shown < 4:  # the total counts a test score that the best-by-val capture may not need
            print(f"{self.desc}: 100% ({self.n}/{self.n})", flush=True)


def progress_mode(enabled: bool) -> str:
    """How workers show progress: Ray's driver-drawn bars on a terminal, plain lines elsewhere, or nothing."""
    return "off" if not enabled else "bars" if sys.stdout.isatty() else "lines"


def _bar(mode: str, total: int, desc: str):
    if mode == "off":
        return _NoBar()
    if mode == "lines":
        return _LineBar(total, desc)
    from ray.experimental.tqdm_ray import tqdm  # per-worker bars, drawn by the driver

    return tqdm(total=total, desc=desc)


def summarize_shard(path: Where) -> dict:
    import pyarrow.parquet as pq

    path = Location.of(path)
    t = pq.read_table(path.path, filesystem=path.fs, columns=["task", "seed", "value", "metric"])
    v = np.asarray(t["value"].to_pylist())
    return {"task": t["task"][0].as_py(), "seed": int(t["seed"][0].as_py()), "metric": t["metric"][0].as_py(),
            "n": len(v), "mean": float(v.mean()), "best": float(v.max()), "worst": float(v.min())}


# ---- the driver ----

@dataclass
class Plan:
    out: Location
    specs: list  # the domain's specs (TaskSpec, StyleSpec)
    data: dict  # task name → the domain's data
    todo: list[tuple[str, int]]
    done: list[tuple[str, int]]


def prepare(cfg: Config, progress: bool = True) -> Plan:
    """Validate everything that can be a user mistake before any Ray work starts; set aside damaged shards."""
    from raypdiff.lora import Layout

    domain = domain_for(cfg.domain)
    out = Location.of(cfg.collect.output_dir, "collect.output_dir")
    why = out.unwritable()
    if why:
        raise ConfigError(f"collect.output_dir: {out} is not writable ({why})")
    specs = domain.specs(cfg)
    data = {s.name: domain.load(cfg, s) for s in specs}
    # Fail fast on model/LoRA mistakes, and fix each task's layout before any worker runs.
    layouts = {s.name: domain.layout(cfg, s) for s in specs}
    meta_path = out / "meta.json"
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{meta_path}: unreadable zoo metadata ({e}); use a new collect.output_dir "
                              f"(or delete that folder)") from None
        fields = _meta_fields(cfg)
        for key in ("domain", "base_model", "lora", "capture", "train", "eval"):
            if old.get(key, "text" if key == "domain" else None) != fields[key]:  # older zoos: text
                raise ConfigError(f"{out} holds a zoo built with another {key} setting; "
                                  f"use a new collect.output_dir (or delete that folder)")
    (out / SHARDS).mkdir()
    # Longest jobs first, so the last wave of a collection is not one long straggler.
    cost = {s.name: domain.cost(cfg, s, data[s.name]) for s in specs}
    jobs = sorted(((s.name, seed) for s in specs for seed in cfg.capture.seeds), key=lambda j: -cost[j[0]])
    sizes = {name: Layout.from_json(lay).size for name, lay in layouts.items()}
    _set_aside(out, jobs, sizes, cfg.capture.num, progress)
    have = {f.name for f in (out / SHARDS).files("*.parquet")}  # one listing, not a request per shard
    done = [j for j in jobs if shard_name(*j) in have]
    write_meta(out, cfg, specs, data, layouts, complete=False)
    return Plan(out, specs, data, [j for j in jobs if j not in done], done)


def _set_aside(out: Location, jobs: list[tuple[str, int]], sizes: dict[str, int], rows: int, progress: bool) -> None:
    """A re-run repairs the zoo: damaged shards of this config's jobs, and shards of (task, seed) pairs it does
    not list, move to <zoo>/damaged/ (the former are then collected again)."""
    names = {shard_name(*j): j for j in jobs}
    for f in (out / SHARDS).files("*.parquet"):
        job = names.get(f.name)
        problem = ("not a (task, seed) of this config" if job is None
                   else shard_problem(f, job[0], job[1], sizes[job[0]], rows))
        if problem:
            f.move_to(out / "damaged" / f.name)
            if progress:
                again = "; collecting it again" if job else ""
                print(f"{f}: {problem}: moved to {out / 'damaged'}{again}", file=sys.stderr)


def shard_problem(path: Where, task: str, seed: int, size: int, rows: int) -> Optional[str]:
    """Why the shard at `path` is not a whole, finite shard of (task, seed) with `rows` vectors of `size`; None
    when it is."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Location.of(path)
    try:
        t = pq.read_table(path.path, filesystem=path.fs)
    except (pa.ArrowException, OSError) as e:
        if path.is_local or isinstance(e, pa.ArrowInvalid):
            return f"unreadable ({str(e).splitlines()[0][:120]})"
        # on an object store a read can fail for a moment (throttling, a reset connection): no reason to move it
        raise ConfigError(f"{path}: cannot read it now ({str(e).splitlines()[0][:120]}); nothing was moved, "
                          f"try again") from None
    if not t.schema.equals(_schema()):
        return "not a shard of this raypdiff version (columns differ)"
    if t.num_rows != rows:
        return f"{t.num_rows} rows, the zoo's capture.num is {rows}"
    if set(t["task"].to_pylist()) != {task} or set(t["seed"].to_pylist()) != {seed}:
        return f"rows of another (task, seed) than {task}/seed {seed}"
    lengths = np.asarray(pa.compute.list_value_length(t["vector"]).to_numpy(zero_copy_only=False))
    if (lengths != size).any():
        return f"vectors of length {int(lengths[lengths != size][0])}, the layout of {task} has {size}"
    flat = t["vector"].combine_chunks().flatten().to_numpy()
    if not np.isfinite(flat).all() or not np.isfinite(t["value"].to_numpy()).all():
        return "NaN or Inf values"
    return None


def _meta_fields(cfg: Config) -> dict:
    c = cfg.to_dict()
    return {"domain": cfg.domain, "base_model": domain_for(cfg.domain).base(cfg), "lora": c["lora"],
            "capture": c["capture"], "train": c["train"], "eval": c["eval"]}


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("raypdiff", "torch", "transformers", "peft", "ray"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def write_meta(out: Location, cfg: Config, specs, data: dict, layouts, complete: bool) -> None:
    domain = domain_for(cfg.domain)
    meta = {
        "complete": complete,
        **_meta_fields(cfg),
        "tasks": {s.name: {**domain.info(s, data[s.name]), "layout": layouts[s.name]} for s in specs},
        "versions": _versions(),
    }
    (out / "meta.json").write_text(json.dumps(meta))
    (out / "layout.json").write_text(json.dumps({k: v for k, v in layouts.items()}, indent=1))
    (out / "config.yaml").write_text(cfg.to_yaml())


def in_flight_limit(cfg: Config) -> int:
    """collect.max_in_flight, else twice the tasks the cluster fits now (re-read every round, so queued demand
    reaches an autoscaler and new nodes get work)."""
    from raypdiff.cluster import cpus

    if cfg.collect.max_in_flight:
        return cfg.collect.max_in_flight
    return max(2, 2 * int(cpus() // cfg.collect.num_cpus))


def collect(cfg: Config, progress: bool = True) -> dict:
    """Build (or finish) the zoo in cfg.collect.output_dir; returns per-task summaries and wall time."""
    import ray

    from raypdiff import tracking
    from raypdiff.cluster import connect

    t0 = time.time()
    if cfg.tracking.enabled:
        tracking.tracking_uri(cfg)  # a missing store fails now, not after the collection
    plan = prepare(cfg, progress)
    connect(cfg.collect.ray_address, progress)
    cfg_dict = cfg.to_dict()
    remote = ray.remote(collect_one).options(num_cpus=cfg.collect.num_cpus, num_gpus=cfg.collect.num_gpus,
                                             max_retries=cfg.collect.max_retries)
    data_refs = {name: ray.put(d) for name, d in plan.data.items()}
    specs = {s.name: domain_for(cfg.domain).spec_dict(s) for s in plan.specs}
    pending, queue = [], list(plan.todo)
    from tqdm import tqdm

    if progress:  # train.per_task wins over train.steps / train.lr: say what each task will run
        for name in dict.fromkeys(task for task, _ in plan.todo):
            t = cfg.train.for_task(name)
            head = f", head lr {t.head_lr:g}" if t.head_lr else ""
            print(f"{name}: {t.steps} steps, lr {t.lr:g}{head}, batch {t.batch_size}", file=sys.stderr)
    bar = tqdm(total=len(plan.todo) + len(plan.done), initial=len(plan.done), desc="collect (task, seed)",
               disable=not progress)
    # Collection time over every call that built this zoo, updated per shard so an interrupted call still counts.
    timing = plan.out / "collect_seconds.json"
    before = json.loads(timing.read_text())["seconds"] if timing.is_file() else 0.0
    while queue or pending:
        limit = in_flight_limit(cfg)
        while queue and len(pending) < limit:  # backpressure
            task, seed = queue.pop(0)
            pending.append(remote.remote(cfg_dict, specs[task], data_refs[task], seed, str(plan.out),
                                         progress_mode(progress)))
        ready, pending = ray.wait(pending, num_returns=1)
        try:
            ray.get(ready[0])
        except ray.exceptions.RayError as e:
            raise RuntimeError(f"a collection task failed after {cfg.collect.max_retries} retries; finished shards "
                               f"are kept and a re-run resumes: {e}") from None
        bar.update(1)
        timing.write_text(json.dumps({"seconds": before + time.time() - t0}))
    bar.close()
    have = {f.name for f in (plan.out / SHARDS).files("*.parquet")}
    missing = [j for j in plan.todo if shard_name(*j) not in have]
    if missing:
        raise ConfigError(f"shards of {missing[0]} and {len(missing) - 1} more are not in {plan.out / SHARDS} as "
                          f"the driver sees it: collect.output_dir must be storage shared by all nodes")
    summary = summarize(plan.out)
    layouts = json.loads((plan.out / "layout.json").read_text())
    write_meta(plan.out, cfg, plan.specs, plan.data, layouts, complete=True)
    summary["wall_seconds"] = time.time() - t0
    summary["collect_seconds"] = json.loads(timing.read_text())["seconds"] if timing.is_file() else 0.0
    if cfg.tracking.enabled:
        with tempfile.TemporaryDirectory() as tmp:  # MLflow logs local files: the zoo may be on a bucket
            files = [Path(tmp) / "layout.json", Path(tmp) / "config.yaml"]
            for f in files:
                f.write_bytes((plan.out / f.name).read_bytes())
            plot = metric_plot(plan.out, Path(tmp) / "metric_distribution.png")
            tracking.log_collection(cfg, plan.out, summary, [*files, plot])
    return summary


def metric_plot(zoo_dir: Where, out: Path) -> Path:
    """One histogram per task of its captures' val metric, the test majority baseline marked."""
    meta = read_meta(zoo_dir, allow_incomplete=True)
    t = load_table(zoo_dir, ["task", "value"]).to_pandas()
    names = [n for n in meta["tasks"] if (t.task == n).any()]
    with plots.figure(out, (3.2 * len(names), 2.8), dpi=90, ncols=len(names), squeeze=False) as (fig, axes):
        for ax, name in zip(axes[0], names):
            info = meta["tasks"][name]
            ax.hist(t.loc[t.task == name, "value"], bins=20, color="tab:blue")
            if info["majority"] is not None:  # style zoos have no majority class
                ax.axvline(info["majority"], color="tab:red", ls="--", label="majority")
            ax.set_title(name)
            ax.set_xlabel(f"val {info['metric']}")
        axes[0][0].legend(fontsize=7)
    return out


# ---- reading ----

def read_meta(zoo_dir: Where, allow_incomplete: bool = False) -> dict:
    p = Location.of(zoo_dir) / "meta.json"
    if not p.is_file():
        raise ConfigError(f"{zoo_dir}: not a zoo (no meta.json)")
    try:
        meta = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{p}: unreadable zoo metadata ({e}); re-run `raypdiff collect` with its config") from None
    if "splits" not in next(iter(meta["tasks"].values()), {"splits": 0}):
        raise ConfigError(f"{zoo_dir}: a zoo from before train/val/test splits; collect it again")
    if not meta["complete"] and not allow_incomplete:
        raise ConfigError(f"{zoo_dir}: the zoo is incomplete (collection did not finish); re-run collect to resume")
    return meta


def check(zoo_dir: Where) -> dict:
    """The zoo's meta.json once every shard it lists is whole, finite and of the right layout; otherwise one
    ConfigError naming the file and the repair."""
    from raypdiff.lora import Layout

    meta = read_meta(zoo_dir)
    folder = Location.of(zoo_dir) / SHARDS
    rows, seeds = meta["capture"]["num"], meta["capture"]["seeds"]
    expected = {shard_name(t, s): (t, s) for t in meta["tasks"] for s in seeds}
    config = folder.parent / "config.yaml"
    repair = (f"re-run `raypdiff collect -c {config}` to repair the zoo" if config.is_local else
              f"re-run `raypdiff collect` with the zoo's config (copy {config}) to repair the zoo")
    present = {f.name: f for f in folder.files("*.parquet")}
    for f in present.values():
        if f.name not in expected:
            raise ConfigError(f"{f}: a shard meta.json does not list (tasks {', '.join(meta['tasks'])}, seeds "
                              f"{seeds}); {repair}")
    for name, (task, seed) in expected.items():
        f = folder / name
        problem = "missing" if name not in present else shard_problem(
            f, task, seed, Layout.from_json(meta["tasks"][task]["layout"]).size,
            meta["capture"].get("per_seed", {}).get(str(seed), rows))  # a subsample's seeds may hold one less
        if problem:
            raise ConfigError(f"{f}: {problem}; {repair}")
    return meta


def _emptied(out: Location) -> Location:
    """`out` cleared for a derived zoo. Its meta.json is written last, and a folder without one is no zoo to any
    reader, so a derived zoo appears whole or not at all (an object store has no folder rename to rely on)."""
    out.remove_tree()
    (out / SHARDS).mkdir()
    return out


def subsample(zoo_dir: Where, per_task: int, seed: int, out_dir: Where) -> Location:
    """A zoo of `per_task` captures of each task (shared as evenly as the seeds' runs allow, the first seeds taking
    one more), drawn with `seed`: the same rows for the same arguments. Written whole or not at all; an existing one
    is reused."""
    import pyarrow.parquet as pq

    meta = check(zoo_dir)
    seeds, have = meta["capture"]["seeds"], meta["capture"]["num"]
    if not len(seeds) <= per_task <= have * len(seeds):
        raise ConfigError(f"captures={per_task}: the zoo has {have} captures from each of {len(seeds)} seed(s) per "
                          f"task; ask for {len(seeds)} to {have * len(seeds)}")
    src, out = Location.of(zoo_dir), Location.of(out_dir)
    if (out / "meta.json").is_file():
        return out
    _emptied(out)
    share = {s: per_task // len(seeds) + (j < per_task % len(seeds)) for j, s in enumerate(seeds)}
    for i, (t, s) in enumerate(sorted(((t, s) for t in meta["tasks"] for s in seeds), key=lambda j: shard_name(*j))):
        shard = src / SHARDS / shard_name(t, s)
        table = pq.read_table(shard.path, filesystem=shard.fs)
        rows = np.sort(np.random.default_rng([seed, i]).choice(have, size=share[s], replace=False))
        with (out / SHARDS / shard_name(t, s)).temporary() as tmp:
            pq.write_table(table.take(rows), tmp.path, filesystem=tmp.fs)
    sub = {**meta, "capture": {**meta["capture"], "num": max(share.values()), "per_seed": share},
           "subsample": {"of": str(src), "per_task": per_task, "seed": seed}}
    (out / "meta.json").write_text(json.dumps(sub, indent=1))
    return out


def select_tasks(zoo_dir: Where, tasks: list[str], out_dir: Where) -> Location:
    """A zoo of only `tasks` (their shards hard-linked, or copied across file systems): what a hold-out fold's
    generator trains on. Written whole or not at all; an existing one with the same tasks is reused."""
    meta = check(zoo_dir)
    unknown = [t for t in tasks if t not in meta["tasks"]]
    if unknown:
        raise ConfigError(f"task {unknown[0]} is not in the zoo {zoo_dir} (tasks: {', '.join(meta['tasks'])})")
    src, out = Location.of(zoo_dir), Location.of(out_dir)
    if (out / "meta.json").is_file() and list(read_meta(out)["tasks"]) == list(tasks):
        return out
    _emptied(out)
    for t in tasks:
        for s in meta["capture"]["seeds"]:
            (src / SHARDS / shard_name(t, s)).copy_to(out / SHARDS / shard_name(t, s))
    sub = {**meta, "tasks": {t: meta["tasks"][t] for t in tasks},
           "selection": {"of": str(src), "tasks": list(tasks)}}
    (out / "meta.json").write_text(json.dumps(sub, indent=1))
    return out


def fingerprint(zoo_dir: Where) -> str:
    """Changes whenever the zoo's contents do: its meta.json and each shard's name, size and mtime."""
    zoo = Location.of(zoo_dir)
    h = hashlib.sha256((zoo / "meta.json").read_bytes())
    for f in (zoo / SHARDS).files("*.parquet"):
        size, mtime = f.stat()
        h.update(f"{f.name}:{size}:{mtime}".encode())
    return h.hexdigest()


def load_table(zoo_dir: Where, columns: Optional[list[str]] = None):
    """All rows as one pyarrow Table (no Ray needed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = (Location.of(zoo_dir) / SHARDS).files("*.parquet")
    if not files:
        raise ConfigError(f"{zoo_dir}: no shards")
    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f.path, filesystem=f.fs, columns=columns))
        except (pa.ArrowException, OSError) as e:
            raise ConfigError(f"{f}: unreadable shard ({str(e).splitlines()[0][:120]}); re-run `raypdiff collect` "
                              f"with the zoo's config to repair it") from None
    return pa.concat_tables(tables)


def dataset(zoo_dir: Where):
    """The zoo as a Ray Dataset (one row per captured checkpoint)."""
    import ray

    meta = read_meta(zoo_dir)
    folder = Location.of(zoo_dir) / SHARDS
    return ray.data.read_parquet([(folder / shard_name(t, s)).path for t in meta["tasks"]
                                  for s in meta["capture"]["seeds"]], filesystem=folder.fs)


def summarize(zoo_dir: Where) -> dict:
    """Per task: val mean / best / worst over every capture; on test, the mean over the captures scored there,
    the best-by-val capture's score, the last capture's (averaged over seeds) and the majority class."""
    meta = read_meta(zoo_dir, allow_incomplete=True)
    t = load_table(zoo_dir, ["task", "seed", "step", "value", "test_value"]).to_pandas()
    tasks = {}
    for name, info in meta["tasks"].items():
        rows = t[t.task == name]
        if len(rows):
            v, tested = rows["value"].to_numpy(), rows.dropna(subset=["test_value"])
            last = rows[rows.step == rows.step.max()]
            tasks[name] = {"metric": info["metric"], "n": int(len(v)), "mean": float(v.mean()), "best": float(v.max()),
                           "worst": float(v.min()), "test_n": int(len(tested)),
                           "test_mean": float(tested["test_value"].mean()),
                           "test_best_by_val": float(rows.loc[rows["value"].idxmax(), "test_value"]),
                           "test_last": float(last["test_value"].mean()), "majority": info["majority"]}
    return {"tasks": tasks}


def task_arrays(zoo_dir: Where, test: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """task → {"seed", "step", "value": (N,), "vector": (N, P)} as numpy, shards concatenated; with test=True
    also "test_value": (N,) (NaN where not scored) and "test_pred": {row: (R,) predictions}."""
    import pyarrow.compute as pc

    columns = ["task", "seed", "step", "value", "vector"] + (["test_value", "test_pred"] if test else [])
    table = load_table(zoo_dir, columns)
    out = {}
    for task in pc.unique(table["task"]).to_pylist():
        t = table.filter(pc.equal(table["task"], task))
        flat = t["vector"].combine_chunks().flatten().to_numpy()
        out[task] = {"seed": t["seed"].to_numpy(), "step": t["step"].to_numpy(), "value": t["value"].to_numpy(),
                     "vector": flat.reshape(t.num_rows, -1).astype(np.float32)}
        if test:
            out[task]["test_value"] = t["test_value"].to_numpy(zero_copy_only=False).astype(np.float64)
            out[task]["test_pred"] = {i: np.asarray(p, np.float32) for i, p in enumerate(t["test_pred"].to_pylist())
                                      if p is not None}
    return out


def get_vector(zoo_dir: Where, task: str, seed: int, step: int) -> np.ndarray:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = Location.of(zoo_dir) / SHARDS / shard_name(task, seed)
    if not path.is_file():
        raise ConfigError(f"{zoo_dir}: no checkpoints for task {task} seed {seed}")
    t = pq.read_table(path.path, filesystem=path.fs)
    row = t.filter(pc.equal(t["step"], step))
    if row.num_rows == 0:
        raise ConfigError(f"task {task} seed {seed}: no step {step} (captured: {t['step'][0]}..{t['step'][-1]})")
    return np.asarray(row["vector"][0].as_py(), dtype=np.float32)
