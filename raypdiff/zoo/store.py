"""The zoo's storage: Parquet shards of captured vectors and meta.json, their checks and readers. The folder
may be a local path or a URI (s3://...)."""
from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from raypdiff.config import Config, ConfigError
from raypdiff.domains import domain_for
from raypdiff.lora import Layout
from raypdiff.storage import Location, Where

# A zoo folder:
#   shards/<task>__seed<seed>.parquet  rows (task, seed, step, metric, value, test_value, test_pred, vector), written
#                                      atomically; value: the val metric (every capture); test_value / test_pred: the
#                                      test metric and per-row outputs (a stated sample of captures, else null):
#                                      predictions for text, denoising errors for styles
#   meta.json                          layouts, base model, LoRA, the splits' rows, versions; "complete" flag
#   layout.json, config.yaml           parameter layout per task; the config that built the zoo
# A shard is written whole or not at all, so a retried or re-run task never duplicates rows, and a re-run
# only collects the (task, seed) pairs whose shard is missing.
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


def summarize_shard(path: Where) -> dict:
    import pyarrow.parquet as pq

    path = Location.of(path)
    t = pq.read_table(path.path, filesystem=path.fs, columns=["task", "seed", "value", "metric"])
    v = np.asarray(t["value"].to_pylist())
    return {"task": t["task"][0].as_py(), "seed": int(t["seed"][0].as_py()), "metric": t["metric"][0].as_py(),
            "n": len(v), "mean": float(v.mean()), "best": float(v.max()), "worst": float(v.min())}


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


_MISSING = object()


def _take(d: dict, key: str, types: tuple, where: object, path: str = "", default=_MISSING):
    """d[key], one of `types` (a bool is no int): else one ConfigError naming the file and the key."""
    if key not in d:
        if default is not _MISSING:
            return default
        problem = "is missing"
    elif (isinstance(d[key], bool) and bool not in types) or not isinstance(d[key], types):
        problem = f"is a {type(d[key]).__name__}, expected {' or '.join(t.__name__ for t in types)}"
    else:
        return d[key]
    raise ConfigError(f"{where}: key {path}{key} {problem}; re-run `raypdiff collect` with the zoo's config")


def _only(d: dict, keys, where: object, path: str = "") -> None:
    """Unknown keys are refused: to_dict could not write them back."""
    for key in d:
        if key not in keys:
            raise ConfigError(f"{where}: key {path}{key} is not a zoo's (written by another raypdiff version?)")


_NUMBER = (int, float)


@dataclass(frozen=True)
class TaskInfo:
    """meta.json's entry for one task: the domain's Domain.info and the adapter's layout."""
    spec: dict  # the domain's spec as a dict: TaskSpec(**spec) for text, a StyleSpec's for vision
    metric: str
    num_labels: int  # 0 for a style
    splits: dict  # where each split's rows come from
    label_mean: Optional[float]  # None for a style
    majority: Optional[float]  # the test score of the majority class; None for a style
    layout: list  # the adapter's Layout.to_json()

    @classmethod
    def from_dict(cls, d: dict, where: object, path: str) -> "TaskInfo":
        types = {"spec": (dict,), "metric": (str,), "num_labels": (int,), "splits": (dict,),
                 "label_mean": (*_NUMBER, type(None)), "majority": (*_NUMBER, type(None)), "layout": (list,)}
        _only(d, types, where, path)
        return cls(**{k: _take(d, k, t, where, path) for k, t in types.items()})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Capture:
    """meta.json's capture settings: `num` captures `stride` steps apart per (task, seed)."""
    num: int  # a subsample's largest share
    stride: int
    seeds: list[int]
    per_seed: Optional[dict[str, int]] = None  # a subsample's captures per seed (str(seed) → n)

    @classmethod
    def from_dict(cls, d: dict, where: object) -> "Capture":
        _only(d, ("num", "stride", "seeds", "per_seed"), where, "capture.")
        seeds = _take(d, "seeds", (list,), where, "capture.")
        numbered = dict(enumerate(seeds))
        for i in numbered:
            _take(numbered, i, (int,), where, "capture.seeds.")
        per_seed = _take(d, "per_seed", (dict,), where, "capture.", None)
        for s in per_seed or {}:
            _take(per_seed, s, (int,), where, "capture.per_seed.")
        return cls(_take(d, "num", (int,), where, "capture."), _take(d, "stride", (int,), where, "capture."), seeds,
                   per_seed)

    def rows(self, seed: int) -> int:
        """Captures of each task from `seed` (a subsample's seeds may hold one less than num)."""
        return self.num if self.per_seed is None else self.per_seed.get(str(seed), self.num)

    def to_dict(self) -> dict:
        d = {"num": self.num, "stride": self.stride, "seeds": self.seeds}
        return d if self.per_seed is None else {**d, "per_seed": self.per_seed}


