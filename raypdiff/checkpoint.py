"""The generator checkpoint: tensors in one safetensors file, everything else as JSON in its header, versioned.

Loading never unpickles; `migrate` converts a pickled `generator.pt` of earlier versions (tensors and plain data only).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_bytes

from raypdiff.autoencoder import ParamAutoencoder
from raypdiff.config import Config, ConfigError
from raypdiff.denoiser import Denoiser
from raypdiff.storage import Location, Where

GENERATOR_FILE = "generator.safetensors"
LEGACY_FILE = "generator.pt"
FORMAT = "raypdiff-generator"
VERSION = 2  # 1: the pickled generator.pt


@dataclass
class GeneratorCheckpoint:
    """What generation needs. Arrays: `ae`, `denoiser` (the EMA weights), `latent_stats`, `bank`
    (task → (S, C) condition embeddings), `normalizer["stats"]`; the rest is plain JSON data."""
    config: dict
    ae: dict[str, torch.Tensor]
    denoiser: dict[str, torch.Tensor]
    latent_stats: dict[str, torch.Tensor]
    normalizer: dict
    bank: dict[str, np.ndarray]
    task_names: list[str]
    num_params: int
    tasks: dict
    base_model: dict
    lora: dict
    domain: str = "text"
    zoo: str = ""
    examples: dict = field(default_factory=dict)
    base_fingerprint: Any = None
    history: list = field(default_factory=list)

    @property
    def cfg(self) -> Config:
        return Config.from_dict(self.config)

    @property
    def cond_dim(self) -> int:
        return next(iter(self.bank.values())).shape[-1]


_ARRAYS = ("config", "ae", "denoiser", "latent_stats", "normalizer", "bank")


def build_networks(cfg: Config, num_params: int, embed_dim: int) -> tuple[ParamAutoencoder, Denoiser]:
    """embed_dim: the condition encoder's width (C); quality conditioning adds one input."""
    torch.manual_seed(cfg.trainer.seed)
    cond_dim = embed_dim + int(cfg.condition.quality)
    return ParamAutoencoder(cfg.autoencoder, num_params), Denoiser(cfg.diffusion, cfg.autoencoder.latent, cond_dim)


def from_training(cfg: Config, state: dict, prep: dict) -> GeneratorCheckpoint:
    """A finished training state (`train.fit`'s snapshot) and the driver's preparation → a checkpoint."""
    keep = ("task_names", "num_params", "tasks", "base_model", "lora", "domain", "zoo", "examples",
            "base_fingerprint")
    return GeneratorCheckpoint(config=cfg.to_dict(), ae=state["ae"], denoiser=state["ema"],
                               latent_stats=state["latent_stats"], normalizer=prep["normalizer"], bank=prep["bank"],
                               history=state["history"], **{k: prep[k] for k in keep if k in prep})


def save(path: Where, ckpt: GeneratorCheckpoint) -> Location:
    """Write atomically (a reader never sees half a file), to a path or a URI."""
    path = Location.of(path)
    norm = ckpt.normalizer
    tensors = {f"ae.{k}": v for k, v in ckpt.ae.items()}
    tensors |= {f"denoiser.{k}": v for k, v in ckpt.denoiser.items()}
    tensors |= {f"latent_stats.{k}": v for k, v in ckpt.latent_stats.items()}
    # task names are free text: tensors are keyed by position, the names live in the JSON
    tensors |= {f"bank.{i}": torch.from_numpy(np.asarray(ckpt.bank[t])) for i, t in enumerate(ckpt.task_names)}
    stat_keys = list(norm["stats"])
    for i, k in enumerate(stat_keys):
        mean, std = norm["stats"][k]
        tensors[f"normalizer.{i}.mean"] = torch.from_numpy(np.asarray(mean))
        tensors[f"normalizer.{i}.std"] = torch.from_numpy(np.asarray(std))
    info = {k: v for k, v in vars(ckpt).items() if k not in _ARRAYS}
    info |= {"config": ckpt.config, "normalizer": {"mode": norm["mode"], "eps": norm["eps"], "keys": stat_keys}}
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    path.write_bytes(save_bytes(tensors, metadata={"format": FORMAT, "version": str(VERSION),
                                                   "raypdiff": json.dumps(info)}))
    return path


