"""Task conditions: the description plus k labeled examples, embedded by a text encoder as one text or per label.

Encoders: the packaged MiniLM (mean-pooled sentence embedding, offline), CLIP's text tower via open_clip,
or a one-hot task id (ablation). `condition_bank` caches num_sets different example draws per task.
"""
from __future__ import annotations

import numpy as np
import torch

from raypdiff.config import ConditionConfig, ConfigError
from raypdiff.tasks import Split, TaskSpec


def example_line(spec: TaskSpec, texts: tuple[str, ...], label) -> str:
    target = f"{float(label):.1f}" if spec.is_regression else spec.label_names[int(label)]
    return f"{' / '.join(texts)} => {target}"


def condition_text(spec: TaskSpec, examples: list[tuple[tuple[str, ...], object]]) -> str:
    if not spec.description or not spec.description.strip():
        raise ConfigError(f"task {spec.name}: the condition needs a non-empty description")
    lines = [spec.description.strip()] + [example_line(spec, t, y) for t, y in examples]
    return "\n".join(lines)


def label_slots(spec: TaskSpec, examples: list, max_labels: int) -> list[list[str]]:
    """per_label pooling: for each label in index order, its name alone and one "<name>: <text>" line per example
    of it (regression: one slot of "<score>: <text>" lines)."""
    if spec.is_regression:
        return [[f"{float(y):.1f}: {' / '.join(t)}" for t, y in examples] or ["a score"]]
    if spec.num_labels > max_labels:
        raise ConfigError(f"task {spec.name}: {spec.num_labels} labels, more than condition.max_labels={max_labels}")
    return [[name] + [f"{name}: {' / '.join(t)}" for t, y in examples if int(y) == j]
            for j, name in enumerate(spec.label_names)]


def embed(encoder, cfg: ConditionConfig, spec: TaskSpec, example_sets: list[list]) -> np.ndarray:
    """One condition per example set: (S, C) for text pooling, (S, C * (1 + max_labels)) for per_label, (S, C * 3)
    for set pooling."""
    if cfg.pooling == "text":
        return encoder.encode([condition_text(spec, ex) for ex in example_sets]).astype(np.float32)
    if cfg.pooling == "set":
        return np.stack([set_condition(encoder, spec, ex) for ex in example_sets])
    lines, where = [condition_text(spec, [])], [(slice(None), 0)]  # the description fills slot 0 of every set
    for i, ex in enumerate(example_sets):
        for j, slot in enumerate(label_slots(spec, ex, cfg.max_labels)):
            lines += slot
            where += [(i, 1 + j)] * len(slot)
    emb = encoder.encode(lines)  # (lines, C), in one batched pass
    out = np.zeros((len(example_sets), 1 + cfg.max_labels, emb.shape[1]), np.float32)
    count = np.zeros(out.shape[:2] + (1,), np.float32)
    for (i, j), e in zip(where, emb):
        out[i, j] += e
        count[i, j] += 1
    return (out / np.maximum(count, 1)).reshape(len(example_sets), -1)  # each slot: the mean of its lines


def set_condition(encoder, spec: TaskSpec, examples: list) -> np.ndarray:
    """(C * 3,): the description, the mean of the label names (a regression task: "a score") and the mean of the
    example texts, each embedded apart: no slot depends on the order of labels or examples, nor on the labels given."""
    names = list(spec.label_names or ["a score"])
    texts = [" / ".join(t) for t, _ in examples]
    emb = encoder.encode([condition_text(spec, []), *names, *texts])  # one batched pass
    d, lab, ex = emb[0], emb[1:1 + len(names)].mean(0), emb[1 + len(names):]
    return np.concatenate([d, lab, ex.mean(0) if len(ex) else np.zeros_like(d)]).astype(np.float32)


def draw_examples(split: Split, k: int, rng: np.random.Generator) -> list:
    idx = rng.choice(len(split), size=min(k, len(split)), replace=False)
    return [(split.texts[i], split.labels[i]) for i in idx]


def example_rows(spec: TaskSpec, examples: list) -> list[dict]:
    """(texts, label) pairs → the {"text", "label"} rows `parse_examples` reads (label names, or numbers)."""
    return [{"text": [str(x) for x in t] if len(t) > 1 else str(t[0]),
             "label": float(y) if spec.is_regression else spec.label_names[int(y)]} for t, y in examples]


def parse_examples(spec: TaskSpec, rows: list[dict]) -> list:
    """User examples ({"text": str | [str, str], "label": name | index | number}) → checked pairs."""
    out = []
    for i, row in enumerate(rows):
        if "text" not in row or "label" not in row:
            raise ConfigError(f"examples row {i}: needs 'text' and 'label'")
        texts = tuple(row["text"]) if isinstance(row["text"], list) else (str(row["text"]),)
        if not 1 <= len(texts) <= 2:
            raise ConfigError(f"examples row {i}: text must be a string or a [first, second] pair")
        if out and len(texts) != len(out[0][0]):
            raise ConfigError(f"examples row {i}: {len(texts)} text(s) where row 0 has {len(out[0][0])}; give all "
                              f"single texts or all [first, second] pairs")
        label = row["label"]
        if spec.is_regression:
            try:
                label = float(label)
            except (TypeError, ValueError):
                raise ConfigError(f"examples row {i}: label {label!r} is not a number") from None
        elif isinstance(label, str) and label in spec.label_names:
            label = spec.label_names.index(label)
        elif isinstance(label, int) and 0 <= label < spec.num_labels:
            pass
        else:
            raise ConfigError(f"examples row {i}: label {label!r} is not one of {spec.label_names}")
        out.append((texts, label))
    return out


