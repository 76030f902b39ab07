"""The offline text-to-image base: a few training steps on real Fashion-MNIST, the diffusers pipeline folder round
trip, and a PEFT LoRA on the UNet's attention saved with `save_lora_weights` and loaded by `load_lora_weights`."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from raypdiff.config import ConfigError
from raypdiff.vision.settings import VisionConfig
from raypdiff.vision import fashion
from raypdiff.vision.base import FashionPipeline, new_pipeline, to_pixels
from raypdiff.vision.t2i import fit

TINY = VisionConfig(channels=[8, 16, 16], attention_head_dim=4, timesteps=50, sample_steps=3, batch_size=8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    try:
        x, y = fashion.load("test")
    except ConfigError as e:
        pytest.skip(str(e))
    pipe = new_pipeline(TINY)
    losses = fit(pipe, TINY, x[:64], y[:64], steps=4)
    folder = tmp_path_factory.mktemp("base") / "pipe"
    pipe.save_pretrained(folder)
    return pipe, losses, folder


def test_fit_and_sample(trained):
    pipe, losses, _ = trained
    assert len(losses) == 4 and np.isfinite(losses).all()
    img = pipe(["a sneaker", "a bag", "a dress"], TINY.sample_steps, torch.Generator().manual_seed(0))
    assert img.shape == (3, 32, 32) and img.dtype == np.uint8


def test_guidance(trained):
    """Classifier-free guidance moves samples off the conditional ones (the empty prompt's prediction differs) and
    stays deterministic for one noise draw."""
    pipe, _, _ = trained
    plain, guided, again = (pipe(["a sneaker", "a bag"], TINY.sample_steps, torch.Generator().manual_seed(0), g)
                            for g in (1.0, 3.0, 3.0))
    assert guided.shape == plain.shape and not np.array_equal(guided, plain)
    np.testing.assert_array_equal(guided, again)


def test_fit_shows_the_empty_prompt(trained):
    """A vision.uncond_prob share of training rows sees the empty prompt (what guidance subtracts), none at 0."""
    import dataclasses

    pipe, x, y = new_pipeline(TINY), *fashion.load("test")  # a pipe of its own: fit trains it
    empty = pipe.embed([""])[0]
    for prob, expect in ((0.0, (0, 0)), (0.5, (1, 31))):
        seen = []
        hook = pipe.unet.register_forward_hook(
            lambda m, args, kwargs, out: seen.extend(bool(torch.equal(h, empty)) for h in kwargs["encoder_hidden_states"]),
            with_kwargs=True)
        try:
            fit(pipe, dataclasses.replace(TINY, uncond_prob=prob), x[:64], y[:64], steps=4)
        finally:
            hook.remove()
        assert len(seen) == 32 and expect[0] <= sum(seen) <= expect[1], (prob, sum(seen))


def test_pipeline_folder_round_trip(trained):
    pipe, _, folder = trained
    again = FashionPipeline.from_pretrained(folder)
    a = pipe(["a coat"], TINY.sample_steps, torch.Generator().manual_seed(1))
    b = again(["a coat"], TINY.sample_steps, torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(a, b)


def test_lora_saves_and_loads_exactly(trained, tmp_path):
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    _, _, folder = trained
    pipe = FashionPipeline.from_pretrained(folder)
    before = pipe(["a shirt"], TINY.sample_steps, torch.Generator().manual_seed(2))
    pipe.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if "lora_B" in name:  # B starts at 0 (LoRA is the identity): move it
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
    styled = pipe(["a shirt"], TINY.sample_steps, torch.Generator().manual_seed(2))
    assert not np.array_equal(before, styled)
    FashionPipeline.save_lora_weights(tmp_path / "lora", unet_lora_layers=get_peft_model_state_dict(pipe.unet))
    fresh = FashionPipeline.from_pretrained(folder)
    fresh.load_lora_weights(tmp_path / "lora")
    np.testing.assert_array_equal(fresh(["a shirt"], TINY.sample_steps, torch.Generator().manual_seed(2)), styled)


def test_to_pixels():
    x = to_pixels(np.full((2, 28, 28), 255, np.uint8), 32)
    assert x.shape == (2, 1, 32, 32) and x[:, :, 2:30, 2:30].eq(1).all() and x[:, :, :2].eq(-1).all()


@pytest.mark.parametrize("change,match", [
    (dict(image_size=30), "vision.image_size"), (dict(channels=[8, 16]), "vision.channels"),
    (dict(prompt="a thing"), "vision.prompt"), (dict(lr=0), "vision.lr"), (dict(uncond_prob=1.0), "vision.uncond_prob"),
    (dict(guidance_scale=0.5), "vision.guidance_scale"), (dict(guidance_choices=[2.0, 0.0]), "guidance_choices"),
    (dict(guidance_choices=[]), "vision.guidance_choices")])
def test_bad_vision_config(change, match):
    with pytest.raises(ConfigError, match=match):
        VisionConfig(**change)


@pytest.mark.full
def test_vision_base_on_ray_train(s3):
    """`raypdiff vision-base` on a real local Ray, vision.base_dir on a bucket: a Train run that checkpoints there, a
    pipeline folder that loads, and base.json with the samples' class accuracy."""
    import json
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from conftest import BUCKET
    from helpers import REPO, private_ray_env

    from raypdiff.storage import Location, cached_copy

    if not Path(fashion.DEBIAN_DIR).is_dir():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    tmp = Path(tempfile.mkdtemp(prefix="rpv", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    base = Location.of(f"s3://{BUCKET}/base")
    try:
        cmd = [sys.executable, "-m", "raypdiff.cli", "vision-base", "-q", "-c", "configs/tiny_vision.yaml",
               f"vision.base_dir={base}"]
        r = subprocess.run(cmd, cwd=REPO, env=private_ray_env(tmp / "ray"), capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"pipeline: {base}/pipeline  class accuracy of its samples" in r.stdout
        summary = json.loads((base / "base.json").read_text())
        assert 0 <= summary["class_acc"] <= 1 and summary["steps"] == 4 and summary["train_seconds"] > 0
        # the guidance scale is picked among vision.guidance_choices by class accuracy (on other noise)
        by_scale = summary["class_acc_by_guidance"]
        assert set(by_scale) == {"1.0", "2.0", "3.0", "5.0"} and by_scale[str(summary["guidance_scale"])] == max(
            by_scale.values())
        pipe = FashionPipeline.from_pretrained(cached_copy(base / "pipeline"))
        assert pipe(["a bag"], 3, torch.Generator().manual_seed(0)).shape == (1, 32, 32)
        checkpoints = [p for p, _ in (base / "ray").tree() if p.endswith("/state.pt")]
        assert 1 <= len(checkpoints) <= 2  # every 2 steps, 2 kept
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
