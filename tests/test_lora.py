"""LoRA on the real packaged base model: layout, flatten/unflatten, capture schedule, fine-tuning, and the
contract that a flat vector written with `write_adapter` loads with plain transformers + PEFT and gives the
same logits as the in-memory model."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from raypdiff import lora
from raypdiff.config import ConfigError, LoraSettings, ModelConfig, TrainConfig
from raypdiff.tasks import builtin_spec, load_split, load_task

MODEL = ModelConfig(max_length=32, dtype="float32")
LORA = LoraSettings()
TRAIN = TrainConfig(steps=2, batch_size=4, lr=1e-2, warmup_steps=1)


@pytest.fixture(scope="module")
def tok():
    return lora.load_tokenizer(MODEL)


@pytest.fixture(scope="module")
def tiny(data_dir):
    """(spec, 8 train rows, 4 dev rows) per task name, from the real data."""
    cache = {}

    def get(name):
        if name not in cache:
            spec = builtin_spec(name, str(data_dir))
            cache[name] = (spec, load_split(spec, "train").take(range(8)), load_split(spec, "dev").take(range(4)))
        return cache[name]

    return get


def _logits(model, tok, split) -> torch.Tensor:
    model.eval()
    batch = lora.collate(tok, lora.encode(tok, split, MODEL.max_length))
    with torch.no_grad():
        return model(**batch).logits.float()


def _finetuned(spec, train, tok, seed=0, steps=2, cfg=TRAIN):
    label_mean = float(train.labels.mean()) if spec.is_regression else None
    model = lora.build(MODEL, LORA, spec, seed, label_mean)
    captured = {}
    lora.finetune(model, tok, train, cfg, steps, MODEL.max_length, seed, MODEL.dtype,
                  set(lora.capture_schedule(steps, 2, 1)), on_capture=captured.__setitem__)
    return model, captured


# ---- layout, flatten, unflatten ----

def test_layout_and_round_trip(tiny):
    spec, _, _ = tiny("SST-2")
    model = lora.build(MODEL, LORA, spec, seed=0)
    layout = lora.layout_of(model)
    # 6 layers x (query, value) x (A, B), plus the classifier head (weight, bias)
    assert sum("lora_A" in n for n in layout.names) == 12 and sum("lora_B" in n for n in layout.names) == 12
    assert any(n.endswith("classifier.weight") for n in layout.names)
    assert any(n.endswith("classifier.bias") for n in layout.names)
    hidden = 384
    expected = 6 * 2 * (LORA.r * hidden + hidden * LORA.r) + 2 * hidden + 2
    assert layout.size == expected
    assert lora.Layout.from_json(json.loads(json.dumps(layout.to_json()))) == layout

    vec = lora.flatten(model)
    assert vec.dtype == np.float32 and vec.shape == (layout.size,)
    sd = lora.unflatten(vec, layout)
    assert list(sd) == list(layout.names)
    for name, t in lora.adapter_state(model).items():
        assert torch.equal(sd[name], t.detach().float())

    # load a different vector, and flatten gives it back exactly
    other = np.random.default_rng(0).normal(size=layout.size).astype(np.float32)
    lora.load_vector(model, other, layout)
    np.testing.assert_array_equal(lora.flatten(model), other)


def test_unflatten_wrong_size(tiny):
    spec, _, _ = tiny("SST-2")
    layout = lora.layout_of(lora.build(MODEL, LORA, spec))
    with pytest.raises(ConfigError, match="shape"):
        lora.unflatten(np.zeros(layout.size + 1, np.float32), layout)


def test_layout_depends_on_task_and_lora(tiny):
    sst, _, _ = tiny("SST-2")
    trec, _, _ = tiny("TREC")
    stsb, _, _ = tiny("STS-B")
    size = {s.name: lora.layout_of(lora.build(MODEL, LORA, s)).size for s in (sst, trec, stsb)}
    assert size["TREC"] - size["SST-2"] == 4 * 385 and size["SST-2"] - size["STS-B"] == 385
    big = lora.layout_of(lora.build(MODEL, LoraSettings(r=8, target_modules=["query", "key", "value"]), sst))
    assert sum("lora_A" in n for n in big.names) == 18


def test_build_is_seeded(tiny):
    spec, _, _ = tiny("SST-2")
    a = lora.flatten(lora.build(MODEL, LORA, spec, seed=1))
    b = lora.flatten(lora.build(MODEL, LORA, spec, seed=1))
    c = lora.flatten(lora.build(MODEL, LORA, spec, seed=2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_unknown_target_module(tiny):
    spec, _, _ = tiny("SST-2")
    with pytest.raises(ConfigError, match="nonexistent"):
        lora.build(MODEL, LoraSettings(target_modules=["nonexistent"]), spec)


# ---- capture schedule ----

@pytest.mark.parametrize("steps,num,stride,expected", [
    (10, 3, 1, [8, 9, 10]),
    (10, 3, 2, [6, 8, 10]),
    (5, 5, 1, [1, 2, 3, 4, 5]),
    (1, 1, 1, [1]),
    (100, 4, 25, [25, 50, 75, 100]),
])
def test_capture_schedule(steps, num, stride, expected):
    assert lora.capture_schedule(steps, num, stride) == expected


@pytest.mark.parametrize("steps,warmup,decay,expected", [
    (6, 0, 0, [1, 1, 1, 1, 1, 1]),  # constant
    (6, 2, 0, [0.5, 1, 1, 1, 1, 1]),  # warmup, then constant
    (6, 0, 3, [1, 1, 1, 1, 2 / 3, 1 / 3]),  # the last 3 steps decay towards 0 (never a step at 0)
    (4, 2, 4, [0.5, 0.75, 0.5, 0.25]),  # warmup and decay overlap: the lower factor wins
    (1, 0, 1, [1]),
])
def test_lr_factor(steps, warmup, decay, expected):
    assert [lora.lr_factor(s, steps, warmup, decay) for s in range(steps)] == pytest.approx(expected)


# ---- fine-tuning ----

def test_finetune_changes_vector_and_captures(tiny, tok):
    spec, train, _ = tiny("SST-2")
    before = lora.flatten(lora.build(MODEL, LORA, spec, seed=0))
    model, captured = _finetuned(spec, train, tok, steps=3)
    assert sorted(captured) == [2, 3]
    after = lora.flatten(model)
    np.testing.assert_array_equal(captured[3], after)
    assert not np.array_equal(captured[2], captured[3])
    assert np.abs(after - before).max() > 1e-4
    # only the adapter trains: the frozen base is untouched
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)


def test_head_lr_applies_to_the_head_only(tiny, tok):
    spec, train, _ = tiny("SST-2")

    def moved(model):  # (how far the head moved, how far the LoRA matrices moved) from their seeded init
        init = lora.adapter_state(lora.build(MODEL, LORA, spec, seed=0))
        diff = {n: (t.float() - init[n].float()).abs().max().item() for n, t in lora.adapter_state(model).items()}
        return (max(v for n, v in diff.items() if "classifier" in n),
                max(v for n, v in diff.items() if "lora_" in n))

    frozen_head, _ = _finetuned(spec, train, tok, cfg=dataclasses.replace(TRAIN, head_lr=1e-12))
    fast_head, _ = _finetuned(spec, train, tok, cfg=dataclasses.replace(TRAIN, head_lr=1.0))
    (h0, l0), (h1, l1) = moved(frozen_head), moved(fast_head)
    assert h0 < 1e-9 and l0 > 1e-4  # Adam's steps scale with the group's LR
    assert h1 > 0.5 and l1 > 1e-4


def test_decay_steps_reach_the_optimizer(tiny, tok):
    """decay_steps=2 of 2: the first step runs at the full LR, the second at half; without decay both at full."""
    spec, train, _ = tiny("SST-2")
    _, const = _finetuned(spec, train, tok)
    _, decayed = _finetuned(spec, train, tok, cfg=dataclasses.replace(TRAIN, decay_steps=2))
    np.testing.assert_array_equal(const[1], decayed[1])
    assert not np.array_equal(const[2], decayed[2])


def test_finetune_is_reproducible(tiny, tok):
    spec, train, _ = tiny("RTE")
    a, _ = _finetuned(spec, train, tok, seed=3)
    b, _ = _finetuned(spec, train, tok, seed=3)
    np.testing.assert_array_equal(lora.flatten(a), lora.flatten(b))


def test_predict_and_evaluate(tiny, tok):
    spec, train, dev = tiny("SST-2")
    model, _ = _finetuned(spec, train, tok)
    batches = lora.eval_batches(tok, dev, MODEL.max_length, batch_size=3)
    preds = lora.predict(model, batches, regression=False)
    np.testing.assert_array_equal(preds, _logits(model, tok, dev).argmax(-1).numpy())
    assert lora.evaluate(model, batches, spec, dev.labels) == pytest.approx(float((preds == dev.labels).mean()))


# (model.dtype, device, precision used): auto is bfloat16 on a GPU, float32 on a CPU; an explicit dtype is kept
# (model.dtype, device, CPU has bf16 instructions, resolved precision)
DTYPE_CASES = [
    ("auto", "cpu", False, "float32"),
    ("auto", "cpu", True, "bfloat16"),
    ("auto", "cuda", False, "bfloat16"),
    ("float32", "cuda", True, "float32"),
    ("float32", "cpu", True, "float32"),
    ("bfloat16", "cpu", False, "bfloat16"),
]


@pytest.mark.parametrize("dtype,device,bf16,expected", DTYPE_CASES, ids=[f"{d}-{v}-{b}" for d, v, b, _ in DTYPE_CASES])
def test_resolve_dtype(monkeypatch, dtype, device, bf16, expected):
    monkeypatch.setattr(lora, "cpu_has_bf16", lambda: bf16)
    assert lora.resolve_dtype(dtype, torch.device(device)) == expected


def test_cpu_has_bf16_reads_the_cpu_flags():
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert lora.cpu_has_bf16() == ("amx_bf16" in flags or "avx512_bf16" in flags)


# ---- THE contract: write_adapter → a standard PEFT folder with identical logits ----

def load_like_a_user(folder: Path, num_labels: int):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(lora.resolve_base("all-MiniLM-L6-v2"),
                                                              num_labels=num_labels)
    return PeftModel.from_pretrained(base, str(folder)).eval()


@pytest.mark.parametrize("task", ["SST-2", "STS-B", "TREC"])
def test_written_adapter_reproduces_logits(tiny, tok, tmp_path, task):
    spec, train, dev = tiny(task)
    model, _ = _finetuned(spec, train, tok)
    expected = _logits(model, tok, dev)
    assert expected.shape == (4, spec.num_labels)
    vec, layout = lora.flatten(model), lora.layout_of(model)

    # write through a *fresh* model (another seed): the vector alone must carry LoRA + head
    fresh = lora.build(MODEL, LORA, spec, seed=123)
    out = lora.write_adapter(fresh, vec, layout, tmp_path / "adapter", MODEL.base)
    assert (out / "adapter_config.json").is_file()
    assert (out / "adapter_model.safetensors").is_file()
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == LORA.r and sorted(cfg["target_modules"]) == sorted(LORA.target_modules)
    assert cfg["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"  # not this machine's path

    loaded = load_like_a_user(out, spec.num_labels)
    got = _logits(loaded, tok, dev)
    assert (got - expected).abs().max().item() <= 1e-5
    np.testing.assert_allclose(lora.flatten(loaded), vec, rtol=0, atol=0)


def test_write_adapter_unwritable(tiny, tmp_path):
    spec, _, _ = tiny("SST-2")
    model = lora.build(MODEL, LORA, spec)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="cannot write adapter"):
        lora.write_adapter(model, lora.flatten(model), lora.layout_of(model), tmp_path / "afile" / "out")


# ---- raypdiff export from a real (tiny) zoo ----

def test_tiny_zoo_is_complete(tiny_zoo):
    """configs/tiny.yaml: val 16 rows carved from train, test 24 dev rows; every capture has a val value, the
    captures of `tested_captures` (every 2nd from the last, and the best by val) a test value and predictions."""
    from raypdiff.domains import tested_captures
    from raypdiff.zoo.store import load_table, read_meta

    meta = read_meta(tiny_zoo)
    assert meta.complete is True and set(meta.tasks) == {"SST-2", "STS-B"}
    t = load_table(tiny_zoo).to_pandas()
    assert len(t) == 6
    for task, n_train in (("SST-2", 20000), ("STS-B", 5749)):
        splits = meta.tasks[task].splits
        assert splits["train"] == {"file": "train", "rows": n_train - 16}
        assert splits["val"]["file"] == "train" and len(splits["val"]["rows"]) == 16
        assert splits["test"]["file"] == "dev" and len(splits["test"]["rows"]) == 24
        rows = t[t.task == task].sort_values("step")
        assert rows.step.tolist() == [4, 5, 6] and np.isfinite(rows.value).all()
        tested = tested_captures(3, 2, rows.value.tolist())
        assert [i for i, v in enumerate(rows.test_value) if np.isfinite(v)] == tested
        assert all((p is None) == (i not in tested) for i, p in enumerate(rows.test_pred))
        assert all(len(rows.test_pred.iloc[i]) == 24 for i in tested)


@pytest.mark.parametrize("task,step", [("SST-2", 6), ("STS-B", 4)])
def test_export_writes_loadable_adapter(tiny_zoo, tmp_path, tok, data_dir, task, step):
    from raypdiff import cli
    from raypdiff.tasks import TaskSpec
    from raypdiff.zoo.store import get_vector, read_meta

    out = tmp_path / "exported"
    assert cli.main(["export", str(tiny_zoo), "--task", task, "--step", str(step), "--out", str(out)]) == 0
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()

    meta = read_meta(tiny_zoo)
    info = meta.tasks[task]
    spec = TaskSpec(**info.spec)
    vec = get_vector(tiny_zoo, task, 0, step)
    loaded = load_like_a_user(out, spec.num_labels)
    np.testing.assert_array_equal(lora.flatten(loaded), vec)

    # the same logits as the library's own model holding the zoo vector
    cfg = meta.base_config()
    ref = lora.build(cfg.model, cfg.lora, spec)
    lora.load_vector(ref, vec, meta.layout(task))
    val = info.splits["val"]
    rows = load_split(spec, val["file"]).take(val["rows"][:4])
    assert (_logits(loaded, tok, rows) - _logits(ref, tok, rows)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("task", ["SST-2", "STS-B"])
def test_export_score_matches_zoo(tiny_zoo, tmp_path, tok, task):
    """The exported adapter scored on the zoo's val split gives the shard's `value`; on its test split (the last
    capture is always tested) the shard's `test_value`. The splits rebuilt from meta.json's eval settings are
    the rows meta.json records."""
    from raypdiff import cli
    from raypdiff.tasks import TaskSpec
    from raypdiff.zoo.store import load_table, read_meta

    meta = read_meta(tiny_zoo)
    info, ev = meta.tasks[task], meta.eval
    spec = TaskSpec(**info.spec)
    out = tmp_path / "exported"
    assert cli.main(["export", str(tiny_zoo), "--task", task, "--step", "6", "--out", str(out)]) == 0
    data = load_task(spec, ev["val_examples"], ev["test_examples"], ev["split_seed"])
    assert data.splits == info.splits
    loaded = load_like_a_user(out, spec.num_labels)
    t = load_table(tiny_zoo).to_pandas()
    row = t[(t.task == task) & (t.step == 6)].iloc[0]
    for split, stored in ((data.val, row.value), (data.test, row.test_value)):
        batches = lora.eval_batches(tok, split, meta.base_model["max_length"], ev["batch_size"])
        got = lora.evaluate(loaded, batches, spec, split.labels, meta.base_model["dtype"])
        # one row may flip at a decision boundary: the zoo scored through its own model object
        tol = 1e-4 if spec.is_regression else 1 / len(split) + 1e-9
        assert got == pytest.approx(float(stored), abs=tol)


@pytest.mark.parametrize("args,match", [
    (["--task", "RTE", "--step", "6"], "unknown task 'RTE'"),
    (["--task", "SST-2", "--step", "1"], "no step 1"),
    (["--task", "SST-2", "--seed", "5", "--step", "6"], "seed 5"),
])
def test_export_errors(tiny_zoo, tmp_path, capsys, args, match):
    from raypdiff import cli

    assert cli.main(["export", str(tiny_zoo), *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raypdiff: error:") and match in err[0], err