DERIVED = ("subsample", "selection")  # the records of raypdiff.zoo.derive


@dataclass(frozen=True)
class ZooMeta:
    """A zoo's meta.json, typed. to_dict() is the file as raypdiff writes it (key for key, in order; an older zoo's
    gains "domain" and today's key order)."""
    complete: bool  # False while a collection runs (or was stopped)
    base_model: dict  # text: the config's model section; vision: {"unet_sha256", "vision": the settings}
    lora: dict  # the config's lora section
    capture: Capture
    train: dict  # the config's sections these captures were trained and scored with
    eval: dict
    tasks: dict[str, TaskInfo]  # in collection order
    versions: dict  # python and package versions that collected the zoo
    domain: str = "text"  # zoos from before domains hold text
    derived: dict = field(default_factory=dict)  # a derived zoo's records ("subsample", "selection"), in order

    @classmethod
    def from_dict(cls, d: dict, where: object = "meta.json") -> "ZooMeta":
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: not a zoo's metadata (a JSON object); re-run `raypdiff collect` with the "
                              f"zoo's config")
        _only(d, ("complete", "domain", "base_model", "lora", "capture", "train", "eval", "tasks", "versions",
                  *DERIVED), where)
        tasks = _take(d, "tasks", (dict,), where)
        return cls(
            complete=_take(d, "complete", (bool,), where), domain=_take(d, "domain", (str,), where, "", "text"),
            base_model=_take(d, "base_model", (dict,), where), lora=_take(d, "lora", (dict,), where),
            capture=Capture.from_dict(_take(d, "capture", (dict,), where), where),
            train=_take(d, "train", (dict,), where), eval=_take(d, "eval", (dict,), where),
            tasks={t: TaskInfo.from_dict(_take(tasks, t, (dict,), where, "tasks."), where, f"tasks.{t}.")
                   for t in tasks},
            versions=_take(d, "versions", (dict,), where),
            derived={k: _take(d, k, (dict,), where) for k in d if k in DERIVED})

    def to_dict(self) -> dict:
        return {"complete": self.complete, "domain": self.domain, "base_model": self.base_model, "lora": self.lora,
                "capture": self.capture.to_dict(), "train": self.train, "eval": self.eval,
                "tasks": {t: info.to_dict() for t, info in self.tasks.items()}, "versions": self.versions,
                **self.derived}

    def base_config(self, dtype: Optional[str] = None) -> Config:
        """The text zoo's base model and LoRA settings as a Config (`dtype`: another precision)."""
        return Config.for_base(self.base_model, self.lora, dtype)

    def layout(self, task: str) -> Layout:
        """`task`'s adapter layout."""
        return Layout.from_json(self.tasks[task].layout)


