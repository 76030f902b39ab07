"""Scoring throughput: adapters scored per second on one task's test rows, in one process at the default torch
thread count (how `evaluate` scored before it ran on Ray) against the Ray actor pool `evaluate` uses now
(one actor per CPU, one thread each). Writes bench/results/scoring.{json,md} (--out: another folder).

    python bench/scoring.py --zoo runs/zoo [--task SST-2] [--num 16]
"""
import argparse
import json
import time
from pathlib import Path

import torch

from raypdiff.scoring import Scorer, ScorerPool
from raypdiff.domains import load_splits
from raypdiff.zoo.store import read_meta, task_arrays

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", default="runs/zoo")
    p.add_argument("--task", default="SST-2")
    p.add_argument("--num", type=int, default=16, help="zoo vectors scored by each way")
    p.add_argument("--out", default=str(RESULTS), help="results folder")
    args = p.parse_args()
    meta = read_meta(args.zoo)
    data = load_splits(meta, [args.task])[args.task]
    vecs = task_arrays(args.zoo)[args.task]["vector"][:args.num]
    info = meta.tasks[args.task]
    tasks = {args.task: (info.spec, info.layout, {"test": data.test})}
    threads = torch.get_num_threads()
    scorer = Scorer(meta.base_model, meta.lora, meta.eval["batch_size"], tasks)
    scorer.predict(args.task, "test", vecs[:1])  # model load and tokenization, as the pool's warm-up below
    t0 = time.perf_counter()
    plain = scorer.predict(args.task, "test", vecs)
    plain_s = time.perf_counter() - t0
    pool = ScorerPool(meta.base_model, meta.lora, meta.eval["batch_size"], tasks)
    pool.predict([(args.task, "test", vecs[:len(pool.actors)])])
    t0 = time.perf_counter()
    (pooled,) = pool.predict([(args.task, "test", vecs)])
    pool_s = time.perf_counter() - t0
    pool.close()
    result = {"task": args.task, "rows": len(data.test), "adapters": len(vecs), "dtype": meta.base_model["dtype"],
              "in_process": {"threads": threads, "seconds": plain_s, "adapters_per_s": len(vecs) / plain_s},
              "pool": {"actors": len(pool.actors), "threads_each": 1, "seconds": pool_s,
                       "adapters_per_s": len(vecs) / pool_s},
              "same_predictions": bool((plain == pooled).all())}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scoring.json").write_text(json.dumps(result, indent=1))
    md = [f"# Scoring throughput ({args.task}, {len(data.test)} test rows, {len(vecs)} zoo adapters)", "",
          "| way | workers × threads | seconds | adapters/s |", "|---|---|---|---|",
          f"| one process (before) | 1 × {threads} | {plain_s:.1f} | {len(vecs) / plain_s:.2f} |",
          f"| Ray actor pool (evaluate) | {len(pool.actors)} × 1 | {pool_s:.1f} | {len(vecs) / pool_s:.2f} |", "",
          f"Pool / one process: {plain_s / pool_s:.2f}x the throughput; predictions identical: "
          f"{result['same_predictions']}."]
    (out / "scoring.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
