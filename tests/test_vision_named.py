"""Style LoRAs on diffusers pipelines named by vision.pipeline (the path users with Stable Diffusion or PixArt-α take):
tiny random SD and PixArt-α pipelines built here offline (the same classes, a character-level CLIP tokenizer), a
style LoRA fine-tuned in their VAE latents, written as the pipeline's LoRA folder and loaded back exactly."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from raypdiff import lora
from raypdiff.config import Config, ConfigError, LoraSettings
from raypdiff.vision.settings import VisionConfig
from raypdiff.vision import styles
from raypdiff.vision.style_lora import add_lora, denoise_errors, finetune, write_lora
from raypdiff.vision.t2i import TextToImage, load_pipeline, pipeline_class

V = VisionConfig(image_size=32, sample_steps=2, batch_size=4)
LORA = LoraSettings(r=2, alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"])


def char_tokenizer(folder, max_length: int):
    """A real CLIP BPE tokenizer with no merges: one token per byte (no hub download needed)."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)


def tiny_pipeline(kind: str, folder):
    """A saved random SD ("sd") or PixArt-α ("pixart"; "pixart-sized": with the 1024 model's size conditions)
    pipeline: 32 px images, 16 px latents, each with its usual sampler (PNDM, DPM-Solver), not the training schedule."""
    from diffusers import (AutoencoderKL, DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel,
                           PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    folder.mkdir(parents=True)
    tok = char_tokenizer(folder, 16)
    vae = AutoencoderKL(block_out_channels=[8, 16], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        norm_num_groups=8, sample_size=32)
    if kind == "sd":
        text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=37,
                                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16))
        unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                    layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                    attention_head_dim=2, norm_num_groups=8)
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                       scheduler=PNDMScheduler(skip_prk_steps=True), safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    else:
        text = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4))
        transformer = PixArtTransformer2DModel(
            sample_size=16, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3,
            caption_channels=32, in_channels=4, cross_attention_dim=24, out_channels=8, attention_bias=True,
            activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
            norm_elementwise_affine=False, norm_eps=1e-6, use_additional_conditions=kind == "pixart-sized")
        pipe = PixArtAlphaPipeline(tokenizer=tok, text_encoder=text, vae=vae, transformer=transformer,
                                   scheduler=DPMSolverMultistepScheduler())
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["sd", "pixart"])
def named(request, tmp_path_factory, fmnist_test):
    """(kind, pipeline folder, a LoRA fine-tuned 4 steps on inverted images and captured at steps 3 and 4)."""
    x, y = fmnist_test
    folder = tiny_pipeline(request.param, tmp_path_factory.mktemp(request.param) / "pipe")
    pipe = load_pipeline(folder)
    layout = add_lora(pipe, LORA, seed=0)
    captured = {}
    losses = finetune(pipe, V, styles.apply(styles.StyleSpec("inverted", ["invert"]), x[:32]), y[:32], lr=1e-2,
                      batch_size=4, steps=4, seed=0, capture_steps={3, 4}, on_capture=captured.__setitem__)
    assert len(losses) == 4 and np.isfinite(losses).all()
    return request.param, folder, pipe, layout, captured


def _sample(pipe) -> np.ndarray:
    return TextToImage(pipe, V).sample(["a bag", "a coat"], V.sample_steps, torch.Generator().manual_seed(0), 2.0)


def test_pipeline_class(named):
    kind, folder, *_ = named
    cls, name = pipeline_class(folder)
    assert (cls.__name__, name) == {"sd": ("StableDiffusionPipeline", "unet"),
                                    "pixart": ("PixArtAlphaPipeline", "transformer")}[kind]


def test_pixart_size_conditions(tmp_path, fmnist_test):
    """A transformer that also takes the image size (PixArt-α 1024) trains and scores: the size is passed as its
    pipeline passes it (its pipeline samples with it only at the real model's sample_size, 128)."""
    x, y = fmnist_test
    pipe = load_pipeline(tiny_pipeline("pixart-sized", tmp_path / "pipe"))
    assert pipe.transformer.use_additional_conditions
    layout = add_lora(pipe, LORA, seed=0)
    captured = {}
    losses = finetune(pipe, V, x[:16], y[:16], lr=1e-2, batch_size=4, steps=2, seed=0, capture_steps={2},
                      on_capture=captured.__setitem__)
    assert np.isfinite(losses).all() and captured[2].shape == (layout.size,) and np.abs(captured[2]).sum() > 0
    assert np.isfinite(denoise_errors(pipe, V, x[:4], y[:4])).all()


def test_training_noise_follows_the_schedule(named):
    """Training noise is x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps on the pipeline's schedule, whatever its sampler."""
    _, _, pipe, *_ = named
    model = TextToImage(pipe, V)
    x0, eps, t = torch.randn(3, 4, 16, 16), torch.randn(3, 4, 16, 16), torch.tensor([0, 500, 999])
    a = pipe.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(model.scheduler.add_noise(x0, eps, t), a.sqrt() * x0 + (1 - a).sqrt() * eps)


