"""Generator training on 1 vs 2 Ray Train (DDP) workers, the same global batch: wall time, time per optimizer step
of each phase, and the losses reached. Writes bench/results/ddp.{json,md}.

    python bench/ddp.py --zoo runs/zoo --data-root ../shared/data
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from raypdiff import checkpoint

ROOT = Path(__file__).resolve().parents[1]


def run(args, workers: int, tmp: Path) -> dict:
    out = tmp / f"gen{workers}"
    cmd = [sys.executable, "-m", "raypdiff.cli", "train", "-q", "-c", args.config, "--zoo", args.zoo,
           f"data.root={args.data_root}", f"trainer.output_dir={out}", f"trainer.num_workers={workers}",
           f"trainer.cpus_per_worker={args.cpus_per_worker}", "tracking.enabled=false",
           f"autoencoder.steps={args.steps}", f"diffusion.steps={args.steps}", f"trainer.checkpoint_every={args.steps}"]
    t0 = time.time()
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_TMPDIR": str(tmp / f"ray{workers}")}
    subprocess.run(cmd, cwd=ROOT, check=True, env=env)  # a private local Ray per run
    wall = time.time() - t0
    history = checkpoint.load(out).history
    res = {"workers": workers, "wall_seconds": wall,
           "train_seconds": json.loads((out / "train_summary.json").read_text())["train_seconds"]}
    for phase in ("ae", "diffusion"):
        logged = [h[f"{phase}_loss"] for h in history if h["phase"] == phase]
        res[f"{phase}_first_loss"], res[f"{phase}_final_loss"] = logged[0], logged[-1]
        # the mean of the last three logged losses: one logged loss is one batch's, too noisy to compare runs by
        res[f"{phase}_tail_loss"] = sum(logged[-3:]) / len(logged[-3:])
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zoo", default="runs/zoo")
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--config", default="configs/zoo.yaml")
    p.add_argument("--steps", type=int, default=500, help="optimizer steps of each phase")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args()
    args.zoo = str(Path(args.zoo).resolve())
    with tempfile.TemporaryDirectory(prefix="rpb", dir="/tmp") as tmp:
        runs = [run(args, w, Path(tmp)) for w in (1, 2)]
    res = {"zoo": args.zoo, "config": args.config, "steps_per_phase": args.steps,
           "cpus_per_worker": args.cpus_per_worker, "runs": runs,
           "speedup": runs[0]["train_seconds"] / runs[1]["train_seconds"]}
    out = Path(args.out)
    (out / "ddp.json").write_text(json.dumps(res, indent=1))
    lines = ["# Generator training: 1 vs 2 DDP workers (Ray Train)", "",
             f"`python bench/ddp.py` — {args.config}, {args.steps} steps per phase, the same global batch (each of 2 "
             f"workers draws half of it from its shard), {args.cpus_per_worker:g} CPU per worker. `train seconds` "
             "includes preparing the zoo and conditions and starting the workers.", "",
             "| workers | train seconds | AE loss first → last (mean of the last 3 logged) | diffusion loss first → last "
             "(mean of the last 3 logged) |", "|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['workers']} | {r['train_seconds']:.0f} | {r['ae_first_loss']:.4f} → {r['ae_final_loss']:.4f} "
                     f"({r['ae_tail_loss']:.4f}) | {r['diffusion_first_loss']:.4f} → {r['diffusion_final_loss']:.4f} "
                     f"({r['diffusion_tail_loss']:.4f}) |")
    lines += ["", f"Speed-up of 2 workers over 1: {res['speedup']:.2f}x."]
    (out / "ddp.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
