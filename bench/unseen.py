"""Tasks never seen, on the many-task suite (configs/suite.yaml): collect its zoo (a complete one is reused, a partial
one resumes), train one generator per hold-out fold, and score every held-out task's bodies + built heads at k
examples per label against SetFit (raypdiff.transfer); writes bench/results/unseen.{json,md,png}. Resumable: fold
generators and scored tasks are kept under --work. Two processes may share the work: `--stage train` trains the
fold generators while `--stage score` scores each fold as its generator lands.

    python bench/unseen.py --data-root ../shared/data [--schemes families] [--k 2,4,8,16] [--setfit-k 8]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raypdiff.zoo.store import ZooMeta  # main imports raypdiff once torch's threads are set

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--config", default="configs/suite.yaml")
    p.add_argument("--schemes", nargs="+", default=["families"], choices=["kfold", "family", "families"],
                   help="families: holdout.folds folds of whole families (strictly unseen); family: one per family")
    p.add_argument("--k", default="2,4,8,16", help="examples per label for the built heads")
    p.add_argument("--setfit-k", default="8", help="examples per label for SetFit (it trains per task)")
    p.add_argument("--tune-k", default="8", help="examples per label for the warm starts and plain fine-tuning "
                   "(raypdiff.warmstart; tasks scored without them get them added)")
    p.add_argument("--draws", type=int, default=1, help="support draws per task (nested over k)")
    p.add_argument("--num", type=int, default=3, help="generated bodies per adapter, picked by leave-one-out")
    p.add_argument("--multitask-steps", type=int, default=600,
                   help="steps of the multi-task body per fold (batch train.batch_size, one task per step; 0: none)")
    p.add_argument("--stage", choices=["all", "train", "score", "report"], default="all",
                   help="report: write the results from what is scored so far (tasks not scored yet are named)")
    p.add_argument("--folds", help="comma-separated fold names to work on (default: all); a report needs all, but "
                                   "--stage report reports these alone and says so")
    p.add_argument("--reverse", action="store_true", help="score each fold's tasks from the last (a second scorer)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's); every method's seconds are at this")
    p.add_argument("--work", default=str(ROOT / "runs" / "unseen"))
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("overrides", nargs="*", help="dotted overrides for the suite's config")
    args = p.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from raypdiff.config import load_config
    from raypdiff.transfer import fold_result, prepare_fold, run_fold
    from raypdiff.unseen import folds_for
    from raypdiff.zoo.store import check, task_arrays

    overrides = [f"data.root={args.data_root}", *args.overrides]
    cfg = load_config(ROOT / args.config, overrides)
    if args.stage in ("all", "train"):
        subprocess.run([sys.executable, "-m", "raypdiff.cli", "collect", "-c", args.config, *overrides], cwd=ROOT,
                       check=True)
    zoo = str(ROOT / cfg.collect.output_dir)
    meta = check(zoo)
    arrays = task_arrays(zoo) if args.stage in ("all", "score") else {}
    ks, setfit_ks = [int(k) for k in args.k.split(",")], [int(k) for k in args.setfit_k.split(",") if k]
    tune_ks = tuple(int(k) for k in args.tune_k.split(",") if k)
    reports = {}
    for scheme in args.schemes:
        scfg = load_config(ROOT / args.config, [*overrides, f"holdout.scheme={scheme}"])
        from raypdiff.tasks import TaskSpec

        specs = [TaskSpec(**i.spec) for i in meta.tasks.values()]
        folds, results = folds_for(scfg, specs), []
        t0 = time.time()
        for fold in folds:
            if args.folds and fold.name not in args.folds.split(","):
                continue
            out = Path(args.work) / scheme / fold.name
            out.mkdir(parents=True, exist_ok=True)
            if args.stage == "train":
                prepare_fold(scfg, zoo, meta, fold, out, args.multitask_steps)
                continue
            if args.stage == "report":
                results.append(fold_result(fold, out, args.multitask_steps))
                continue
            results.append(run_fold(scfg, zoo, meta, arrays, fold, out, ks, args.draws, setfit_ks, args.num,
                                    args.multitask_steps, train=args.stage == "all", reverse=args.reverse, tune_ks=tune_ks))
        if results and (len(results) == len(folds) or args.stage == "report"):  # a scorer's --folds: no report
            reports[scheme] = report(scfg, meta, scheme, results, Path(args.work) / scheme, ks, setfit_ks, args,
                                     time.time() - t0, len(folds))
    if reports:
        write(reports, meta, zoo, Path(args.out))


def report(cfg, meta: ZooMeta, scheme: str, results: list[dict], work: Path, ks, setfit_ks, args,
           seconds: float, num_folds: int) -> dict:
    from raypdiff.domains import load_splits
    from raypdiff.transfer import load_preds, per_family, summarize

    tasks = {t: r for f in results for t, r in f["tasks"].items()}
    data = load_splits(meta, list(tasks))
    labels = {t: data[t].test.labels for t in tasks}
    metrics = {t: meta.tasks[t].spec["metric"] for t in tasks}
    preds = {t: load_preds(work / f["fold"], t) for f in results for t in f["tasks"]}
    families = {t: meta.tasks[t].spec["family"] for t in tasks}
    k8 = "8" if 8 in ks else str(max(ks))
    # tasks scored before their thread count was recorded: the --threads given to the report
    threads = sorted({r.get("threads", args.threads or 0) for r in tasks.values()} - {0}) or ["?"]
    import torch

    from raypdiff.lora import resolve_dtype
    from raypdiff.warmstart import LR, STEPS

    how = {"families": "no held-out task's family is among its fold's training tasks",
           "family": "one fold per family, held out whole",
           "kfold": "tasks split at random: a held-out task's family and label-swapped twin may be among the training "
                    "tasks"}[scheme]
    # what each method is, for the methods this run scored (SetFit, multitask, warm starts and task loss are optional)
    which = (f"{len(results)} folds" if len(results) == num_folds else
             f"{len(results)} of {num_folds} folds ({', '.join(f['fold'] for f in results)}; --folds)")
    parts = [f"{which} ({scheme}: {how}), each with its own generator (condition.pooling="
             f"{cfg.condition.pooling}, {cfg.autoencoder.steps} autoencoder + {cfg.diffusion.steps} diffusion steps). "
             f"Per task: {args.draws} support draw(s) of max k per label (smaller k: the first k of each label), the "
             f"same examples and test rows ({cfg.eval.test_examples}) for every method",
             f"SetFit (few-shot defaults) at k = {setfit_ks}, from the base model (setfit) and from the generated+head "
             f"adapter's body merged into its encoder (generated+setfit)" if setfit_ks else None,
             "Majority: the train split's majority class (a floor, not chosen from the examples). Every head reads its "
             "body's mean-pooled, L2-normalized features; base: LoRA at zero; nearest: the training task closest by "
             "condition embedding; retrieved: the training body with the best leave-one-out score over the k examples "
             "(prototype head)",
             f"multitask: one LoRA trained on all of the fold's training tasks at once ({args.multitask_steps} steps, "
             f"batch {cfg.train.batch_size}, a head per task)" if args.multitask_steps else None,
             f"generated: the best of {args.num} samples by leave-one-out",
             f"generated+taskloss: the same from the fold's generator trained further through {cfg.taskloss.steps} "
             f"task-loss episodes (k = {cfg.taskloss.k} per label, {cfg.taskloss.query} query rows, lr "
             f"{cfg.taskloss.lr}, denoising weight {cfg.taskloss.denoise_weight}: raypdiff.episodes)"
             if cfg.taskloss.steps else None,
             "auto: the product's route (base or generated, by leave-one-out)",
             f"+tune (k = {args.tune_k}): that adapter, body and head, fine-tuned on the k examples ({STEPS} full-batch "
             f"AdamW steps, lr {LR}: raypdiff.warmstart, fixed before any run); finetune: the same steps from the base "
             f"model's initial LoRA and a zero head" if args.tune_k else None,
             "oracle: the task's own best-by-val zoo body. Heads (head = prototype or logistic, by leave-one-out; ridge "
             f"for regression). model.dtype {cfg.model.dtype} ({resolve_dtype(cfg.model.dtype, torch.device('cpu'))} "
             f"here). Seconds: median per adapter, {'/'.join(map(str, threads))} torch thread(s) for every method (the "
             f"scorers' --threads)."]
    note = "; ".join(p for p in parts if p)
    missing = [t for f in results for t in f["heldout"] if t not in f["tasks"]]
    if missing:
        note += (f" Not scored in this run (it stopped before them, or --folds left them out): {len(missing)} of "
                 f"{len(missing) + len(tasks)} tasks: {', '.join(missing)}.")
    return {"scheme": scheme, "task_count": len(tasks), "note": note, "wall_seconds": seconds, "not_scored": missing,
            "folds": [{k: f[k] for k in ("fold", "heldout", "train_tasks", "train_seconds", "multitask_seconds",
                                         "taskloss")} for f in results],
            "summary": summarize(results, preds, labels, metrics, cfg.holdout.bootstrap, cfg.holdout.seed),
            "per_family": per_family(tasks, families, k8, "generated+head", "base+head"),
            "per_family_taskloss": per_family(tasks, families, k8, "generated+taskloss+head", "generated+head"),
            "tasks": tasks}


def write(reports: dict, meta: ZooMeta, zoo: str, out: Path) -> None:
    from raypdiff.transfer import METHODS, markdown, plot

    out.mkdir(parents=True, exist_ok=True)
    timing = Path(zoo) / "collect_seconds.json"
    suite = {"tasks": len(meta.tasks), "captures_per_run": meta.capture.num, "seeds": meta.capture.seeds,
             "collect_seconds": json.loads(timing.read_text())["seconds"] if timing.is_file() else None}
    # per scheme and k: each method's macro-F1 average over tasks under its own name, and the flip rates
    result = {"suite": suite, **{s: {"k": {k: {m: b["macro_f1"][m] for m in METHODS if m in b["macro_f1"]}
                                           for k, b in r["summary"]["k"].items()},
                                     "flip": r["summary"]["flip"], "report": r} for s, r in reports.items()}}
    (out / "unseen.json").write_text(json.dumps(result, indent=1))
    (out / "unseen.md").write_text("\n\n".join(markdown(r) for r in reports.values()))
    for i, (s, r) in enumerate(reports.items()):
        plot(r, out / ("unseen.png" if i == 0 else f"unseen_{s}.png"))
    print((out / "unseen.md").read_text().split("## Per task")[0])


if __name__ == "__main__":
    main()
