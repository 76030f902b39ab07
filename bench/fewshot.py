"""New tasks without a zoo: the base body with heads built from k examples per label against SetFit, on the suite's
real classification tasks; writes bench/results/fewshot.{json,md}. Resumable: finished tasks are kept in --work.

    python bench/fewshot.py --data-root ../shared/data [--k 2,4,8,16] [--setfit-k 8] [--draws 2] [--tasks SST-2,CR]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from raypdiff import reports
from raypdiff.config import load_config
from raypdiff.fewshot import markdown, score_task, summarize
from raypdiff.newtask import Builder
from raypdiff.tasks import load_task, resolve_specs

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--config", default=str(ROOT / "configs" / "suite.yaml"), help="tasks and their splits")
    p.add_argument("--tasks", help="comma-separated (default: the config's real classification tasks, no derived)")
    p.add_argument("--k", default="2,4,8,16", help="examples per label for the built heads")
    p.add_argument("--setfit-k", default="8", help="examples per label for SetFit (it trains per task)")
    p.add_argument("--draws", type=int, default=2, help="support draws per k")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--work", default=str(ROOT / "runs" / "fewshot"), help="finished tasks, for resuming")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--name", default="fewshot")
    p.add_argument("--generator", help="also time the product's route to one adapter (base + --num generated "
                                       "bodies) with this generator, on the first task")
    p.add_argument("--num", type=int, default=1, help="generated bodies per adapter for --generator")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = p.parse_args()
    cfg = load_config(args.config, [f"data.root={args.data_root}", *args.overrides])
    specs = [s for s in resolve_specs(cfg.tasks, cfg.data.root) if not s.is_regression]
    specs = ([s for s in specs if s.name in args.tasks.split(",")] if args.tasks
             else [s for s in specs if s.source is None and s.twin_of is None])
    ks, setfit_ks = [int(k) for k in args.k.split(",")], [int(k) for k in args.setfit_k.split(",") if k]
    builder = Builder(cfg.model, cfg.lora)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tasks, labels = {}, {}
    t_all = time.time()
    for spec in specs:
        data = load_task(spec, cfg.eval.val_examples, cfg.eval.test_examples, cfg.eval.split_seed)
        labels[spec.name] = data.test.labels
        done = work / f"{spec.name}.npz"
        if done.is_file():
            res = json.loads(str(np.load(done, allow_pickle=False)["report"]))
            for k, r in res["k"].items():
                r["preds"] = {m: np.asarray(v) for m, v in r["preds"].items()}
        else:
            t0 = time.time()
            res = score_task(builder, spec, data, ks, setfit_ks, args.draws, cfg.eval.split_seed, args.bootstrap)
            res["seconds"] = time.time() - t0
            plain = {**res, "k": {k: {**r, "preds": {m: v.tolist() for m, v in r["preds"].items()}}
                                  for k, r in res["k"].items()}}
            np.savez(done, report=json.dumps(plain))
        tasks[spec.name] = res
        auto = res["k"][str(ks[-1])]["methods"]["base+auto"]["macro_f1"]["mean"]
        print(f"{spec.name}: {res['seconds']:.0f} s; base+auto macro-F1 at k={ks[-1]}: {auto:.3f}", flush=True)
    if args.generator:
        from raypdiff.fewshot import route_seconds
        from raypdiff.generate import Generator

        first = specs[0]
        data = load_task(first, cfg.eval.val_examples, cfg.eval.test_examples, cfg.eval.split_seed)
        latency = {"task": first.name, "generator": args.generator, "seconds": [
            route_seconds(Generator(args.generator), builder, first, data, k, args.num, 10, cfg.eval.split_seed)
            for k in (8, 16)]}
    report = {"route": latency if args.generator else None, "note": (f"{len(tasks)} tasks of {args.config}, test rows as collected (eval.test_examples="
                       f"{cfg.eval.test_examples}), {args.draws} support draws per k; heads read the base model's "
                       f"mean-pooled, L2-normalized features; model.dtype={cfg.model.dtype}; seconds per adapter are "
                       f"medians (built heads: features of the examples + leave-one-out + fit; SetFit: model load + "
                       f"training)."),
              "summary": summarize(tasks, labels, args.bootstrap, cfg.eval.split_seed),
              "tasks": {n: {**t, "k": {k: {m: v for m, v in r.items() if m != "preds"} for k, r in t["k"].items()}}
                        for n, t in tasks.items()},
              "wall_seconds": time.time() - t_all, "k": ks, "setfit_k": setfit_ks, "draws": args.draws}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reports.write(out, args.name, report, markdown)
    print(markdown(report).split("## Per task")[0])


if __name__ == "__main__":
    main()
