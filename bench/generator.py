"""Train the generator on a collected zoo, evaluate it on held-out test rows, and time generation against
fine-tuning fairly. Writes bench/results/<name>.{json,md,png} (name: generator unless --name says otherwise;
--out: another folder).

    python bench/generator.py --zoo runs/zoo --data-root ../shared/data [key=value ...]
    python bench/generator.py --generator runs/generator --name generator_g1 diffusion.guidance=1
        # re-evaluate a trained generator: the sampling settings diffusion.guidance / diffusion.sampler /
        # condition.quality_target apply

Speed, at one thread count for both sides (--threads), tokenization counted on both: generate_s is one adapter
from a fresh condition text (description + k train examples, encoded, sampled, decoded); finetune_s is one whole
fine-tuning run of --ft-task with its zoo schedule (its train split tokenized inside). amortized_s = the zoo's
collection wall time + generator training; break_even_adapters = amortized_s / (finetune_s - generate_s).
to_zoo_best: generate --num adapters for --ft-task, score them on val, pick the best; its test score beside the
zoo's best-by-val.
"""
import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from raypdiff.checkpoint import locate
from raypdiff.config import load_config
from raypdiff.evaluate import evaluate, markdown
from raypdiff.generate import Generator
from raypdiff.train import train_generator
from raypdiff.domains import load_splits
from raypdiff.zoo.store import ZooMeta, read_meta
from raypdiff.stats import val_ties

RESULTS = Path(__file__).parent / "results"


def time_generation(gen: Generator, task: str, train_split, sampling: dict, repeats: int = 5) -> float:
    """Median seconds for one adapter from a new condition text (encode + sample + decode + de-normalize)."""
    from raypdiff.conditions import draw_examples

    spec, rng, times = gen.spec(task), np.random.default_rng(0), []
    for i in range(repeats + 1):  # the first is a warm-up: first-call allocations
        t0 = time.perf_counter()
        examples = draw_examples(train_split, gen.cfg.condition.k, rng)
        cond, _ = gen.task_condition(spec, examples, 1, among=[task], quality=sampling.get("quality"))
        gen.vectors(cond, task, i, sampling["guidance"], sampling["sampler"])
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def time_finetune(meta: ZooMeta, task: str, train_split) -> tuple[float, int]:
    """Seconds for one whole fine-tuning run of `task` with the zoo's schedule (tokenization included), and its
    steps."""
    from raypdiff import lora
    from raypdiff.config import Config
    from raypdiff.tasks import TaskSpec

    cfg = Config.from_dict({"model": meta.base_model, "lora": meta.lora, "train": meta.train,
                            "capture": meta.capture.to_dict()})
    tok = lora.load_tokenizer(cfg.model)
    model = lora.build(cfg.model, cfg.lora, TaskSpec(**meta.tasks[task].spec), 0, meta.tasks[task].label_mean)
    schedule = cfg.train.for_task(task)
    t0 = time.perf_counter()
    lora.finetune(model, tok, train_split, schedule, schedule.steps, cfg.model.max_length, 0, cfg.model.dtype, set(),
                  lambda s, v: None)
    return time.perf_counter() - t0, schedule.steps


