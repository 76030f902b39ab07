"""The zoo's collection on Ray: one Ray Task per (task, seed) fine-tunes LoRA and writes its captures as one
shard; a re-run collects only the missing shards and sets damaged ones aside."""
from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from raypdiff import plots
from raypdiff.config import Config, ConfigError, TrainConfig
from raypdiff.domains import domain_for
from raypdiff.storage import Location, Where
from raypdiff.zoo.store import (SHARDS, load_table, meta_fields, read_meta, shard_name, shard_problem, summarize,
                                summarize_shard, write_meta, write_shard)


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
        fields = meta_fields(cfg)
        # a train field added since an older zoo was collected (decay_steps) read as its default
        old["train"] = {**asdict(TrainConfig()), **old.get("train", {})}
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
    names = [n for n in meta.tasks if (t.task == n).any()]
    with plots.figure(out, (3.2 * len(names), 2.8), dpi=90, ncols=len(names), squeeze=False) as (fig, axes):
        for ax, name in zip(axes[0], names):
            info = meta.tasks[name]
            ax.hist(t.loc[t.task == name, "value"], bins=20, color="tab:blue")
            if info.majority is not None:  # style zoos have no majority class
                ax.axvline(info.majority, color="tab:red", ls="--", label="majority")
            ax.set_title(name)
            ax.set_xlabel(f"val {info.metric}")
        axes[0][0].legend(fontsize=7)
    return out
