"""The vision domain's config sections, composed into raypdiff.config.Config: `vision` (the text-to-image base and its
style LoRAs' training) and `style_eval` (`raypdiff vision-eval`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from raypdiff.errors import require


@dataclass
class VisionConfig:
    """The second domain: the offline text-to-image base model (and, later, its style LoRAs)."""
    data_dir: Optional[str] = None  # Fashion-MNIST's IDX files; None → the Debian package's folder
    # style LoRAs' model: None → the offline base (`raypdiff vision-base`, in base_dir); else a diffusers pipeline by
    # hub name or folder (Stable Diffusion, PixArt-α), with image_size its resolution (512 for SD 1.5)
    pipeline: Optional[str] = None
    image_size: int = 32  # Fashion-MNIST's 28 px padded to a size the UNet halves twice; upscaled to it otherwise
    channels: list[int] = field(default_factory=lambda: [32, 64, 64])  # UNet blocks; the last two cross-attend
    attention_head_dim: int = 8
    prompt: str = "a {label}"  # the text a class (or a sample request) becomes
    timesteps: int = 1000
    sample_steps: int = 25  # DDIM steps when sampling
    base_steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-4
    uncond_prob: float = 0.1  # share of training rows given the empty prompt, so samples can use guidance
    guidance_scale: Optional[float] = None  # classifier-free guidance; None → the scale vision-base chose (base.json)
    guidance_choices: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0, 5.0])  # what vision-base tries
    judge_steps: int = 1500  # the CNN that judges samples, trained on real images (base.json: its test accuracy)
    seed: int = 0
    base_dir: str = "runs/vision/base"
    style_images: int = 2000  # styled train images per style LoRA (the first N of Fashion-MNIST's train split)

    def __post_init__(self):
        require(self.image_size >= 28 and self.image_size % 4 == 0,
                f"vision.image_size: must be >= 28 and a multiple of 4, got {self.image_size}")
        require(len(self.channels) == 3 and all(c >= 8 and c % 8 == 0 for c in self.channels),
                f"vision.channels: three multiples of 8 (one per UNet block), got {self.channels}")
        require("{label}" in self.prompt, f"vision.prompt: must contain {{label}}, got {self.prompt!r}")
        for name in ("attention_head_dim", "timesteps", "sample_steps", "base_steps", "batch_size", "judge_steps",
                     "style_images"):
            require(getattr(self, name) >= 1, f"vision.{name}: must be >= 1, got {getattr(self, name)}")
        require(self.lr > 0, f"vision.lr: must be > 0, got {self.lr}")
        require(0 <= self.uncond_prob < 1, f"vision.uncond_prob: must be in [0, 1), got {self.uncond_prob}")
        for g in ([] if self.guidance_scale is None else [self.guidance_scale]) + list(self.guidance_choices):
            require(g >= 1, f"vision.guidance_scale / guidance_choices: scales must be >= 1 (1: no guidance), got {g}")
        require(len(self.guidance_choices) >= 1, "vision.guidance_choices: give at least one scale")


@dataclass
class StyleEvalConfig:
    """Style LoRAs scored by their samples (`raypdiff vision-eval`): every method samples the same prompt set from
    the same noise; judges trained here on real styled images read the samples."""
    per_class: int = 10  # samples per Fashion-MNIST class per adapter (the prompt set: every class this many times)
    num: int = 3  # generated adapters per style: their mean and the best by val
    zoo_captures: int = 4  # a style's captures sampled for the zoo mean, evenly over its seeds and steps
    # real images per style (and unstyled) the style and class judges train on, and their steps: picked on real val
    # images (bench/results/judges.md: the class judge's worst style, outline, 0.56 → 0.71 against 500 and 1500)
    judge_images: int = 16000
    judge_steps: int = 4000
    heldout_styles: list[str] = field(default_factory=list)  # styles a second generator never sees
    interpolate: list[str] = field(default_factory=list)  # the two styles of the interpolation strip; [] → first two
    interpolate_points: int = 7
    bootstrap: int = 200  # halves of the prompt set drawn for the intervals (raypdiff.vision.evaluate.StyleScorer)
    seed: int = 0
    output_dir: str = "runs/vision/eval"

    def __post_init__(self):
        for name in ("per_class", "num", "zoo_captures", "judge_images", "judge_steps", "bootstrap"):
            require(getattr(self, name) >= 1, f"style_eval.{name}: must be >= 1, got {getattr(self, name)}")
        require(self.per_class >= 2, f"style_eval.per_class: must be >= 2 (a Fréchet distance needs a covariance), "
                f"got {self.per_class}")
        require(len(self.interpolate) in (0, 2), f"style_eval.interpolate: name two styles, got {self.interpolate}")
        require(self.interpolate_points >= 2,
                f"style_eval.interpolate_points: must be >= 2, got {self.interpolate_points}")