def to_zoo_best(gen: Generator, meta: ZooMeta, data, task: str, num: int, report: dict, sampling: dict) -> dict:
    """Generate num, score them on val, pick the best: seconds taken, and its test score (tied picks: their mean)."""
    from raypdiff.scoring import Scorer
    from raypdiff.tasks import score

    info = meta.tasks[task]
    scorer = Scorer(meta.base_model, meta.lora, meta.eval["batch_size"],
                    {task: (info.spec, info.layout, {"val": data.val, "test": data.test})})
    scorer.predict(task, "val", gen.vectors(gen.conditions(task, 1, sampling.get("quality")), task))  # warm-up
    t0 = time.perf_counter()
    vecs = gen.vectors(gen.conditions(task, num, sampling.get("quality")), task, 1, sampling["guidance"],
                       sampling["sampler"])
    val = [score(info.metric, p, data.val.labels) for p in scorer.predict(task, "val", vecs)]
    seconds = time.perf_counter() - t0
    ties = val_ties(val)  # the report's rule: the mean test score of those tied at the best val score
    test = float(np.mean([score(info.metric, p, data.test.labels) for p in scorer.predict(task, "test", vecs[ties])]))
    zoo_best = report["tasks"][task]["test"]["zoo"]["best_by_val"]
    return {"task": task, "n": num, "seconds": seconds, "val": max(val), "test": test,
            "zoo_best_by_val_test": zoo_best, "reached": test >= zoo_best}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", default="runs/zoo")
    p.add_argument("--data-root", required=True)
    p.add_argument("--config", help="generator settings (default: built-in defaults)")
    p.add_argument("--num", type=int, default=20, help="generated samples per task")
    p.add_argument("--recon-num", type=int, default=10, help="zoo vectors per task through the autoencoder")
    p.add_argument("--matrix-num", type=int, default=10, help="adapters per condition × task cell")
    p.add_argument("--ft-task", default="SST-2", help="the task fine-tuned once for the speed comparison")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads for both sides")
    p.add_argument("--finetune-only", action="store_true",
                   help="only time the fine-tuning run and write finetune_time.json (in --out), which a later "
                        "run with the same --ft-task and --threads reads instead of timing again (so it can run "
                        "beside the generator's one-CPU training)")
    p.add_argument("--zoo-seconds", type=float, help="the zoo's collection wall time (default: zoo.json in --out)")
    p.add_argument("--name", default="generator", help="results file name under bench/results/ (or --out)")
    p.add_argument("--out", default=str(RESULTS), help="folder for <name>.{json,md,png}, finetune_time.json and "
                                                       "the zoo.json read for --zoo-seconds")
    p.add_argument("--generator", help="evaluate this trained generator (folder or file) instead of training one (its "
                                       "train_summary.json gives the training time)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timed = out / "finetune_time.json"
    if args.finetune_only:
        meta = read_meta(args.zoo)
        seconds, steps = time_finetune(meta, args.ft_task, load_splits(meta, [args.ft_task])[args.ft_task].train)
        timed.write_text(json.dumps({"task": args.ft_task, "threads": args.threads, "steps": steps,
                                     "seconds": seconds, "zoo": str(Path(args.zoo).resolve())}, indent=1))
        print(timed.read_text())
        return
    cfg = load_config(args.config, [f"data.root={args.data_root}", f"collect.output_dir={args.zoo}",
                                    *args.overrides])
    if args.generator:
        trained = json.loads((locate(args.generator).parent / "train_summary.json").read_text())
        trained["generator"] = args.generator
    else:
        trained = train_generator(cfg, args.zoo)
    report_dir = Path(cfg.trainer.output_dir) / f"report_{args.name}"
    asked_quality = any(o.startswith("condition.quality_target=") for o in args.overrides)
    report = evaluate(trained["generator"], str(report_dir), num=args.num, recon_num=args.recon_num,
                      matrix_num=args.matrix_num, guidance=cfg.diffusion.guidance, sampler=cfg.diffusion.sampler,
                      quality=cfg.condition.quality_target if asked_quality else None)

    torch.set_num_threads(args.threads)  # Ray and evaluation may have changed it
    meta = read_meta(args.zoo)
    data = load_splits(meta, [args.ft_task])[args.ft_task]
    gen = Generator(trained["generator"])
    gen_s = time_generation(gen, args.ft_task, data.train, report["sampling"])
    best = to_zoo_best(gen, meta, data, args.ft_task, args.num, report, report["sampling"])
    print(f"generate: {gen_s:.3f} s per adapter; to the zoo's best-by-val: {best}", flush=True)
    earlier = json.loads(timed.read_text()) if timed.exists() else {}
    if (earlier.get("task"), earlier.get("threads"), earlier.get("zoo")) == (args.ft_task, args.threads,
                                                                             str(Path(args.zoo).resolve())):
        ft_s, ft_steps = earlier["seconds"], earlier["steps"]
    else:
        ft_s, ft_steps = time_finetune(meta, args.ft_task, data.train)
    zoo_s = args.zoo_seconds or json.loads((out / "zoo.json").read_text())["wall_seconds"]
    amortized = zoo_s + trained["train_seconds"]
    speed = {"threads": args.threads, "task": args.ft_task, "generate_s": gen_s, "finetune_s": ft_s,
             "finetune_steps": ft_steps, "speedup": ft_s / gen_s, "zoo_s": zoo_s, "train_s": trained["train_seconds"], "amortized_s": amortized,
             "break_even_adapters": amortized / (ft_s - gen_s), "to_zoo_best": best}
    result = {**report, "speed": speed, "overrides": args.overrides}
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    shutil.copy(report_dir / "report.png", out / f"{args.name}.png")
    md = [f"# Generator vs zoo on held-out test rows ({' '.join(args.overrides) or 'defaults'})", "", markdown(report),
          f"Speed ({args.threads} threads both sides, {args.ft_task}, tokenization included on both): generate one "
          f"adapter from a new condition text {gen_s:.3f} s; fine-tune one ({ft_steps} steps) "
          f" {ft_s:.0f} s: {ft_s / gen_s:.0f}x. Amortized: zoo {zoo_s:.0f} s + generator training "
          f"{trained['train_seconds']:.0f} s = {amortized:.0f} s, which generation pays back after "
          f"{speed['break_even_adapters']:.1f} adapters. Generate {best['n']}, score on val, pick: {best['seconds']:.0f} s "
          f"→ test {best['test']:.4f} vs the zoo's best-by-val {best['zoo_best_by_val_test']:.4f} "
          f"({'reached' if best['reached'] else 'not reached'}).", "", f"![]({args.name}.png)"]
    (out / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