def meta_fields(cfg: Config) -> dict:
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
    meta = ZooMeta.from_dict({
        "complete": complete,
        **meta_fields(cfg),
        "tasks": {s.name: {**domain.info(s, data[s.name]), "layout": layouts[s.name]} for s in specs},
        "versions": _versions(),
    }, out / "meta.json")
    (out / "meta.json").write_text(json.dumps(meta.to_dict()))
    (out / "layout.json").write_text(json.dumps({k: v for k, v in layouts.items()}, indent=1))
    (out / "config.yaml").write_text(cfg.to_yaml())


def read_meta(zoo_dir: Where, allow_incomplete: bool = False) -> ZooMeta:
    p = Location.of(zoo_dir) / "meta.json"
    if not p.is_file():
        raise ConfigError(f"{zoo_dir}: not a zoo (no meta.json)")
    try:
        raw = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{p}: unreadable zoo metadata ({e}); re-run `raypdiff collect` with its config") from None
    tasks = raw.get("tasks") if isinstance(raw, dict) else None
    first = next(iter(tasks.values()), {"splits": 0}) if isinstance(tasks, dict) else {"splits": 0}
    if isinstance(first, dict) and "splits" not in first:
        raise ConfigError(f"{zoo_dir}: a zoo from before train/val/test splits; collect it again")
    meta = ZooMeta.from_dict(raw, p)
    if not meta.complete and not allow_incomplete:
        raise ConfigError(f"{zoo_dir}: the zoo is incomplete (collection did not finish); re-run collect to resume")
    return meta


def check(zoo_dir: Where) -> ZooMeta:
    """The zoo's meta.json once every shard it lists is whole, finite and of the right layout; otherwise one
    ConfigError naming the file and the repair."""
    meta = read_meta(zoo_dir)
    folder = Location.of(zoo_dir) / SHARDS
    seeds = meta.capture.seeds
    expected = {shard_name(t, s): (t, s) for t in meta.tasks for s in seeds}
    config = folder.parent / "config.yaml"
    repair = (f"re-run `raypdiff collect -c {config}` to repair the zoo" if config.is_local else
              f"re-run `raypdiff collect` with the zoo's config (copy {config}) to repair the zoo")
    present = {f.name: f for f in folder.files("*.parquet")}
    for f in present.values():
        if f.name not in expected:
            raise ConfigError(f"{f}: a shard meta.json does not list (tasks {', '.join(meta.tasks)}, seeds "
                              f"{seeds}); {repair}")
    for name, (task, seed) in expected.items():
        f = folder / name
        problem = "missing" if name not in present else shard_problem(f, task, seed, meta.layout(task).size,
                                                                       meta.capture.rows(seed))
        if problem:
            raise ConfigError(f"{f}: {problem}; {repair}")
    return meta


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
    return ray.data.read_parquet([(folder / shard_name(t, s)).path for t in meta.tasks for s in meta.capture.seeds],
                                 filesystem=folder.fs)


def summarize(zoo_dir: Where) -> dict:
    """Per task: val mean / best / worst over every capture; on test, the mean over the captures scored there,
    the best-by-val capture's score (the first of any val ties: collect scores one per run; the evaluation report
    averages every tie), the last capture's (averaged over seeds) and the majority class."""
    meta = read_meta(zoo_dir, allow_incomplete=True)
    t = load_table(zoo_dir, ["task", "seed", "step", "value", "test_value"]).to_pandas()
    tasks = {}
    for name, info in meta.tasks.items():
        rows = t[t.task == name]
        if len(rows):
            v, tested = rows["value"].to_numpy(), rows.dropna(subset=["test_value"])
            last = rows[rows.step == rows.step.max()]
            tasks[name] = {"metric": info.metric, "n": int(len(v)), "mean": float(v.mean()), "best": float(v.max()),
                           "worst": float(v.min()), "test_n": int(len(tested)),
                           "test_mean": float(tested["test_value"].mean()),
                           "test_best_by_val": float(rows.loc[rows["value"].idxmax(), "test_value"]),
                           "test_last": float(last["test_value"].mean()), "majority": info.majority}
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
