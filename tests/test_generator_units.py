"""Generator building blocks on tiny tensors (no model loading): normalizer, parameter autoencoder, denoiser,
diffusion loss/sampling/guidance, EMA, the `fit` loop with resume, the generator checkpoint, novelty (parameter
distances, disagreement, zoo capture pairs) and task conditions. Every case runs in well under a second."""
from __future__ import annotations

import copy
import dataclasses
import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from raypdiff.checkpoint import GENERATOR_FILE
from raypdiff.autoencoder import ParamAutoencoder, ae_loss
from raypdiff.conditions import (condition_bank, condition_text, draw_examples, embed, label_slots, make_encoder,
                                 parse_examples)
from raypdiff.config import AutoencoderConfig, Config, ConditionConfig, ConfigError, DiffusionConfig
from raypdiff.denoiser import Denoiser
from raypdiff.diffusion import EMA, make_scheduler, sample, training_loss
from raypdiff.evaluate import disagreement, novelty_distances, zoo_pairs
from raypdiff.normalize import POOLED, Normalizer
from raypdiff.tasks import Split, TaskSpec


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: thread start-up costs more than it saves, and the CI machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def raw_vectors(sizes: dict[str, tuple[int, int]], seed: int = 0) -> dict[str, np.ndarray]:
    """task → (N, P) float32 with per-coordinate offsets and scales (so normalization does something)."""
    r = rng(seed)
    return {t: (r.normal(size=(n, p)) * r.uniform(0.1, 5, size=p) + r.normal(size=p) * 3).astype(np.float32)
            for t, (n, p) in sizes.items()}


# ---------------------------------------------------------------- normalizer

# (mode, task → (rows, P))
NORM_CASES = [
    ("task", {"a": (6, 5), "b": (4, 5)}),
    ("task", {"a": (6, 7), "b": (5, 3)}),
    ("batch", {"a": (6, 5), "b": (4, 5)}),
    ("batch", {"a": (6, 7), "b": (5, 3)}),  # different lengths: pooled over the rows sharing a coordinate
    ("batch", {"a": (3, 2), "b": (4, 6), "c": (5, 4)}),
    ("none", {"a": (6, 5), "b": (4, 3)}),
]


@pytest.mark.parametrize("mode,sizes", NORM_CASES, ids=[f"{m}-{'-'.join(f'{n}x{p}' for n, p in s.values())}"
                                                        for m, s in NORM_CASES])
def test_normalizer_round_trip(mode, sizes):
    vecs = raw_vectors(sizes)
    norm = Normalizer.fit(vecs, mode)
    for t, v in vecs.items():
        z = norm.apply(t, v)
        assert z.shape == v.shape and z.dtype == np.float32
        np.testing.assert_allclose(norm.invert(t, z), v, rtol=1e-4, atol=1e-4)
        if mode == "task":  # z-scores per coordinate of this task
            np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
            np.testing.assert_allclose(z.std(0), 1, atol=1e-3)
        if mode == "none":
            np.testing.assert_array_equal(z, v)


@pytest.mark.parametrize("sizes", [{"a": (6, 5), "b": (4, 5)}, {"a": (6, 7), "b": (5, 3)}], ids=["same", "ragged"])
def test_normalizer_batch_pools_each_coordinate(sizes):
    vecs = raw_vectors(sizes, seed=1)
    norm = Normalizer.fit(vecs, "batch")
    assert list(norm.stats) == [POOLED]
    mean, std = norm.stats[POOLED]
    p = max(p for _, p in sizes.values())
    assert mean.shape == std.shape == (p,)
    for j in range(p):
        col = np.concatenate([v[:, j] for v in vecs.values() if v.shape[1] > j])
        assert mean[j] == pytest.approx(col.mean(), rel=1e-4, abs=1e-5)
        assert std[j] == pytest.approx(col.std(), rel=1e-4, abs=1e-5)
    # pooled statistics also serve a task the zoo never saw
    new = raw_vectors({"new": (2, 3)}, seed=2)["new"]
    np.testing.assert_allclose(norm.invert("new", norm.apply("new", new)), new, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["task", "batch", "none"])
def test_normalizer_state_dict_round_trip(mode):
    vecs = raw_vectors({"a": (6, 5), "b": (4, 3)})
    norm = Normalizer.fit(vecs, mode)
    back = Normalizer.from_state(copy.deepcopy(norm.state_dict()))  # the checkpoint stores it; tests/test_checkpoint
    assert back.mode == mode and back.eps == norm.eps and sorted(back.stats) == sorted(norm.stats)
    for t, v in vecs.items():
        np.testing.assert_array_equal(back.apply(t, v), norm.apply(t, v))
        np.testing.assert_array_equal(back.invert(t, v), norm.invert(t, v))


def test_normalizer_unknown_task_names_it():
    norm = Normalizer.fit(raw_vectors({"a": (4, 3)}), "task")
    for fn in (norm.apply, norm.invert):
        with pytest.raises(ConfigError, match="'zzz'"):
            fn("zzz", np.zeros((1, 3), np.float32))


def test_normalizer_bad_mode():
    with pytest.raises(ConfigError, match="mode"):
        Normalizer("global")


def test_normalizer_constant_coordinate_stays_finite():
    v = np.ones((4, 3), np.float32)
    norm = Normalizer.fit({"a": v}, "task")
    z = norm.apply("a", v)
    assert np.isfinite(z).all()
    np.testing.assert_allclose(norm.invert("a", z), v)


# ---------------------------------------------------------------- autoencoder

# (P, chunk, latent, token_dim)
AE_SHAPES = [(12, 4, 3, 2), (10, 4, 3, 2), (5, 8, 2, 4), (1, 1, 1, 1), (37, 16, 6, 3), (16, 16, 4, 5)]


@pytest.mark.parametrize("p,chunk,latent,d", AE_SHAPES, ids=[f"P{p}-c{c}-z{z}" for p, c, z, _ in AE_SHAPES])
def test_autoencoder_shapes(p, chunk, latent, d):
    torch.manual_seed(0)
    ae = ParamAutoencoder(AutoencoderConfig(latent=latent, chunk=chunk, token_dim=d), p)
    assert ae.tokens == math.ceil(p / chunk)
    x = torch.randn(3, p)
    z = ae.encode(x)
    assert z.shape == (3, latent)
    assert ae.decode(z).shape == (3, p)
    assert ae(x).shape == (3, p)


