"""Heads built from k examples (tables on small arrays), and the new-task route on the real packaged base model: body
candidates, leave-one-out choice, the written folder reloaded with plain transformers + peft."""
from __future__ import annotations

import json

import numpy as np
import pytest

from raypdiff import heads
from raypdiff.config import Config, ConfigError
from raypdiff.newtask import Builder, TaskAdapter, candidates, custom_spec
from raypdiff.tasks import Split


def blobs(num_labels: int, per: int, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_labels, dim)) * 3
    y = np.repeat(np.arange(num_labels), per)
    return (centers[y] + rng.normal(size=(len(y), dim))).astype(np.float32), y


@pytest.mark.parametrize("kind", ["prototype", "logistic"])
@pytest.mark.parametrize("num_labels", [2, 3, 7])
def test_heads_separate_separable_classes(kind, num_labels):
    x, y = blobs(num_labels, 6)
    xt, yt = blobs(num_labels, 20, seed=0)  # the same centres, other noise
    h = heads.fit(kind, x, y, num_labels)
    assert h.weight.shape == (num_labels, 8) and h.bias.shape == (num_labels,)
    assert (h.predict(xt) == yt).mean() > 0.9


def test_prototype_head_is_the_nearest_centroid():
    x, y = blobs(3, 4)
    q = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32) * 3
    cents = np.stack([x[y == j].mean(0) for j in range(3)])
    nearest = ((q[:, None] - cents[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(heads.prototype(x, y, 3).predict(q), nearest)


def test_binary_logistic_head_gives_sklearns_probabilities():
    from sklearn.linear_model import LogisticRegression

    x, y = blobs(2, 5)
    logits = heads.logistic(x, y, 2).logits(x)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ref = LogisticRegression(max_iter=1000, class_weight="balanced").fit(x, y).predict_proba(x)
    np.testing.assert_allclose(p, ref, atol=1e-5)


@pytest.mark.parametrize("kind", ["prototype", "logistic"])
def test_a_label_without_examples_is_never_predicted(kind):
    x, y = blobs(3, 5)
    keep = y != 1
    h = heads.fit(kind, x[keep], y[keep], 3)
    assert 1 not in set(h.predict(blobs(3, 30, seed=4)[0]).tolist())


def test_ridge_head_fits_a_linear_score():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = x @ np.arange(1, 6) + 2.0
    h = heads.fit("ridge", x, y, 1)
    assert np.corrcoef(h.predict(x), y)[0, 1] > 0.99


@pytest.mark.parametrize("kind,num_labels,match", [("ridge", 2, "regression"), ("logistic", 1, "classification"),
                                                   ("svm", 2, "not one of")])
def test_bad_head_kind_is_one_line(kind, num_labels, match):
    x, y = blobs(2, 3)
    with pytest.raises(ConfigError, match=match):
        heads.fit(kind, x, y, num_labels)


def test_choose_reads_the_examples_alone_and_picks_the_better_kind():
    x, y = blobs(2, 6)
    h, scores = heads.choose(x, y, 2, "accuracy")
    assert set(scores) == {"prototype", "logistic"} and h.kind == max(scores, key=scores.get)
    h, scores = heads.choose(x, y.astype(np.float32), 1, "pearson")
    assert h.kind == "ridge" and set(scores) == {"ridge"}


# ---- the route on the real base model (no Ray) ----

POS = ["a wonderful, moving film", "brilliant acting and a great story", "i loved every minute of it",
       "a delightful and funny movie"]
NEG = ["a dull, lifeless mess", "the worst film of the year", "boring and far too long", "i hated the plot"]


@pytest.fixture(scope="module")
def builder():
    cfg = Config.from_dict({"model": {"dtype": "float32"}})
    return Builder(cfg.model, cfg.lora)


def examples(flip: bool = False) -> list:
    return [((t,), int(flip)) for t in POS] + [((t,), 1 - int(flip)) for t in NEG]


def test_a_body_merged_into_setfits_encoder_gives_the_builders_features(builder):
    """Builder.deltas: the LoRA body as weight changes of the base encoder, so SetFit's steps can start from it."""
    import torch
    from setfit import SetFitModel

    from raypdiff.lora import resolve_base

    body = (np.random.default_rng(0).standard_normal(builder.body_layout.size) * 0.05).astype(np.float32)
    texts = POS[:2] + NEG[:2]
    want = builder.features(body, Split([(t,) for t in texts], np.zeros(len(texts), np.int64)))
    model = SetFitModel.from_pretrained(resolve_base(builder.model_cfg.base))
    params = dict(model.model_body[0].auto_model.named_parameters())
    deltas = builder.deltas(body)
    assert len(deltas) == len(builder.body_layout.names) // 2 and set(deltas) <= set(params)
    with torch.no_grad():
        for name, d in deltas.items():
            params[name].add_(d)
    got = model.model_body.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(want - builder.features(np.zeros_like(body), Split([(t,) for t in texts], np.zeros(4)))).max() > 1e-3


def test_built_adapter_reads_its_examples(builder):
    spec = custom_spec("Is this movie review positive?", ["positive", "negative"])
    bodies = candidates("base", None, builder, spec, [], 0, 0)
    a, b = builder.build(spec, examples(), bodies), builder.build(spec, examples(flip=True), bodies)
    test = Split([(t,) for t in ["an excellent film", "what a waste of time", "great fun", "terrible, avoid it"]],
                 np.zeros(4, np.int64))
    x = builder.features(a.body, test)
    assert a.head.predict(x).tolist() == [0, 1, 0, 1]
    assert (b.head.predict(x) == 1 - a.head.predict(x)).all()  # flipped examples flip every prediction
    assert a.body_source == "base" and set(a.loo) == {"base"} and a.seconds > 0


def test_written_folder_reloads_with_the_same_predictions(builder, tmp_path):
    spec = custom_spec("Is this movie review positive?", ["positive", "negative"])
    built = builder.build(spec, examples(), {"base": np.zeros(builder.body_layout.size, np.float32)},
                          head="logistic")
    rng = np.random.default_rng(0)
    built.body = (rng.normal(size=builder.body_layout.size) * 0.02).astype(np.float32)  # a non-trivial body
    out = builder.write(built, spec, tmp_path / "ad")
    assert json.loads((out / "adapter_config.json").read_text())["task_type"] == "FEATURE_EXTRACTION"
    texts = ["an excellent film", "what a waste of time", "it was fine"]
    ref = built.head.logits(builder.features(built.body, Split([(t,) for t in texts], np.zeros(3))))
    adapter = TaskAdapter(out)
    np.testing.assert_allclose(adapter.logits(texts), ref, atol=1e-4)
    info = json.loads((out / "raypdiff.json").read_text())
    assert info["head"] == "logistic" and info["label_names"] == ["positive", "negative"]


@pytest.mark.parametrize("num_labels", [1, 5])
def test_any_label_count_and_pairs(builder, num_labels):
    names = None if num_labels == 1 else [f"l{j}" for j in range(num_labels)]
    spec = custom_spec("Do the two sentences say the same thing?", names, text_fields=2)
    rng = np.random.default_rng(0)
    ex = [((f"sentence {i}", f"other {i % 3}"), float(rng.uniform(0, 5)) if num_labels == 1 else i % num_labels)
          for i in range(10)]
    built = builder.build(spec, ex, {"base": np.zeros(builder.body_layout.size, np.float32)})
    assert built.head.kind == ("ridge" if num_labels == 1 else built.head.kind)
    assert built.head.weight.shape[0] == num_labels


def test_no_examples_is_one_line(builder):
    with pytest.raises(ConfigError, match="--examples"):
        builder.build(custom_spec("x", ["a", "b"]), [], {"base": np.zeros(builder.body_layout.size, np.float32)})
    with pytest.raises(ConfigError, match="need a generator"):
        candidates("auto", None, builder, custom_spec("x", ["a", "b"]), examples(), 2, 0)


def test_generated_bodies_follow_guidance_and_check_quality(tiny_generator):
    from raypdiff.generate import Generator
    from raypdiff.newtask import builder_for, generated_bodies

    gen = Generator(tiny_generator["dir"])
    b = builder_for(gen)
    spec = custom_spec("Is this movie review positive?", ["positive", "negative"])
    plain = generated_bodies(gen, b, spec, examples(), 1, 0)["generated:0"]
    np.testing.assert_array_equal(plain, generated_bodies(gen, b, spec, examples(), 1, 0)["generated:0"])  # seeded
    strong = generated_bodies(gen, b, spec, examples(), 1, 0, guidance=4.0)["generated:0"]
    assert not np.allclose(plain, strong)  # --guidance reaches the new-task route
    assert gen.cfg.condition.quality  # configs/tiny_gen.yaml conditions on quality (the default)
    low = generated_bodies(gen, b, spec, examples(), 1, 0, quality=0.0)["generated:0"]
    assert not np.allclose(plain, low)  # --quality reaches it too (plain asks for quality_target = 1)
    with pytest.raises(ConfigError, match=r"--quality: must be in \[0, 1\]"):
        generated_bodies(gen, b, spec, examples(), 1, 0, quality=1.5)


def test_warm_start_from_zero_body_keeps_its_function_and_then_learns(builder):
    from raypdiff.newtask import tuned

    spec = custom_spec("Is this movie review positive?", ["positive", "negative"])
    zero = np.zeros(builder.body_layout.size, np.float32)
    split = Split([(t,) for t in POS + NEG], np.zeros(8, np.int64))
    # peft's initial LoRA (B = 0) is the base model's function, so a warm start from the base body starts there
    np.testing.assert_allclose(builder.features(builder.init_body, split), builder.features(zero, split), atol=1e-5)
    assert np.abs(builder.init_body).max() > 0  # ... with A random: a gradient to follow
    base = builder.build(spec, examples(flip=True), {"base": zero}, head="logistic")
    same = tuned(builder, spec, examples(flip=True), base, steps=0)
    np.testing.assert_array_equal(same.head.weight, base.head.weight)
    np.testing.assert_array_equal(same.body, builder.init_body)
    w = tuned(builder, spec, examples(flip=True), base, steps=5)
    assert not np.allclose(w.body, builder.init_body) and not np.allclose(w.head.weight, base.head.weight)
    assert w.body_source == "base" and w.describe()["tune_steps"] == 5 and w.seconds > base.seconds


@pytest.mark.parametrize("num_labels", [1, 2, 3])
def test_fine_tuning_from_scratch_fits_its_examples(builder, num_labels):
    from raypdiff.newtask import tuned

    names = None if num_labels == 1 else ["positive", "negative", "neutral"][:num_labels]
    spec = custom_spec("How positive is this review?", names)
    texts = POS + NEG + ["it was a film", "a movie with actors"]
    labels = [0] * 4 + [1] * 4 + [2 % num_labels] * 2
    ex = [((t,), float(y) if num_labels == 1 else y) for t, y in zip(texts, labels)]
    w = tuned(builder, spec, ex, None, steps=30)
    assert w.head.kind == ("ridge" if num_labels == 1 else "logistic")
    assert w.head.weight.shape == (num_labels, builder.model.config.hidden_size)
    pred = w.head.predict(builder.features(w.body, Split([(t,) for t in texts], np.zeros(len(texts)))))
    if num_labels == 1:
        assert np.corrcoef(pred, labels)[0, 1] > 0.8
    else:
        assert (pred == np.asarray(labels)).mean() >= 0.9
