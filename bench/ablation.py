"""The ablation sweep (configs/sweep.yaml: N, normalization, condition, latent size, noise; two seeds for the default
row) on the six-task zoo collected with two seeds (collected first; a complete one is reused), its tables and plot
copied to bench/results/ablation.{json,md,png}. Resumable: run it again after an interruption.

    python bench/ablation.py --data-root ../shared/data
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--config", default="configs/sweep.yaml")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("overrides", nargs="*", help="dotted overrides for the sweep's config")
    args = p.parse_args()
    from raypdiff.config import load_config

    cfg = load_config(ROOT / args.config, [f"data.root={args.data_root}", *args.overrides])
    for verb in ("collect", "sweep"):
        subprocess.run([sys.executable, "-m", "raypdiff.cli", verb, "-c", args.config, f"data.root={args.data_root}",
                        *args.overrides], cwd=ROOT, check=True)
    src = ROOT / cfg.sweep.output_dir if not Path(cfg.sweep.output_dir).is_absolute() else Path(cfg.sweep.output_dir)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for ext in ("json", "md", "png"):
        shutil.copy(src / f"sweep.{ext}", Path(args.out) / f"ablation.{ext}")
    print((Path(args.out) / "ablation.md").read_text())


if __name__ == "__main__":
    main()
