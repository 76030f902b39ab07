"""Collection throughput with 1 and 2 parallel Ray workers on the same small config: checkpoints per
minute, parallel efficiency (ckpt/min at 2 ÷ (2 × ckpt/min at 1)) and peak memory of the whole process
tree. Writes bench/results/collect_scaling.{json,md} (--out: another folder).

    python bench/collect_scaling.py --data-root ../shared/data [key=value ...]   # overrides on top of SMALL
"""
import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from raypdiff.config import load_config
from raypdiff.zoo.store import summarize

RESULTS = Path(__file__).parent / "results"
# Four (task, seed) jobs of equal size, so 2 workers split the work evenly.
SMALL = ["tasks=[SST-2]", "capture.seeds=[0,1,2,3]", "train.steps=60", "train.per_task={}", "capture.num=20",
         "eval.val_examples=128", "eval.test_examples=128", "model.max_length=64", "tracking.enabled=false"]


def tree_rss_mb(proc: psutil.Process) -> float:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def run(workers: int, data_root: str, out: Path, small: list[str]) -> dict:
    cmd = [sys.executable, "-m", "raypdiff.cli", "collect", "-q", f"data.root={data_root}",
           f"collect.output_dir={out}", f"collect.max_in_flight={workers}", *small]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ps, peak, done = psutil.Process(proc.pid), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss_mb(ps))
            time.sleep(0.5)

    threading.Thread(target=sample, daemon=True).start()
    log, _ = proc.communicate()
    done.set()
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"collection with {workers} workers failed:\n{log[-3000:]}")
    n = sum(s["n"] for s in summarize(out)["tasks"].values())  # the checkpoints collected
    return {"workers": workers, "wall_seconds": wall, "checkpoints": n, "ckpt_per_min": n / (wall / 60),
            "peak_rss_mb": peak[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", default=str(RESULTS), help="folder for collect_scaling.{json,md}")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="collect overrides on top of the small config")
    args = p.parse_args()
    small = [*SMALL, *args.overrides]
    cfg = load_config(None, small)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in (1, 2):
            runs[w] = run(w, args.data_root, Path(tmp) / f"zoo{w}", small)
            print(runs[w], flush=True)
    eff = runs[2]["ckpt_per_min"] / (2 * runs[1]["ckpt_per_min"])
    result = {"ckpt_per_min": {str(w): r["ckpt_per_min"] for w, r in runs.items()}, "efficiency": eff,
              "peak_rss_mb": max(r["peak_rss_mb"] for r in runs.values()),
              "runs": {str(w): r for w, r in runs.items()}, "config": small}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "collect_scaling.json").write_text(json.dumps(result, indent=1))
    jobs = len(cfg.capture.seeds) * len(cfg.tasks)
    md = [f"# Collection scaling (1 vs 2 Ray workers, {jobs} × {', '.join(map(str, cfg.tasks))} jobs, "
          f"{runs[1]['checkpoints']} checkpoints)", "",
          "| workers | wall s | ckpt/min | peak RSS MB |", "|---|---|---|---|"]
    md += [f"| {w} | {r['wall_seconds']:.0f} | {r['ckpt_per_min']:.1f} | {r['peak_rss_mb']:.0f} |"
           for w, r in runs.items()]
    md += ["", f"Parallel efficiency: {eff:.2f} (wall times include Ray start and model load)."]
    (out / "collect_scaling.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
