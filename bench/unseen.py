"""Tasks never seen, on the many-task suite (configs/suite.yaml): collect its zoo (a complete one is reused, a partial
one resumes), run `raypdiff holdout` with k-fold and leave-one-family-out folds, and write
bench/results/unseen.{json,md,png} (+ unseen_map.png, unseen_path.png). Resumable: finished folds are kept.

    python bench/unseen.py --data-root ../shared/data
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--config", default="configs/suite.yaml")
    p.add_argument("--schemes", nargs="+", default=["kfold", "family"], choices=["kfold", "family"])
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("overrides", nargs="*", help="dotted overrides for the suite's config")
    args = p.parse_args()
    from raypdiff.config import load_config
    from raypdiff.zoo import read_meta

    cfg = load_config(ROOT / args.config, [f"data.root={args.data_root}", *args.overrides])
    common = ["-c", args.config, f"data.root={args.data_root}", *args.overrides]
    subprocess.run([sys.executable, "-m", "raypdiff.cli", "collect", *common], cwd=ROOT, check=True)
    for scheme in args.schemes:
        subprocess.run([sys.executable, "-m", "raypdiff.cli", "holdout", *common, f"holdout.scheme={scheme}"],
                       cwd=ROOT, check=True)
    zoo = ROOT / cfg.collect.output_dir
    meta = read_meta(zoo)
    families = {info["spec"]["family"] for info in meta["tasks"].values()} - {None}
    timing = zoo / "collect_seconds.json"  # absent for a zoo collected before it was recorded
    reports = {s: json.loads((ROOT / cfg.holdout.output_dir / s / "holdout.json").read_text()) for s in args.schemes}
    result = {
        "suite": {"tasks": len(meta["tasks"]), "families": len(families),
                  "captures": len(meta["tasks"]) * meta["capture"]["num"] * len(meta["capture"]["seeds"]),
                  "seeds": meta["capture"]["seeds"],
                  "collect_seconds": json.loads(timing.read_text())["seconds"] if timing.is_file() else None},
        "holdout": {s: r["tasks"] for s, r in reports.items()},
        "nearest_zoo_task": {s: r["nearest_zoo_task"] for s, r in reports.items()},
        "average": {s: r["average"] for s, r in reports.items()},
        "higher_by_interval": {s: r["higher_by_interval"] for s, r in reports.items()},
        "skipped": {s: r["skipped"] for s, r in reports.items()},
        "sensitivity": {s: r["sensitivity"] for s, r in reports.items()},
        "flip": {s: r["flip"] for s, r in reports.items()},
        "pictures": {s: r["pictures"] for s, r in reports.items()},
        "folds": {s: r["folds"] for s, r in reports.items()},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "unseen.json").write_text(json.dumps(result, indent=1))
    suite = result["suite"]
    took = "an unrecorded time" if suite["collect_seconds"] is None else f"{suite['collect_seconds']:.0f} s"
    head = [f"# Unseen tasks on the suite: {suite['tasks']} tasks, {suite['families']} families, {suite['captures']} "
            f"captures (seeds {suite['seeds']}), collected in {took}", ""]
    (out / "unseen.md").write_text("\n".join(head) + "\n\n".join(
        (ROOT / cfg.holdout.output_dir / s / "holdout.md").read_text() for s in args.schemes))
    first = ROOT / cfg.holdout.output_dir / args.schemes[0]
    for src, dst in (("holdout.png", "unseen.png"), ("map.png", "unseen_map.png"), ("path.png", "unseen_path.png")):
        shutil.copy(first / src, out / dst)
    print((out / "unseen.md").read_text())


if __name__ == "__main__":
    main()
