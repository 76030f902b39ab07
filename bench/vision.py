"""The vision domain end to end (configs/vision.yaml): build the offline base, collect the style-LoRA zoo, train the
generator, then `raypdiff vision-eval`; copies its report to bench/results/vision.{json,md,png} and the grids to
bench/results/vision_*.png. Every step resumes or reuses what is already built. --heldout-only: the held-out styles
alone (`vision-eval --heldout-only`, no generator on the whole zoo), into bench/results/vision_heldout/.

    python bench/vision.py [--heldout-only] [--out DIR] [k=v ...]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from raypdiff.checkpoint import GENERATOR_FILE

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/vision.yaml")
    p.add_argument("--out", help="where the report and grids go (default: bench/results, or "
                                 "bench/results/vision_heldout with --heldout-only)")
    p.add_argument("--heldout-only", action="store_true", help="only the held-out styles, by the generator trained "
                                                               "without them: no generator on the whole zoo")
    p.add_argument("overrides", nargs="*", help="dotted overrides for the config")
    args = p.parse_args()
    from raypdiff.config import load_config

    cfg = load_config(ROOT / args.config, args.overrides)
    common = ["-c", args.config, *args.overrides]

    def cli(*verb: str) -> None:
        subprocess.run([sys.executable, "-m", "raypdiff.cli", *verb, *common], cwd=ROOT, check=True)

    if not (ROOT / cfg.vision.base_dir / "base.json").is_file():
        cli("vision-base")
    cli("collect")
    if not args.heldout_only and not (ROOT / cfg.trainer.output_dir / GENERATOR_FILE).is_file():
        cli("train")
    cli("vision-eval", *(["--heldout-only"] if args.heldout_only else []))
    src = ROOT / cfg.style_eval.output_dir
    out = Path(args.out or ROOT / "bench" / "results" / ("vision_heldout" if args.heldout_only else ""))
    out.mkdir(parents=True, exist_ok=True)
    for f in ("vision.json", "vision.md", "vision.png"):
        shutil.copy(src / f, out / f)
    # a held-out-only report has no seen grids and no strip: an earlier full run's left in src are not its own
    pictures = ([*src.glob("grid_heldout_*.png"), *src.glob("grid_condition_*.png")] if args.heldout_only
                else [*src.glob("grid_*.png"), src / "interpolation.png"])
    for f in pictures:
        shutil.copy(f, out / f"vision_{f.name}")
    print((out / "vision.md").read_text())


if __name__ == "__main__":
    main()
