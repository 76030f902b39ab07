"""Which training schedule the main job's zoo (configs/demo.yaml) takes, picked on val: per schedule, one zoo
collected, and per task its captures' val mean and best beside the val score of their weight average. Writes
bench/results/demo_schedule.{json,md}; a finished zoo is reused.

    python bench/demo_schedule.py --data-root ../shared/data [--variants s120d0 s200d80] [key=value ...]
"""
import argparse
import json
import os
import platform
import re
from pathlib import Path

import torch

from raypdiff import reports
from raypdiff.config import load_config
from raypdiff.evaluate import weight_average_on_val
from raypdiff.lora import resolve_dtype
from raypdiff.zoo.collect import collect

RESULTS = Path(__file__).parent / "results"
# sSTEPSdDECAY: train.steps=STEPS, whose last DECAY take the rate down to 0 (d0: constant after warmup)
VARIANTS = ["s120d0", "s120d40", "s120d80", "s160d40", "s200d80"]


def schedule(name: str) -> tuple[int, int]:
    """'s200d80' → (200, 80); one error line for another name."""
    m = re.fullmatch(r"s(\d+)d(\d+)", name)
    if not m:
        raise SystemExit(f"--variants: {name!r} is not sSTEPSdDECAY, e.g. s200d80")
    return int(m[1]), int(m[2])


def run(config: str, name: str, data_root: str, work: Path, overrides: list[str]) -> dict:
    zoo = work / name / "zoo"
    root = [f"data.root={data_root}"] if data_root else []
    steps, decay = schedule(name)
    cfg = load_config(config, [*root, *overrides, f"train.steps={steps}", f"train.decay_steps={decay}",
                               f"collect.output_dir={zoo}", "tracking.enabled=false"])
    collect(cfg, progress=False)  # resumes: a finished zoo is only checked
    return {"steps": steps, "decay_steps": decay, "dtype": resolve_dtype(cfg.model.dtype, torch.device("cpu")),
            "collect_seconds": json.loads((zoo / "collect_seconds.json").read_text())["seconds"],
            "tasks": weight_average_on_val(str(zoo))}


def markdown(r: dict) -> str:
    lines = [f"# The main job's zoo schedule, picked on val (`{r['config']}`)", "",
             f"Each zoo: seeds {r['seeds']}, {r['captures']} captures of each run's last steps; every figure on the val rows (the "
             "test rows are not read). A schedule whose captures' mean falls short of their weight average leaves the "
             "generator, which samples captures, below that baseline. Collect seconds are wall times on "
             f"{r['machine']['cpus']} CPUs ({r['machine']['processor']}), other jobs possibly beside them.", "",
             "| train.steps | train.decay_steps | task | captures' mean | best capture | weight average "
             "| weight average − mean | dtype | collect s |", "|---|---|---|---|---|---|---|---|---|"]
    for v in r["variants"].values():
        for t, x in v["tasks"].items():
            lines.append(f"| {v['steps']} | {v['decay_steps']} | {t} | {x['zoo_mean']:.3f} | {x['zoo_best']:.3f} | "
                         f"{x['weight_average']:.3f} | {x['weight_average'] - x['zoo_mean']:+.3f} | {v['dtype']} | "
                         f"{v['collect_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=os.environ.get("RAYPDIFF_DATA_DIR"))
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--variants", nargs="+", default=VARIANTS, help="schedules as sSTEPSdDECAY (default: %(default)s)")
    p.add_argument("--work", default="runs/decay", help="where each schedule's zoo goes")
    p.add_argument("--out", default=str(RESULTS), help="folder for demo_schedule.json and .md")
    p.add_argument("overrides", nargs="*", help="config overrides (key=value) for every schedule")
    args = p.parse_args()
    cfg = load_config(args.config, args.overrides)
    for n in args.variants:  # every schedule checked before anything is collected
        steps, decay = schedule(n)
        if decay > steps:
            raise SystemExit(f"--variants: {n!r} decays over more steps ({decay}) than it trains ({steps})")
    r = {"config": args.config, "overrides": args.overrides, "captures": cfg.capture.num, "seeds": cfg.capture.seeds,
         "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
         "variants": {n: run(args.config, n, args.data_root, Path(args.work).resolve(), args.overrides)
                      for n in args.variants}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reports.write(out, "demo_schedule", r, markdown)
    print(markdown(r))


if __name__ == "__main__":
    main()
