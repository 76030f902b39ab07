"""Style LoRAs on the vision base's UNet: PEFT on its attention projections, fine-tuned on one style's images with
captures (the plain loop the style zoo runs), a cheap score per capture, and flat vector ↔ diffusers LoRA folder."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from raypdiff.config import ConfigError, LoraSettings, VisionConfig
from raypdiff import lora
from raypdiff.lora import Layout
from raypdiff.vision.base import FashionPipeline, fit, prompts_for, to_pixels


def lora_config(settings: LoraSettings):
    from peft import LoraConfig

    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(settings.target_modules))


def add_lora(pipe: FashionPipeline, settings: LoraSettings, seed: int) -> Layout:
    """Freeze the UNet and add a LoRA (B = 0: the base's output is unchanged) on lora.target_modules; its layout."""
    names = [n for n, _ in pipe.unet.named_modules()]
    missing = [t for t in settings.target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ConfigError(f"lora.target_modules: the UNet has no module {missing[0]!r} (its attention projections "
                          f"are to_q, to_k, to_v, to_out.0)")
    torch.manual_seed(seed)
    pipe.unet.requires_grad_(False)
    pipe.unet.add_adapter(lora_config(settings))
    return lora.layout_of(pipe.unet)


def write_lora(vector: np.ndarray, layout: Layout, settings: LoraSettings, out_dir: str | Path) -> Path:
    """A diffusers LoRA folder (pytorch_lora_weights.safetensors) that `pipe.load_lora_weights(out_dir)` reads;
    its LoRA config rides along as metadata, so the loader scales by lora.alpha / lora.r, not by 1."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        FashionPipeline.save_lora_weights(out, unet_lora_layers=lora.unflatten(vector, layout),
                                          unet_lora_adapter_metadata=lora_config(settings).to_dict())
    except OSError as e:
        raise ConfigError(f"cannot write the style LoRA to {out}: {e.strerror or e}") from None
    return out


@torch.no_grad()
def denoise_errors(pipe: FashionPipeline, v: VisionConfig, images: np.ndarray, labels: np.ndarray,
                   seed: int = 0) -> np.ndarray:
    """(N,) noise-prediction MSE per (N, 28, 28) styled image at fixed noise and timesteps (the same draws for every
    capture): one UNet pass per image, the cheap per-capture score (its negative mean) instead of sampling."""
    x0 = to_pixels(images, v.image_size)  # (N, 1, S, S)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, v.timesteps, (len(x0),), generator=gen)
    h = pipe.embed(prompts_for(v, labels))  # (N, T, 384)
    errs = []
    for i in range(0, len(x0), 128):
        s = slice(i, i + 128)
        pred = pipe.unet(pipe.scheduler.add_noise(x0[s], noise[s], t[s]), t[s], encoder_hidden_states=h[s]).sample
        errs.append(((pred - noise[s]) ** 2).mean(dim=(1, 2, 3)))
    return torch.cat(errs).numpy()


def finetune(pipe: FashionPipeline, v: VisionConfig, images: np.ndarray, labels: np.ndarray, lr: float,
             batch_size: int, steps: int, seed: int, capture_steps: set[int],
             on_capture: Callable[[int, np.ndarray], None], on_step: Optional[Callable[[int, float], None]] = None
             ) -> list[float]:
    """The base's training loop on a pipe carrying a LoRA (only the LoRA trains; batches drawn from `seed`);
    on_capture(step, flat vector) after each step in capture_steps (1-based). Returns the losses."""
    def each(step: int, loss: float, snapshot) -> None:
        if on_step is not None:
            on_step(step, loss)
        if step in capture_steps:
            on_capture(step, lora.flatten(pipe.unet))

    return fit(pipe, dataclasses.replace(v, lr=lr, batch_size=batch_size, seed=seed), images, labels, steps,
               on_step=each)
