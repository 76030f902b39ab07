"""What a zoo task is in each domain, behind one small interface: its spec and data, its adapter's layout, and one
(task, seed) fine-tune whose captures are scored on val (a sample also on test). zoo stays domain-free: text
classification lives here, text-to-image styles in raypdiff.vision.domain."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import numpy as np

from raypdiff.config import Config, ConfigError
from raypdiff.tasks import TaskData, TaskSpec, load_task, majority_baseline, resolve_specs, score, spec_to_dict


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
    def conditions(self, cfg: Config, meta: dict) -> dict: ...  # the generator's condition bank for a zoo


class TextDomain:
    """Sequence classification / regression: LoRA (peft) on a transformers encoder, scored by the task's metric."""

    def specs(self, cfg: Config) -> list[TaskSpec]:
        return resolve_specs(cfg.tasks, cfg.data.root)

    def spec(self, d: dict) -> TaskSpec:
        return TaskSpec(**d)

    def spec_dict(self, spec: TaskSpec) -> dict:
        return spec_to_dict(spec)

    def load(self, cfg: Config, spec: TaskSpec) -> TaskData:
        return load_task(spec, cfg.eval.val_examples, cfg.eval.test_examples, cfg.eval.split_seed)

    def layout(self, cfg: Config, spec: TaskSpec) -> list:
        from raypdiff import lora

        return lora.layout_of(lora.build(cfg.model, cfg.lora, spec)).to_json()

    def base(self, cfg: Config) -> dict:
        return cfg.to_dict()["model"]

    def info(self, spec: TaskSpec, data: TaskData) -> dict:
        return {"spec": self.spec_dict(spec), "metric": spec.metric, "num_labels": spec.num_labels,
                "splits": data.splits, "label_mean": float(data.train.labels.mean()),
                "majority": majority_baseline(spec.metric, data.test.labels, data.train.labels)}

    def cost(self, cfg: Config, spec: TaskSpec, data: TaskData) -> float:
        return cfg.train.for_task(spec.name).steps * float(np.mean([len(" ".join(t)) for t in data.train.texts[:500]]))

    def conditions(self, cfg: Config, meta: dict) -> dict:
        """For the generator of a zoo (meta: its meta.json): "bank", task → (condition.num_sets, C) embeddings of
        the description with k examples drawn from the fine-tuning rows (val and test feed no training); "examples",
        a few rows per task for users to see; "base_fingerprint", the base model's weights."""
        from raypdiff import lora
        from raypdiff.conditions import condition_bank, draw_examples, example_rows
        from raypdiff.zoo import load_splits

        names = list(meta["tasks"])
        specs = [TaskSpec(**meta["tasks"][t]["spec"]) for t in names]
        data = load_splits(meta, names)
        bank = condition_bank(cfg.condition, specs, {t: d.train for t, d in data.items()})
        shown = np.random.default_rng(cfg.condition.seed)  # its own draws: the bank's stay as they were
        examples = {s.name: example_rows(s, draw_examples(data[s.name].train, max(cfg.condition.k, 4), shown))
                    for s in specs}
        base = Config.from_dict({"model": meta["base_model"], "lora": meta["lora"]})
        return {"bank": bank, "examples": examples,
                "base_fingerprint": lora.base_fingerprint(lora.build(base.model, base.lora, specs[0]))}

    def run(self, cfg: Config, spec: TaskSpec, data: TaskData, seed: int, bar) -> Run:
        """Fine-tune on the train split, capture, score every capture on val and a sample on test."""
        from raypdiff import lora

        lora.set_threads(cfg.collect.num_cpus)
        device = lora.device_for(cfg.collect.num_gpus)
        tok = lora.load_tokenizer(cfg.model)
        model = lora.build(cfg.model, cfg.lora, spec, seed, float(data.train.labels.mean())).to(device)
        train = cfg.train.for_task(spec.name)
        schedule = lora.capture_schedule(train.steps, cfg.capture.num, cfg.capture.stride)
        captured: dict[int, np.ndarray] = {}
        lora.finetune(model, tok, data.train, train, train.steps, cfg.model.max_length, seed, cfg.model.dtype,
                      set(schedule), on_capture=captured.__setitem__, on_step=lambda step, loss: bar.update(1))
        layout = lora.layout_of(model)
        val_batches = lora.eval_batches(tok, data.val, cfg.model.max_length, cfg.eval.batch_size)
        test_batches = lora.eval_batches(tok, data.test, cfg.model.max_length, cfg.eval.batch_size)
        return score_captures(
            spec.metric, schedule, captured, lambda vec: lora.load_vector(model, vec, layout),
            lambda: lora.evaluate(model, val_batches, spec, data.val.labels, cfg.model.dtype),
            lambda: lora.predict(model, test_batches, spec.is_regression, cfg.model.dtype),
            lambda preds: score(spec.metric, preds, data.test.labels), cfg.eval.test_every, bar)


def require_text(domain: str, what: str, where: object) -> None:
    """Commands built for text adapters (evaluate, holdout, sweep, serve, export, tasks) refuse a style zoo or
    generator in one line instead of failing deep inside."""
    if domain != "text":
        raise ConfigError(f"{what} works on text zoos and generators; {where} is of the {domain} domain")


def domain_for(name: str) -> Domain:
    """The domain called `name` (Config.domain, or a zoo's meta.json "domain")."""
    if name == "vision":
        from raypdiff.vision.domain import StyleDomain

        return StyleDomain()
    return TextDomain()
