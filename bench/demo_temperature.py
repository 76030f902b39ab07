"""The main job's sampling temperature (`diffusion.temperature`), picked on val: per finished generator of
bench/demo.py (one per precision path) and temperature, the val scores of `--num` generated adapters per task and
sampling seed, beside the zoo's weight average. Writes bench/results/demo_temperature.{json,md}.

    python bench/demo_temperature.py --generators runs/bench_demo/float32/generator runs/bench_demo/bfloat16/generator
"""
import argparse
import os
import platform
from pathlib import Path

import torch

from raypdiff import reports
from raypdiff.config import derive
from raypdiff.evaluate import Plan, weight_average_on_val
from raypdiff.domains import load_splits
from raypdiff.generate import Generator
from raypdiff.lora import resolve_dtype
from raypdiff.stats import metric_rows
from raypdiff.zoo.store import check

RESULTS = Path(__file__).parent / "results"


def run(path: str, temperatures: list[float], seeds: list[int], num: int) -> dict:
    gen = Generator(path)
    meta, names = check(gen.ckpt.zoo), gen.task_names
    data, plan = load_splits(meta, names), Plan()
    own = gen.cfg
    for temp in temperatures:
        gen.cfg = derive(own, {"diffusion.temperature": temp})  # a sampling setting: the networks stay as trained
        for t in names:
            for seed in seeds:
                vecs = gen.denormalize(t, gen.normalized(gen.conditions(t, num, gen.resolve_quality(None)), seed))
                plan.add((temp, t, seed), t, "val", vecs)
    gen.cfg = own
    preds = plan.score(meta, {t: {"val": data[t].val} for t in names}, None)
    wa = weight_average_on_val(gen.ckpt.zoo)
    out = {"dtype": resolve_dtype(gen.ckpt.base_model["dtype"], torch.device("cpu")), "zoo": gen.ckpt.zoo, "tasks": {}}
    for t in names:
        rows = {}
        for temp in temperatures:
            s = [metric_rows(meta.tasks[t].metric, preds[temp, t, seed], data[t].val.labels) for seed in seeds]
            rows[str(temp)] = {"mean": [float(x.mean()) for x in s], "lowest": [float(x.min()) for x in s]}
        out["tasks"][t] = {"temperatures": rows, "weight_average": wa[t]["weight_average"], "zoo_mean": wa[t]["zoo_mean"]}
    return out


def markdown(r: dict) -> str:
    seeds = ", ".join(map(str, r["seeds"]))
    lines = ["# The main job's sampling temperature, picked on val", "",
             f"Per generator of `bench/demo.py` and `diffusion.temperature` (the scale of the starting noise): the val "
             f"mean and the lowest val score of {r['num']} generated adapters, per sampling seed ({seeds}), beside the "
             "zoo's captures and their weight average on the same val rows. The test rows are not read. "
             f"{r['machine']['cpus']} CPUs ({r['machine']['processor']}).", "",
             "| generator (model.dtype) | task | temperature | generated mean per seed | lowest adapter per seed "
             "| zoo mean | weight average |", "|---|---|---|---|---|---|---|"]
    for g in r["generators"]:
        for t, x in g["tasks"].items():
            for temp, v in x["temperatures"].items():
                lines.append(f"| {g['dtype']} | {t} | {temp} | {' / '.join(f'{m:.4f}' for m in v['mean'])} | "
                             f"{' / '.join(f'{m:.4f}' for m in v['lowest'])} | {x['zoo_mean']:.4f} | "
                             f"{x['weight_average']:.4f} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generators", nargs="+", required=True, help="generator folders (bench/demo.py's, one per dtype)")
    p.add_argument("--temperatures", default="1,0.5", help="comma-separated (default: %(default)s)")
    p.add_argument("--seeds", default="0,1", help="sampling seeds, comma-separated (default: %(default)s)")
    p.add_argument("--num", type=int, default=10, help="adapters per task and seed (default: %(default)s)")
    p.add_argument("--out", default=str(RESULTS), help="folder for demo_temperature.json and .md")
    args = p.parse_args()
    temps, seeds = [float(x) for x in args.temperatures.split(",")], [int(x) for x in args.seeds.split(",")]
    r = {"temperatures": temps, "seeds": seeds, "num": args.num,
         "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
         "generators": [run(g, temps, seeds, args.num) for g in args.generators]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reports.write(out, "demo_temperature", r, markdown)
    print(markdown(r))


if __name__ == "__main__":
    main()