class MiniLMEncoder:
    """Mean-pooled, L2-normalized all-MiniLM-L6-v2 sentence embeddings (C = 384), offline."""

    def __init__(self, base: str = "all-MiniLM-L6-v2"):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from raypdiff.lora import resolve_base

        hf_logging.disable_progress_bar()  # a "Loading weights" bar would precede a one-line error on stderr
        path = resolve_base(base)
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.dim = self.model.config.hidden_size

    @torch.no_grad()
    def encode(self, texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), 32):
            batch = self.tok(texts[i:i + 32], padding=True, truncation=True, max_length=256, return_tensors="pt")
            h = self.model(**batch).last_hidden_state  # (B, L, C)
            m = batch["attention_mask"].unsqueeze(-1).float()
            e = (h * m).sum(1) / m.sum(1)
            out.append(torch.nn.functional.normalize(e, dim=-1).numpy())
        return np.concatenate(out)  # (N, C)


class ClipTextEncoder:
    """open_clip's text tower; offline it needs a local checkpoint (open_clip ships no weights)."""

    def __init__(self, cfg: ConditionConfig):
        try:
            import open_clip
        except ImportError:
            raise ConfigError("condition.encoder=clip needs `pip install open_clip_torch`") from None
        pretrained = cfg.clip_checkpoint or cfg.clip_pretrained
        try:
            model, _, _ = open_clip.create_model_and_transforms(cfg.clip_model, pretrained=pretrained)
        except Exception as e:  # open_clip raises RuntimeError/FileNotFoundError/HF errors offline
            raise ConfigError(f"condition.encoder=clip: cannot load {cfg.clip_model} weights {pretrained!r} "
                              f"({type(e).__name__}); offline, set condition.clip_checkpoint to a local file") from None
        self.model = model.eval()
        self.tok = open_clip.get_tokenizer(cfg.clip_model)
        self.dim = model.text_projection.shape[1]

    @torch.no_grad()
    def encode(self, texts: list[str]) -> np.ndarray:
        e = self.model.encode_text(self.tok(texts))
        return torch.nn.functional.normalize(e, dim=-1).numpy()


def quality_ranks(tasks: list[str], values: np.ndarray, reference: dict[str, np.ndarray]) -> np.ndarray:
    """Each capture's metric as its rank among its task's zoo metrics (`reference`), scaled to [0, 1] with
    ties at their mean rank: (N,) → (N,)."""
    tasks, values = np.asarray(tasks), np.asarray(values)
    out = np.ones(len(values), np.float32)
    for t in np.unique(tasks):
        ref, rows = np.sort(reference[t]), tasks == t  # sorted once per task
        if len(ref) > 1:
            lo, hi = np.searchsorted(ref, values[rows], "left"), np.searchsorted(ref, values[rows], "right")
            out[rows] = (lo + hi - 1) / 2 / (len(ref) - 1)
    return out


def with_quality(cond: torch.Tensor, quality) -> torch.Tensor:
    """(B, C) embeddings and a (B,) or scalar quality → (B, C + 1) conditions."""
    q = torch.as_tensor(quality, dtype=cond.dtype).expand(cond.shape[0])
    return torch.cat([cond, q[:, None]], dim=1)


def make_encoder(cfg: ConditionConfig, base: str = "all-MiniLM-L6-v2"):
    if cfg.encoder == "minilm":
        return MiniLMEncoder(base)
    if cfg.encoder == "clip":
        return ClipTextEncoder(cfg)
    raise ConfigError(f"condition.encoder={cfg.encoder} has no text encoder")


def onehot_bank(cfg: ConditionConfig, names: list[str]) -> dict[str, np.ndarray]:
    """task → (num_sets, T) copies of its one-hot id (the ablation's condition, in either domain)."""
    eye = np.eye(len(names), dtype=np.float32)
    return {n: np.repeat(eye[i:i + 1], cfg.num_sets, 0) for i, n in enumerate(names)}


def condition_bank(cfg: ConditionConfig, specs: list[TaskSpec], trains: dict[str, Split]) -> dict[str, np.ndarray]:
    """task → (num_sets, C) embeddings of the description with different example draws."""
    if cfg.encoder == "onehot":
        return onehot_bank(cfg, [s.name for s in specs])
    if cfg.encoder == "mobilenet":
        raise ConfigError("condition.encoder=mobilenet embeds style images: it needs a style zoo (domain: vision)")
    encoder = make_encoder(cfg)
    rng = np.random.default_rng(cfg.seed)
    return {spec.name: embed(encoder, cfg, spec, [draw_examples(trains[spec.name], cfg.k, rng)
                                                  for _ in range(cfg.num_sets)]) for spec in specs}
