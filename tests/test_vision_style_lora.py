"""Style LoRAs on a tiny vision base, on attention and LoCon-style on convolutions too: the identity at start, captures
from a short fine-tune on styled images, the diffusers LoRA folder round trip (exact), the per-capture score, and bad
targets as one error line."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from raypdiff import lora
from raypdiff.config import ConfigError, LoraSettings
from raypdiff.vision.settings import VisionConfig
from raypdiff.vision import styles
from raypdiff.vision.base import FashionPipeline, new_pipeline
from raypdiff.vision.style_lora import add_lora, denoise_errors, finetune, write_lora
from raypdiff.vision.t2i import fit

TINY = VisionConfig(channels=[8, 16, 16], attention_head_dim=4, timesteps=50, sample_steps=3, batch_size=8)
ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]
LORA = LoraSettings(r=2, alpha=4, target_modules=ATTENTION)  # alpha != r: scaling 2
# LoCon-style: the resnets' convolutions and the transformer blocks' input/output projections beside attention
LOCON = dataclasses.replace(LORA, target_modules=[*ATTENTION, "conv1", "conv2", "proj_in", "proj_out"])
STYLE = styles.StyleSpec("inverted", ["invert"])


def _sample(pipe, seed: int = 0) -> np.ndarray:
    return pipe(["a bag", "a coat"], TINY.sample_steps, torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def base(tmp_path_factory, fmnist_test):
    x, y = fmnist_test
    pipe = new_pipeline(TINY)
    fit(pipe, TINY, x[:64], y[:64], steps=2)
    folder = tmp_path_factory.mktemp("base") / "pipe"
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=[LORA, LOCON], ids=["attention", "locon"])
def tuned(request, base, fmnist_test):
    """A LoRA (on attention, or LoCon-style on convolutions too) fine-tuned for 6 steps on inverted images, captured
    at steps 4, 5 and 6."""
    x, y = fmnist_test
    pipe = FashionPipeline.from_pretrained(base)
    before = _sample(pipe)
    layout = add_lora(pipe, request.param, seed=0)
    assert np.array_equal(_sample(pipe), before)  # B starts at 0: the LoRA is the identity
    captured, losses = {}, []
    finetune(pipe, TINY, styles.apply(STYLE, x[:64]), y[:64], 5e-3, 8, 6, 0, {4, 5, 6}, captured.__setitem__,
             lambda step, loss: losses.append(loss))
    return pipe, layout, captured, losses, before, request.param


def test_captures(tuned):
    _, layout, captured, losses, _, settings = tuned
    assert sorted(captured) == [4, 5, 6] and len(losses) == 6 and np.isfinite(losses).all()
    assert all(v.shape == (layout.size,) and v.dtype == np.float32 for v in captured.values())
    assert all(n.endswith(("lora_A.weight", "lora_B.weight")) for n in layout.names)
    assert {n.split(".")[-3] for n in layout.names} == {t.split(".")[-1] for t in settings.target_modules}
    assert not np.array_equal(captured[4], captured[6])


def test_lora_folder_round_trip_is_exact(tuned, base, tmp_path):
    pipe, layout, captured, _, before, settings = tuned
    lora.load_vector(pipe.unet, captured[5], layout)
    styled = _sample(pipe)
    assert not np.array_equal(styled, before)  # the captured LoRA changes the base's samples
    fresh = FashionPipeline.from_pretrained(base)
    fresh.load_lora_weights(write_lora(captured[5], layout, settings, tmp_path / "lora"))
    np.testing.assert_array_equal(_sample(fresh), styled)
    from peft.utils import get_peft_model_state_dict

    sd = get_peft_model_state_dict(fresh.unet, adapter_name=list(fresh.unet.peft_config)[0])  # the loader names it
    assert list(sd) == list(layout.names)
    np.testing.assert_array_equal(torch.cat([t.reshape(-1) for t in sd.values()]).numpy(), captured[5])


def test_denoise_errors(tuned, fmnist_test):
    pipe, layout, captured, _, _, _ = tuned
    x, y = fmnist_test
    val = styles.apply(STYLE, x[100:132])
    lora.load_vector(pipe.unet, captured[6], layout)
    a, b = denoise_errors(pipe, TINY, val, y[100:132]), denoise_errors(pipe, TINY, val, y[100:132])
    assert a.shape == (32,) and (a > 0).all()
    np.testing.assert_array_equal(a, b)  # the same draws for every capture
    lora.load_vector(pipe.unet, np.zeros(layout.size, np.float32), layout)
    assert not np.array_equal(denoise_errors(pipe, TINY, val, y[100:132]), a)


@pytest.mark.parametrize("targets", [["to_x"], ["to_q", "query"]])
def test_targets_the_denoiser_lacks(base, targets):
    with pytest.raises(ConfigError, match=f"the unet has no module '{targets[-1]}'"):
        add_lora(FashionPipeline.from_pretrained(base), dataclasses.replace(LORA, target_modules=targets), seed=0)
