"""Style LoRAs on the vision base's denoiser: PEFT on lora.target_modules (attention, and convolutions LoCon-style),
fine-tuned on one style's images with captures (the plain loop the style zoo runs), a cheap score per capture, and flat
vector ↔ diffusers LoRA folder."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from raypdiff.config import ConfigError, LoraSettings, derive
from raypdiff.vision.settings import VisionConfig
from raypdiff import lora
from raypdiff.lora import Layout
from raypdiff.vision.t2i import TextToImage, fit, lora_config, save_lora


def add_lora(pipe, settings: LoraSettings, seed: int) -> Layout:
    """Freeze the pipeline's denoiser and add a LoRA (B = 0: the output is unchanged) on lora.target_modules."""
    return TextToImage(pipe).add_lora(settings, seed)


def write_lora(vector: np.ndarray, layout: Layout, settings: LoraSettings, out_dir: str | Path,
               source: Optional[str] = None) -> Path:
    """A LoRA folder the pipeline at `source` (vision.pipeline; None: the offline base) loads with
    `pipe.load_lora_weights(out_dir)` (a PEFT folder where the pipeline has no LoRA loader, as PixArt-α)."""
    out = Path(out_dir)
    try:
        save_lora(lora.unflatten(vector, layout), lora_config(settings), out, source)
    except OSError as e:
        raise ConfigError(f"cannot write the style LoRA to {out}: {e.strerror or e}") from None
    return out


@torch.no_grad()
def denoise_errors(pipe, v: VisionConfig, images: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N,) denoising MSE per (N, 28, 28) styled image at fixed noise and timesteps (the same draws for every
    capture): one denoiser pass per image, the cheap per-capture score (its negative mean) instead of sampling."""
    model = TextToImage(pipe, v)
    x0 = model.inputs(images)  # (N, C, S, S)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, model.timesteps, (len(x0),), generator=gen)
    cond = model.class_condition(labels)  # key → (N, ...)
    errs = []
    for i in range(0, len(x0), 128):
        s = slice(i, i + 128)
        pred = model.predict(model.scheduler.add_noise(x0[s], noise[s], t[s]), t[s], {k: h[s] for k, h in cond.items()})
        errs.append(((pred - model.target(x0[s], noise[s], t[s])) ** 2).mean(dim=(1, 2, 3)))
    return torch.cat(errs).numpy()


def finetune(pipe, v: VisionConfig, images: np.ndarray, labels: np.ndarray, lr: float,
             batch_size: int, steps: int, seed: int, capture_steps: set[int],
             on_capture: Callable[[int, np.ndarray], None], on_step: Optional[Callable[[int, float], None]] = None
             ) -> list[float]:
    """The base's training loop on a pipe carrying a LoRA (only the LoRA trains; batches drawn from `seed`);
    on_capture(step, flat vector) after each step in capture_steps (1-based). Returns the losses."""
    denoiser = TextToImage(pipe).denoiser

    def each(step: int, loss: float, snapshot) -> None:
        if on_step is not None:
            on_step(step, loss)
        if step in capture_steps:
            on_capture(step, lora.flatten(denoiser))

    return fit(pipe, derive(v, {"lr": lr, "batch_size": batch_size, "seed": seed}, "vision."), images, labels, steps,
               on_step=each)