def locate(path: Where) -> Location:
    """A generator folder or file (a path or a URI) → the checkpoint file (a folder holding only a pickled
    generator.pt: an error that says how to convert it)."""
    p = Location.of(path)
    if p.is_dir():
        if not (p / GENERATOR_FILE).is_file() and (p / LEGACY_FILE).is_file():
            p = p / LEGACY_FILE
        else:
            p = p / GENERATOR_FILE
    if not p.is_file():
        raise ConfigError(f"generator not found at {path} (a folder holding {GENERATOR_FILE}, or the file)")
    if p.name.endswith(".pt"):
        raise ConfigError(f"{p}: a pickled generator (before version {VERSION}) is never loaded; convert it once "
                          f"with `raypdiff migrate {p}` (it reads tensors and plain data only)")
    return p


def load(path: Where) -> GeneratorCheckpoint:
    return read(locate(path))


def read(p: Location) -> GeneratorCheckpoint:
    """The checkpoint file at p, as `locate` found it; never unpickles."""
    try:
        data = p.read_bytes()
        # safetensors: an 8-byte little-endian header length, then the JSON header holding __metadata__
        meta = json.loads(data[8:8 + int.from_bytes(data[:8], "little")]).get("__metadata__") or {}
        tensors = load_tensors(data)
    except Exception as e:  # not a safetensors file
        raise ConfigError(f"{p}: not a raypdiff generator checkpoint ({type(e).__name__})") from None
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{p}: not a raypdiff generator checkpoint")
    try:
        return _from_file(p, meta, tensors)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{p}: a damaged raypdiff generator checkpoint ({type(e).__name__}: {e})") from None


def _from_file(p: Location, meta: dict, tensors: dict) -> GeneratorCheckpoint:
    if int(meta.get("version", 0)) > VERSION:
        raise ConfigError(f"{p}: checkpoint version {meta['version']} is newer than this raypdiff reads "
                          f"({VERSION}); upgrade raypdiff")
    info = json.loads(meta["raypdiff"])

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}

    norm = info.pop("normalizer")
    stats = {k: (tensors[f"normalizer.{i}.mean"].numpy(), tensors[f"normalizer.{i}.std"].numpy())
             for i, k in enumerate(norm.pop("keys"))}
    bank = {t: tensors[f"bank.{i}"].numpy() for i, t in enumerate(info["task_names"])}
    return GeneratorCheckpoint(ae=part("ae"), denoiser=part("denoiser"), latent_stats=part("latent_stats"),
                               normalizer={**norm, "stats": stats}, bank=bank, **info)


def _read_legacy(path: Path) -> dict:
    """A version-1 generator.pt, unpickled by torch's weights-only reader (tensors, numpy arrays and plain
    containers; anything else, code above all, is refused)."""
    from numpy._core.multiarray import _reconstruct

    # numpy 1.x pickles name numpy.core, numpy 2.x numpy._core
    safe = [(_reconstruct, "numpy.core.multiarray._reconstruct"), (_reconstruct, "numpy._core.multiarray._reconstruct"),
            np.ndarray, np.dtype, type(np.dtype(np.float32)), type(np.dtype(np.float64)), type(np.dtype(np.int64))]
    try:
        with torch.serialization.safe_globals(safe):
            g = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)|Unsupported operand \S+", str(e))
        why = found.group(1) or found.group(0) if found else type(e).__name__
        raise ConfigError(f"{path}: refused, not a plain raypdiff generator.pt (it asks for {why})") from None
    if not isinstance(g, dict) or "denoiser_ema" not in g:
        raise ConfigError(f"{path}: not a raypdiff generator checkpoint")
    return g


def migrate(path: str | Path, out: str | Path | None = None) -> Location:
    """A version-1 generator.pt → generator.safetensors beside it (or at `out`)."""
    p = Path(path)
    if p.is_dir():
        p = p / LEGACY_FILE
    if not p.is_file():
        raise ConfigError(f"migrate: no such file {p}")
    g = _read_legacy(p)
    g["config"]["condition"].setdefault("quality", False)  # saved before quality conditioning
    ckpt = GeneratorCheckpoint(
        config=g["config"], ae=g["ae"], denoiser=g["denoiser_ema"], latent_stats=g["latent_stats"],
        normalizer={**g["normalizer"], "stats": {k: tuple(np.asarray(a) for a in v)
                                                 for k, v in g["normalizer"]["stats"].items()}},
        bank={t: np.asarray(v) for t, v in g["bank"].items()}, task_names=g["task_names"],
        num_params=int(g["num_params"]), tasks=g["tasks"], base_model=g["base_model"], lora=g["lora"],
        domain=g.get("domain", "text"), zoo=g.get("zoo", ""), examples=g.get("examples", {}),
        base_fingerprint=g.get("base_fingerprint"), history=g.get("history", []))
    return save(Path(out) if out else p.with_name(GENERATOR_FILE), ckpt)
