"""Generation: condition → DDIM over latents → decoder → de-normalize → standard PEFT adapter folders."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from raypdiff import checkpoint
from raypdiff.conditions import parse_examples, with_quality
from raypdiff.config import Config, ConfigError
from raypdiff.diffusion import sample
from raypdiff.domains import UserInput, adapter_folders, domain_for, sampling_facts, write_manifest
from raypdiff.newtask import custom_spec
from raypdiff.normalize import Normalizer
from raypdiff.storage import Location, local_folder
from raypdiff.tasks import TaskSpec


class Generator:
    """A trained generator loaded for sampling (EMA denoiser weights, eval mode)."""

    def __init__(self, path: str | Path):
        self.path = checkpoint.locate(path)
        self.ckpt = checkpoint.read(self.path)
        self.domain: str = self.ckpt.domain
        self.cfg = self.ckpt.cfg
        self.task_names: list[str] = self.ckpt.task_names
        self.tasks: dict = self.ckpt.tasks
        self.normalizer = Normalizer.from_state(self.ckpt.normalizer)
        self.bank: dict[str, np.ndarray] = self.ckpt.bank
        self.ae, self.den = checkpoint.build_networks(self.cfg, self.ckpt.num_params, self.ckpt.cond_dim)
        self.ae.load_state_dict(self.ckpt.ae)
        self.den.load_state_dict(self.ckpt.denoiser)
        self.ae.eval()
        self.den.eval()
        self.latent_stats = self.ckpt.latent_stats
        self._encoder = None

    @property
    def encoder(self):
        """The condition's text encoder, loaded once (free descriptions are embedded with it)."""
        from raypdiff.conditions import make_encoder

        if self._encoder is None:
            self._encoder = make_encoder(self.cfg.condition, self.ckpt.base_model["base"])
        return self._encoder

    def examples(self, task: str) -> list[dict]:
        """A few of `task`'s labeled training rows as {"text", "label"} (generators saved before they were kept: [])."""
        return self.ckpt.examples.get(task, [])

    def spec(self, task: str):
        """The task's spec (a TaskSpec; a StyleSpec for a style generator)."""
        if task not in self.tasks:
            raise ConfigError(f"unknown task {task!r} for this generator (trained on: {', '.join(self.task_names)})")
        return domain_for(self.domain).spec(self.tasks[task]["spec"])

    def layout(self, task: str):
        from raypdiff.lora import Layout

        return Layout.from_json(self.tasks[task]["layout"])

    def check_compatible(self, cfg: Config) -> None:
        """A generator only makes adapters for the domain, base model and LoRA layout it was trained on."""
        if cfg.domain != self.domain:
            raise ConfigError(f"this generator makes {self.domain} adapters; your config's domain is {cfg.domain}")
        trained = self.ckpt.base_model.get("base")  # None for a style generator: its base is a pipeline folder
        if trained is not None and cfg.model.base != trained:
            raise ConfigError(f"this generator was trained for base model {trained!r}, not {cfg.model.base!r}")
        want = cfg.to_dict()["lora"]
        if want != self.ckpt.lora:
            raise ConfigError(f"this generator was trained for LoRA {self.ckpt.lora}, not {want}")

    def conditions(self, task: str, num: int, quality: Optional[float] = None) -> torch.Tensor:
        """(num, C'): the cached example draws of a known task, cycled, as denoiser conditions."""
        bank = self.bank[task]
        return self.condition(torch.from_numpy(bank[np.arange(num) % len(bank)]), quality)

    def condition(self, emb: torch.Tensor, quality: Optional[float] = None) -> torch.Tensor:
        """(B, C) embeddings → (B, C') conditions, with the quality asked for appended when the generator
        conditions on quality."""
        q = self.resolve_quality(quality)
        return emb if q is None else with_quality(emb, q)

    def resolve_quality(self, quality: Optional[float]) -> Optional[float]:
        """The quality a sample asks for: None without quality conditioning, else `quality` (None:
        condition.quality_target), checked."""
        if not self.cfg.condition.quality:
            if quality is not None:
                raise ConfigError("--quality: this generator was trained without quality conditioning")
            return None
        quality = self.cfg.condition.quality_target if quality is None else quality
        if not 0 <= quality <= 1:
            raise ConfigError(f"--quality: must be in [0, 1] (a metric rank within the task), got {quality}")
        return quality

    def initial_noise(self, num: int, seed: int) -> torch.Tensor:
        """(num, Z): the starting latents `normalized(cond, seed)` draws for num conditions."""
        return torch.randn((num, self.den.latent), generator=torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def latents(self, cond: torch.Tensor, seed: int = 0, guidance: Optional[float | torch.Tensor] = None,
                sampler: Optional[str] = None, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """cond: (B, C) → (B, Z) sampled latents, in the autoencoder's latent space."""
        gen = torch.Generator().manual_seed(seed)
        z = sample(self.den, cond, self.cfg.diffusion, gen, guidance, sampler, noise=noise)  # (B, Z), standardized
        return z * self.latent_stats["std"] + self.latent_stats["mean"]

    @torch.no_grad()
    def normalized(self, cond: torch.Tensor, seed: int = 0, guidance: Optional[float | torch.Tensor] = None,
                   sampler: Optional[str] = None, noise: Optional[torch.Tensor] = None) -> np.ndarray:
        """cond: (B, C) → (B, P_max) decoded vectors, still in the normalizer's space."""
        return self.ae.decode(self.latents(cond, seed, guidance, sampler, noise)).numpy()

    @torch.no_grad()
    def encode(self, task: str, vectors: np.ndarray) -> torch.Tensor:
        """Zoo vectors of `task`, (N, P_task) → (N, Z) latents (no augmentation noise)."""
        x = torch.from_numpy(self.normalizer.apply(task, vectors))
        return self.ae.encode(torch.nn.functional.pad(x, (0, self.ckpt.num_params - x.shape[1])))

    def denormalize(self, stats_task: str, x: np.ndarray) -> np.ndarray:
        """(B, P_max) normalized → (B, P_task) raw adapter vectors, with `stats_task`'s layout and statistics."""
        return self.normalizer.invert(stats_task, x[:, :self.layout(stats_task).size])

    def vectors(self, cond: torch.Tensor, stats_task: str, seed: int = 0, guidance: Optional[float] = None,
                sampler: Optional[str] = None) -> np.ndarray:
        """cond: (B, C) → (B, P_task) raw adapter vectors, de-normalized with `stats_task`'s statistics."""
        return self.denormalize(stats_task, self.normalized(cond, seed, guidance, sampler))

    @torch.no_grad()
    def reconstruct(self, task: str, vectors: np.ndarray) -> np.ndarray:
        """Zoo vectors through the autoencoder (no augmentation noise): (N, P_task) → (N, P_task)."""
        return self.normalizer.invert(task, self.ae.decode(self.encode(task, vectors)).numpy()[:, :vectors.shape[1]])

    def free_condition(self, description: str, examples: list[dict], label_names: Optional[list[str]],
                       num: int, quality: Optional[float] = None) -> tuple[torch.Tensor, str, TaskSpec]:
        """Condition for a task outside the zoo; its head layout and statistics come from the zoo task with
        the same label count whose condition embeddings are closest."""
        spec = custom_spec(description, label_names)
        parsed = parse_examples(spec, examples)
        fits = [t for t in self.task_names if self.tasks[t]["num_labels"] == spec.num_labels]
        if not fits:
            raise ConfigError(f"no task in this generator has {spec.num_labels} labels "
                              f"(label counts: {sorted({self.tasks[t]['num_labels'] for t in self.task_names})})")
        cond, nearest = self.task_condition(spec, parsed, num, fits, quality)
        return cond, nearest, spec

    def task_condition(self, spec: TaskSpec, examples: list, num: int, among: Optional[list[str]] = None,
                       quality: Optional[float] = None) -> tuple[torch.Tensor, str]:
        """(num, C') conditions for a task outside the zoo from its description and (texts, label) examples, and
        the zoo task among `among` (default: all) whose condition embeddings are closest."""
        from raypdiff.conditions import embed

        if self.cfg.condition.encoder == "onehot":
            raise ConfigError("this generator uses one-hot task conditions: it can only generate zoo tasks")
        emb = embed(self.encoder, self.cfg.condition, spec, [examples])[0]
        nearest = max(among or self.task_names, key=lambda t: float(self.bank[t].mean(0) @ emb))
        cond = torch.from_numpy(np.repeat(emb[None].astype(np.float32), num, 0))  # (num, C)
        return self.condition(cond, quality), nearest

    def free_vectors(self, spec: TaskSpec, examples: list, num: int, seed: int = 0, guidance: Optional[float] = None,
                     quality: Optional[float] = None) -> tuple[np.ndarray, str]:
        """(num, P) adapters for a task outside the zoo, of any label count: laid out and de-normalized as the
        closest zoo task's (whose head rows a new-task adapter replaces), and that task."""
        cond, nearest = self.task_condition(spec, examples, num, quality=quality)
        return self.vectors(cond, nearest, seed, guidance), nearest


def generate(gen_path: str, out_dir: str, num: int, seed: int, task: Optional[str] = None,
             description: Optional[str] = None, examples_file: Optional[str] = None,
             label_names: Optional[list[str]] = None, guidance: Optional[float] = None,
             quality: Optional[float] = None, expect: Optional[Config] = None,
             style_images: Optional[str] = None, bodies: str = "auto", head: str = "auto",
             tune_steps: int = 0) -> dict:
    """`raypdiff generate`: num adapters for a zoo task; otherwise what the generator's domain makes of the user's
    input (text: one adapter for a description + examples, raypdiff.newtask; vision: num adapters for style images).
    `expect`: the caller's config; its base model and LoRA settings must be the generator's. gen_path and out_dir:
    paths or URIs (adapters are written to a local folder, then uploaded whole)."""
    gen = Generator(gen_path)
    if expect is not None:
        gen.check_compatible(expect)
    domain, dest = domain_for(gen.domain), Location.of(out_dir, "--out")
    with local_folder(dest, last=("manifest.json",)) as out:  # a manifest never names adapters not there yet
        if task is None:
            user = UserInput(description, label_names, _read_examples(examples_file) if examples_file else [],
                             style_images, bodies, head, tune_steps)
            res = domain.for_user(gen, user, out, num, seed, guidance, quality)
        else:
            gen.spec(task)
            t0 = time.time()
            vectors = gen.vectors(gen.conditions(task, num, quality), task, seed, guidance)
            res = {"sample_seconds": time.time() - t0,
                   "adapters": domain.write_adapters(gen, task, vectors, adapter_folders(out, len(vectors))),
                   "manifest": str(out / "manifest.json")}
            write_manifest(out, res["adapters"], gen, task,
                           {"task": task, **sampling_facts(gen, seed, num, guidance, quality)})
        if not dest.is_local:  # name the adapters where they end up, not the folder they were written in
            manifest = out / "manifest.json"
            manifest.write_text(json.dumps(_moved(json.loads(manifest.read_text()), str(out), str(dest)), indent=1))
            res = {**res, **_moved({k: res[k] for k in ("adapters", "manifest")}, str(out), str(dest))}
    return res


def _moved(value, src: str, dst: str):
    """`value` (JSON-like) with every path below `src` renamed below `dst`."""
    if isinstance(value, dict):
        return {k: _moved(v, src, dst) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, src, dst) for v in value]
    if isinstance(value, str) and (value == src or value.startswith(src + "/")):
        return dst + value[len(src):]
    return value


def _read_examples(path: str) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--examples: no such file {p}")
    rows = []
    for i, line in enumerate(p.read_text().splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise ConfigError(f"--examples {p}: line {i + 1} is not JSON") from None
    return rows
