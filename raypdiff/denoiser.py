"""The latent denoiser: an MLP with adaLN blocks (DiT-style) conditioned on timestep + task embedding.

A plain nn.Module predicting the noise; the diffusion process lives in raypdiff.diffusion.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from raypdiff.config import DiffusionConfig


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of per-sample timesteps: (B,) → (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class AdaLNBlock(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.mod = nn.Linear(hidden, 3 * hidden)
        nn.init.zeros_(self.mod.weight)  # adaLN-Zero: each block starts as the identity
        nn.init.zeros_(self.mod.bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.mod(c).chunk(3, dim=-1)  # (B, H) each
        return h + gate * self.mlp(self.norm(h) * (1 + scale) + shift)


class Denoiser(nn.Module):
    def __init__(self, cfg: DiffusionConfig, latent: int, cond_dim: int):
        super().__init__()
        self.cfg, self.latent, self.cond_dim = cfg, latent, cond_dim
        h = cfg.hidden
        self.inp = nn.Linear(latent, h)
        self.t_mlp = nn.Sequential(nn.Linear(128, h), nn.SiLU(), nn.Linear(h, h))
        self.c_mlp = nn.Sequential(nn.Linear(cond_dim, h), nn.SiLU(), nn.Linear(h, h))
        self.null_cond = nn.Parameter(torch.zeros(cond_dim))  # the "no condition" input for guidance
        self.blocks = nn.ModuleList(AdaLNBlock(h) for _ in range(cfg.depth))
        self.out_norm = nn.LayerNorm(h)
        self.out = nn.Linear(h, latent)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, Z) noisy latents, t: (B,) timesteps, cond: (B, C); drop: (B,) bool → use the null condition."""
        if drop is not None:
            cond = torch.where(drop[:, None], self.null_cond.expand_as(cond), cond)
        c = nn.functional.silu(self.t_mlp(timestep_embedding(t, 128)) + self.c_mlp(cond))  # (B, H)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, c)
        return self.out(self.out_norm(h))  # (B, Z) predicted noise
