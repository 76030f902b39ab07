"""The task-loss stage of generator training (taskloss.steps > 0): an episode generates a body from a training task's
condition with gradients and scores a cosine prototype head, built from k support rows per label, on query rows of its
train split; fixed episodes that query the training tasks' val rows pick the stage's length."""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np
import torch
from torch.func import functional_call

from raypdiff import heads, lora
from raypdiff.conditions import embed, make_encoder, with_quality
from raypdiff.config import Config, ConfigError
from raypdiff.diffusion import sample
from raypdiff.domains import load_splits
from raypdiff.newtask import Builder
from raypdiff.normalize import Normalizer
from raypdiff.tasks import Split, TaskSpec
from raypdiff.zoo.store import check

GENERIC = "Sort each text into one of the labels."  # the description of episodes that drop the task's own


def body_index(layout: lora.Layout, body: lora.Layout) -> torch.Tensor:
    """Positions of `body`'s LoRA matrices inside a flat adapter of `layout`, in the body's order (as
    Builder.body_of reads them)."""
    start, i = {}, 0
    for name, shape in zip(layout.names, layout.shapes):
        start[name] = (i, math.prod(shape))
        i += math.prod(shape)
    missing = [n for n in body.names if n not in start]
    if missing:
        raise ConfigError(f"the adapter has no LoRA matrix {missing[0]!r}: another base model or LoRA settings")
    return torch.cat([torch.arange(start[n][0], start[n][0] + start[n][1]) for n in body.names])


class FunctionalBody:
    """A Builder's base encoder run with the LoRA matrices of a flat body tensor, keeping the body's gradient."""

    def __init__(self, builder: Builder):
        self.builder = builder
        self.encoder = builder.model.get_base_model().base_model.eval()  # e.g. BertModel; no task head, no dropout
        # peft's state-dict keys (the body layout's names) are the parameter names without the adapter's name
        key = {id(p): n.replace(".default", "") for n, p in builder.model.named_parameters() if "lora_" in n}
        where = {n: i for i, n in enumerate(builder.body_layout.names)}
        ends = np.cumsum([0] + [math.prod(s) for s in builder.body_layout.shapes])
        self.slots = [(n, int(ends[where[key[id(p)]]]), int(ends[where[key[id(p)]] + 1]),
                       builder.body_layout.shapes[where[key[id(p)]]])
                      for n, p in self.encoder.named_parameters() if "lora_" in n]

    def features(self, body: torch.Tensor, batch: dict) -> torch.Tensor:
        """(P_body,) body, a tokenized batch → (B, H) mean-pooled, L2-normalized features (heads.pool)."""
        params = {n: body[a:b].reshape(shape) for n, a, b, shape in self.slots}
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        hidden = functional_call(self.encoder, params, args=(), kwargs=inputs).last_hidden_state
        return heads.pool(hidden.float(), inputs["attention_mask"])


@dataclasses.dataclass
class Episode:
    task: str  # whose statistics and layout the body is read with
    spec: TaskSpec  # labels permuted, description maybe replaced: what the condition reads
    support: list  # (texts, label) pairs, k per label
    query: Split


