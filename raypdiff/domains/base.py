"""What a zoo task is in any domain, behind one interface: its spec and data, its adapter's layout, one (task, seed)
fine-tune whose captures are scored on val (a sample also on test), and the generator's conditions."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol

import numpy as np

from raypdiff.config import Config, ConfigError


@dataclass
class Run:
    """One (task, seed): K captured steps, their val scores by `metric`, (K, P) vectors, and for the sampled captures
    a test score and per-row test outputs (None for the others)."""
    metric: str
    steps: list[int]
    values: list[float]
    vectors: np.ndarray
    test_values: list[Optional[float]]
    test_preds: list[Optional[np.ndarray]]


def tested_captures(num: int, every: int, values: list[float]) -> list[int]:
    """Captures scored on test: every `every`-th counting back from the last, and the best by val."""
    return sorted({*range(num - 1, -1, -every), int(np.argmax(values))})


def score_captures(metric: str, schedule: list[int], captured: dict[int, np.ndarray],
                   load: Callable[[np.ndarray], None], val_score: Callable[[], float], test_outputs: Callable[[], np.ndarray],
                   test_score: Callable[[np.ndarray], float], test_every: int, bar) -> Run:
    """The domain-free half of a run: load each capture, score it on val; on the sampled captures also keep the
    per-row test outputs and their score."""
    values = []
    for step in schedule:
        load(captured[step])
        values.append(val_score())
        bar.update(1)
    run = Run(metric, schedule, values, np.stack([captured[s] for s in schedule]), [None] * len(schedule),
              [None] * len(schedule))
    for i in tested_captures(len(schedule), test_every, values):
        load(captured[schedule[i]])
        run.test_preds[i] = test_outputs()
        run.test_values[i] = test_score(run.test_preds[i])
        bar.update(1)
    return run


@dataclass
class UserInput:
    """What a user gives for a task outside the zoo: a description, label names and labelled example rows ({"text",
    "label"}) for text; a folder of style images for vision; and, for text, where the body and head may come from."""
    description: Optional[str] = None
    label_names: Optional[list[str]] = None
    examples: Optional[list[dict]] = None
    style_images: Optional[str] = None
    bodies: str = "auto"
    head: str = "auto"
    tune_steps: int = 0


def adapter_folders(out: Path, num: int) -> list[Path]:
    return [out / f"adapter_{i:03d}" for i in range(num)]


def sampling_facts(gen, seed: int, num: int, guidance: Optional[float], quality: Optional[float]) -> dict:
    """How the adapters were sampled, for the manifest."""
    facts = {"seed": seed, "num": num, "guidance": guidance or gen.cfg.diffusion.guidance,
             "temperature": gen.cfg.diffusion.temperature}
    if gen.cfg.condition.quality:
        facts["quality"] = gen.resolve_quality(quality)
    return facts


def write_manifest(out: Path, folders: list[str], gen, layout_task: str, extra: dict) -> None:
    manifest = {"adapters": folders, "layout_task": layout_task, "generator": str(gen.path),
                "base_model": gen.ckpt.base_model, **extra}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))


class Domain(Protocol):
    def specs(self, cfg: Config) -> list: ...  # the zoo's tasks, validated
    def spec(self, d: dict): ...  # a spec back from its meta.json dict
    def spec_dict(self, spec) -> dict: ...
    def load(self, cfg: Config, spec): ...  # the task's train / val / test data
    def layout(self, cfg: Config, spec) -> list: ...  # the adapter's Layout.to_json(); fails fast on bad settings
    def base(self, cfg: Config) -> dict: ...  # the frozen base model, as recorded in meta.json
    def info(self, spec, data) -> dict: ...  # meta.json's per-task entry (spec, metric, splits, ...)
    def cost(self, cfg: Config, spec, data) -> float: ...  # relative run time: longest jobs start first
    def run(self, cfg: Config, spec, data, seed: int, bar) -> Run: ...
    def conditions(self, cfg: Config, meta) -> dict: ...  # the generator's condition bank for a zoo (its ZooMeta)
    def write_adapters(self, gen, task: str, vectors: np.ndarray, folders: list[Path]) -> list[str]: ...  # laid
    # out as `task`'s adapters: the folders the domain's tools load
    def for_user(self, gen, user: UserInput, out: Path, num: int, seed: int, guidance: Optional[float],
                 quality: Optional[float]) -> dict: ...  # adapters for a task outside the zoo: {"adapters", "manifest"}


def require_text(domain: str, what: str, where: object) -> None:
    """Commands built for text adapters (evaluate, holdout, sweep, serve, export, tasks) refuse a style zoo or
    generator in one line instead of failing deep inside."""
    if domain != "text":
        raise ConfigError(f"{what} works on text zoos and generators; {where} is of the {domain} domain")
