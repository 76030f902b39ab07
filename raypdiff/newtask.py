"""A new task's adapter from what its user has, a description and k labelled examples: candidate bodies (the base
model's, and a generator's samples), a head built from the examples on each body's features, and the pair with the
best leave-one-out score over those examples alone. Written as a PEFT folder (body) with its head beside it."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from raypdiff import heads, lora, warmstart
from raypdiff.config import Config, ConfigError, LoraSettings, ModelConfig
from raypdiff.tasks import Split, TaskSpec

Bodies = Literal["auto", "base", "generated"]
HEAD_FILE = "head.safetensors"
INFO_FILE = "raypdiff.json"


@dataclass
class Built:
    """One adapter: its LoRA body (zeros: the base model), where the body came from, its head, and the
    leave-one-out scores that chose them (candidate → head kind → score)."""
    body: np.ndarray
    body_source: str
    head: heads.Head
    loo: dict = field(default_factory=dict)
    seconds: float = 0.0
    tune_steps: int = 0  # > 0: body and head then fine-tuned on the examples (raypdiff.warmstart)

    def describe(self) -> dict:
        return {"body": self.body_source, "head": self.head.kind, "features": "mean-pooled, L2-normalized",
                "leave_one_out": self.loo, "tune_steps": self.tune_steps, "build_seconds": round(self.seconds, 4)}


def tuned(builder: Builder, spec: TaskSpec, examples: list, built: Optional[Built], steps: int = warmstart.STEPS,
          seed: int = 0) -> Built:
    """`built` with its body and head fine-tuned on its examples for `steps`; None: LoRA fine-tuning from the base
    model and a zero head at that budget."""
    t0 = time.time()
    if built is None:
        body, head = warmstart.tune(builder, spec, examples, np.zeros(builder.body_layout.size, np.float32), None,
                                    steps, seed=seed)
        return Built(body, "base", head, {}, time.time() - t0, steps)
    body, head = warmstart.tune(builder, spec, examples, built.body, built.head, steps, seed=seed)
    return Built(body, built.body_source, head, built.loo, built.seconds + time.time() - t0, steps)


def custom_spec(description: str, label_names: Optional[list[str]], text_fields: int = 1) -> TaskSpec:
    if not description or not description.strip():
        raise ConfigError("--description: must not be empty")
    return TaskSpec(name="custom", description=description, text_fields=["text", "text_b"][:text_fields],
                    label_field="label", metric="accuracy" if label_names else "pearson", label_names=label_names,
                    train="-", dev="-")


class Builder:
    """One base model with LoRA slots and its tokenizer, loaded once; builds adapters for new tasks."""

    def __init__(self, model_cfg: ModelConfig, lora_settings: LoraSettings):
        self.model_cfg, self.lora_settings = model_cfg, lora_settings
        probe = TaskSpec(name="body", description="-", text_fields=["text"], label_field="label", metric="accuracy",
                         label_names=["a", "b"], train="-", dev="-")
        self.model = lora.build(model_cfg, lora_settings, probe)
        self.tokenizer = lora.load_tokenizer(model_cfg)
        full = lora.layout_of(self.model)
        keep = [i for i, n in enumerate(full.names) if "lora_" in n]
        self.body_layout = lora.Layout(tuple(full.names[i] for i in keep), tuple(full.shapes[i] for i in keep))
        state = lora.adapter_state(self.model)
        # peft's initial LoRA (A random, B zero): the base model's function, but with a gradient to train from
        self.init_body = torch.cat([state[n].detach().float().reshape(-1) for n in self.body_layout.names]).numpy()

    def body_of(self, vector: np.ndarray, layout: lora.Layout) -> np.ndarray:
        """The LoRA part of a full adapter vector (task head dropped), in the body layout's order."""
        parts = lora.unflatten(vector, layout)
        missing = [n for n in self.body_layout.names if n not in parts]
        if missing:
            raise ConfigError(f"the adapter has no LoRA matrix {missing[0]!r}: another base model or LoRA settings")
        return torch.cat([parts[n].reshape(-1) for n in self.body_layout.names]).numpy()

    def load_body(self, body: np.ndarray) -> None:
        """Put `body`'s LoRA matrices into the model."""
        from peft import set_peft_model_state_dict

        head = {n: t for n, t in lora.adapter_state(self.model).items() if "lora_" not in n}  # unused, but peft wants it
        set_peft_model_state_dict(self.model, lora.unflatten(body, self.body_layout) | head)

    def deltas(self, body: np.ndarray) -> dict[str, torch.Tensor]:
        """The weight changes `body` makes (ΔW = B·A·alpha/r, peft's LoRA scaling), keyed by the base encoder's own
        parameter names: the body merged into another copy of the base model (SetFit's sentence encoder)."""
        parts = lora.unflatten(body, self.body_layout)
        prefix = f"base_model.model.{self.model.get_base_model().base_model_prefix}."
        scale = self.lora_settings.alpha / self.lora_settings.r
        return {a[len(prefix):].replace(".lora_A.weight", ".weight"):
                parts[a.replace(".lora_A.", ".lora_B.")] @ parts[a] * scale
                for a in self.body_layout.names if a.endswith(".lora_A.weight")}

    def features(self, body: np.ndarray, split: Split) -> np.ndarray:
        """(R, H) sentence features of `split`'s rows under `body`."""
        self.load_body(body)
        batches = lora.eval_batches(self.tokenizer, split, self.model_cfg.max_length, 64)
        return heads.features(self.model, batches, self.model_cfg.dtype)

    def build(self, spec: TaskSpec, examples: list, bodies: dict[str, np.ndarray],
              head: Literal["auto", "prototype", "logistic", "ridge"] = "auto") -> Built:
        """examples: (texts, label) pairs; bodies: candidate name → body vector. Each candidate gets the head
        chosen on its features by leave-one-out over the examples; the best candidate wins (ties: the first)."""
        if not examples:
            raise ConfigError("--examples: a head is built from labelled examples; give at least one")
        if not bodies:
            raise ConfigError("--num: generated bodies need --num >= 1")
        t0 = time.time()
        split = Split([t for t, _ in examples], np.asarray([y for _, y in examples],
                                                           np.float32 if spec.is_regression else np.int64))
        kinds = None if head == "auto" else (head,)
        best, loo = None, {}
        for name, body in bodies.items():
            x = self.features(body, split)
            h, scores = heads.choose(x, split.labels, spec.num_labels, spec.metric, *([kinds] if kinds else []))
            loo[name] = scores
            top = max(scores.values())
            if best is None or top > best[0]:
                best = (top, name, body, h)
        _, name, body, h = best
        return Built(body, name, h, loo, time.time() - t0)

    def info(self, built: Built, spec: TaskSpec, extra: Optional[dict] = None) -> dict:
        """What raypdiff.json says of a new-task adapter: labels, text fields, how it was built (TaskAdapter reads
        `head` and `max_length`)."""
        return {"label_names": spec.label_names, "text_fields": list(spec.text_fields), "description": spec.description,
                "max_length": self.model_cfg.max_length, **built.describe(), **(extra or {})}

    def write(self, built: Built, spec: TaskSpec, out_dir: str | Path, extra: Optional[dict] = None) -> Path:
        """A PEFT folder of the body on the base encoder (task_type FEATURE_EXTRACTION: AutoModel +
        PeftModel.from_pretrained load it), `head.safetensors` (weight (L, H), bias (L,)) over its mean-pooled
        L2-normalized features, and raypdiff.json (labels, text fields, how it was built)."""
        from peft import LoraConfig, TaskType
        from safetensors.torch import save_file as save_tensors

        out = Path(out_dir)
        # the encoder's own parameter names, as PeftModel on AutoModel saves them (no task-model prefix)
        prefix = f"base_model.model.{self.model.get_base_model().base_model_prefix}."
        state = {n.replace(prefix, "base_model.model.", 1): t.contiguous()
                 for n, t in lora.unflatten(built.body, self.body_layout).items()}
        config = LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=self.lora_settings.r,
                            lora_alpha=self.lora_settings.alpha, lora_dropout=self.lora_settings.dropout,
                            target_modules=list(self.lora_settings.target_modules),
                            base_model_name_or_path=lora.public_id(self.model_cfg.base))
        try:
            out.mkdir(parents=True, exist_ok=True)
            config.save_pretrained(str(out))
            save_tensors(state, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
            save_file({"weight": built.head.weight.astype(np.float32), "bias": built.head.bias.astype(np.float32)},
                      str(out / HEAD_FILE), metadata={"kind": built.head.kind, "pooling": "mean", "normalize": "true"})
            (out / INFO_FILE).write_text(json.dumps(self.info(built, spec, extra), indent=1))
        except OSError as e:
            raise ConfigError(f"cannot write adapter to {out}: {e.strerror or e}") from None
        return out


class TaskAdapter:
    """A folder `Builder.write` made, loaded with plain transformers + peft: texts → labels (or scores)."""

    def __init__(self, folder: str | Path, base: Optional[str] = None):
        from peft import PeftModel
        from transformers import AutoModel, AutoTokenizer

        folder = Path(folder)
        if not (folder / HEAD_FILE).is_file():
            raise ConfigError(f"{folder}: no {HEAD_FILE} (not a new-task adapter folder)")
        self.info = json.loads((folder / INFO_FILE).read_text())
        path = lora.resolve_base(base or json.loads((folder / "adapter_config.json").read_text())[
            "base_model_name_or_path"])
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.encoder = PeftModel.from_pretrained(AutoModel.from_pretrained(path), str(folder)).eval()
        h = load_file(str(folder / HEAD_FILE))
        self.weight, self.bias = torch.from_numpy(h["weight"]), torch.from_numpy(h["bias"])

    @torch.no_grad()
    def logits(self, texts: list) -> np.ndarray:
        """texts: strings, or [first, second] pairs → (N, L)."""
        cols = list(zip(*[(t,) if isinstance(t, str) else tuple(t) for t in texts]))
        enc = self.tokenizer(*cols, truncation=True, max_length=self.info["max_length"], padding=True,
                             return_tensors="pt")
        f = heads.pool(self.encoder(**enc).last_hidden_state, enc["attention_mask"])
        return (f @ self.weight.T + self.bias).numpy()

    def predict(self, texts: list) -> np.ndarray:
        out = self.logits(texts)
        return out[:, 0] if self.info["head"] == "ridge" else out.argmax(1)


def generated_bodies(gen, builder: Builder, spec: TaskSpec, examples: list, num: int, seed: int,
                     guidance: Optional[float] = None, quality: Optional[float] = None) -> dict:
    """num bodies sampled from a generator for the task's description and examples (head rows dropped); guidance and
    quality as for a zoo task (None: the generator's defaults)."""
    vectors, stats_task = gen.free_vectors(spec, examples, num, seed, guidance, quality)
    return {f"generated:{i}": builder.body_of(v, gen.layout(stats_task)) for i, v in enumerate(vectors)}


def candidates(which: Bodies, gen, builder: Builder, spec: TaskSpec, examples: list, num: int, seed: int,
               guidance: Optional[float] = None, quality: Optional[float] = None) -> dict:
    """The bodies to choose from: the base model's (LoRA at zero) and/or the generator's samples."""
    if which != "base" and gen is None:
        raise ConfigError("--bodies: generated bodies need a generator")
    out = {} if which == "generated" else {"base": np.zeros(builder.body_layout.size, np.float32)}
    if which != "base":
        out |= generated_bodies(gen, builder, spec, examples, num, seed, guidance, quality)
    return out


def builder_for(gen) -> Builder:
    c = Config.for_base(gen.ckpt.base_model, gen.ckpt.lora)
    return Builder(c.model, c.lora)


def build_for(gen, builder: Builder, description: str, label_names: Optional[list[str]], rows: list[dict], num: int,
              seed: int, bodies: Bodies = "auto", head: str = "auto", guidance: Optional[float] = None,
              quality: Optional[float] = None, tune_steps: int = 0) -> tuple[TaskSpec, Built]:
    """A description, label names and {"text", "label"} rows → the task's spec and its built adapter (with
    tune_steps > 0, then fine-tuned on the rows)."""
    from raypdiff.conditions import parse_examples

    spec = custom_spec(description, label_names, text_fields=max((len(r["text"]) if isinstance(r.get("text"), list)
                                                                  else 1 for r in rows), default=1))
    examples = parse_examples(spec, rows)
    if tune_steps < 0:
        raise ConfigError(f"--tune-steps: must be >= 0, got {tune_steps}")
    found = candidates(bodies, gen, builder, spec, examples, num, seed, guidance, quality)
    built = builder.build(spec, examples, found, head)
    return spec, tuned(builder, spec, examples, built, tune_steps, seed) if tune_steps else built


def make(gen, out_dir: str | Path, description: str, label_names: Optional[list[str]], rows: list[dict], num: int,
         seed: int, bodies: Bodies = "auto", head: str = "auto", builder: Optional[Builder] = None,
         guidance: Optional[float] = None, quality: Optional[float] = None, tune_steps: int = 0) -> dict:
    """`raypdiff generate --description`: one adapter for a new task, from the base body or the best of `num`
    generated bodies, with a head built from the examples (then fine-tuned on them for tune_steps); a manifest says
    how it was built."""
    builder = builder or builder_for(gen)
    spec, built = build_for(gen, builder, description, label_names, rows, num, seed, bodies, head, guidance, quality,
                            tune_steps)
    out = Path(out_dir)
    folder = builder.write(built, spec, out / "adapter_000", {"examples": len(rows), "seed": seed})
    manifest = {"adapters": [str(folder)], "description": description, "label_names": label_names,
                "examples": len(rows), "generator": str(gen.path) if gen is not None else None, "seed": seed,
                "candidates": num if bodies != "base" else 0, "guidance": guidance, "quality": quality,
                "temperature": gen.cfg.diffusion.temperature if gen is not None else None,
                **built.describe()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return {"adapters": [str(folder)], "built": built, "manifest": str(out / "manifest.json")}