def test_autoencoder_overfits_a_handful_of_vectors():
    torch.manual_seed(0)
    cfg = AutoencoderConfig(latent=4, chunk=8, token_dim=8, input_noise=0.0, latent_noise=0.0)
    ae = ParamAutoencoder(cfg, 21)  # 21 is not a multiple of the chunk
    x = torch.randn(4, 21)
    mask = torch.ones_like(x)
    opt = torch.optim.Adam(ae.parameters(), lr=1e-2)
    with torch.no_grad():
        first = float(ae_loss(ae, x, mask))
    for _ in range(100):
        loss = ae_loss(ae, x, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = float(ae_loss(ae, x, mask))
    assert last < first / 10, (first, last)


def test_autoencoder_without_noise_is_deterministic():
    ae = ParamAutoencoder(AutoencoderConfig(latent=3, chunk=4, token_dim=2, input_noise=0, latent_noise=0), 10)
    x = torch.randn(2, 10)
    torch.testing.assert_close(ae(x), ae.decode(ae.encode(x)))


class Shifted(nn.Module):
    """Returns its input plus a fixed offset: ae_loss only sees `ae(x)`."""

    def __init__(self, offset: torch.Tensor):
        super().__init__()
        self.offset = offset

    def forward(self, x):
        return x + self.offset


# (mask rows; offset per coordinate; expected loss)
MASK_CASES = [
    ([[1, 1, 0, 0]], [1.0, 1.0, 100.0, 100.0], 1.0),
    ([[1, 1, 1, 1]], [1.0, 1.0, 2.0, 2.0], 2.5),
    ([[1, 0, 0, 0], [1, 1, 0, 0]], [2.0, 4.0, 1e6, -1e6], (4 + 4 + 16) / 3),
]


@pytest.mark.parametrize("mask,offset,expected", MASK_CASES)
def test_ae_loss_ignores_masked_coordinates(mask, offset, expected):
    mask = torch.tensor(mask, dtype=torch.float32)
    x = torch.randn(mask.shape)
    assert float(ae_loss(Shifted(torch.tensor(offset)), x, mask)) == pytest.approx(expected)


def test_ae_loss_gives_masked_coordinates_no_gradient():
    torch.manual_seed(0)
    ae = ParamAutoencoder(AutoencoderConfig(latent=3, chunk=4, token_dim=2, input_noise=0, latent_noise=0), 10)
    x = torch.randn(3, 10)
    mask = torch.ones(3, 10)
    mask[:, 6:] = 0  # a shorter task layout: coordinates 6..9 are padding for every row
    x[:, 6:] = 0
    ae_loss(ae, x, mask).backward()
    grad = ae.dec_tok.bias.grad.flatten()[:10]  # bias[t, j] feeds output coordinate t * chunk + j
    assert (grad[6:] == 0).all() and (grad[:6] != 0).any()


# ---------------------------------------------------------------- denoiser

def tiny_denoiser(latent: int = 4, cond_dim: int = 3, hidden: int = 16, depth: int = 2, seed: int = 0,
                  **cfg) -> Denoiser:
    """A Denoiser whose condition path is live: adaLN-Zero starts every block as the identity, which would
    make the output ignore the condition, so the modulation and the null condition get random values."""
    torch.manual_seed(seed)
    den = Denoiser(DiffusionConfig(hidden=hidden, depth=depth, **cfg), latent, cond_dim)
    with torch.no_grad():
        for block in den.blocks:
            block.mod.weight.normal_(0, 0.5)
            block.mod.bias.normal_(0, 0.5)
        den.null_cond.normal_()
    return den.eval()


@pytest.mark.parametrize("b,latent,cond_dim,depth", [(1, 2, 1, 1), (3, 4, 3, 2), (5, 8, 6, 3)])
def test_denoiser_shapes(b, latent, cond_dim, depth):
    den = tiny_denoiser(latent, cond_dim, depth=depth)
    out = den(torch.randn(b, latent), torch.randint(0, 1000, (b,)), torch.randn(b, cond_dim))
    assert out.shape == (b, latent)
    assert den.null_cond.shape == (cond_dim,)


def test_denoiser_drop_swaps_in_the_null_condition():
    den = tiny_denoiser()
    x, t, cond = torch.randn(3, 4), torch.tensor([5, 50, 500]), torch.randn(3, 3)
    null = den.null_cond.detach().expand(3, 3)
    with torch.no_grad():
        kept = den(x, t, cond)
        none_dropped = den(x, t, cond, torch.zeros(3, dtype=torch.bool))
        all_dropped = den(x, t, cond, torch.ones(3, dtype=torch.bool))
        as_null = den(x, t, null)
        mixed = den(x, t, cond, torch.tensor([True, False, True]))
    torch.testing.assert_close(none_dropped, kept)
    torch.testing.assert_close(all_dropped, as_null)
    assert not torch.allclose(all_dropped, kept)  # the condition matters
    torch.testing.assert_close(mixed[[0, 2]], as_null[[0, 2]])
    torch.testing.assert_close(mixed[1], kept[1])


def test_denoiser_depends_on_timestep():
    den = tiny_denoiser()
    x, cond = torch.randn(1, 4).repeat(2, 1), torch.randn(1, 3).repeat(2, 1)
    with torch.no_grad():
        out = den(x, torch.tensor([1, 900]), cond)
    assert not torch.allclose(out[0], out[1])


# ---------------------------------------------------------------- diffusion

@pytest.mark.parametrize("cfg_sampler,arg,expected", [("ddim", None, "DDIMScheduler"), ("ddpm", None, "DDPMScheduler"),
                                                      ("ddim", "ddpm", "DDPMScheduler"), ("ddpm", "ddim", "DDIMScheduler")])
def test_make_scheduler(cfg_sampler, arg, expected):
    cfg = DiffusionConfig(timesteps=40, sample_steps=5, sampler=cfg_sampler, beta_schedule="squaredcos_cap_v2")
    s = make_scheduler(cfg, arg)
    assert type(s).__name__ == expected
    assert s.config.num_train_timesteps == 40
    assert s.config.beta_schedule == "squaredcos_cap_v2"
    assert s.config.prediction_type == "epsilon" and s.config.clip_sample is False


class Recorder(nn.Module):
    """A real (parameter-free) network that records its inputs and predicts zeros."""

    latent = 4

    def __init__(self):
        super().__init__()
        self.calls: list[dict] = []

    def forward(self, x, t, cond, drop=None):
        self.calls.append({"x": x.clone(), "t": t.clone(), "cond": cond.clone(),
                           "drop": None if drop is None else drop.clone()})
        return torch.zeros_like(x)


@pytest.mark.parametrize("cond_drop", [0.0, 0.5, 0.999])
def test_training_loss_one_timestep_per_sample(cond_drop):
    cfg = DiffusionConfig(timesteps=1000)
    sched = make_scheduler(cfg, "ddpm")
    net = Recorder()
    b = 64
    x0, cond = torch.randn(b, 4), torch.randn(b, 3)
    loss = training_loss(net, x0, cond, sched, cond_drop, torch.Generator().manual_seed(3))
    assert len(net.calls) == 1
    call = net.calls[0]
    t = call["t"]
    assert t.shape == (b,) and t.dtype == torch.long
    assert int(t.min()) >= 0 and int(t.max()) < 1000
    assert len(set(t.tolist())) > b // 2  # drawn per sample, not one for the batch
    # replay the draws: t, noise, drop in that order from the same generator
    g = torch.Generator().manual_seed(3)
    t_ref = torch.randint(0, 1000, (b,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    drop = torch.rand(b, generator=g) < cond_drop
    torch.testing.assert_close(t, t_ref)
    torch.testing.assert_close(call["x"], sched.add_noise(x0, noise, t_ref))
    torch.testing.assert_close(call["drop"], drop)
    torch.testing.assert_close(call["cond"], cond)
    assert float(loss) == pytest.approx(float((noise ** 2).mean()), rel=1e-5)  # the target is the noise
    if cond_drop == 0.0:
        assert not drop.any()
    if cond_drop > 0.99:
        assert drop.float().mean() > 0.9


def manual_ddim(den, cond, cfg, seed, steps, use_null: bool):
    """DDIM with only the conditional (use_null=False) or only the unconditional prediction."""
    g = torch.Generator().manual_seed(seed)
    sched = make_scheduler(cfg, "ddim")
    sched.set_timesteps(steps)
    b = cond.shape[0]
    x = torch.randn((b, den.latent), generator=g)
    drop = torch.full((b,), use_null, dtype=torch.bool)
    with torch.no_grad():
        for t in sched.timesteps:
            eps = den(x, torch.full((b,), int(t), dtype=torch.long), cond, drop)
            x = sched.step(eps, t, x, eta=0.0).prev_sample
    return x


@pytest.mark.parametrize("b,steps", [(1, 3), (3, 5)])
def test_sample_shape_and_seed(b, steps):
    cfg = DiffusionConfig(hidden=16, depth=1, timesteps=20, sample_steps=steps)
    den = tiny_denoiser(latent=4, cond_dim=3, depth=1)
    cond = torch.randn(b, 3)
    a = sample(den, cond, cfg, torch.Generator().manual_seed(0))
    assert a.shape == (b, 4) and torch.isfinite(a).all()
    torch.testing.assert_close(sample(den, cond, cfg, torch.Generator().manual_seed(0)), a)
    assert not torch.allclose(sample(den, cond, cfg, torch.Generator().manual_seed(1)), a)


@pytest.mark.parametrize("guidance,use_null", [(0.0, True), (1.0, False)], ids=["g0=unconditional", "g1=conditional"])
def test_guidance_endpoints_match_single_path(guidance, use_null):
    cfg = DiffusionConfig(hidden=16, depth=2, timesteps=30, sample_steps=6, guidance=3.0)
    den = tiny_denoiser(latent=4, cond_dim=3)
    cond = torch.randn(2, 3)
    got = sample(den, cond, cfg, torch.Generator().manual_seed(7), guidance=guidance)
    want = manual_ddim(den, cond, cfg, seed=7, steps=6, use_null=use_null)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    other = manual_ddim(den, cond, cfg, seed=7, steps=6, use_null=not use_null)
    assert not torch.allclose(got, other, atol=1e-4)  # the two paths really differ on this network


def test_guidance_extrapolates():
    """g=2 is eps_u + 2 (eps_c - eps_u): different from both endpoints; default comes from cfg.guidance."""
    cfg = DiffusionConfig(hidden=16, depth=2, timesteps=30, sample_steps=6, guidance=2.0)
    den = tiny_denoiser(latent=4, cond_dim=3)
    cond = torch.randn(2, 3)
    out = {g: sample(den, cond, cfg, torch.Generator().manual_seed(1), guidance=g) for g in (0.0, 1.0, 2.0)}
    assert not torch.allclose(out[2.0], out[1.0]) and not torch.allclose(out[2.0], out[0.0])
    torch.testing.assert_close(sample(den, cond, cfg, torch.Generator().manual_seed(1)), out[2.0])


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_scales_the_starting_noise(temperature):
    """diffusion.temperature T from noise n samples what T=1 samples from T·n, whether n is drawn or given."""
    cfg = DiffusionConfig(hidden=16, depth=2, timesteps=30, sample_steps=6)
    hot = dataclasses.replace(cfg, temperature=temperature)
    den = tiny_denoiser(latent=4, cond_dim=3)
    cond, noise = torch.randn(2, 3), torch.randn(2, 4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(sample(den, cond, hot, noise=noise), sample(den, cond, cfg, noise=temperature * noise))
    drawn = sample(den, cond, hot, torch.Generator().manual_seed(3))
    torch.testing.assert_close(drawn, sample(den, cond, cfg, noise=temperature * noise))
    assert not torch.allclose(drawn, sample(den, cond, cfg, noise=noise), atol=1e-4)


def test_ddpm_sampler_runs():
    cfg = DiffusionConfig(hidden=16, depth=1, timesteps=15, sample_steps=3)
    den = tiny_denoiser(latent=4, cond_dim=3, depth=1)
    cond = torch.randn(2, 3)
    a = sample(den, cond, cfg, torch.Generator().manual_seed(0), sampler="ddpm")
    b = sample(den, cond, cfg, torch.Generator().manual_seed(0), sampler="ddpm")
    assert a.shape == (2, 4) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, sample(den, cond, cfg, torch.Generator().manual_seed(0), sampler="ddim"))


class WithCounter(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.register_buffer("count", torch.tensor(3))


@pytest.mark.parametrize("decay,n", [(0.0, 1), (0.5, 50), (0.9, 200), (0.999, 1), (0.999, 20)])
def test_ema_update_math(decay, n):
    m = WithCounter()
    with torch.no_grad():
        m.lin.weight.fill_(1.0)
        m.lin.bias.fill_(2.0)
    ema = EMA(m, decay)
    d = min(decay, (1 + n) / (10 + n))
    assert ema.decay_at(n) == pytest.approx(d)
    with torch.no_grad():
        m.lin.weight.fill_(3.0)
        m.lin.bias.fill_(-2.0)
        m.count.fill_(7)
    ema.update(m, n)
    s = ema.state_dict()
    torch.testing.assert_close(s["lin.weight"], torch.full((1, 2), d * 1 + (1 - d) * 3))
    torch.testing.assert_close(s["lin.bias"], torch.full((1,), d * 2 + (1 - d) * -2))
    assert int(s["count"]) == 7  # integer buffers are copied, not averaged
    ema.update(m, n + 1)
    d2 = ema.decay_at(n + 1)
    w1 = d * 1 + (1 - d) * 3
    torch.testing.assert_close(s["lin.weight"], torch.full((1, 2), d2 * w1 + (1 - d2) * 3))
    # the shadow is a copy: neither the model nor a loaded state aliases it
    assert m.lin.weight[0, 0] == 3.0
    saved = {k: v.clone() for k, v in s.items()}
    other = EMA(m, decay)
    other.load_state_dict(saved)
    saved["lin.bias"].fill_(99)
    assert float(other.state_dict()["lin.bias"]) != 99


def test_ema_forgets_the_initial_weights_in_a_short_run():
    """After 1000 updates toward a constant, the warmed-up EMA holds a negligible share of the initial weights
    (a fixed 0.999 decay would still hold 0.999**1000 ≈ 37% of them)."""
    m = WithCounter()
    with torch.no_grad():
        m.lin.weight.fill_(0.0)
    ema = EMA(m, 0.999)
    with torch.no_grad():
        m.lin.weight.fill_(1.0)
    for n in range(1, 1001):
        ema.update(m, n)
    assert float(ema.state_dict()["lin.weight"][0, 0]) > 0.95


# ---------------------------------------------------------------- train.fit and the generator checkpoint

# (phase, step, taskloss.steps) → whether the Ray Train loop checkpoints there: trainer.checkpoint_every 4 counts the
# denoising phases' steps, taskloss.checkpoint_every 3 the episodes, and the run's last step always checkpoints
CHECKPOINT_CASES = [("ae", 4, 0, True), ("ae", 3, 0, False), ("ae", 6, 0, False), ("diffusion", 8, 0, True),
                    ("diffusion", 10, 0, True), ("diffusion", 10, 7, False), ("task", 3, 7, True),
                    ("task", 4, 7, False), ("task", 6, 7, True), ("task", 7, 7, True)]


@pytest.mark.parametrize("phase,step,task_steps,expected", CHECKPOINT_CASES)
def test_checkpoint_cadence_counts_each_phase_in_its_own_steps(phase, step, task_steps, expected):
    from raypdiff.config import derive
    from raypdiff.train import checkpoints_at

    cfg = derive(Config.from_dict({"trainer": {"checkpoint_every": 4}, "diffusion": {"steps": 10},
                                   "taskloss": {"checkpoint_every": 3}}), {"taskloss.steps": task_steps})
    assert checkpoints_at(cfg, phase, step) is expected


P_A, P_B, COND = 20, 12, 5
LAYOUTS = {"a": [["base_model.w_a", [4, 5]]], "b": [["base_model.w_b", [3, 4]]]}


def tiny_cfg(ae_steps: int = 6, diff_steps: int = 6, quality: bool = True) -> Config:
    return Config.from_dict({
        "tasks": ["SST-2", "STS-B"],
        "normalize": {"mode": "task"},
        "condition": {"quality": quality},
        "autoencoder": {"latent": 4, "chunk": 8, "token_dim": 4, "steps": ae_steps, "batch_size": 4},
        "diffusion": {"hidden": 16, "depth": 1, "timesteps": 20, "steps": diff_steps, "batch_size": 4,
                      "sample_steps": 4},
        "trainer": {"seed": 0},
    })


def tiny_data(quality: bool = True):
    """Two tasks of different lengths → (raw vectors, normalizer, TrainData, bank)."""
    from raypdiff.conditions import quality_ranks
    from raypdiff.train import rows_to_data

    raw = raw_vectors({"a": (4, P_A), "b": (3, P_B)}, seed=5)
    norm = Normalizer.fit(raw, "task")
    bank = {t: rng(i).normal(size=(3, COND)).astype(np.float32) for i, t in enumerate(("a", "b"))}
    tasks = ["a"] * 4 + ["b"] * 3
    vectors = list(raw["a"]) + list(raw["b"])
    values = rng(9).uniform(size=7)
    ranks = quality_ranks(tasks, values, {"a": values[:4], "b": values[4:]}) if quality else None
    data = rows_to_data(tasks, vectors, norm, ["a", "b"], P_A, bank, ranks)
    return raw, norm, data, bank


def test_rows_to_data_pads_and_masks():
    raw, norm, data, bank = tiny_data()
    assert data.x.shape == data.mask.shape == (7, P_A)
    assert data.mask[:4].all() and data.mask[4:, :P_B].all() and not data.mask[4:, P_B:].any()
    assert not data.x[4:, P_B:].any()
    np.testing.assert_allclose(data.x[4:, :P_B].numpy(), norm.apply("b", raw["b"]), rtol=1e-6)
    assert data.task_idx.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert data.bank.shape == (2, 3, COND)
    np.testing.assert_allclose(sorted(data.quality[:4]), [0, 1 / 3, 2 / 3, 1], rtol=1e-6)  # ranks within a
    np.testing.assert_allclose(sorted(data.quality[4:]), [0, 0.5, 1], rtol=1e-6)  # and within b


def frozen(state: dict) -> dict:
    """A detached copy of a snapshot (its tensors are the live parameters), as a checkpoint file holds it."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def run_fit(cfg, data, state=None, stop=None, conds=None):
    """fit with fresh networks; records every step and keeps snapshots at (phase, step) in `stop`;
    `conds` (a list) collects the conditions the denoiser is trained on."""
    from raypdiff.checkpoint import build_networks
    from raypdiff.train import fit

    ae, den = build_networks(cfg, P_A, COND)
    if conds is not None:
        den.register_forward_pre_hook(lambda m, args: conds.append(args[2].detach().clone()))
    seen, snaps = [], {}

    def on_step(m, snapshot):
        seen.append((m["phase"], m["step"]))
        if stop and (m["phase"], m["step"]) in stop:
            snaps[(m["phase"], m["step"])] = frozen(snapshot())

    final = fit(cfg, data, ae, den, state, on_step, seed=0)
    return final, seen, snaps


@pytest.mark.parametrize("quality", [True, False])
def test_fit_conditions_on_quality(quality):
    cfg = tiny_cfg(ae_steps=2, diff_steps=3, quality=quality)
    _, _, data, _ = tiny_data(quality)
    conds = []
    run_fit(cfg, data, conds=conds)
    assert len(conds) == 3 and all(c.shape == (4, COND + quality) for c in conds)
    rows = torch.cat(conds)
    embeds = data.bank.flatten(0, 1)  # every (task, draw) embedding
    assert all(any(torch.equal(r[:COND], e) for e in embeds) for r in rows)
    if quality:  # the appended column holds the rows' within-task ranks
        assert set(rows[:, COND].tolist()) <= set(data.quality.tolist())


def test_fit_returns_a_complete_state():
    cfg = tiny_cfg(ae_steps=6, diff_steps=5)
    _, _, data, _ = tiny_data()
    final, seen, _ = run_fit(cfg, data)
    assert seen == [("ae", i) for i in range(1, 7)] + [("diffusion", i) for i in range(1, 6)]
    assert final["phase"] == "done" and final["step"] == 5
    assert set(final) >= {"ae", "denoiser", "ae_opt", "den_opt", "ema", "history", "latent_stats"}
    assert [(h["phase"], h["step"]) for h in final["history"]] == [("ae", 6), ("diffusion", 5)]
    assert all(math.isfinite(h.get("ae_loss", h.get("diffusion_loss"))) for h in final["history"])
    ls = final["latent_stats"]
    assert ls["mean"].shape == ls["std"].shape == (4,) and (ls["std"] > 0).all()


@pytest.mark.parametrize("where", [("ae", 3), ("diffusion", 2)], ids=["mid-ae", "mid-diffusion"])
def test_fit_resumes_from_a_snapshot(where):
    cfg = tiny_cfg(ae_steps=6, diff_steps=5)
    _, _, data, _ = tiny_data()
    full, _, snaps = run_fit(cfg, data, stop={where})
    snap = snaps[where]
    assert snap["phase"] == where[0] and snap["step"] == where[1]
    resumed, seen, _ = run_fit(cfg, data, state=snap)
    if where[0] == "ae":  # continues the AE from step 4, then the whole diffusion phase
        assert seen == [("ae", i) for i in range(4, 7)] + [("diffusion", i) for i in range(1, 6)]
    else:  # the AE is not touched again; the diffusion continues from step 3
        assert seen == [("diffusion", i) for i in range(3, 6)]
        for k, v in snap["ae"].items():
            torch.testing.assert_close(resumed["ae"][k], v)
        torch.testing.assert_close(resumed["latent_stats"]["mean"], snap["latent_stats"]["mean"])
    assert resumed["phase"] == full["phase"] == "done"
    assert resumed["step"] == full["step"] == 5
    assert [(h["phase"], h["step"]) for h in resumed["history"]] == [(h["phase"], h["step"]) for h in full["history"]]


def make_prep(norm: Normalizer, bank: dict) -> dict:
    spec = {"a": dict(name="a", description="Task a.", text_fields=["text"], label_field="label",
                      metric="accuracy", label_names=["x", "y"], train="-", dev="-"),
            "b": dict(name="b", description="Task b.", text_fields=["text"], label_field="label",
                      metric="pearson", label_names=None, train="-", dev="-")}
    tasks = {t: {"spec": spec[t], "layout": LAYOUTS[t], "num_labels": 2 if t == "a" else 1} for t in ("a", "b")}
    return {"normalizer": norm.state_dict(), "bank": bank, "task_names": ["a", "b"], "num_params": P_A,
            "tasks": tasks, "zoo": "/nonexistent/zoo", "base_model": {"base": "all-MiniLM-L6-v2", "max_length": 32},
            "lora": {"r": 4}, "examples": {"a": [{"text": "good", "label": "y"}], "b": [{"text": "so so", "label": 2.5}]}}


def save_checkpoint(path, cfg, state, prep):
    from raypdiff import checkpoint

    return checkpoint.save(path, checkpoint.from_training(cfg, state, prep))


@pytest.fixture(scope="module")
def saved_generator(tmp_path_factory):
    cfg = tiny_cfg(ae_steps=4, diff_steps=4)
    raw, norm, data, bank = tiny_data()
    final, _, _ = run_fit(cfg, data)
    path = save_checkpoint(tmp_path_factory.mktemp("gen") / GENERATOR_FILE, cfg, final, make_prep(norm, bank))
    return path, cfg, final, norm, bank


def test_save_generator_writes_one_file(saved_generator):
    path = saved_generator[0].local()
    assert path.is_file() and sorted(p.name for p in path.parent.iterdir()) == [GENERATOR_FILE]  # no temp left


@pytest.mark.parametrize("task,p", [("a", P_A), ("b", P_B)])
def test_generator_load_samples_reproducibly(saved_generator, task, p):
    from raypdiff.checkpoint import build_networks
    from raypdiff.generate import Generator

    path, cfg, final, norm, bank = saved_generator
    g1, g2 = Generator(path), Generator(path.parent)  # the file or its folder
    assert g1.task_names == ["a", "b"] and g1.layout(task).size == p
    assert g1.examples(task) == make_prep(norm, bank)["examples"][task]  # kept for the page's prefill
    cond = g1.conditions(task, 5)
    assert cond.shape == (5, COND + 1) and (cond[:, COND] == cfg.condition.quality_target).all()
    torch.testing.assert_close(cond[3, :COND], torch.from_numpy(bank[task][0]))  # the bank is cycled
    v1 = g1.vectors(cond, task, seed=0)
    assert v1.shape == (5, p) and np.isfinite(v1).all()
    np.testing.assert_array_equal(g2.vectors(cond, task, seed=0), v1)
    np.testing.assert_array_equal(g1.vectors(cond, task, seed=0), v1)
    assert not np.allclose(g1.vectors(cond, task, seed=1), v1)
    # the same numbers straight from the trained state: EMA denoiser → latent stats → decoder → de-normalize
    ae, den = build_networks(cfg, P_A, COND)
    ae.load_state_dict(final["ae"])
    den.load_state_dict(final["ema"])
    ae.eval(), den.eval()
    with torch.no_grad():
        z = sample(den, cond, cfg.diffusion, torch.Generator().manual_seed(0))
        x = ae.decode(z * final["latent_stats"]["std"] + final["latent_stats"]["mean"]).numpy()[:, :p]
    np.testing.assert_allclose(v1, norm.invert(task, x), rtol=1e-5, atol=1e-6)


def test_generator_quality_steers_sampling(saved_generator, tmp_path):
    from raypdiff.generate import Generator

    path, cfg, final, norm, bank = saved_generator
    g = Generator(path)
    low, high = g.conditions("a", 3, quality=0.0), g.conditions("a", 3, quality=1.0)
    assert (low[:, COND] == 0).all() and (high[:, COND] == 1).all()
    assert not np.allclose(g.vectors(low, "a", seed=0), g.vectors(high, "a", seed=0))
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match=r"--quality: must be in \[0, 1\]"):
            g.conditions("a", 3, quality=bad)
    plain_cfg = tiny_cfg(ae_steps=2, diff_steps=2, quality=False)
    _, _, data, _ = tiny_data(quality=False)
    state, _, _ = run_fit(plain_cfg, data)
    plain = Generator(save_checkpoint(tmp_path / GENERATOR_FILE, plain_cfg, state, make_prep(norm, bank)))
    assert plain.conditions("a", 3).shape == (3, COND)
    with pytest.raises(ConfigError, match="without quality conditioning"):
        plain.conditions("a", 3, quality=1.0)


QUALITY_RANKS = [
    # tasks, values, reference per task, expected ranks
    (["a"] * 3, [0.2, 0.9, 0.5], {"a": [0.5, 0.9, 0.2]}, [0.0, 1.0, 0.5]),
    (["a"] * 4, [0.1, 0.5, 0.5, 0.9], {"a": [0.1, 0.5, 0.5, 0.9]}, [0.0, 0.5, 0.5, 1.0]),  # ties share their mean rank
    (["a", "b", "b"], [0.7, 0.1, 0.3], {"a": [0.7, 0.8], "b": [0.3, 0.1]}, [0.0, 0.0, 1.0]),  # ranked within the task
    (["a"], [0.4], {"a": [0.4]}, [1.0]),  # a task with one capture
]


@pytest.mark.parametrize("tasks,values,reference,expected", QUALITY_RANKS, ids=["order", "ties", "per-task", "one"])
def test_quality_ranks(tasks, values, reference, expected):
    from raypdiff.conditions import quality_ranks

    got = quality_ranks(tasks, np.asarray(values), {t: np.asarray(v) for t, v in reference.items()})
    np.testing.assert_allclose(got, expected)


@pytest.mark.parametrize("quality", [0.25, torch.tensor([0.0, 0.5, 1.0])])
def test_with_quality_appends_a_column(quality):
    from raypdiff.conditions import with_quality

    cond = torch.randn(3, COND)
    out = with_quality(cond, quality)
    assert out.shape == (3, COND + 1)
    torch.testing.assert_close(out[:, :COND], cond)
    torch.testing.assert_close(out[:, COND], torch.as_tensor(quality, dtype=torch.float32).expand(3))


def test_generator_unknown_task_and_reconstruct(saved_generator):
    from raypdiff.generate import Generator

    path, *_ = saved_generator
    raw = tiny_data()[0]
    g = Generator(path)
    with pytest.raises(ConfigError, match="'zzz'"):
        g.spec("zzz")
    assert g.reconstruct("b", raw["b"]).shape == raw["b"].shape


@pytest.mark.parametrize("content,match", [
    (None, "not found"),
    (b"not a checkpoint", "not a raypdiff generator"),
    ({"something": torch.zeros(2)}, "not a raypdiff generator"),
    ({"format": "other"}, "not a raypdiff generator"),
    ("pickle", "raypdiff migrate"),
], ids=["missing", "garbage", "foreign-tensors", "foreign-format", "pickle"])
def test_generator_rejects_non_generators(tmp_path, content, match):
    from safetensors.torch import save_file

    from raypdiff.generate import Generator

    p = tmp_path / GENERATOR_FILE
    if isinstance(content, bytes):
        p.write_bytes(content)
    elif content == "pickle":
        p = tmp_path / "generator.pt"
        torch.save({"something": 1}, p)
    elif isinstance(content, dict) and "format" in content:
        save_file({"x": torch.zeros(1)}, str(p), metadata=content)
    elif content is not None:
        save_file(content, str(p))
    with pytest.raises(ConfigError, match=match):
        Generator(p)


# ---------------------------------------------------------------- novelty

S = math.sqrt
NOVELTY_KEYS = {"gen_nearest_l2_median", "gen_nearest_cos_median", "recon_own_l2_median", "recon_nearest_l2_median",
                "zoo_neighbour_l2_median", "gen_to_zoo_mean_l2_median", "zoo_to_zoo_mean_l2_median",
                "zoo_norm_median", "nearest"}
NOVELTY = [
    # generated, zoo, recon, originals of the recon, expected {key: value} (worked out by hand in the comments)
    (  # zoo mean (5/3, 1); gen → zoo: [2,0]→[1,0] 1, [0,5]→[0,3] 2; zoo neighbours 3, 3, √10; zoo norms 1, 4, 3
        [[2, 0], [0, 5]], [[1, 0], [4, 0], [0, 3]], [[0, 2], [1, 0]], [[4, 0], [1, 0]],
        {"gen_nearest_l2_median": 1.5, "gen_nearest_cos_median": 1.0, "nearest": [0, 2],
         "recon_own_l2_median": S(20) / 2,  # √20 and 0
         "recon_nearest_l2_median": 0.5,  # [0,2]→[0,3] 1, [1,0]→[1,0] 0
         "zoo_neighbour_l2_median": 3.0, "zoo_norm_median": 3.0,
         "gen_to_zoo_mean_l2_median": (S(10) / 3 + 13 / 3) / 2,  # |(1/3, -1)|, |(-5/3, 4)|
         "zoo_to_zoo_mean_l2_median": S(58) / 3}),  # √13/3, √58/3, √61/3
    (  # opposite the nearest zoo vector: cosine -1; zoo mean (0.5, 2.5); reconstructions equal to their originals
        [[-2, 0]], [[1, 0], [0, 5]], [[1, 0], [0, 5]], [[1, 0], [0, 5]],
        {"gen_nearest_l2_median": 3.0, "gen_nearest_cos_median": -1.0, "nearest": [0],
         "recon_own_l2_median": 0.0, "recon_nearest_l2_median": 0.0,
         "zoo_neighbour_l2_median": S(26), "zoo_norm_median": 3.0,
         "gen_to_zoo_mean_l2_median": 2.5 * S(2), "zoo_to_zoo_mean_l2_median": S(6.5)}),
    (  # two copies of zoo vectors and one orthogonal to both (equidistant: the first zoo vector is its nearest)
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[1, 0, 0], [0, 1, 0]], [[0, 1, 1]], [[1, 0, 0]],
        {"gen_nearest_l2_median": 0.0, "gen_nearest_cos_median": 1.0, "nearest": [0, 1, 0],
         "recon_own_l2_median": S(3), "recon_nearest_l2_median": 1.0,
         "zoo_neighbour_l2_median": S(2), "zoo_norm_median": 1.0,
         "gen_to_zoo_mean_l2_median": S(0.5),  # zoo mean (0.5, 0.5, 0): √0.5, √0.5, √1.5
         "zoo_to_zoo_mean_l2_median": S(0.5)}),
]


@pytest.mark.parametrize("gen,zoo,recon,originals,expected", NOVELTY, ids=["line", "opposite", "copies"])
def test_novelty_distances(gen, zoo, recon, originals, expected):
    arr = lambda a: np.asarray(a, np.float64)  # noqa: E731
    out = novelty_distances(arr(gen), arr(zoo), arr(recon), arr(originals))
    assert set(out) == NOVELTY_KEYS == set(expected)
    assert out["nearest"].tolist() == expected["nearest"]
    for k, v in expected.items():
        if k == "nearest":
            continue
        assert type(out[k]) is float, k  # JSON-ready
        assert out[k] == pytest.approx(v, abs=1e-6), k


# (a, b, regression, expected): the median over pairs of rows' share predicted differently / mean |difference|
DISAGREEMENT = [
    ([0, 1, 1, 0], [0, 1, 0, 0], False, 0.25),
    ([[0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1]], [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 1]], False, 0.25),
    ([[2, 1, 0]], [[2, 1, 0]], False, 0.0),
    ([[1.0, 2.0]], [[1.5, 1.0]], True, 0.75),
    ([[1.0, 2.0], [0.0, 0.0]], [[1.0, 2.0], [4.0, -4.0]], True, 2.0),  # pairs 0 and 4: median 2
]


@pytest.mark.parametrize("a,b,regression,expected", DISAGREEMENT, ids=[f"case{i}" for i in range(len(DISAGREEMENT))])
def test_disagreement(a, b, regression, expected):
    dtype = np.float32 if regression else np.int64
    got = disagreement(np.asarray(a, dtype), np.asarray(b, dtype), regression)
    assert got == pytest.approx(expected, abs=1e-7)
    if not regression:
        assert 0.0 <= got <= 1.0


# One zoo of two runs (seeds 0, 1) with captures at steps 5..8; captures 1, 3, 4, 7 were scored on test.
PAIR_ARRAYS = {"seed": np.array([0, 0, 0, 0, 1, 1, 1, 1]), "step": np.array([5, 6, 7, 8, 5, 6, 7, 8]),
               "test_pred": {1: None, 3: None, 4: None, 7: None}}


@pytest.mark.parametrize("gap,limit,expected", [
    (1, 5, [(1, 0), (3, 2), (7, 6)]),  # capture 4 is its run's first: nothing one step before it
    (1, 2, [(3, 2), (7, 6)]),  # the last `limit`
    (2, 5, [(3, 1), (7, 5)]),
    (3, 5, [(3, 0), (7, 4)]),
    (50, 5, []),
])
def test_zoo_pairs(gap, limit, expected):
    assert zoo_pairs(PAIR_ARRAYS, gap, limit) == expected


# ---------------------------------------------------------------- conditions

def spec(labels=("neg", "pos"), description="Sentiment of a movie review.", fields=("text",)) -> TaskSpec:
    return TaskSpec(name="t", description=description, text_fields=list(fields), label_field="label",
                    metric="accuracy" if labels else "pearson", label_names=list(labels) if labels else None,
                    train="-", dev="-")


TEXTS = [
    # labels, examples, expected text
    (("neg", "pos"), [], "Sentiment of a movie review."),
    (("neg", "pos"), [(("great film",), 1)], "Sentiment of a movie review.\ngreat film => pos"),
    (("neg", "pos"), [(("dull",), 0), (("fine",), 1)], "Sentiment of a movie review.\ndull => neg\nfine => pos"),
    (None, [(("a cat", "a dog"), 3.0)], "Sentiment of a movie review.\na cat / a dog => 3.0"),
    (None, [(("x", "y"), np.float32(0.25))], "Sentiment of a movie review.\nx / y => 0.2"),
]


@pytest.mark.parametrize("labels,examples,expected", TEXTS)
def test_condition_text(labels, examples, expected):
    assert condition_text(spec(labels), examples) == expected


def test_condition_text_strips_description():
    assert condition_text(spec(description="  Padded.\n"), []) == "Padded."


@pytest.mark.parametrize("description", ["", "   ", "\n"])
def test_empty_description_is_a_config_error(description):
    with pytest.raises(ConfigError, match="description"):
        spec(description=description)  # TaskSpec refuses it
    s = spec()
    s.description = description  # and condition_text refuses a spec that slipped through
    with pytest.raises(ConfigError, match="description"):
        condition_text(s, [])


SLOTS = [
    # labels, examples, max_labels, expected slots
    (("neg", "pos"), [], 6, [["neg"], ["pos"]]),
    (("neg", "pos"), [(("dull",), 0), (("fine",), 1), (("bad",), 0)], 2,
     [["neg", "neg: dull", "neg: bad"], ["pos", "pos: fine"]]),
    (("pos", "neg"), [(("dull",), 1), (("fine",), 0)], 2, [["pos", "pos: fine"], ["neg", "neg: dull"]]),  # a twin
    (("a", "b", "c"), [(("x", "y"), 2)], 3, [["a"], ["b"], ["c", "c: x / y"]]),
    (None, [(("a cat", "a dog"), 3.0)], 1, [["3.0: a cat / a dog"]]),
    (None, [], 1, [["a score"]]),
]


@pytest.mark.parametrize("labels,examples,max_labels,expected", SLOTS)
def test_label_slots(labels, examples, max_labels, expected):
    assert label_slots(spec(labels), examples, max_labels) == expected


def test_label_slots_refuse_too_many_labels():
    with pytest.raises(ConfigError, match="3 labels, more than condition.max_labels=2"):
        label_slots(spec(("a", "b", "c")), [], 2)


@pytest.fixture(scope="module")
def minilm():
    return make_encoder(ConditionConfig())


def test_per_label_embedding_slots(minilm):
    cfg = ConditionConfig(pooling="per_label", max_labels=3)
    examples = [[(("dull",), 0), (("fine",), 1), (("bad",), 0)], [(("great",), 1)]]
    emb = embed(minilm, cfg, spec(("neg", "pos")), examples)
    c = minilm.dim
    assert emb.shape == (2, c * 4) and emb.dtype == np.float32
    slots = emb.reshape(2, 4, c)
    np.testing.assert_allclose(slots[:, 0], np.repeat(minilm.encode(["Sentiment of a movie review."]), 2, 0), atol=1e-5)
    np.testing.assert_allclose(slots[0, 1], minilm.encode(["neg", "neg: dull", "neg: bad"]).mean(0), atol=1e-5)
    np.testing.assert_allclose(slots[1, 1], minilm.encode(["neg"])[0], atol=1e-5)  # no example: the name alone
    np.testing.assert_allclose(slots[1, 2], minilm.encode(["pos", "pos: great"]).mean(0), atol=1e-5)
    assert not slots[:, 3].any()  # a 2-label task leaves the third slot empty


def test_set_pooling_ignores_label_order_and_labels(minilm):
    cfg = ConditionConfig(pooling="set")
    ex = [(("dull",), 0), (("fine",), 1), (("bad",), 0)]
    a = embed(minilm, cfg, spec(("neg", "pos")), [ex])
    c = minilm.dim
    assert a.shape == (1, c * 3) and a.dtype == np.float32
    twin = embed(minilm, cfg, spec(("pos", "neg")), [[(t, 1 - y) for t, y in ex]])  # label-swapped twin
    shuffled = embed(minilm, cfg, spec(("neg", "pos")), [ex[::-1]])
    flipped = embed(minilm, cfg, spec(("neg", "pos")), [[(t, 1 - y) for t, y in ex]])
    for other in (twin, shuffled, flipped):
        np.testing.assert_allclose(other, a, atol=1e-5)
    slots = a.reshape(3, c)
    np.testing.assert_allclose(slots[1], minilm.encode(["neg", "pos"]).mean(0), atol=1e-5)
    np.testing.assert_allclose(slots[2], minilm.encode(["dull", "fine", "bad"]).mean(0), atol=1e-5)
    assert not embed(minilm, cfg, spec(("neg", "pos")), [[]])[0, 2 * c:].any()  # no examples: an empty slot


def test_per_label_twin_swaps_slots(minilm):
    """A label-swapped twin (names and ids reversed, same examples) gets the same slots in the other order: the
    condition says which output index is which label, which one text with the same lines cannot."""
    cfg = ConditionConfig(pooling="per_label", max_labels=2)
    ex = [(("dull",), 0), (("fine",), 1)]
    a = embed(minilm, cfg, spec(("neg", "pos")), [ex]).reshape(3, -1)
    b = embed(minilm, cfg, spec(("pos", "neg")), [[(t, 1 - y) for t, y in ex]]).reshape(3, -1)
    np.testing.assert_allclose(a[1:], b[1:][::-1], atol=1e-5)
    text = ConditionConfig(pooling="text")
    np.testing.assert_allclose(embed(minilm, text, spec(("neg", "pos")), [ex]),
                               embed(minilm, text, spec(("pos", "neg")), [[(t, 1 - y) for t, y in ex]]), atol=1e-5)


PARSE_OK = [
    (("neg", "pos"), {"text": "good", "label": "pos"}, (("good",), 1)),
    (("neg", "pos"), {"text": "bad", "label": 0}, (("bad",), 0)),
    (("neg", "pos"), {"text": ["a", "b"], "label": "neg"}, (("a", "b"), 0)),
    (("neg", "pos"), {"text": 42, "label": 1}, (("42",), 1)),
    (("a", "b", "c"), {"text": "x", "label": "c"}, (("x",), 2)),
    (None, {"text": ["a", "b"], "label": 2.5}, (("a", "b"), 2.5)),
    (None, {"text": "a", "label": "4"}, (("a",), 4.0)),
]


@pytest.mark.parametrize("labels,row,expected", PARSE_OK)
def test_parse_examples(labels, row, expected):
    assert parse_examples(spec(labels), [row]) == [expected]


PARSE_BAD = [
    (("neg", "pos"), {"text": "x", "label": "neutral"}, "neutral"),  # a label the task lacks
    (("neg", "pos"), {"text": "x", "label": 2}, "label 2"),
    (("neg", "pos"), {"text": "x", "label": -1}, "label -1"),
    (("neg", "pos"), {"text": "x", "label": 1.0}, "label 1.0"),
    (("neg", "pos"), {"text": "x", "label": None}, "label None"),
    (("neg", "pos"), {"text": "x"}, "needs 'text' and 'label'"),
    (("neg", "pos"), {"label": "pos"}, "needs 'text' and 'label'"),
    (None, {"text": "x", "label": "high"}, "not a number"),
    (None, {"text": "x", "label": None}, "not a number"),
    (("neg", "pos"), {"text": ["a", "b"], "label": "pos"}, "2 text(s) where row 0 has 1"),  # pairs among single texts
    (("neg", "pos"), {"text": ["a", "b", "c"], "label": "pos"}, "a string or a [first, second] pair"),
    (("neg", "pos"), {"text": [], "label": "pos"}, "a string or a [first, second] pair"),
]


@pytest.mark.parametrize("labels,row,match", PARSE_BAD, ids=[str(r) for _, r, _ in PARSE_BAD])
def test_parse_examples_rejects(labels, row, match):
    ok = {"text": "fine", "label": 0 if labels else 1.0}
    with pytest.raises(ConfigError) as e:
        parse_examples(spec(labels), [ok, row])
    assert "row 1" in str(e.value) and match in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("n,k,expected", [(5, 3, 3), (5, 10, 5), (4, 0, 0)])
def test_draw_examples_distinct(n, k, expected):
    split = Split([(f"row {i}",) for i in range(n)], np.arange(n))
    got = draw_examples(split, k, rng(0))
    assert len(got) == expected and len({t for t, _ in got}) == expected
    assert all(int(t[0].split()[1]) == y for t, y in got)  # text and label stay paired


@pytest.mark.parametrize("num_tasks,num_sets", [(1, 1), (2, 3), (4, 2)])
def test_onehot_bank_shapes(num_tasks, num_sets):
    specs = [TaskSpec(name=f"t{i}", description="d", text_fields=["text"], label_field="label",
                      metric="accuracy", label_names=["a", "b"], train="-", dev="-") for i in range(num_tasks)]
    bank = condition_bank(ConditionConfig(encoder="onehot", num_sets=num_sets), specs, {})
    assert list(bank) == [s.name for s in specs]
    for i, s in enumerate(specs):
        assert bank[s.name].shape == (num_sets, num_tasks) and bank[s.name].dtype == np.float32
        np.testing.assert_array_equal(bank[s.name], np.repeat(np.eye(num_tasks, dtype=np.float32)[i:i + 1], num_sets, 0))


def test_onehot_has_no_text_encoder():
    with pytest.raises(ConfigError, match="one-hot|onehot"):
        make_encoder(ConditionConfig(encoder="onehot"))
