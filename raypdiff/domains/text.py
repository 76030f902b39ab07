"""The text domain: sequence classification / regression tasks, LoRA (peft) on a transformers encoder, scored by the
task's metric."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from raypdiff import lora
from raypdiff.config import Config, ConfigError
from raypdiff import newtask
from raypdiff.domains.base import Run, UserInput, require_text, score_captures
from raypdiff.tasks import TaskData, TaskSpec, load_task, majority_baseline, resolve_specs, score, spec_to_dict


def load_splits(meta, names: list[str]) -> dict:
    """Each task's train / val / test splits, checked against the rows meta.json recorded at collect time. meta:
    the zoo's ZooMeta (not imported here: raypdiff.zoo.store imports the domains)."""
    require_text(meta.domain, "reading text splits", "this zoo")
    ev, out = meta.eval, {}
    for t in names:
        info = meta.tasks[t]
        data = load_task(TaskSpec(**info.spec), ev["val_examples"], ev["test_examples"], ev["split_seed"])
        if data.splits != info.splits:
            raise ConfigError(f"task {t}: its data files changed since the zoo was collected (the val/test rows "
                              f"differ from meta.json); collect the zoo again")
        out[t] = data
    return out



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
        return lora.layout_of(lora.build(cfg.model, cfg.lora, spec)).to_json()

    def base(self, cfg: Config) -> dict:
        return cfg.to_dict()["model"]

    def info(self, spec: TaskSpec, data: TaskData) -> dict:
        return {"spec": self.spec_dict(spec), "metric": spec.metric, "num_labels": spec.num_labels,
                "splits": data.splits, "label_mean": float(data.train.labels.mean()),
                "majority": majority_baseline(spec.metric, data.test.labels, data.train.labels)}

    def cost(self, cfg: Config, spec: TaskSpec, data: TaskData) -> float:
        return cfg.train.for_task(spec.name).steps * float(np.mean([len(" ".join(t)) for t in data.train.texts[:500]]))

    def conditions(self, cfg: Config, meta) -> dict:
        """For the generator of a zoo (meta: its ZooMeta): "bank", task → (condition.num_sets, C) embeddings of
        the description with k examples drawn from the fine-tuning rows (val and test feed no training); "examples",
        a few rows per task for users to see; "base_fingerprint", the base model's weights."""
        from raypdiff.conditions import condition_bank, draw_examples, example_rows

        names = list(meta.tasks)
        specs = [TaskSpec(**meta.tasks[t].spec) for t in names]
        data = load_splits(meta, names)
        bank = condition_bank(cfg.condition, specs, {t: d.train for t, d in data.items()})
        shown = np.random.default_rng(cfg.condition.seed)  # its own draws: the bank's stay as they were
        examples = {s.name: example_rows(s, draw_examples(data[s.name].train, max(cfg.condition.k, 4), shown))
                    for s in specs}
        base = meta.base_config()
        return {"bank": bank, "examples": examples,
                "base_fingerprint": lora.base_fingerprint(lora.build(base.model, base.lora, specs[0]))}

    def run(self, cfg: Config, spec: TaskSpec, data: TaskData, seed: int, bar) -> Run:
        """Fine-tune on the train split, capture, score every capture on val and a sample on test."""
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

    def write_adapters(self, gen, task: str, vectors: np.ndarray, folders: list[Path]) -> list[str]:
        """PEFT folders (LoRA + the task head as modules_to_save) for AutoModelForSequenceClassification."""
        writer = AdapterWriter(gen)
        return [str(writer.write(task, v, f)) for v, f in zip(vectors, folders)]

    def for_user(self, gen, user: UserInput, out: Path, num: int, seed: int, guidance: Optional[float],
                 quality: Optional[float]) -> dict:
        """One adapter for a description + examples: a body and a head built from the examples (raypdiff.newtask)."""
        if user.style_images is not None:
            raise ConfigError("--style-images: this generator makes text adapters; style images need a generator "
                              "trained on a style zoo (domain: vision)")
        return newtask.make(gen, out, user.description or "", user.label_names, user.examples or [], num, seed,
                            user.bodies, user.head, guidance=guidance, quality=quality, tune_steps=user.tune_steps)


class AdapterWriter:
    """Writes a generator's vectors as PEFT folders, through one checked PEFT model per head shape."""

    def __init__(self, gen):
        self.gen = gen
        self.cfg = Config.for_base(gen.ckpt.base_model, gen.ckpt.lora)
        self._models: dict = {}

    def model_for(self, task: str):
        spec = self.gen.spec(task)
        key = (spec.num_labels, spec.is_regression)
        if key not in self._models:
            model = lora.build(self.cfg.model, self.cfg.lora, spec)
            if lora.layout_of(model) != self.gen.layout(task):
                raise ConfigError("the base model's LoRA layout differs from the generator's; was it trained on "
                                  "another model?")
            fingerprint = self.gen.ckpt.base_fingerprint  # None in generators saved before it was recorded
            if fingerprint is not None and lora.base_fingerprint(model) != fingerprint:
                raise ConfigError(f"base model {self.cfg.model.base!r} is not the model this generator was "
                                  "trained for (its weights differ)")
            self._models[key] = model
        return self._models[key]

    def write(self, task: str, vector: np.ndarray, out_dir: Path) -> Path:
        """`vector`, laid out as `task`'s adapters, → a PEFT folder naming the base model's public id."""
        return lora.write_adapter(self.model_for(task), vector, self.gen.layout(task), out_dir, self.cfg.model.base)
