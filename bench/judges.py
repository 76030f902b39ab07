"""The vision judges (raypdiff.vision.evaluate.train_judges) per training size: each candidate's accuracy on every
style's real val images picks (the class judge's worst style: a content bar that means the same for every style),
the pick and the default are reported on test. Writes bench/results/judges.{json,md}.

    python bench/judges.py [--images 500,4000,16000] [--steps 1500,4000] [k=v ...]
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/vision.yaml")
    p.add_argument("--images", default="500,4000,16000", help="style_eval.judge_images candidates (comma-separated)")
    p.add_argument("--steps", default="1500,4000", help="style_eval.judge_steps candidates (comma-separated)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("overrides", nargs="*", help="dotted overrides of the config (style_eval.seed: the judges' draw)")
    args = p.parse_args()
    from raypdiff.config import derive, load_config
    from raypdiff.domains import domain_for
    from raypdiff.vision.evaluate import train_judges

    cfg = load_config(ROOT / args.config, args.overrides)
    specs = domain_for("vision").specs(cfg)
    default = (cfg.style_eval.judge_images, cfg.style_eval.judge_steps)
    grid = sorted({default, *itertools.product(_ints(args.images), _ints(args.steps))})
    rows = []
    for images, steps in grid:
        t0 = time.time()
        _, acc = train_judges(derive(cfg, {"style_eval.judge_images": images, "style_eval.judge_steps": steps}),
                              specs, progress=False)
        worst = min(acc["class_val_acc_by_style"].items(), key=lambda kv: kv[1])
        rows.append({"judge_images": images, "judge_steps": steps, "seconds": time.time() - t0, **acc,
                     "class_val_worst": {"style": worst[0], "acc": worst[1]}})
        print(f"judge_images {images}, judge_steps {steps}: class val {acc['class_val_acc']:.3f} (worst "
              f"{worst[0]} {worst[1]:.3f}), style val {acc['style_val_acc']:.3f}, {rows[-1]['seconds']:.0f} s",
              file=sys.stderr)
    pick = max(rows, key=lambda r: (r["class_val_worst"]["acc"], r["class_val_acc"], -r["seconds"]))
    summary = {"config": args.config, "overrides": args.overrides, "seed": cfg.style_eval.seed,
               "val_images": cfg.eval.val_examples, "test_images": cfg.eval.test_examples,
               "default": dict(zip(("judge_images", "judge_steps"), default)),
               "pick": {"judge_images": pick["judge_images"], "judge_steps": pick["judge_steps"]}, "candidates": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "judges.json").write_text(json.dumps(summary, indent=1))
    (out / "judges.md").write_text(markdown(summary))
    print(markdown(summary))


def _ints(csv: str) -> list[int]:
    return [int(x) for x in csv.split(",") if x]


def markdown(summary: dict) -> str:
    from raypdiff.reports import table

    rows = summary["candidates"]
    at = {(r["judge_images"], r["judge_steps"]): r for r in rows}
    default, pick = (at[tuple(summary[k].values())] for k in ("default", "pick"))
    lines = ["# The vision judges: how much real data they train on", "",
             f"Both judges (`raypdiff.vision.evaluate.train_judges`, {summary['config']}, style_eval.seed "
             f"{summary['seed']}) per training size: judge_images real images per style and unstyled, judge_steps "
             f"steps. Accuracy on real styled images: val ({summary['val_images']} per style, the last train rows) "
             f"picks, test ({summary['test_images']} per style) reports. The pick: the highest class accuracy on the "
             f"worst style's val images, so that \"class acc ≥ 0.6\" asks the same of every style.", "",
             *table(["judge_images", "judge_steps", "seconds", "style val", "class val", "class val, worst style",
                     "style test", "class test"])]
    for r in rows:
        mark = " (default)" * (r is default) + " (pick)" * (r is pick)
        lines.append(f"| {r['judge_images']}{mark} | {r['judge_steps']} | {r['seconds']:.0f} | "
                     f"{r['style_val_acc']:.3f} | {r['class_val_acc']:.3f} | {r['class_val_worst']['style']} "
                     f"{r['class_val_worst']['acc']:.3f} | {r['style_test_acc']:.3f} | {r['class_test_acc']:.3f} |")
    lines += ["", "The class judge per style on real images, the default against the pick (val / test):", "",
              *table(["style", "default val", "default test", "pick val", "pick test"])]
    for s in default["class_val_acc_by_style"]:
        lines.append(f"| {s} | " + " | ".join(f"{r[f'class_{split}_acc_by_style'][s]:.3f}" for r in (default, pick)
                                               for split in ("val", "test")) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
