"""Parameter autoencoder: a flat (normalized) adapter vector P → latent Z → P, noise-augmented (p-diff).

The vector is cut into T = ceil(P / chunk) tokens; each token has its own projection (an einsum over
per-token weights), which keeps position-specific structure at a fraction of a dense P×Z layer's size.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from raypdiff.config import AutoencoderConfig


class TokenLinear(nn.Module):
    """A separate Linear(d_in, d_out) per token: (B, T, d_in) → (B, T, d_out)."""

    def __init__(self, tokens: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(tokens, d_in, d_out) / math.sqrt(d_in))
        self.bias = nn.Parameter(torch.zeros(tokens, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bti,tio->bto", x, self.weight) + self.bias


class ParamAutoencoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig, num_params: int):
        super().__init__()
        self.cfg, self.num_params = cfg, num_params
        self.tokens = math.ceil(num_params / cfg.chunk)
        t, d = self.tokens, cfg.token_dim
        self.enc_tok = TokenLinear(t, cfg.chunk, d)
        self.enc_out = nn.Linear(t * d, cfg.latent)
        self.dec_in = nn.Linear(cfg.latent, t * d)
        self.dec_tok = TokenLinear(t, d, cfg.chunk)
        self.act = nn.GELU()

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(x, (0, self.tokens * self.cfg.chunk - x.shape[-1]))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        h = self._pad(x).view(x.shape[0], self.tokens, self.cfg.chunk)  # (B, T, chunk)
        h = self.act(self.enc_tok(h))  # (B, T, d)
        return self.enc_out(h.flatten(1))  # (B, Z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.act(self.dec_in(z)).view(z.shape[0], self.tokens, self.cfg.token_dim)  # (B, T, d)
        return self.dec_tok(h).flatten(1)[:, : self.num_params]  # (B, P)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training pass with the paper's augmentation: noise on the input and on the latent."""
        z = self.encode(x + self.cfg.input_noise * torch.randn_like(x))
        return self.decode(z + self.cfg.latent_noise * torch.randn_like(z))


def ae_loss(ae: ParamAutoencoder, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE over the real (unpadded) coordinates; mask: (B, P) 1 where a task's layout has a value."""
    err = (ae(x) - x) ** 2 * mask
    return err.sum() / mask.sum()
