"""Latent diffusion around a `diffusers` noise scheduler: training loss with per-sample timesteps and
condition dropout, and guided sampling (DDIM by default, DDPM available). The network is an argument.
"""
from __future__ import annotations

import torch

from raypdiff.config import DiffusionConfig


def make_scheduler(cfg: DiffusionConfig, sampler: str | None = None):
    from diffusers import DDIMScheduler, DDPMScheduler

    cls = DDIMScheduler if (sampler or cfg.sampler) == "ddim" else DDPMScheduler
    return cls(num_train_timesteps=cfg.timesteps, beta_schedule=cfg.beta_schedule,
               prediction_type="epsilon", clip_sample=False)


def training_loss(model, x0: torch.Tensor, cond: torch.Tensor, scheduler, cond_drop: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """x0: (B, Z) clean latents, cond: (B, C). One random timestep per sample."""
    b = x0.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    x_t = scheduler.add_noise(x0, noise, t)
    drop = torch.rand(b, generator=generator).to(x0.device) < cond_drop
    return torch.nn.functional.mse_loss(model(x_t, t, cond, drop), noise)


def sample(model, cond: torch.Tensor, cfg: DiffusionConfig, generator: torch.Generator | None = None,
           guidance: float | torch.Tensor | None = None, sampler: str | None = None, steps: int | None = None,
           noise: torch.Tensor | None = None) -> torch.Tensor:
    """cond: (B, C) → (B, Z) latents. Classifier-free guidance: eps_u + g * (eps_c - eps_u), g a scale or a (B, 1)
    tensor of them. `noise`: the (B, Z) starting latents (default: drawn from `generator`), scaled by cfg.temperature;
    DDIM is deterministic given them, so rows batched from different requests come out as each would alone.
    Differentiable (the task-loss stage trains through it); callers that only sample run it under torch.no_grad()."""
    g = cfg.guidance if guidance is None else guidance
    scheduler = make_scheduler(cfg, sampler)
    is_ddim = (sampler or cfg.sampler) == "ddim"
    scheduler.set_timesteps((steps or cfg.sample_steps) if is_ddim else cfg.timesteps)
    b, device = cond.shape[0], cond.device
    x = (torch.randn((b, model.latent), generator=generator) if noise is None else noise).to(device) * cfg.temperature
    drop = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(device)
    for t in scheduler.timesteps:
        tt = torch.full((2 * b,), int(t), device=device, dtype=torch.long)
        eps_c, eps_u = model(torch.cat([x, x]), tt, torch.cat([cond, cond]), drop).chunk(2)
        eps = eps_u + g * (eps_c - eps_u)
        kwargs = {"generator": generator} if not is_ddim else {"eta": 0.0}
        x = scheduler.step(eps, t, x, **kwargs).prev_sample
    return x


class EMA:
    """Exponential moving average of a module's parameters (the weights used for sampling).

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates (as diffusers' EMAModel does):
    a fixed 0.999 over a few thousand steps would still hold a large share of the random initial weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def decay_at(self, n: int) -> float:
        """The decay used for update number n (1-based)."""
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, n: int) -> None:
        d = self.decay_at(n)
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict:
        return self.shadow

    def load_state_dict(self, state: dict) -> None:
        self.shadow = {k: v.clone() for k, v in state.items()}
