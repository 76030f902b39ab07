"""The `raypdiff` command: parse the config, call one library function per verb, print one line per error."""
from __future__ import annotations

import argparse
import json
import sys

from raypdiff.config import ConfigError, derive, load_config

CONFIG_HELP = ("YAML config file (see configs/); every setting can also be given as a dotted override "
               "after the verb, e.g. train.steps=300 'tasks=[SST-2,RTE]' data.root=../shared/data")
QUALITY_HELP = ("metric rank within the task to ask for, 0 (its worst zoo capture) .. 1 (its best); generators "
                "trained with condition.quality (default: the generator's condition.quality_target)")


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help=CONFIG_HELP)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, applied after --config")


def _zoo_job_args(p: argparse.ArgumentParser) -> None:
    """A config, the zoo to read and --quiet: the verbs that train on a zoo."""
    _config_args(p)
    p.add_argument("--zoo", help="zoo folder (default: collect.output_dir)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def cmd_collect(args) -> int:
    from raypdiff.zoo.collect import collect

    cfg = load_config(args.config, args.overrides)
    summary = collect(cfg, progress=not args.quiet)
    print(format_summary(summary))
    print(f"zoo: {cfg.collect.output_dir}  wall: {summary['wall_seconds']:.0f}s")
    return 0


def cmd_zoo(args) -> int:
    from raypdiff.zoo.store import read_meta, summarize

    read_meta(args.zoo)
    summary = summarize(args.zoo)
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return 0


def cmd_tasks(args) -> int:
    from raypdiff.holdout import family_folds, kfold
    from raypdiff.tasks import resolve_specs, summarize

    from raypdiff.domains import require_text

    cfg = load_config(args.config, args.overrides)
    require_text(cfg.domain, "tasks", "this config")
    specs = resolve_specs(cfg.tasks, cfg.data.root)
    rows = summarize(specs, cfg.eval.val_examples, cfg.eval.test_examples, cfg.eval.split_seed)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| task | family | from | labels | metric | train | val | test | majority (test) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        labels = "regression" if r["labels"] is None else " / ".join(r["labels"])
        origin = f"twin of {r['twin_of']}" if r["twin_of"] else (r["source"] or "")
        print(f"| {r['task']} | {r['family'] or ''} | {origin} | {labels} | {r['metric']} | {r['train']} | "
              f"{r['val']} | {r['test']} | {r['majority_test']:.3f} |")
    families = list(dict.fromkeys(r["family"] for r in rows))
    print(f"\n{len(rows)} tasks, {len(families)} families, {sum(bool(r['twin_of']) for r in rows)} label-swapped twins")
    if args.folds:  # as `raypdiff holdout` makes them: holdout.seed; by family when every task has one
        folds = kfold(specs, args.folds, cfg.holdout.seed) + (family_folds(specs) if all(families) else [])
        for fold in folds:
            print(f"{fold.name}: holds out {len(fold.heldout)} ({', '.join(fold.heldout)})")
    return 0


def cmd_export(args) -> int:
    from raypdiff import lora
    from raypdiff.tasks import TaskSpec
    from raypdiff.zoo.store import get_vector, read_meta

    from raypdiff.domains import require_text

    meta = read_meta(args.zoo)
    require_text(meta.domain, "export", args.zoo)
    if args.task not in meta.tasks:
        raise ConfigError(f"unknown task {args.task!r} in this zoo (tasks: {', '.join(meta.tasks)})")
    cfg = meta.base_config()
    vector = get_vector(args.zoo, args.task, args.seed, args.step)
    model = lora.build(cfg.model, cfg.lora, TaskSpec(**meta.tasks[args.task].spec))
    out = lora.write_adapter(model, vector, meta.layout(args.task), args.out, cfg.model.base)
    print(f"wrote PEFT adapter for {args.task} seed {args.seed} step {args.step} to {out}")
    return 0


def cmd_train(args) -> int:
    from raypdiff import checkpoint
    from raypdiff.train import train_generator

    cfg = load_config(args.config, args.overrides)
    start = checkpoint.load(args.start) if args.start else None
    summary = train_generator(cfg, args.zoo or cfg.collect.output_dir, progress=not args.quiet, start=start)
    print(f"generator: {summary['generator']}  train: {summary['train_seconds']:.0f}s")
    return 0


def cmd_generate(args) -> int:
    from raypdiff.generate import generate

    if sum(x is not None for x in (args.task, args.description, args.style_images)) != 1:
        raise ConfigError("give one of --task (a task the generator knows), --description (+ --examples) or "
                          "--style-images (a style generator)")
    labels = [x.strip() for x in args.label_names.split(",")] if args.label_names else None
    expect = load_config(args.config, args.overrides) if args.config or args.overrides else None
    res = generate(args.generator, args.out, args.num, args.seed, task=args.task, description=args.description,
                   examples_file=args.examples, label_names=labels, guidance=args.guidance,
                   quality=args.quality, expect=expect, style_images=args.style_images, bodies=args.bodies,
                   head=args.head, tune_steps=args.tune_steps)
    if "built" in res:
        b = res["built"]
        print(f"wrote {res['adapters'][0]}: body {b.body_source}, {b.head.kind} head on mean-pooled features "
              f"(chosen by leave-one-out over the examples, {b.seconds:.2f}s); manifest: {res['manifest']}")
    else:
        print(f"wrote {len(res['adapters'])} adapters to {args.out} (sampling {res['sample_seconds']:.2f}s); "
              f"manifest: {res['manifest']}")
    return 0


def cmd_holdout(args) -> int:
    from raypdiff.unseen import run

    cfg = load_config(args.config, args.overrides)
    report = run(cfg, args.zoo or cfg.collect.output_dir, progress=not args.quiet)
    print(f"{report['task_count']} held-out tasks ({report['scheme']}), skipped {len(report['skipped'])}; "
          f"average on test:")
    for method, value in report["average"].items():
        print(f"  {method:22s} {value:.4f}")
    return 0


def cmd_vision_base(args) -> int:
    from raypdiff.vision.train import train_base

    cfg = load_config(args.config, args.overrides)
    s = train_base(cfg, progress=not args.quiet)
    print(f"pipeline: {s['pipeline']}  class accuracy of its samples: {s['class_acc']:.3f} (the judge scores "
          f"{s['judge_test_acc']:.3f} on real test images)  train: {s['train_seconds']:.0f}s")
    return 0


def cmd_vision_eval(args) -> int:
    from raypdiff.storage import Location
    from raypdiff.vision.evaluate import run, zoo_only

    cfg = load_config(args.config, args.overrides)
    if args.heldout_only and (args.generator or args.zoo_only):
        raise ConfigError("--heldout-only trains its own generator without the held-out styles; drop "
                          + ("--generator" if args.generator else "--zoo-only"))
    if args.zoo_only:
        report = zoo_only(cfg, args.zoo or cfg.collect.output_dir, progress=not args.quiet)
        print(f"the zoo's LoRAs produce their style (style acc ≥ 0.8, above the base by interval, class acc ≥ 0.6): "
              f"{len(report['learned'])}/{len(report['styles'])}; report: "
              f"{Location.of(cfg.style_eval.output_dir) / 'zoo.md'}")
        return 0
    report = run(cfg, args.zoo or cfg.collect.output_dir,
                 None if args.heldout_only else args.generator or cfg.trainer.output_dir, progress=not args.quiet)
    t = report["targets"]
    print(f"{len(report['styles'])} seen styles, {len(report['heldout_styles'])} held out; report: "
          f"{Location.of(cfg.style_eval.output_dir) / 'vision.md'}")
    seen = (f"the zoo's LoRAs produce their style: {t['zoo_learned']}/{t['seen_styles']}; generated within 5 points "
            f"of the zoo's style accuracy: {t['seen_style_acc_within_5_points']}/{t['seen_styles']}; Fréchet "
            f"distance within 10%: {t['seen_fd_within_10_percent']}/{t['seen_styles']}; ") if t["seen_styles"] else ""
    print(f"  {seen}held-out above the nearest style: {t['heldout_generated_above_nearest']}/{t['heldout_styles']}; "
          f"swaps followed on ≥ 90%: {t['swaps_following_90_percent']}/{t['swaps']}")
    return 0


def cmd_evaluate(args) -> int:
    from raypdiff.evaluate import evaluate, markdown

    report = evaluate(args.generator, args.out, num=args.num, seed=args.seed, tasks=args.tasks,
                      guidance=args.guidance, sampler=args.sampler, quality=args.quality,
                      recon_num=args.recon_num, matrix_num=args.matrix_num, workers=args.workers,
                      bootstrap=args.bootstrap, subset_rows=args.subset_rows)
    print(markdown(report))
    if args.config is not None or args.overrides:
        from raypdiff import tracking
        from raypdiff.evaluate import flat_metrics
        from raypdiff.storage import local_copy

        cfg = load_config(args.config, args.overrides)
        if cfg.tracking.enabled:
            with local_copy(args.out) as report_dir:  # MLflow logs local files
                tracking.log_evaluation(cfg, report_dir, flat_metrics(report))
    return 0


def cmd_sweep(args) -> int:
    from raypdiff.storage import Location
    from raypdiff.sweep import sweep

    cfg = load_config(args.config, args.overrides)
    summary = sweep(cfg, args.zoo or cfg.collect.output_dir, progress=not args.quiet)
    out = Location.of(cfg.sweep.output_dir, "sweep.output_dir")
    print((out / "sweep.md").read_text())
    print(f"sweep: {summary['finished']} of {summary['trials']} trials in {summary['wall_seconds']:.0f}s; "
          f"tables: {out / 'sweep.md'}")
    return 1 if summary["failed"] else 0  # a trial ASHA stopped is not a failure


def cmd_serve(args) -> int:
    import os

    from raypdiff import checkpoint
    from raypdiff.serve.adapters import resolve_generator
    from raypdiff.storage import Location

    cfg = load_config(args.config, args.overrides)
    flags = {k: getattr(args, k) for k in ("generator", "host", "port", "replicas") if getattr(args, k) is not None}
    serve_cfg = derive(cfg.serve, flags, "serve.")
    uri = serve_cfg.tracking_uri
    if serve_cfg.generator.startswith("models:/") and uri is None:
        from raypdiff import tracking  # mlflow: imported only for a registered model

        uri = os.environ.get("MLFLOW_TRACKING_URI") or tracking.tracking_uri(cfg)
    path = resolve_generator(serve_cfg.generator, uri)
    try:
        checkpoint.locate(path)  # one error line for a missing or pickled file, before Ray starts
    except ConfigError as e:
        raise ConfigError(f"--generator: {e}") from None
    # replicas read the local copy or the URI; paths made absolute for Ray's workers
    serve_cfg = derive(serve_cfg, {"generator": path, "tracking_uri": uri,
                                   "store_dir": str(Location.of(serve_cfg.store_dir, "serve.store_dir"))}, "serve.")
    from raypdiff.serve.app import run  # Ray Serve and FastAPI: only once the input is known to be good

    run(serve_cfg, cfg.collect.ray_address)
    return 0


def cmd_migrate(args) -> int:
    from raypdiff import checkpoint

    out = checkpoint.migrate(args.path, args.out)
    print(f"wrote {out} (checkpoint version {checkpoint.VERSION}); the pickled file is no longer needed")
    return 0


def cmd_pipeline(args) -> int:
    from raypdiff.pipeline import run_pipeline

    cfg = load_config(args.config, args.overrides)
    result = run_pipeline(cfg, progress=not args.quiet)
    print(result["report_md"])
    print(f"pipeline done in {result['wall_seconds']:.0f}s; report: {result['report_dir']}")
    return 0


def format_summary(summary: dict) -> str:
    lines = ["| task | metric | n | val mean | val best | val worst | test n | test mean | test best-by-val | "
             "test last | test majority |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary["tasks"].items():
        lines.append(f"| {name} | {s['metric']} | {s['n']} | {s['mean']:.4f} | {s['best']:.4f} | {s['worst']:.4f} | "
                     f"{s['test_n']} | {s['test_mean']:.4f} | {s['test_best_by_val']:.4f} | {s['test_last']:.4f} | "
                     f"{'n/a' if s['majority'] is None else format(s['majority'], '.4f')} |")  # styles: none
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="raypdiff",
        description="Generate LoRA adapters with conditional parameter diffusion (COND P-DIFF) on Ray.",
    )
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    c = sub.add_parser("collect", help="fine-tune LoRA on each task with Ray Tasks and build the checkpoint zoo",
                       description="Fine-tune LoRA adapters on every (task, seed) in parallel Ray Tasks on the task's "
                                   "train split, capture the last capture.num checkpoints of each run, score each on "
                                   "the val split (and a stated sample, eval.test_every, on the test split) and write "
                                   "them to a Parquet zoo (collect.output_dir). Re-running resumes: only missing "
                                   "(task, seed) shards are collected, and damaged shards are set aside and "
                                   "collected again.")
    _config_args(c)
    c.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    c.set_defaults(fn=cmd_collect)

    z = sub.add_parser("zoo", help="summarize a zoo: per-task val and test metrics",
                       description="Print per-task metric summaries of a collected zoo: val mean / best / worst over "
                                   "every capture; on test, the mean of the captures scored there, the best-by-val "
                                   "capture, the last capture and the train-majority class.")
    z.add_argument("zoo", help="zoo folder (collect.output_dir)")
    z.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    z.set_defaults(fn=cmd_zoo)

    ts = sub.add_parser("tasks", help="check a task list (e.g. the many-task suite): load every task, show its splits",
                        description="Resolve the config's tasks (built-in, custom and derived ones), load each task's "
                                    "train / val / test rows as collect would, and print one row per task: family, "
                                    "source, labels, metric, split sizes and the majority class on test. A task "
                                    "that cannot load is a one-line error.")
    _config_args(ts)
    ts.add_argument("--folds", type=int, metavar="K",
                    help="also list the hold-out folds: K folds over tasks (twins together) and one per family")
    ts.add_argument("--json", action="store_true", help="print JSON rows instead of a Markdown table")
    ts.set_defaults(fn=cmd_tasks)

    e = sub.add_parser("export", help="write one zoo checkpoint as a PEFT adapter folder",
                       description="Write the checkpoint (task, seed, step) of a zoo as a standard PEFT adapter "
                                   "folder that PeftModel.from_pretrained loads.")
    e.add_argument("zoo", help="zoo folder")
    e.add_argument("--task", required=True)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--step", type=int, required=True, help="a captured optimizer step")
    e.add_argument("--out", required=True, help="output folder")
    e.set_defaults(fn=cmd_export)

    t = sub.add_parser("train", help="train the generator (autoencoder + conditional latent diffusion) on Ray Train",
                       description="Fit the normalizer, embed task conditions, then train the parameter autoencoder "
                                   "and the conditional latent denoiser on Ray Train (trainer.num_workers DDP "
                                   "workers). Writes <trainer.output_dir>/generator.safetensors and registers it in MLflow.")
    _zoo_job_args(t)
    t.add_argument("--start", metavar="GENERATOR", help="a denoise-only generator (its folder or file) of the same "
                   "settings and zoo: with taskloss.steps > 0, train it on through the task-loss stage alone")
    t.set_defaults(fn=cmd_train)

    g = sub.add_parser("generate", help="generate adapters from a task name, a description + examples, or style "
                                        "images", description="Sample adapters from a trained generator. For a task "
                                   "outside the zoo give --description, --label-names and --examples (JSONL rows "
                                   '{"text": "...", "label": "..."}): it writes one adapter, a body (the base model\'s '
                                   "or a generated one) and a head built from the examples; for a style, "
                                   "--style-images DIR.")
    g.add_argument("--generator", required=True, help="generator.safetensors or the folder holding it")
    g.add_argument("--task", help="a task the generator was trained on")
    g.add_argument("--description", help="free task description (instead of --task)")
    g.add_argument("--examples", help="JSONL file of labeled examples for --description")
    g.add_argument("--label-names", help="comma-separated label names for --description (omit for regression)")
    g.add_argument("--style-images", metavar="DIR", help="a folder of images of a style (.png, .jpg, ...; any size "
                   ">= 16 px): a style generator (domain: vision) writes diffusers LoRA folders for it")
    g.add_argument("--num", type=int, default=10, help="adapters to generate (default 10); with --description, the "
                   "generated bodies to choose among")
    g.add_argument("--bodies", choices=["auto", "base", "generated"], default="auto",
                   help="--description: where the adapter's body may come from: the base model, the generator's "
                        "samples, or either (auto, default), chosen by leave-one-out over the examples")
    g.add_argument("--head", choices=["auto", "prototype", "logistic", "ridge"], default="auto",
                   help="--description: the head built from the examples on the body's mean-pooled features "
                        "(auto: prototype or logistic by leave-one-out; ridge for regression)")
    g.add_argument("--tune-steps", type=int, default=0, metavar="N",
                   help="--description: then fine-tune the adapter's body and head on the examples for N full-batch "
                        "steps (0, default: none, ~0.5 s per adapter; 20: ~8 s at k = 8 per label, +3.5 macro-F1 "
                        "points on held-out families, bench/results/unseen.md)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the generator's)")
    g.add_argument("--quality", type=float, help=QUALITY_HELP)
    g.add_argument("--out", required=True, help="output folder: adapter_000/ ... + manifest.json")
    g.add_argument("--config", "-c", help="your config: generation refuses a generator trained for another "
                                          "model.base or LoRA layout than it names")
    g.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of --config")
    g.set_defaults(fn=cmd_generate)

    v = sub.add_parser("evaluate", help="held-out report: zoo vs reconstructed vs generated vs baselines, on test",
                       description="Score generated and autoencoder-reconstructed adapters on each task's val rows "
                                   "(for best-by-val picks) and test rows (for every reported figure), beside the "
                                   "zoo, its weight average, the majority class and the base model with its initial "
                                   "head, with 95%% bootstrap intervals over test rows; novelty in parameters and in "
                                   "behaviour; the condition × task matrix. Scoring runs on a pool of Ray actors. "
                                   "Writes report.json/.md/.png to --out.")
    v.add_argument("--generator", required=True)
    v.add_argument("--out", required=True)
    v.add_argument("--num", type=int, default=10, help="generated samples per task (default 10)")
    v.add_argument("--recon-num", type=int, help="zoo vectors per task sent through the autoencoder, evenly "
                                                 "spaced over the zoo (default: --num)")
    v.add_argument("--matrix-num", type=int, default=10, help="adapters per cell of the condition × task "
                                                              "matrix, at most --num (default 10)")
    v.add_argument("--subset-rows", type=int, default=200, help="test rows (the first ones) that the condition "
                                                                "matrix and behavioural novelty read (default 200)")
    v.add_argument("--workers", type=int, help="scoring actors (default: one per CPU of the Ray cluster)")
    v.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the test rows (default 1000)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--tasks", type=lambda s: [t for t in s.split(",") if t], metavar="A,B",
                   help="score only these comma-separated tasks (default: every zoo task)")
    v.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the generator's)")
    v.add_argument("--quality", type=float, help=QUALITY_HELP)
    v.add_argument("--sampler", choices=["ddim", "ddpm"], help="sampler (default: the generator's)")
    _config_args(v)
    v.set_defaults(fn=cmd_evaluate)

    ho = sub.add_parser("holdout", help="tasks never seen: per hold-out fold, train a generator without them, then "
                                        "score its adapters for them against baselines",
                        description="Split the zoo's tasks into hold-out folds (holdout.scheme: kfold over tasks, a "
                                    "task's label-swapped twin always with it, or leave-one-family-out). Per fold, "
                                    "train a generator on the other tasks only, then give it each held-out task's "
                                    "description and holdout.examples labeled train rows, and score on test: "
                                    "majority, a prototype classifier, the nearest zoo task's adapter, LoRA "
                                    "fine-tuned on the same examples (holdout.finetune_steps), the generated "
                                    "adapters (mean, best-by-val), generated + the same fine-tuning, and the task's "
                                    "own zoo adapters. Writes <holdout.output_dir>/<scheme>/holdout.json; finished "
                                    "folds are kept and a re-run continues.")
    _zoo_job_args(ho)
    ho.set_defaults(fn=cmd_holdout)

    vb = sub.add_parser("vision-base", help="train the small offline text-to-image base model (Ray Train)",
                        description="Train a diffusers UNet2DConditionModel on 32 px Fashion-MNIST, conditioned on "
                                    "the class name's MiniLM token embeddings, as a Ray Train job (checkpoints every "
                                    "trainer.checkpoint_every steps; a re-run resumes). Writes <vision.base_dir>/"
                                    "pipeline (load it with FashionPipeline.from_pretrained) and base.json: the share "
                                    "of 10 samples per class that a CNN trained on real images recognizes.")
    _config_args(vb)
    vb.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    vb.set_defaults(fn=cmd_vision_base)

    ve = sub.add_parser("vision-eval", help="score style LoRAs by their samples: zoo, weight average, generated, "
                                            "held-out styles",
                        description="Sample the vision base with each style's LoRAs (the zoo's, their weight "
                                    "average, generated ones; the base alone) on one prompt set from one noise, and "
                                    "judge the samples with classifiers trained here on real styled images: style "
                                    "accuracy, a Fréchet distance in a Fashion-MNIST classifier's features (FID-style) "
                                    "and class accuracy, with 95%% intervals. style_eval.heldout_styles trains a "
                                    "second generator without them and compares it with the nearest style's LoRA. "
                                    "Writes <style_eval.output_dir>/vision.{json,md,png}, a grid per style and "
                                    "interpolation.png.")
    _zoo_job_args(ve)
    ve.add_argument("--zoo-only", action="store_true",
                    help="no generator: only whether the zoo's LoRAs produce their styles (the base, the zoo mean and "
                         "the best capture per style); writes <style_eval.output_dir>/zoo.{json,md} and the grids")
    ve.add_argument("--heldout-only", action="store_true",
                    help="no generator on the whole zoo: only style_eval.heldout_styles (which must name some), by "
                         "the generator trained without them, kept in or reused from "
                         "<style_eval.output_dir>/heldout_generator (the base, the nearest style's LoRA, the weight "
                         "average, generated, the style's own LoRA; condition reading and swaps); no seen styles, no "
                         "interpolation; writes <style_eval.output_dir>/vision.{json,md,png} and the grids")
    ve.add_argument("--generator", help="the generator trained on the whole zoo (default: "
                                        "<trainer.output_dir>)")
    ve.set_defaults(fn=cmd_vision_eval)

    w = sub.add_parser("sweep", help="ablation sweep on Ray Tune: latent size, normalization, N, condition, noise",
                       description="Train and evaluate one generator per trial on Ray Tune (each trial drives its own "
                                   "Ray Train run): the default row (once per sweep.seeds) and each sweep.axes value "
                                   "alone (sweep.mode=one_at_a_time), or every combination (grid). The val metric is "
                                   "the objective; the test metric with its interval goes into the tables "
                                   "(sweep.output_dir/sweep.md, .json, .png); MLflow gets a parent run and a nested run "
                                   "per trial. Run the same command again to resume: finished trials are kept.")
    _zoo_job_args(w)
    w.set_defaults(fn=cmd_sweep)

    s = sub.add_parser("serve", help="serve the generator over HTTP (Ray Serve): generate, download, try adapters",
                       description="Start a Ray Serve app on a local Ray (or RAY_ADDRESS): POST /v1/adapters generates "
                                   "adapters from a zoo task or a description + labeled examples, GET "
                                   "/v1/adapters/{id} downloads one as a PEFT folder (zip), POST /v1/predict labels "
                                   "texts with one, GET /v1/tasks lists the generator's tasks; the web page is at /, "
                                   "the OpenAPI docs at /docs. Settings: the config's serve section (serve.api_key or "
                                   "RAYPDIFF_API_KEY requires Authorization: Bearer <key> on /v1 routes). Runs until "
                                   "Ctrl-C.")
    s.add_argument("--generator", help="generator folder, generator.safetensors, or models:/raypdiff-generator/<version> from "
                                       "the MLflow registry (default: serve.generator, runs/generator)")
    s.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for other machines)")
    s.add_argument("--port", type=int, help="HTTP port (default 8000)")
    s.add_argument("--replicas", type=int, help="replicas of the generator and of the predictor (default 1)")
    _config_args(s)
    s.set_defaults(fn=cmd_serve)

    m = sub.add_parser("migrate", help="convert a pickled generator.pt of earlier versions to generator.safetensors",
                       description="Read a version-1 generator.pt with torch's weights-only reader (tensors, arrays "
                                   "and plain data; anything else is refused) and write the same generator as "
                                   "generator.safetensors, which raypdiff loads without unpickling.")
    m.add_argument("path", help="the generator.pt, or the folder holding it")
    m.add_argument("--out", help="output file (default: generator.safetensors beside the input)")
    m.set_defaults(fn=cmd_migrate)

    pl = sub.add_parser("pipeline", help="collect (reusing a zoo) → train → generate → evaluate",
                        description="Run every stage with one config: collect (only missing shards), train the "
                                    "generator, generate adapters for each task, evaluate.")
    _config_args(pl)
    pl.add_argument("--quiet", "-q", action="store_true")
    pl.set_defaults(fn=cmd_pipeline)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"raypdiff: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
