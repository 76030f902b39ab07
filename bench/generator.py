"""Train the generator on a collected zoo, evaluate it, and time generation against fine-tuning.
Writes bench/results/<name>.{json,md,png} (name: generator unless --name says otherwise).

    python bench/generator.py --zoo runs/zoo --data-root ../shared/data [key=value ...]
    python bench/generator.py --name generator_tasknorm ... normalize.mode=task      # an ablation beside it
    python bench/generator.py --generator runs/generator/generator.pt --name generator_g1 diffusion.guidance=1
        # re-evaluate a trained generator: the sampling settings diffusion.guidance / diffusion.sampler /
        # condition.quality_target apply

finetune_seconds_per_adapter: median over tasks of (seconds per fine-tuning step, measured over
--ft-steps steps here) × the steps that task's zoo adapters were trained for.
"""
import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from raypdiff.config import load_config
from raypdiff.evaluate import evaluate, markdown
from raypdiff.generate import Generator
from raypdiff.train import train_generator
from raypdiff.zoo import read_meta

RESULTS = Path(__file__).parent / "results"


def time_generation(gen_path: str, task: str, sampling: dict, repeats: int = 5) -> float:
    gen = Generator(gen_path)
    quality, guidance, sampler = sampling.get("quality"), sampling["guidance"], sampling["sampler"]
    gen.vectors(gen.conditions(task, 1, quality), task, 0, guidance, sampler)  # warm-up: first-call allocations
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        gen.vectors(gen.conditions(task, 1, quality), task, i + 1, guidance, sampler)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_finetune(zoo_dir: str, steps: int) -> float:
    """Median over the zoo's tasks of per-step time × that task's training steps."""
    from raypdiff import lora
    from raypdiff.config import Config
    from raypdiff.tasks import TaskSpec, load_split

    meta = read_meta(zoo_dir)
    cfg = Config.from_dict({"model": meta["base_model"], "lora": meta["lora"], "train": meta["train"]})
    lora.set_threads(1)
    tok = lora.load_tokenizer(cfg.model)
    per_adapter = []
    for task, info in meta["tasks"].items():
        spec = TaskSpec(**info["spec"])
        model = lora.build(cfg.model, cfg.lora, spec)
        train = load_split(spec, "train")
        schedule = cfg.train.for_task(task)
        t0 = time.perf_counter()
        lora.finetune(model, tok, train, schedule, steps, cfg.model.max_length, 0, cfg.model.dtype, set(),
                      lambda s, v: None)
        per_step = (time.perf_counter() - t0) / steps
        per_adapter.append(per_step * schedule.steps)
        print(f"fine-tune {task}: {per_step:.2f} s/step x {schedule.steps} steps", flush=True)
    return statistics.median(per_adapter)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", default="runs/zoo")
    p.add_argument("--data-root", required=True)
    p.add_argument("--config", help="generator settings (default: built-in defaults)")
    p.add_argument("--num", type=int, default=10, help="generated samples per task")
    p.add_argument("--recon-num", type=int, help="zoo vectors per task through the autoencoder (default: --num)")
    p.add_argument("--ft-steps", type=int, default=20, help="fine-tuning steps timed per task")
    p.add_argument("--name", default="generator", help="results file name under bench/results/")
    p.add_argument("--generator", help="evaluate this trained generator.pt instead of training one (its "
                                       "train_summary.json gives the training time)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = p.parse_args()
    cfg = load_config(args.config, [f"data.root={args.data_root}", f"collect.output_dir={args.zoo}",
                                    *args.overrides])
    if args.generator:
        trained = json.loads((Path(args.generator).parent / "train_summary.json").read_text())
        trained["generator"] = args.generator
    else:
        trained = train_generator(cfg, args.zoo)
    report_dir = Path(cfg.trainer.output_dir) / f"report_{args.name}"
    asked_quality = any(o.startswith("condition.quality_target=") for o in args.overrides)
    report = evaluate(trained["generator"], str(report_dir), num=args.num, recon_num=args.recon_num,
                      guidance=cfg.diffusion.guidance, sampler=cfg.diffusion.sampler,
                      quality=cfg.condition.quality_target if asked_quality else None)
    gen_s = time_generation(trained["generator"], next(iter(report["tasks"])), report["sampling"])
    ft_s = time_finetune(args.zoo, args.ft_steps)
    result = {**report, "train_seconds": trained["train_seconds"], "generate_seconds_per_adapter": gen_s,
              "finetune_seconds_per_adapter": ft_s, "speedup": ft_s / gen_s, "overrides": args.overrides}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    shutil.copy(report_dir / "report.png", RESULTS / f"{args.name}.png")
    md = [f"# Generator vs zoo ({' '.join(args.overrides) or 'defaults'})", "", markdown(report),
          f"Train (AE + diffusion, Ray Train): {trained['train_seconds']:.0f} s. Generate one adapter (sampling + "
          f"decode, generator loaded): {gen_s:.3f} s. Fine-tune one adapter: {ft_s:.0f} s. "
          f"Speed-up: {ft_s / gen_s:.0f}x.", "", f"![]({args.name}.png)"]
    (RESULTS / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
