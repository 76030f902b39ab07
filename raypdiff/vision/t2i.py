"""The text-to-image model style LoRAs train on, behind one small interface: the offline base (`FashionPipeline`, in
pixels) or a diffusers pipeline by hub name or folder (`vision.pipeline`: Stable Diffusion 1.x/2.x's UNet or
PixArt-α/Σ's transformer, in their VAE's latents)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from diffusers import DDPMScheduler

from raypdiff import lora
from raypdiff.config import ConfigError, LoraSettings
from raypdiff.vision.settings import VisionConfig
from raypdiff.vision.base import FashionPipeline, prompts_for, to_pixels

# pipelines whose denoiser, text inputs and noise schedule TextToImage knows (SDXL, SD3, Flux and Sana differ in each)
SUPPORTED = ("FashionPipeline", "StableDiffusionPipeline", "PixArtAlphaPipeline", "PixArtSigmaPipeline")
# the default variant's weights (one file or shards), not fp16 / non-EMA copies
WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model-*-of-*.safetensors")


def pipeline_class(source: str | Path) -> tuple[type, str]:
    """A pipeline folder or hub name → (its pipeline class, "unet" or "transformer"), from model_index.json alone."""
    import diffusers

    try:
        index = diffusers.DiffusionPipeline.load_config(str(source))
    except (OSError, ValueError) as e:
        raise ConfigError(f"vision.pipeline: no diffusers pipeline at {source} ({str(e).splitlines()[0]})") from None
    name = index["_class_name"]
    if name not in SUPPORTED:
        raise ConfigError(f"vision.pipeline: {source} is a {name}; style LoRAs support {', '.join(SUPPORTED[1:])}")
    cls = FashionPipeline if name == "FashionPipeline" else getattr(diffusers, name)
    return cls, ("unet" if "unet" in index else "transformer")


def load_pipeline(source: str | Path):
    """The pipeline at a folder or hub name (no safety checker: samples are judged, not shown), progress bars off."""
    cls, _ = pipeline_class(source)
    extra = {"safety_checker": None, "requires_safety_checker": False} if cls.__name__ == "StableDiffusionPipeline" else {}
    pipe = cls.from_pretrained(str(source), **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def denoiser_files(source: str | Path) -> list[Path]:
    """The denoiser's weight files (default variant) of a pipeline folder or hub name (fetched as from_pretrained
    would, those files only)."""
    _, name = pipeline_class(source)
    folder = Path(source).expanduser()
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(str(source), allow_patterns=[f"{name}/{w}" for w in WEIGHTS]))
    return sorted({f for w in WEIGHTS for f in (folder / name).glob(w)})


class TextToImage:
    """What style LoRAs need of a pipeline: its denoiser (the module LoRAs go on), training inputs from (N, 28, 28)
    style images, per-row conditions from prompts, the denoiser's prediction and its target, and grayscale samples."""

    def __init__(self, pipe, v: Optional[VisionConfig] = None):  # v: for inputs() and sample()
        self.pipe, self.v = pipe, v
        self.pixels = isinstance(pipe, FashionPipeline)  # the offline base has no VAE: it denoises pixels
        self.name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
        self.denoiser = getattr(pipe, self.name)
        # training noise: the pipeline's own DDIM scheduler for the offline base; for others, DDPM on their schedule
        # (a sampler such as PNDM or DPM-Solver maps timesteps to noise levels by its sampling grid)
        self.scheduler = pipe.scheduler if self.pixels else DDPMScheduler.from_config(pipe.scheduler.config)
        self.timesteps = int(self.scheduler.config.num_train_timesteps)

    @torch.no_grad()
    def inputs(self, images: np.ndarray) -> torch.Tensor:
        """(N, 28, 28) uint8 → what the denoiser learns to make: (N, 1, S, S) pixels for the offline base; otherwise
        the VAE's latents (N, C, S/f, S/f) of the images upscaled to vision.image_size, gray copied to RGB."""
        if self.pixels:
            return to_pixels(images, self.v.image_size)
        vae = self.pipe.vae
        x = torch.tensor(images, dtype=torch.float32)[:, None] / 127.5 - 1
        x = torch.nn.functional.interpolate(x, size=self.v.image_size, mode="bilinear").repeat(1, 3, 1, 1)
        z = torch.cat([vae.encode(x[i:i + 16]).latent_dist.mean for i in range(0, len(x), 16)])
        return (z - (getattr(vae.config, "shift_factor", None) or 0.0)) * vae.config.scaling_factor

    @torch.no_grad()
    def condition(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """The denoiser's text inputs, each a tensor with one row per prompt."""
        if self.pixels:
            return {"encoder_hidden_states": self.pipe.embed(prompts)}
        if self.name == "transformer":  # PixArt-α: T5 tokens and their mask
            h, mask, *_ = self.pipe.encode_prompt(prompts, do_classifier_free_guidance=False, device="cpu")
            return {"encoder_hidden_states": h, "encoder_attention_mask": mask}
        return {"encoder_hidden_states": self.pipe.encode_prompt(prompts, "cpu", 1, False)[0]}

    def class_condition(self, labels: np.ndarray) -> dict[str, torch.Tensor]:
        """condition() of the class prompts of (N,) class ids, each distinct prompt embedded once: key → (N, ...)."""
        classes, index = np.unique(labels, return_inverse=True)
        return {k: h[torch.as_tensor(index)] for k, h in self.condition(prompts_for(self.v, classes)).items()}

    def predict(self, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.name == "unet":
            return self.denoiser(x, t, **cond).sample
        sizes = {"resolution": None, "aspect_ratio": None}
        if self.denoiser.use_additional_conditions:  # PixArt-α 1024: the image size as the pipeline passes it
            sizes = {"resolution": torch.tensor([[float(self.v.image_size)] * 2]).repeat(len(x), 1),
                     "aspect_ratio": torch.ones(len(x), 1)}
        out = self.denoiser(x, timestep=t, added_cond_kwargs=sizes, **cond).sample
        return out[:, :x.shape[1]]  # PixArt also predicts a variance in its second half

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What predict() is trained towards: the noise, or the velocity for v-prediction models (SD 2)."""
        if self.scheduler.config.get("prediction_type", "epsilon") == "v_prediction":
            return self.scheduler.get_velocity(x0, noise, t)
        return noise

    @torch.no_grad()
    def sample(self, prompts: list[str], steps: int, generator: torch.Generator, guidance: float) -> np.ndarray:
        """(N, S, S) uint8 grayscale samples: the offline base's 32 px; other pipelines' images back in the 28 px
        frame the style images were upscaled from (what the judges read)."""
        if self.pixels:
            return self.pipe(prompts, steps, generator, guidance)
        extra = {"use_resolution_binning": False, "clean_caption": False} if self.name == "transformer" else {}
        rgb = self.pipe(prompt=prompts, num_inference_steps=steps, guidance_scale=guidance, generator=generator,
                        height=self.v.image_size, width=self.v.image_size, output_type="np", **extra).images
        gray = torch.tensor(np.asarray(rgb).mean(axis=-1))[:, None]  # (N, 1, S, S) in [0, 1]
        small = torch.nn.functional.interpolate(gray, size=28, mode="area")[:, 0]
        return (small * 255).round().clamp(0, 255).to(torch.uint8).numpy()

    def add_lora(self, settings: LoraSettings, seed: int):
        """Freeze the denoiser and add a LoRA (B = 0: the output is unchanged) on lora.target_modules; its layout."""
        from peft import inject_adapter_in_model

        names = [n for n, _ in self.denoiser.named_modules()]
        missing = [t for t in settings.target_modules if not any(n == t or n.endswith("." + t) for n in names)]
        if missing:
            raise ConfigError(f"lora.target_modules: the {self.name} has no module {missing[0]!r} (attention "
                              f"projections are to_q, to_k, to_v, to_out.0; a UNet's convolutions conv1, conv2, "
                              f"proj_in, proj_out)")
        torch.manual_seed(seed)
        self.denoiser.requires_grad_(False)
        config = lora_config(settings)
        if hasattr(self.denoiser, "add_adapter"):
            self.denoiser.add_adapter(config)
        else:  # no diffusers PEFT mixin (PixArt's transformer): peft's own injection, the same LoRA layers
            inject_adapter_in_model(config, self.denoiser)
        return lora.layout_of(self.denoiser)

    def load_lora(self, folder: str | Path) -> None:
        """A folder write_lora made: the pipeline's own LoRA loader, else peft's (for denoisers without one)."""
        if hasattr(self.pipe, "load_lora_weights"):
            self.pipe.load_lora_weights(str(folder))
            return
        from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
        from safetensors.torch import load_file

        inject_adapter_in_model(LoraConfig.from_pretrained(str(folder)), self.denoiser)
        set_peft_model_state_dict(self.denoiser, load_file(Path(folder) / "adapter_model.safetensors"))


def save_lora(layers: dict[str, torch.Tensor], config, out: Path, source: Optional[str | Path] = None) -> None:
    """LoRA matrices of the denoiser → a folder the pipeline at `source` (None: the offline base) loads with
    `load_lora_weights`, or, where its pipeline has no LoRA loader (PixArt-α), adapter_config.json +
    adapter_model.safetensors (keys as the denoiser names its modules, without PeftModel's "base_model.model."
    prefix) that `TextToImage.load_lora` reads: peft's inject_adapter_in_model, then set_peft_model_state_dict."""
    cls, name = (FashionPipeline, "unet") if source is None else pipeline_class(source)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(cls, "save_lora_weights"):  # the config rides along, so the loader scales by alpha / r, not by 1
        cls.save_lora_weights(out, **{f"{name}_lora_layers": layers, f"{name}_lora_adapter_metadata": config.to_dict()})
        return
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in layers.items()}, str(out / "adapter_model.safetensors"))
    config.save_pretrained(str(out))


