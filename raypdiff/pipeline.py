"""The whole method with one config: collect (resuming) → train → generate → evaluate, each logged to MLflow."""
from __future__ import annotations

import time

from raypdiff.config import Config
from raypdiff.storage import Location, local_folder


def run_pipeline(cfg: Config, progress: bool = True) -> dict:
    from raypdiff import tracking
    from raypdiff.evaluate import evaluate, flat_metrics, markdown
    from raypdiff.generate import generate
    from raypdiff.train import train_generator
    from raypdiff.zoo.collect import collect

    t0 = time.time()
    collect(cfg, progress=progress)
    trained = train_generator(cfg, cfg.collect.output_dir, progress=progress)
    out = Location.of(cfg.generate.output_dir, "generate.output_dir")
    for name in trained_tasks(trained["generator"]):
        generate(trained["generator"], str(out / name), cfg.generate.num, cfg.generate.seed, task=name)
    with local_folder(out / "report") as report_dir:  # written here, uploaded when generate.output_dir is a URI
        report = evaluate(trained["generator"], str(report_dir), num=cfg.generate.num, seed=cfg.generate.seed)
        if cfg.tracking.enabled:
            tracking.log_evaluation(cfg, report_dir, flat_metrics(report))
    return {"report": report, "report_md": markdown(report), "report_dir": str(out / "report"),
            "train_seconds": trained["train_seconds"], "wall_seconds": time.time() - t0}


def trained_tasks(generator_path: str) -> list[str]:
    from raypdiff.generate import Generator

    return Generator(generator_path).task_names
