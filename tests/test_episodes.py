"""The task-loss stage (raypdiff.episodes): the functional body gives Builder's features with a gradient, episodes
permute labels consistently, generation with gradients gives the generator's own samples, and `fit` trains through
episodes, resumes inside the stage and keeps the weights of its best check on the training tasks' val rows."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from raypdiff import lora
from raypdiff.config import Config, ConfigError, derive, load_config
from raypdiff.episodes import GENERIC, Episodes, FunctionalBody, body_index
from raypdiff.newtask import Builder
from raypdiff.tasks import Split, TaskSpec

TEXTS = ["a wonderful, moving film", "the worst film of the year", "brilliant acting", "boring and far too long",
         "i loved every minute of it", "a dull, lifeless mess"]


@pytest.fixture(scope="module")
def builder():
    cfg = Config.from_dict({"model": {"dtype": "float32"}})
    return Builder(cfg.model, cfg.lora)


def random_body(builder: Builder, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(builder.body_layout.size) * 0.05).astype(np.float32)


def test_functional_body_gives_builders_features_with_a_gradient(builder):
    body = random_body(builder)
    split = Split([(t,) for t in TEXTS], np.zeros(len(TEXTS), np.int64))
    want = builder.features(body, split)
    fb = FunctionalBody(builder)
    assert len(fb.slots) == len(builder.body_layout.names)  # every LoRA matrix of the encoder is fed from the body
    tok = builder.tokenizer
    batch = lora.collate(tok, lora.encode(tok, split, builder.model_cfg.max_length))
    t = torch.from_numpy(body).requires_grad_(True)
    got = fb.features(t, batch)
    np.testing.assert_allclose(got.detach().numpy(), want, atol=2e-5)
    got[:, 0].sum().backward()
    assert t.grad is not None and t.grad.abs().sum() > 0
    # the model's own LoRA matrices are untouched: the body only flows through the call
    zero = fb.features(torch.zeros(builder.body_layout.size), batch)
    np.testing.assert_allclose(zero.detach().numpy(), builder.features(np.zeros_like(body), split), atol=2e-5)


def test_body_index_reads_what_body_of_reads(builder):
    full = lora.layout_of(builder.model)  # LoRA matrices and the task head, peft's order
    assert full.size > builder.body_layout.size
    vector = np.random.default_rng(1).standard_normal(full.size).astype(np.float32)
    idx = body_index(full, builder.body_layout)
    np.testing.assert_array_equal(vector[idx.numpy()], builder.body_of(vector, full))
    other = lora.Layout(full.names[1:], full.shapes[1:])
    with pytest.raises(ConfigError, match="has no LoRA matrix"):
        body_index(other, builder.body_layout)


def bare_episodes(drop: float, k: int = 2, query: int = 5) -> Episodes:
    """Episodes with one 3-label task of 30 rows and nothing loaded (draw only reads specs and train rows)."""
    ep = Episodes.__new__(Episodes)
    ep.cfg = load_config(None, [f"taskloss.k={k}", f"taskloss.query={query}", f"taskloss.description_drop={drop}"])
    spec = TaskSpec(name="t", description="Which colour?", text_fields=["text"], label_field="label",
                    metric="accuracy", label_names=["red", "green", "blue"], train="-", dev="-")
    ep.specs = {"t": spec}
    ep.trains = {"t": Split([(f"row {i}",) for i in range(30)], np.arange(30) % 3)}
    ep.vals = {"t": Split([(f"val row {i}",) for i in range(9)], np.arange(9) % 3)}
    return ep


@pytest.mark.parametrize("drop,description", [(0.0, "Which colour?"), (1.0, GENERIC)])
def test_episode_permutes_labels_consistently(drop, description):
    ep = bare_episodes(drop)
    seen = set()
    for seed in range(6):
        e = ep.draw(np.random.default_rng(seed))
        assert e.spec.description == description and sorted(e.spec.label_names) == ["blue", "green", "red"]
        old = {f"row {i}": i % 3 for i in range(30)}
        perm = {}
        for (text,), y in e.support:
            perm.setdefault(old[text], y)
            assert perm[old[text]] == y and e.spec.label_names[y] == ["red", "green", "blue"][old[text]]
        assert sorted(y for _, y in e.support) == [0, 0, 1, 1, 2, 2]  # k per label
        for (text,), y in zip(e.query.texts, e.query.labels):
            assert perm[old[text]] == y  # the query rows carry the same relabelling
        assert len(e.query) == 5 and not {t for t, _ in e.support} & set(e.query.texts)
        seen.add(tuple(e.spec.label_names))
    assert len(seen) > 1  # labels are permuted across episodes


@pytest.mark.parametrize("query,rows", [(5, 5), (20, 9)])  # at most the val split's rows
def test_a_validation_episode_queries_the_tasks_val_rows(query, rows):
    ep = bare_episodes(0.0, query=query)
    e = ep.draw(np.random.default_rng(0), "t")
    assert {t for (t,), _ in e.support} <= {f"row {i}" for i in range(30)}  # the support: train rows
    assert len(e.query) == rows and all(t.startswith("val row") for (t,) in e.query.texts)
    perm = {i % 3: y for (t,), y in e.support for i in [int(t.split()[-1])]}
    assert [perm[int(t.split()[-1]) % 3] for (t,) in e.query.texts] == list(e.query.labels)  # relabelled alike


def test_validation_episodes_are_fixed_and_take_the_tasks_in_turn():
    ep = bare_episodes(1.0)
    ep.cfg = derive(ep.cfg, {"taskloss.val_episodes": 3, "autoencoder.latent": 4})
    ep.specs["u"], ep.trains["u"], ep.vals["u"] = ep.specs["t"], ep.trains["t"], ep.vals["t"]
    a, b = ep.validation(0), ep.validation(0)
    assert [e.task for e, _ in a] == ["t", "u", "t"] and all(n.shape == (1, 4) for _, n in a)
    assert {e.spec.description for e, _ in a} == {"Which colour?"}  # never dropped: a user's task has one
    for (e, n), (f, m) in zip(a, b):
        assert (e.spec, e.support, e.query.texts) == (f.spec, f.support, f.query.texts) and torch.equal(n, m)
        np.testing.assert_array_equal(e.query.labels, f.query.labels)
    assert [e.query.texts for e, _ in ep.validation(1)] != [e.query.texts for e, _ in a]


def test_task_loss_needs_text_and_a_text_condition():
    with pytest.raises(ConfigError, match="taskloss.steps: the task-loss stage scores text classification heads"):
        load_config(None, ["domain=vision", "condition.encoder=mobilenet", "taskloss.steps=1"])
    with pytest.raises(ConfigError, match="taskloss.steps: episodes condition on a task's description"):
        load_config(None, ["condition.encoder=onehot", "taskloss.steps=1"])
    with pytest.raises(ConfigError, match="taskloss.k: must be >= 1"):
        load_config(None, ["taskloss.k=0"])
    with pytest.raises(ConfigError, match="taskloss.checkpoint_every: must be >= 1"):
        load_config(None, ["taskloss.checkpoint_every=0"])
    with pytest.raises(ConfigError, match="taskloss.val_episodes: must be >= 0"):
        load_config(None, ["taskloss.val_episodes=-1"])


# ---- on the session's trained generator and its zoo (full tier) ----

@pytest.fixture(scope="module")
def prepared(tiny_generator, tiny_zoo, data_dir):
    from raypdiff.generate import Generator
    from raypdiff.train import prepare

    gen = Generator(tiny_generator["dir"])
    cfg = derive(gen.cfg, {"data.root": str(data_dir), "taskloss.steps": 2, "taskloss.val_episodes": 2})
    prep = prepare(cfg, str(tiny_zoo))
    return gen, cfg, prep, Episodes(cfg, prep)


def test_differentiable_generation_gives_the_generators_samples(prepared):
    from raypdiff.conditions import embed

    gen, cfg, _, episodes = prepared
    assert sorted(episodes.specs) == ["SST-2"]  # STS-B (regression) draws no episodes
    e = episodes.draw(np.random.default_rng(0))
    noise = gen.initial_noise(1, 3)
    with torch.no_grad():
        body = episodes.body_for(e, gen.den, gen.ae, gen.latent_stats, noise).numpy()
    cond = gen.condition(torch.from_numpy(embed(gen.encoder, gen.cfg.condition, e.spec, [e.support])))
    want = episodes.builder.body_of(gen.denormalize(e.task, gen.normalized(cond, noise=noise))[0], gen.layout(e.task))
    np.testing.assert_allclose(body, want, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def data(prepared, tiny_zoo):
    from raypdiff.conditions import quality_ranks
    from raypdiff.normalize import Normalizer
    from raypdiff.train import rows_to_data
    from raypdiff.zoo.store import task_arrays

    _, cfg, prep, _ = prepared
    arrays = task_arrays(str(tiny_zoo))
    tasks = [t for t, a in arrays.items() for _ in a["vector"]]
    values = np.concatenate([a["value"] for a in arrays.values()])
    return rows_to_data(tasks, [v for a in arrays.values() for v in a["vector"]],
                        Normalizer.from_state(prep["normalizer"]), prep["task_names"], prep["num_params"], prep["bank"],
                        quality_ranks(tasks, values, prep["task_values"]) if cfg.condition.quality else None)


def test_fit_trains_the_denoiser_through_episodes_and_resumes_inside_the_stage(prepared, data):
    from raypdiff.checkpoint import build_networks
    from raypdiff.train import fit

    _, cfg, prep, episodes = prepared

    def run(state=None, on_step=None) -> dict:
        torch.manual_seed(0)
        ae, den = build_networks(cfg, prep["num_params"], data.bank.shape[-1])
        return fit(cfg, data, ae, den, state, on_step, episodes=episodes)

    keep, snaps = {("diffusion", cfg.diffusion.steps), ("task", 1)}, {}

    def on_step(m: dict, snap) -> None:
        if (m["phase"], m["step"]) in keep:
            snaps[m["phase"], m["step"]] = copy.deepcopy(snap())  # state dicts share the live weights

    full = run(on_step=on_step)
    assert full["phase"] == "done" and full["step"] == 2
    task = [h for h in full["history"] if "task_loss" in h]  # training steps (validation checks apart)
    assert [h["step"] for h in task] == [2] and all(np.isfinite(task[0][k]) for k in ("episode_loss", "denoise_loss"))
    before = snaps[("diffusion", cfg.diffusion.steps)]["denoiser"]
    assert any(not torch.equal(before[k], full["denoiser"][k]) for k in before)  # the stage moved the denoiser
    for k in full["ae"]:  # the decoder is frozen in the stage
        assert torch.equal(snaps[("diffusion", cfg.diffusion.steps)]["ae"][k], full["ae"][k]), k
    resumed = run(snaps[("task", 1)])
    assert resumed["phase"] == "done" and resumed["step"] == 2
    checks = [h["step"] for h in resumed["history"] if "val_episode_loss" in h]
    assert checks == [0, 2] and resumed["history"][-1]["picked_step"] in checks  # step 0 is not checked again
    with pytest.raises(ConfigError, match="needs episodes"):
        fit(cfg, data, *build_networks(cfg, prep["num_params"], data.bank.shape[-1]))


def test_the_stage_keeps_the_sampling_weights_of_its_best_validation_check(prepared, data):
    from raypdiff.checkpoint import build_networks
    from raypdiff.train import fit, start_state

    gen, cfg, prep, episodes = prepared
    cfg = derive(cfg, {"taskloss.steps": 3, "taskloss.checkpoint_every": 1, "taskloss.lr": 0.05})
    emas = {}

    def on_step(m: dict, snap) -> None:
        if m["phase"] == "task":
            emas[m["step"]] = copy.deepcopy(snap()["ema"])

    torch.manual_seed(0)
    done = fit(cfg, data, *build_networks(cfg, prep["num_params"], data.bank.shape[-1]), start_state(cfg, gen.ckpt),
               on_step, episodes=episodes)
    emas[0] = gen.ckpt.denoiser  # the start's sampling weights: checked before the first episode
    checked = {h["step"]: h["val_episode_loss"] for h in done["history"] if "val_episode_loss" in h}
    assert sorted(checked) == [0, 1, 2, 3] and len(set(checked.values())) > 1  # the weights moved the loss
    picked = min(checked, key=checked.get)
    assert done["history"][-1] == {"phase": "task", "step": 3, "picked_step": picked}
    assert done["best"]["step"] == picked
    for k, v in emas[picked].items():  # in the state fit returns and in the last checkpoint (what Ray Train saves)
        assert torch.equal(done["ema"][k], v) and torch.equal(emas[3][k], v), k
    # a check repeated on the picked weights gives the same loss: the episodes are fixed
    probe = copy.deepcopy(gen.den)
    probe.load_state_dict(done["ema"])
    again = episodes.val_loss(probe.eval(), gen.ae, gen.latent_stats,
                              episodes.validation(cfg.trainer.seed))
    assert again == pytest.approx(checked[picked], rel=1e-5)


def test_without_validation_episodes_the_stage_keeps_its_last_weights(prepared, data):
    from raypdiff.checkpoint import build_networks
    from raypdiff.train import fit, start_state

    gen, cfg, prep, episodes = prepared
    cfg = derive(cfg, {"taskloss.val_episodes": 0, "taskloss.checkpoint_every": 1})
    last = {}

    def on_step(m: dict, snap) -> None:
        if m["phase"] == "task":
            last.update(copy.deepcopy(snap()["ema"]))  # the last step's, once the stage ends

    torch.manual_seed(0)
    done = fit(cfg, data, *build_networks(cfg, prep["num_params"], data.bank.shape[-1]), start_state(cfg, gen.ckpt),
               on_step, episodes=episodes)
    task = [h for h in done["history"] if h["phase"] == "task"]
    assert task and all("task_loss" in h for h in task) and done["best"] is None
    for k, v in last.items():
        assert torch.equal(done["ema"][k], v), k
    assert any(not torch.equal(done["ema"][k], v) for k, v in gen.ckpt.denoiser.items())


def test_a_denoise_only_generator_is_trained_on_through_the_task_stage_alone(prepared, data, tmp_path):
    from raypdiff.checkpoint import build_networks
    from raypdiff.train import fit, start_state

    gen, cfg, prep, episodes = prepared
    torch.manual_seed(0)
    done = fit(cfg, data, *build_networks(cfg, prep["num_params"], data.bank.shape[-1]), start_state(cfg, gen.ckpt),
               episodes=episodes)
    start = len(gen.ckpt.history)
    assert done["phase"] == "done" and done["history"][:start] == gen.ckpt.history  # the start's phases, not re-run
    assert {h["phase"] for h in done["history"][start:]} == {"task"}
    for k, v in gen.ckpt.ae.items():  # the autoencoder is the start's, untouched
        assert torch.equal(done["ae"][k], v), k
    assert any(not torch.equal(done["denoiser"][k], v) for k, v in gen.ckpt.denoiser.items())
    for k in done["latent_stats"]:
        assert torch.equal(done["latent_stats"][k], gen.ckpt.latent_stats[k])
    # its loss curves in a real MLflow store: every phase on one step axis, the stage's parts included
    import mlflow

    from raypdiff import tracking

    track = derive(cfg, {"tracking.enabled": True, "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                         "trainer.register_model": False})
    run_id = tracking.log_training(track, gen.path, done["history"], {"train_seconds": 1.0})
    client = mlflow.tracking.MlflowClient(tracking.tracking_uri(track))
    steps = {k: [m.step for m in client.get_metric_history(run_id, k)]
             for k in ("ae_loss", "diffusion_loss", "task_loss", "episode_loss", "denoise_loss")}
    assert steps["task_loss"] == steps["episode_loss"] == [max(steps["diffusion_loss"]) + 2]  # 2 task steps
    assert max(steps["ae_loss"]) < min(steps["diffusion_loss"])


@pytest.mark.parametrize("change,match", [
    ({"taskloss.steps": 0}, "trained on by the task-loss stage alone"),
    ({"autoencoder.latent": 7}, "autoencoder.latent: the start generator was trained with 8, this config says 7"),
    ({"diffusion.steps": 3}, r"diffusion.steps: the start generator was trained with \d+, this config says 3")])
def test_a_start_of_other_settings_is_one_line(prepared, change, match):
    from raypdiff.train import start_state

    gen, cfg, _, _ = prepared
    with pytest.raises(ConfigError, match=match):
        start_state(derive(cfg, change), gen.ckpt)


def test_a_start_with_a_task_stage_already_is_refused(prepared):
    from raypdiff.checkpoint import GeneratorCheckpoint
    from raypdiff.train import start_state

    gen, cfg, _, _ = prepared
    tasked = GeneratorCheckpoint(**{**vars(gen.ckpt), "config": cfg.to_dict()})  # this one has taskloss.steps 2
    with pytest.raises(ConfigError, match="has a task-loss stage already"):
        start_state(cfg, tasked)