class Episodes:
    """The training tasks' train and val rows, the base model and the condition encoder, loaded once per Ray Train
    worker; `loss` runs one episode, `val_loss` the fixed validation episodes. Regression tasks are left out (their
    head would be a ridge fit)."""

    def __init__(self, cfg: Config, prep: dict):
        meta = check(prep["zoo"])  # its train rows, as collected (load_splits checks them)
        names = [t for t in prep["task_names"] if not TaskSpec(**meta.tasks[t].spec).is_regression]
        base = Config.for_base(prep["base_model"], prep["lora"], dtype="float32")
        self.cfg, self.builder = cfg, Builder(base.model, base.lora)
        self.body = FunctionalBody(self.builder)
        self.encoder = make_encoder(cfg.condition, prep["base_model"]["base"])
        self.normalizer = Normalizer.from_state(prep["normalizer"])
        self.specs, self.trains, self.vals, self.index, self.sizes = {}, {}, {}, {}, {}
        for t, data in load_splits(meta, names).items():
            layout = lora.Layout.from_json(prep["tasks"][t]["layout"])
            self.specs[t], self.trains[t], self.vals[t] = data.spec, data.train, data.val
            self.index[t], self.sizes[t] = body_index(layout, self.builder.body_layout), layout.size
        if not self.specs:
            raise ConfigError("taskloss.steps: the zoo has no classification task to draw episodes from")

    def draw(self, rng: np.random.Generator, task: Optional[str] = None) -> Episode:
        """A task (`task`: its val rows as the query), its labels permuted, k support rows per label of its train
        split and `query` other rows of its train split (or of its val split)."""
        c = self.cfg.taskloss
        on_val = task is not None
        task = task if on_val else sorted(self.specs)[rng.integers(len(self.specs))]
        spec, train = self.specs[task], self.trains[task]
        perm = rng.permutation(spec.num_labels)  # old label j → perm[j]
        sup = np.concatenate([rng.choice(np.flatnonzero(train.labels == j), min(c.k, int((train.labels == j).sum())),
                                         replace=False) for j in range(spec.num_labels)])
        pool = self.vals[task] if on_val else train
        rest = np.arange(len(pool)) if on_val else np.setdiff1d(np.arange(len(train)), sup)
        qry = rng.choice(rest, min(c.query, len(rest)), replace=False)
        names = [""] * spec.num_labels
        for j, name in enumerate(spec.label_names):
            names[perm[j]] = name
        # a validation episode keeps the description: a user's task comes with one
        desc = GENERIC if not on_val and rng.random() < c.description_drop else spec.description
        return Episode(task, dataclasses.replace(spec, label_names=names, description=desc),
                       [(train.texts[i], int(perm[train.labels[i]])) for i in sup],
                       Split([pool.texts[i] for i in qry], perm[pool.labels[qry]]))

    def validation(self, seed: int = 0) -> list[tuple[Episode, torch.Tensor]]:
        """taskloss.val_episodes fixed episodes (the tasks in turn, their val rows as the query) with their initial
        noise: the same draws at every check, so that checks differ by the weights alone."""
        tasks, gen = sorted(self.specs), torch.Generator().manual_seed(seed)
        return [(self.draw(np.random.default_rng([seed, i]), tasks[i % len(tasks)]),
                 torch.randn((1, self.cfg.autoencoder.latent), generator=gen))
                for i in range(self.cfg.taskloss.val_episodes)]

    def body_for(self, ep: Episode, den, ae, latent_stats: dict, noise: torch.Tensor) -> torch.Tensor:
        """(P_body,): the body generated from the episode's condition, differentiable in the denoiser's weights."""
        cond = torch.from_numpy(embed(self.encoder, self.cfg.condition, ep.spec, [ep.support]))  # (1, C)
        if self.cfg.condition.quality:
            cond = with_quality(cond, self.cfg.condition.quality_target)
        z = sample(den, cond, self.cfg.diffusion, noise=noise) * latent_stats["std"] + latent_stats["mean"]
        x = self.normalizer.invert_tensor(ep.task, ae.decode(z)[:, :self.sizes[ep.task]])  # (1, P_task)
        return x[0, self.index[ep.task]]

    def loss(self, den, ae, latent_stats: dict, rng: np.random.Generator, gen: torch.Generator) -> torch.Tensor:
        """One drawn episode's cross-entropy on its query rows."""
        return self.episode_loss(self.draw(rng), den, ae, latent_stats, torch.randn((1, den.latent), generator=gen))

    @torch.no_grad()
    def val_loss(self, den, ae, latent_stats: dict, episodes: list[tuple[Episode, torch.Tensor]]) -> float:
        """The mean cross-entropy of the `validation` episodes with these weights."""
        return float(np.mean([self.episode_loss(ep, den, ae, latent_stats, noise).item() for ep, noise in episodes]))

    def episode_loss(self, ep: Episode, den, ae, latent_stats: dict, noise: torch.Tensor) -> torch.Tensor:
        """The cross-entropy on the episode's query rows of a prototype head built from its support."""
        body = self.body_for(ep, den, ae, latent_stats, noise)
        rows = Split([t for t, _ in ep.support] + ep.query.texts, np.zeros(len(ep.support) + len(ep.query)))
        tok = self.builder.tokenizer
        f = self.body.features(body, lora.collate(tok, lora.encode(tok, rows, self.builder.model_cfg.max_length)))
        f_s, f_q = f[:len(ep.support)], f[len(ep.support):]
        ys = torch.as_tensor([y for _, y in ep.support])
        protos = torch.stack([f_s[ys == j].mean(0) for j in range(ep.spec.num_labels)])  # (L, H)
        logits = self.cfg.taskloss.scale * f_q @ torch.nn.functional.normalize(protos, dim=-1).T
        return torch.nn.functional.cross_entropy(logits, torch.as_tensor(ep.query.labels, dtype=torch.long))
