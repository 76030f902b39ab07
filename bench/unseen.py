"""Tasks never seen, on the many-task suite (configs/suite.yaml): collect its zoo (a complete one is reused, a partial
one resumes), run `raypdiff holdout` with k-fold and leave-one-family-out folds, and write
bench/results/unseen.{json,md,png} (+ unseen_map.png, unseen_path.png; unseen_family*.png). Resumable: finished
folds are kept, and a scheme left out of --schemes keeps its results from the existing unseen.json.

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
    suite = {"tasks": len(meta["tasks"]), "families": len(families),
             "captures": len(meta["tasks"]) * meta["capture"]["num"] * len(meta["capture"]["seeds"]),
             "seeds": meta["capture"]["seeds"],
             "collect_seconds": json.loads(timing.read_text())["seconds"] if timing.is_file() else None}
    result = {"suite": suite, "measured_on": {s: suite for s in args.schemes}}
    for key in KEYS:
        result[key] = {s: r[key] for s, r in reports.items()}
    result["holdout"] = {s: r["tasks"] for s, r in reports.items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sections = {s: (ROOT / cfg.holdout.output_dir / s / "holdout.md").read_text() for s in args.schemes}
    kept = keep_earlier(out, suite, set(args.schemes), result, sections)
    order = [s for s in ("kfold", "family") if s in sections]
    for key, by_scheme in result.items():  # k-fold first, whichever scheme ran today
        if key != "suite":
            result[key] = {s: by_scheme[s] for s in order}
    (out / "unseen.json").write_text(json.dumps(result, indent=1))
    lines = [f"# Unseen tasks on the suite: {describe(suite)}", ""]
    lines += [f"The {s} scheme is kept from an earlier run, on a collection of the same suite: "
              f"{describe(result['measured_on'][s])}.\n" for s in kept]
    (out / "unseen.md").write_text("\n".join(lines) + "\n\n".join(sections[s] for s in order))
    for s in args.schemes:  # the k-fold pictures are the report's unseen*.png; other schemes' carry their name
        tag = "" if s == "kfold" else f"_{s}"
        for src, dst in (("holdout.png", "unseen"), ("map.png", "unseen_map"), ("path.png", "unseen_path")):
            shutil.copy(ROOT / cfg.holdout.output_dir / s / src, out / f"{dst}{tag}.png")
    print((out / "unseen.md").read_text())


KEYS = ("nearest_zoo_task", "average", "higher_by_interval", "skipped", "sensitivity", "flip", "pictures", "folds")


def describe(suite: dict) -> str:
    took = "an unrecorded time" if suite["collect_seconds"] is None else f"{suite['collect_seconds']:.0f} s"
    return (f"{suite['tasks']} tasks, {suite['families']} families, {suite['captures']} captures "
            f"(seeds {suite['seeds']}), collected in {took}")


def keep_earlier(out: Path, suite: dict, ran: set[str], result: dict, sections: dict[str, str]) -> list[str]:
    """Carry over, from out/unseen.json and unseen.md, the schemes this run did not measure, when they were
    measured on the same suite (its tasks, families, captures and seeds). Returns the kept schemes."""
    if not (out / "unseen.json").is_file():
        return []
    old = json.loads((out / "unseen.json").read_text())
    if {**old["suite"], "collect_seconds": None} != {**suite, "collect_seconds": None}:
        return []
    kept = [s for s in old["holdout"] if s not in ran]
    text = (out / "unseen.md").read_text().split("\n# Unseen tasks (")
    for s in kept:
        result["measured_on"][s] = old.get("measured_on", {}).get(s, old["suite"])
        result["holdout"][s] = old["holdout"][s]
        for key in KEYS:
            result[key][s] = old[key][s]
        sections[s] = next("# Unseen tasks (" + t for t in text[1:] if t.startswith(f"{s})")).rstrip("\n") + "\n"
    return kept


if __name__ == "__main__":
    main()
