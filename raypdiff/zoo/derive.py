"""Zoos derived from a checked zoo: a subsample of its captures, or a selection of its tasks."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from raypdiff.config import ConfigError
from raypdiff.storage import Location, Where
from raypdiff.zoo.store import SHARDS, check, read_meta, shard_name


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
    seeds, have = meta.capture.seeds, meta.capture.num
    if not len(seeds) <= per_task <= have * len(seeds):
        raise ConfigError(f"captures={per_task}: the zoo has {have} captures from each of {len(seeds)} seed(s) per "
                          f"task; ask for {len(seeds)} to {have * len(seeds)}")
    src, out = Location.of(zoo_dir), Location.of(out_dir)
    if (out / "meta.json").is_file():
        return out
    _emptied(out)
    share = {s: per_task // len(seeds) + (j < per_task % len(seeds)) for j, s in enumerate(seeds)}
    for i, (t, s) in enumerate(sorted(((t, s) for t in meta.tasks for s in seeds), key=lambda j: shard_name(*j))):
        shard = src / SHARDS / shard_name(t, s)
        table = pq.read_table(shard.path, filesystem=shard.fs)
        rows = np.sort(np.random.default_rng([seed, i]).choice(have, size=share[s], replace=False))
        with (out / SHARDS / shard_name(t, s)).temporary() as tmp:
            pq.write_table(table.take(rows), tmp.path, filesystem=tmp.fs)
    sub = replace(meta, capture=replace(meta.capture, num=max(share.values()),
                                        per_seed={str(s): n for s, n in share.items()}),
                  derived={**meta.derived, "subsample": {"of": str(src), "per_task": per_task, "seed": seed}})
    (out / "meta.json").write_text(json.dumps(sub.to_dict(), indent=1))
    return out


def select_tasks(zoo_dir: Where, tasks: list[str], out_dir: Where) -> Location:
    """A zoo of only `tasks` (their shards hard-linked, or copied across file systems): what a hold-out fold's
    generator trains on. Written whole or not at all; an existing one with the same tasks is reused."""
    meta = check(zoo_dir)
    unknown = [t for t in tasks if t not in meta.tasks]
    if unknown:
        raise ConfigError(f"task {unknown[0]} is not in the zoo {zoo_dir} (tasks: {', '.join(meta.tasks)})")
    src, out = Location.of(zoo_dir), Location.of(out_dir)
    if (out / "meta.json").is_file() and list(read_meta(out).tasks) == list(tasks):
        return out
    _emptied(out)
    for t in tasks:
        for s in meta.capture.seeds:
            (src / SHARDS / shard_name(t, s)).copy_to(out / SHARDS / shard_name(t, s))
    sub = replace(meta, tasks={t: meta.tasks[t] for t in tasks},
                  derived={**meta.derived, "selection": {"of": str(src), "tasks": list(tasks)}})
    (out / "meta.json").write_text(json.dumps(sub.to_dict(), indent=1))
    return out
