"""Build the default six-task GLUE zoo and write bench/results/zoo.{json,md}: per-task dev metric of the
captured checkpoints against the majority-class baseline, and the wall time (--out: another folder).

    python bench/zoo.py --data-root ../shared/data [--config configs/zoo.yaml] [key=value ...]
"""
import argparse
import json
import time
from pathlib import Path

from raypdiff.cli import format_summary
from raypdiff.config import load_config
from raypdiff.zoo.collect import collect

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(Path(__file__).parents[1] / "configs" / "zoo.yaml"))
    p.add_argument("--data-root", required=True, help="folder holding glue/<TASK>/{train,dev}.tsv")
    p.add_argument("--name", default="zoo", help="results file stem (bench/results/<name>.json)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--out", default=str(RESULTS), help="results folder")
    args = p.parse_args()
    cfg = load_config(args.config, [f"data.root={args.data_root}", *args.overrides])
    t0 = time.time()
    summary = collect(cfg)
    result = {"tasks": summary["tasks"], "wall_seconds": time.time() - t0,
              "config": args.config, "overrides": args.overrides, "zoo_dir": cfg.collect.output_dir}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    md = [f"# Checkpoint zoo ({args.config} {' '.join(args.overrides)})", "",
          format_summary(summary), "", f"Wall time: {result['wall_seconds']:.0f} s "
          f"(2-core machine, one Ray Task per (task, seed))."]
    (out / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