def test_lora_folder_round_trip(named, tmp_path):
    """The captured LoRA, written for this pipeline, loads into a fresh one (its own loader for SD, peft's for
    PixArt-α) and samples exactly what the tuned pipeline samples; the LoRA changes the base's samples."""
    kind, folder, pipe, layout, captured = named
    assert set(captured) == {3, 4} and not np.array_equal(captured[3], captured[4])
    denoiser = TextToImage(pipe).denoiser
    lora.load_vector(denoiser, captured[4], layout)
    styled = _sample(pipe)
    assert styled.shape == (2, 28, 28) and styled.dtype == np.uint8  # back in the style images' frame
    out = write_lora(captured[4], layout, LORA, tmp_path / "style", source=str(folder))
    assert (out / ("pytorch_lora_weights.safetensors" if kind == "sd" else "adapter_model.safetensors")).is_file()
    assert hasattr(pipe, "load_lora_weights") == (kind == "sd")  # PixArt-α's pipeline has no LoRA loader
    fresh = load_pipeline(folder)
    before = _sample(fresh)
    TextToImage(fresh).load_lora(out)
    np.testing.assert_array_equal(_sample(fresh), styled)
    assert not np.array_equal(before, styled)


def test_denoise_errors(named, fmnist_test):
    """Per-image scores, the same after sampling (which resets the sampler's grid), different for another capture."""
    _, _, pipe, layout, captured = named
    x, y = fmnist_test
    denoiser = TextToImage(pipe).denoiser
    lora.load_vector(denoiser, captured[3], layout)
    a = denoise_errors(pipe, V, x[:8], y[:8])
    _sample(pipe)
    assert a.shape == (8,) and np.isfinite(a).all()
    np.testing.assert_array_equal(denoise_errors(pipe, V, x[:8], y[:8]), a)
    lora.load_vector(denoiser, captured[4], layout)
    assert not np.array_equal(denoise_errors(pipe, V, x[:8], y[:8]), a)


def test_style_domain_on_a_named_pipeline(named, tmp_path):
    """The style zoo's domain takes the pipeline from vision.pipeline: its layout, its fingerprint and one run."""
    from raypdiff.vision.domain import StyleDomain, pipeline_source

    kind, folder, *_ = named
    cfg = Config.from_dict({"domain": "vision", "tasks": ["inverted"], "vision": {"pipeline": str(folder),
                            "image_size": 32, "style_images": 16, "batch_size": 4},
                            "lora": {"r": 2, "alpha": 4, "target_modules": ["to_q", "to_v"]}, "train": {"steps": 3, "batch_size": 4},
                            "condition": {"encoder": "onehot"},
                            "capture": {"num": 2, "stride": 1, "seeds": [0]},
                            "eval": {"val_examples": 8, "test_examples": 8, "test_every": 1}})
    assert pipeline_source(cfg) == str(folder)
    d = StyleDomain()
    spec = d.specs(cfg)[0]
    import hashlib

    base = d.base(cfg)
    name = "unet" if kind == "sd" else "transformer"
    assert base["unet_sha256"] == hashlib.sha256(
        (folder / name / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()
    assert base["vision"]["pipeline"] == str(folder)

    class Bar:
        def update(self, n):
            pass

    run = d.run(cfg, spec, d.load(cfg, spec), seed=0, bar=Bar())
    size = sum(int(np.prod(shape)) for _, shape in d.layout(cfg, spec))
    assert run.steps == [2, 3] and run.vectors.shape == (2, size) and np.isfinite(run.values).all()
    assert run.test_values[-1] is not None and run.test_preds[-1].shape == (8,)


def test_bad_pipeline(tmp_path):
    with pytest.raises(ConfigError, match="vision.pipeline: no diffusers pipeline at"):
        pipeline_class(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline", "transformer": []}))
    with pytest.raises(ConfigError, match="is a FluxPipeline; style LoRAs support StableDiffusionPipeline"):
        pipeline_class(tmp_path)


@pytest.mark.parametrize("vision,made,expect", [
    ({"guidance_scale": 3.0}, 2.0, 3.0),  # the setting wins
    ({}, 2.0, 2.0),  # else the scale vision-base picked
    ({}, None, 1.0),  # else none
    ({"pipeline": "some/model"}, 2.0, "vision.guidance_scale: set it"),  # a named model has no base.json
])
def test_guidance(tmp_path, vision, made, expect):
    from raypdiff.vision.train import guidance

    if made is not None:
        (tmp_path / "base.json").write_text(json.dumps({"guidance_scale": made}))
    cfg = Config.from_dict({"domain": "vision", "condition": {"encoder": "onehot"},
                            "vision": {"base_dir": str(tmp_path), **vision}})
    if isinstance(expect, str):
        with pytest.raises(ConfigError, match=expect):
            guidance(cfg)
    else:
        assert guidance(cfg) == expect
