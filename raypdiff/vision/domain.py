"""The vision domain behind raypdiff.domains' interface: a zoo task is a style, its data styled Fashion-MNIST, its
adapter a LoRA on the vision base's UNet (`raypdiff vision-base` builds it), each capture scored by denoising error."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from raypdiff.config import Config, ConfigError
from raypdiff.domains.base import (Run, UserInput, adapter_folders, sampling_facts, score_captures,
                                   write_manifest)
from raypdiff.storage import Location, cached_copy
from raypdiff.vision.styles import StyleSpec, apply, resolve_styles

METRIC = "denoise"  # minus the mean noise-prediction MSE on the split's styled images: higher is better


@dataclass
class StyleData:
    """A style's images, each split (N, 28, 28) uint8 styled images and (N,) class ids, and where they come from."""
    spec: StyleSpec
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    splits: dict


def pipeline_source(cfg: Config) -> str:
    """Where style LoRAs' pipeline loads from: vision.pipeline (a hub name or folder), else the offline base."""
    if cfg.vision.pipeline:
        local = Path(cfg.vision.pipeline).expanduser()
        return str(local.resolve()) if local.is_dir() else cfg.vision.pipeline  # a folder, else a hub name
    path = Location.of(cfg.vision.base_dir, "vision.base_dir") / "pipeline"
    if not (path / "model_index.json").is_file():
        raise ConfigError(f"no vision base pipeline in {path}: build it with `raypdiff vision-base` (same "
                          f"vision.base_dir), or name a diffusers pipeline in vision.pipeline")
    return str(cached_copy(path))  # diffusers reads local folders; a bucket's is fetched once per node


def image_encoder(c):
    from raypdiff.vision.encoders import MobileNetEncoder

    return MobileNetEncoder(c.image_weights)


def load_styled(cfg: Config, spec: StyleSpec) -> StyleData:
    """train: the first vision.style_images train images; val: the last eval.val_examples train images (never
    trained on); test: the first eval.test_examples test images. Random ops draw per split from eval.split_seed."""
    from raypdiff.vision import fashion

    v, e = cfg.vision, cfg.eval
    (xtr, ytr), (xte, yte) = fashion.load("train", v.data_dir), fashion.load("test", v.data_dir)
    if v.style_images + e.val_examples > len(xtr):
        raise ConfigError(f"vision.style_images + eval.val_examples = {v.style_images + e.val_examples} is more than "
                          f"Fashion-MNIST's {len(xtr)} train images")
    rows = {"train": ("train", 0, v.style_images), "val": ("train", len(xtr) - e.val_examples, len(xtr)),
            "test": ("test", 0, min(e.test_examples, len(xte)))}
    parts = {}
    for i, (split, (file, a, b)) in enumerate(rows.items()):
        x, y = (xtr, ytr) if file == "train" else (xte, yte)
        parts[split] = (apply(spec, x[a:b], seed=e.split_seed * 3 + i), y[a:b])
    return StyleData(spec, parts["train"], parts["val"], parts["test"],
                     {k: {"file": f, "rows": [a, b]} for k, (f, a, b) in rows.items()})


