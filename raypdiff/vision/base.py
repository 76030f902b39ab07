"""The offline text-to-image base: a small diffusers UNet2DConditionModel trained on 32 px Fashion-MNIST, conditioned
on its class name's MiniLM token embeddings, sampled with DDIM, saved and loaded as a diffusers pipeline folder
(`FashionPipeline.from_pretrained`, and `load_lora_weights` for style LoRAs)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, UNet2DConditionModel
from diffusers.loaders import StableDiffusionLoraLoaderMixin

from raypdiff.vision.settings import VisionConfig
from raypdiff.vision.fashion import CLASSES

PROMPT_TOKENS = 16  # class names and short prompts fit; longer prompts are truncated


class FashionPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    """Pixel-space text-to-image: prompts → (N, H, W) uint8 grayscale images."""

    def __init__(self, unet: UNet2DConditionModel, scheduler: DDIMScheduler, text_encoder, tokenizer):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer)

    @torch.no_grad()
    def embed(self, prompts: list[str]) -> torch.Tensor:
        """(N,) prompts → (N, PROMPT_TOKENS, 384) token embeddings, the UNet's cross-attention input."""
        tok = self.tokenizer(prompts, padding="max_length", max_length=PROMPT_TOKENS, truncation=True,
                             return_tensors="pt")
        return self.text_encoder(**tok).last_hidden_state

    @torch.no_grad()
    def __call__(self, prompts: list[str], num_inference_steps: int = 25,
                 generator: Optional[torch.Generator] = None, guidance_scale: float = 1.0) -> np.ndarray:
        """guidance_scale > 1: classifier-free guidance, eps = eps("") + scale * (eps(prompt) - eps(""))."""
        size = self.unet.config.sample_size
        x = torch.randn((len(prompts), 1, size, size), generator=generator)
        h = self.embed(prompts)
        if guidance_scale != 1:
            h = torch.cat([self.embed([""]).expand_as(h), h])  # (2N, T, 384): the empty prompt, then the prompts
        self.scheduler.set_timesteps(num_inference_steps)
        for t in self.scheduler.timesteps:
            if guidance_scale == 1:
                eps = self.unet(x, t, encoder_hidden_states=h).sample
            else:
                uncond, cond = self.unet(torch.cat([x, x]), t, encoder_hidden_states=h).sample.chunk(2)
                eps = uncond + guidance_scale * (cond - uncond)
            x = self.scheduler.step(eps, t, x).prev_sample
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0].numpy()


def new_pipeline(cfg: VisionConfig, base: str = "all-MiniLM-L6-v2") -> FashionPipeline:
    """An untrained UNet beside the frozen MiniLM text encoder (the same packaged model the text domain uses)."""
    from transformers import AutoModel, AutoTokenizer

    from raypdiff.lora import resolve_base

    torch.manual_seed(cfg.seed)
    path = resolve_base(base)
    text_encoder = AutoModel.from_pretrained(path).eval()
    unet = UNet2DConditionModel(
        sample_size=cfg.image_size, in_channels=1, out_channels=1, block_out_channels=tuple(cfg.channels),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=text_encoder.config.hidden_size, layers_per_block=1,
        attention_head_dim=cfg.attention_head_dim, norm_num_groups=8)
    return FashionPipeline(unet, DDIMScheduler(num_train_timesteps=cfg.timesteps), text_encoder,
                           AutoTokenizer.from_pretrained(path))


def to_pixels(images: np.ndarray, size: int) -> torch.Tensor:
    """(N, 28, 28) uint8 → (N, 1, size, size) float in [-1, 1], zero (black) padded evenly."""
    pad = size - images.shape[-1]
    x = torch.tensor(images, dtype=torch.float32)[:, None] / 127.5 - 1  # a copy: IDX arrays are read-only
    return torch.nn.functional.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2), value=-1.0)


def prompts_for(cfg: VisionConfig, labels: np.ndarray) -> list[str]:
    return [cfg.prompt.format(label=CLASSES[int(y)]) for y in labels]
