"""Tabulate zoo runs made while choosing the defaults (one row per task and run: LoRA, schedule, val metric of
its captures) into bench/results/zoo_probes.{json,md} (--out: another folder). Each run is a `raypdiff collect`
output folder.

    python bench/zoo_probes.py runs/zoo runs/probe_s4 runs/probe_s5 ...
"""
import argparse
import json
from pathlib import Path

from raypdiff.config import load_config
from raypdiff.zoo.store import summarize

RESULTS = Path(__file__).parent / "results"


def rows(zoo_dir: str) -> list[dict]:
    cfg = load_config(Path(zoo_dir) / "config.yaml")
    out = []
    for task, s in summarize(zoo_dir)["tasks"].items():
        t = cfg.train.for_task(task)
        out.append({"zoo": zoo_dir, "task": task, "lora_r": cfg.lora.r, "targets": cfg.lora.target_modules,
                    "steps": t.steps, "lr": t.lr, "head_lr": t.head_lr or t.lr, "captures": s["n"],
                    "val_rows": cfg.eval.val_examples, **{k: s[k] for k in ("metric", "mean", "best", "worst")}})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("zoos", nargs="+", help="collect output folders")
    p.add_argument("--name", default="zoo_probes", help="results file stem (bench/results/<name>.json)")
    p.add_argument("--out", default=str(RESULTS), help="results folder")
    args = p.parse_args()
    table = sorted((r for z in args.zoos for r in rows(z)), key=lambda r: (r["task"], r["zoo"]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps({"runs": table}, indent=1))
    md = ["# Zoo settings tried (mean / best / worst of each run's captured checkpoints)", "",
          "A row is reproduced by `raypdiff collect -c configs/zoo.yaml data.root=... 'tasks=[T]'` with the row's "
          "settings as overrides (`lora.r`, `lora.target_modules`, `train.per_task.T.{steps,lr,head_lr}`, "
          "`capture.num`, `capture.stride`, `eval.val_examples`; runs before the held-out protocol used `eval.max_examples` dev rows).", "",
          "| task | zoo | r | targets | steps | lr | head lr | captures | val rows | metric (val) | mean | best | worst |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['task']} | {r['zoo']} | {r['lora_r']} | {','.join(r['targets'])} | {r['steps']} | {r['lr']:g} | "
           f"{r['head_lr']:g} | {r['captures']} | {r['val_rows']} | {r['metric']} | {r['mean']:.4f} | "
           f"{r['best']:.4f} | {r['worst']:.4f} |" for r in table]
    (out / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