class StyleDomain:
    """Style LoRAs (peft on the UNet's lora.target_modules) of the text-to-image base."""

    def specs(self, cfg: Config) -> list[StyleSpec]:
        return resolve_styles(cfg.tasks)

    def spec(self, d: dict) -> StyleSpec:
        return StyleSpec(**d)

    def spec_dict(self, spec: StyleSpec) -> dict:
        return asdict(spec)

    def load(self, cfg: Config, spec: StyleSpec) -> StyleData:
        return load_styled(cfg, spec)

    def layout(self, cfg: Config, spec: StyleSpec) -> list:
        from raypdiff.vision.style_lora import add_lora
        from raypdiff.vision.t2i import load_pipeline

        return add_lora(load_pipeline(pipeline_source(cfg)), cfg.lora, seed=0).to_json()

    def base(self, cfg: Config) -> dict:
        """A hash of the denoiser's weights (another base is another zoo, wherever its folder lies; "unet_sha256"
        for a transformer too) and the vision settings that change the styled data, the style LoRAs' training or
        the scores (not those of the base's own training); a named pipeline's name or folder."""
        from raypdiff.vision.t2i import denoiser_files

        h = hashlib.sha256()
        for f in denoiser_files(pipeline_source(cfg)):
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 24), b""):
                    h.update(block)
        v = cfg.to_dict()["vision"]
        keys = ("data_dir", "image_size", "timesteps", "prompt", "style_images", "uncond_prob") + (
            ("pipeline",) if v["pipeline"] else ())
        return {"unet_sha256": h.hexdigest(), "vision": {k: v[k] for k in keys}}

    def info(self, spec: StyleSpec, data: StyleData) -> dict:
        return {"spec": self.spec_dict(spec), "metric": METRIC, "num_labels": 0, "splits": data.splits,
                "label_mean": None, "majority": None}

    def cost(self, cfg: Config, spec: StyleSpec, data: StyleData) -> float:
        return float(cfg.train.for_task(spec.name).steps)

    def conditions(self, cfg: Config, meta) -> dict:
        """For the generator of a style zoo (meta: its ZooMeta): "bank", style → (condition.num_sets, 1280)
        conditions, each the mean MobileNetV2 feature of k images drawn from the style's train images; no examples to
        show; the base UNet's hash."""
        from raypdiff.conditions import onehot_bank

        names = list(meta.tasks)
        fingerprint = {"examples": {}, "base_fingerprint": meta.base_model["unet_sha256"]}
        c = cfg.condition
        if c.encoder == "onehot":
            return {"bank": onehot_bank(c, names), **fingerprint}
        if c.encoder != "mobilenet":
            raise ConfigError(f"condition.encoder={c.encoder} embeds text; a style zoo's conditions are images: "
                              f"set condition.encoder=mobilenet")
        encoder = image_encoder(c)
        zoo_cfg = Config.from_dict({"vision": meta.base_model["vision"], "eval": meta.eval})
        rng = np.random.default_rng(c.seed)
        bank = {}
        for t in names:
            x, _ = load_styled(zoo_cfg, self.spec(meta.tasks[t].spec)).train
            bank[t] = encoder.condition([x[rng.choice(len(x), min(c.k, len(x)), replace=False)]
                                         for _ in range(c.num_sets)])
        return {"bank": bank, **fingerprint}

    def run(self, cfg: Config, spec: StyleSpec, data: StyleData, seed: int, bar) -> Run:
        """Fine-tune a style LoRA on the style's train images, capture, score every capture on val and a sample on
        test (per-row denoising errors kept for intervals)."""
        from raypdiff import lora
        from raypdiff.vision.style_lora import add_lora, denoise_errors, finetune
        from raypdiff.vision.t2i import TextToImage, load_pipeline

        lora.set_threads(cfg.collect.num_cpus)
        pipe = load_pipeline(pipeline_source(cfg))
        layout, denoiser = add_lora(pipe, cfg.lora, seed), TextToImage(pipe).denoiser
        train = cfg.train.for_task(spec.name)
        schedule = lora.capture_schedule(train.steps, cfg.capture.num, cfg.capture.stride)
        captured: dict[int, np.ndarray] = {}
        finetune(pipe, cfg.vision, *data.train, train.lr, train.batch_size, train.steps, seed, set(schedule),
                 captured.__setitem__, lambda step, loss: bar.update(1))
        v, seed_rows = cfg.vision, cfg.eval.split_seed  # the same noise draws for every capture
        return score_captures(
            METRIC, schedule, captured, lambda vec: lora.load_vector(denoiser, vec, layout),
            lambda: -float(denoise_errors(pipe, v, *data.val, seed=seed_rows).mean()),
            lambda: denoise_errors(pipe, v, *data.test, seed=seed_rows), lambda errors: -float(errors.mean()),
            cfg.eval.test_every, bar)

    def write_adapters(self, gen, task: str, vectors: np.ndarray, folders: list[Path]) -> list[str]:
        """diffusers LoRA folders (`pipe.load_lora_weights`; PEFT folders for pipelines without a LoRA loader)."""
        from raypdiff.config import LoraSettings
        from raypdiff.vision.style_lora import write_lora

        settings = LoraSettings(**gen.ckpt.lora)
        source = gen.ckpt.base_model["vision"].get("pipeline")  # None: the offline base
        return [str(write_lora(v, gen.layout(task), settings, f, source)) for v, f in zip(vectors, folders)]

    def for_user(self, gen, user: UserInput, out: Path, num: int, seed: int, guidance: Optional[float],
                 quality: Optional[float]) -> dict:
        """num style LoRAs for a folder of images of a style."""
        import time

        from raypdiff.vision.images import read_style_images

        if user.style_images is None:
            raise ConfigError("--description: a style generator takes --task (a style it knows) or --style-images")
        images = read_style_images(user.style_images)
        t0 = time.time()
        cond, nearest = image_condition(gen, images, num, quality)
        vectors = gen.vectors(cond, nearest, seed, guidance)
        sample_s = time.time() - t0
        folders = self.write_adapters(gen, nearest, vectors, adapter_folders(out, num))
        write_manifest(out, folders, gen, nearest, {"style_images": str(Path(user.style_images).resolve()),
                                                    "images": len(images), "nearest_task": nearest,
                                                    **sampling_facts(gen, seed, num, guidance, quality)})
        return {"adapters": folders, "sample_seconds": sample_s, "manifest": str(out / "manifest.json")}


def image_condition(gen, images: np.ndarray, num: int, quality: Optional[float] = None):
    """(num, C') conditions for a style from (N, H, W) images of it (their mean feature, as training's conditions are
    the mean of k; more images only steady it), and the zoo style whose conditions are closest (its statistics)."""
    import torch

    if gen.cfg.condition.encoder != "mobilenet":
        raise ConfigError(f"--style-images: this generator's conditions are not images (condition.encoder="
                          f"{gen.cfg.condition.encoder}); give --task")
    emb = image_encoder(gen.cfg.condition).condition([images])[0]  # (C,)
    nearest = max(gen.task_names, key=lambda t: float(gen.bank[t].mean(0) @ emb))
    return gen.condition(torch.from_numpy(np.repeat(emb[None], num, 0)), quality), nearest
