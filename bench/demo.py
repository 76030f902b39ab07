"""The README's main job (`raypdiff pipeline -c configs/demo.yaml`) on both precision paths, model.dtype=float32 and
bfloat16: each task's generated vs zoo test figures, the report's three targets, wall time. Writes
bench/results/demo.{json,md}; a path already run (its runs/bench_demo/<dtype>/result.json) is read, not rerun.

    python bench/demo.py --data-root ../shared/data [--dtypes float32 bfloat16] [--config configs/demo.yaml] [k=v ...]
"""
import argparse
import json
import os
import platform
import time
from pathlib import Path

from raypdiff.config import load_config
from raypdiff.evaluate import TARGET_POINTS, targets
from raypdiff.pipeline import run_pipeline

RESULTS = Path(__file__).parent / "results"
TARGETS = ("mean_vs_zoo", "best_vs_zoo_best", "not_below_weight_average")


def run_one(config: str, dtype: str, data_root: str, work: Path, overrides: list[str]) -> dict:
    """One pipeline run on its own zoo, generator, adapters and MLflow store under work/<dtype>; the figures kept."""
    d = (work / dtype).resolve()
    done = d / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    root = [f"data.root={data_root}"] if data_root else []  # none given: the config's own (or the HF hub)
    cfg = load_config(config, [f"model.dtype={dtype}", *root, f"collect.output_dir={d / 'zoo'}",
                               f"trainer.output_dir={d / 'generator'}", f"generate.output_dir={d / 'adapters'}",
                               f"tracking.uri=sqlite:///{d / 'mlflow.db'}", *overrides])
    t0 = time.time()
    out = run_pipeline(cfg, progress=False)
    report, tg = out["report"], targets(out["report"])
    tasks = {}
    for t, r in report["tasks"].items():
        x = r["test"]
        tasks[t] = {"metric": r.get("metric"), "generated_mean": x["generated"]["mean"],
                    "generated_ci": x["generated"].get("ci"),
                    "generated_min": min(x["generated"]["scores"]),
                    "generated_best_by_val": x["generated"]["best_by_val"], "zoo_mean": x["zoo"]["mean"],
                    "zoo_best_by_val": x["zoo"]["best_by_val"], "weight_average": x["weight_average"],
                    "majority": x["majority"], "gen_vs_weight_average": x["diff"]["gen_vs_weight_average"],
                    "targets": tg[t]}
    res = {"dtype": dtype, "wall_seconds": round(time.time() - t0, 1), "train_seconds": round(out["train_seconds"], 1),
           "tasks": tasks, "all_met": all(all(v.values()) for v in tg.values())}
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(res, indent=1))
    return res


def markdown(runs: list[dict], config: str, machine: dict) -> str:
    lines = [f"# The main job on both precision paths (`{config}`)", "",
             f"Machine: {machine['cpus']} CPUs, {machine['processor']}. Targets per task (the report's ✓/✗): generated "
             f"mean ≥ zoo mean − {TARGET_POINTS}; generated best-by-val ≥ zoo best-by-val − {TARGET_POINTS}; generated "
             "mean not below the weight average beyond its interval. All figures on test; best-by-val is the mean test "
             "score of the adapters tied at the best val score (200 val rows: ties are common).", "",
             "| model.dtype | task | generated mean | lowest adapter | zoo mean | generated best-by-val | zoo best-by-val "
             "| weight average | targets | wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        for t, x in r["tasks"].items():
            marks = " ".join("✓" if x["targets"][k] else "✗" for k in TARGETS)
            lines.append(f"| {r['dtype']} | {t} | {x['generated_mean']:.3f} | {x['generated_min']:.3f} | {x['zoo_mean']:.3f} | "
                         f"{x['generated_best_by_val']:.3f} | {x['zoo_best_by_val']:.3f} | {x['weight_average']:.3f} | "
                         f"{marks} | {r['wall_seconds']:.0f} |")
    met = [r["dtype"] for r in runs if r["all_met"]]
    lines += ["", f"Every target met on: {', '.join(met) if met else 'neither path'}."]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=os.environ.get("RAYPDIFF_DATA_DIR"))
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    p.add_argument("--work", default="runs/bench_demo", help="where each path's zoo, generator and report go")
    p.add_argument("--out", default=str(RESULTS), help="folder for demo.json and demo.md")
    p.add_argument("overrides", nargs="*", help="config overrides (key=value) for both paths")
    args = p.parse_args()
    runs = [run_one(args.config, d, args.data_root, Path(args.work), args.overrides) for d in args.dtypes]
    machine = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo.json").write_text(json.dumps({"config": args.config, "overrides": args.overrides,
                                                    "machine": machine, "runs": runs}, indent=1))
    (out / "demo.md").write_text(markdown(runs, args.config, machine))
    print(markdown(runs, args.config, machine))


if __name__ == "__main__":
    main()