def lora_config(settings: LoraSettings):
    from peft import LoraConfig

    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(settings.target_modules))


def fit(pipe, cfg: VisionConfig, images: np.ndarray, labels: np.ndarray, steps: int,
        state: Optional[dict] = None, on_step: Optional[Callable[[int, float, Callable[[], dict]], None]] = None
        ) -> list[float]:
    """Denoising training of a pipeline's denoiser (its text encoder and VAE stay frozen) on (N, 28, 28) images and
    their class ids: AdamW steps of cfg.batch_size random rows up to `steps`, from `state` (a snapshot) when
    resuming; a cfg.uncond_prob share of rows sees the empty prompt (what classifier-free guidance subtracts).
    on_step(step, loss, snapshot) may save snapshot(): denoiser, optimizer, sampler state, step, losses."""
    model = TextToImage(pipe, cfg)
    x_all = model.inputs(images)  # (N, C, S, S): pixels, or VAE latents
    classes = np.unique(labels)
    rows = model.condition(prompts_for(cfg, classes))  # embedded once: key → (classes, ...)
    table = {c: {k: h[i] for k, h in rows.items()} for i, c in enumerate(classes.tolist())}
    empty = {k: h[0] for k, h in model.condition([""]).items()}
    gen = torch.Generator().manual_seed(cfg.seed)
    # the trainable weights: the whole denoiser for the base, only its LoRA matrices once an adapter is added
    opt = torch.optim.AdamW([p for p in model.denoiser.parameters() if p.requires_grad], lr=cfg.lr)
    losses: list[float] = []
    if state is not None:
        model.denoiser.load_state_dict(state["unet"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        losses = list(state["losses"])

    def snapshot() -> dict:  # "unet": the denoiser, whatever its kind (the key older checkpoints have)
        return {"unet": model.denoiser.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                "step": len(losses), "losses": list(losses)}

    model.denoiser.train()
    for step in range(len(losses) + 1, steps + 1):
        idx = torch.randint(0, len(x_all), (min(cfg.batch_size, len(x_all)),), generator=gen)
        x0 = x_all[idx]
        cond = {k: torch.stack([table[int(labels[i])][k] for i in idx]) for k in empty}  # key → (B, ...)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, model.timesteps, (len(x0),), generator=gen)
        if cfg.uncond_prob > 0:
            drop = torch.rand(len(x0), generator=gen) < cfg.uncond_prob
            cond = {k: torch.where(drop.view(-1, *[1] * (h.dim() - 1)), empty[k], h) for k, h in cond.items()}
        loss = torch.nn.functional.mse_loss(model.predict(model.scheduler.add_noise(x0, noise, t), t, cond),
                                            model.target(x0, noise, t))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1], snapshot)
    model.denoiser.eval()
    return losses
