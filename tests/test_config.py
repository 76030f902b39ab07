"""Config: defaults, validation (one ConfigError naming the field), dotted overrides, YAML round trip."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raypdiff.config import Config, ConfigError, derive, load_config, parse_overrides


def test_defaults_are_valid():
    cfg = Config()
    assert cfg.lora.r == 4 and cfg.train.steps == 600 and cfg.model.dtype == "auto"
    assert Config.from_dict({}) == cfg


# (dotted overrides, text the ConfigError message must contain)
INVALID = [
    (["lora.r=0"], "lora.r"),
    (["lora.alpha=0"], "lora.alpha"),
    (["lora.dropout=1.0"], "lora.dropout"),
    (["lora.target_modules=[]"], "lora.target_modules"),
    (["train.lr=-1"], "train.lr"),
    (["train.head_lr=0"], "train.head_lr"),
    (["train.steps=0"], "train.steps"),
    (["train.batch_size=0"], "train.batch_size"),
    (["train.warmup_steps=-1"], "train.warmup_steps"),
    (["train.decay_steps=-1"], "train.decay_steps"),
    (["train.steps=20", "train.decay_steps=21"], "train.decay_steps: must be in [0, train.steps=20]"),
    (["train.decay_steps=500", "train.per_task={SST-2: {steps: 100}}"], "train.per_task.SST-2.decay_steps"),
    (["train.per_task={SST-2: {steps: 0}}"], "train.per_task.SST-2.steps"),
    (["train.per_task={SST-2: {lr: -1}}"], "train.per_task.SST-2.lr"),
    (["train.per_task={SST-2: {stepz: 10}}"], "unknown field(s) ['stepz']"),
    (["train.per_task={SST-2: 5}"], "train.per_task.SST-2: expected"),
    (["train.steps=5", "capture.num=6"], "capture"),
    (["train.steps=10", "capture.num=4", "capture.stride=3"], "capture"),
    (["diffusion.temperature=0"], "diffusion.temperature"),
    (["condition.pooling=mean"], "condition.pooling"),
    (["holdout.scheme=random"], "holdout.scheme"),
    (["holdout.folds=1"], "holdout.folds"),
    (["holdout.examples=0"], "holdout.examples"),
    (["holdout.finetune_lr=0"], "holdout.finetune_lr"),
    (["holdout.k_values=[-1]"], "holdout.k_values"),
    (["style_eval.per_class=1"], "style_eval.per_class"),
    (["style_eval.num=0"], "style_eval.num"),
    (["style_eval.interpolate=[inverted]"], "style_eval.interpolate"),
    (["style_eval.interpolate_points=1"], "style_eval.interpolate_points"),
    (["condition.max_labels=0"], "condition.max_labels"),
    (["train.stepz=5"], "train.stepz"),
    (["trian.steps=5"], "trian"),
    (["train.steps=ten"], "train.steps"),
    (["train.steps=5.5"], "train.steps"),
    (["train.steps=true"], "train.steps"),
    (["train.lr=fast"], "train.lr"),
    (["model.dtype=fp8"], "model.dtype"),
    (["model.max_length=4"], "model.max_length"),
    (["model.base="], "model.base"),
    (["lora.target_modules=query"], "lora.target_modules"),
    (["lora.target_modules=[1, 2]"], "lora.target_modules[0]"),
    (["tracking.enabled=maybe"], "tracking.enabled"),
    (["tasks=[SST-2,SST-2]"], "tasks"),
    (["tasks=[]"], "tasks"),
    (["capture.seeds=[0,0]"], "capture.seeds"),
    (["capture.seeds=[]"], "capture.seeds"),
    (["eval.val_examples=0"], "eval.val_examples"),
    (["eval.test_examples=0"], "eval.test_examples"),
    (["eval.test_every=0"], "eval.test_every"),
    (["eval.batch_size=0"], "eval.batch_size"),
    (["eval.max_examples=300"], "eval.max_examples"),  # removed by the train/val/test splits: named, not ignored
    (["collect.num_cpus=0"], "collect.num_cpus"),
    (["collect.output_dir=7"], "collect.output_dir"),
    (["train=5"], "train"),
]


@pytest.mark.parametrize("overrides,field", INVALID, ids=[" ".join(o) for o, _ in INVALID])
def test_invalid_field_names_itself(overrides, field):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    msg = str(e.value)
    assert msg.startswith(field) or f"{field}:" in msg or field in msg, msg
    assert "\n" not in msg


# (dotted overrides, dotted path, expected value)
OVERRIDES = [
    (["train.steps=5", "capture.num=2"], "train.steps", 5),
    (["tasks=[SST-2,RTE]"], "tasks", ["SST-2", "RTE"]),
    (["train.lr=0.01"], "train.lr", 0.01),
    (["train.lr=1"], "train.lr", 1.0),  # an int where a float is wanted
    (["train.per_task.RTE.head_lr=0.01"], "train.per_task", {"RTE": {"head_lr": 0.01}}),
    (["model.dtype=float32"], "model.dtype", "float32"),
    (["model.dtype=auto"], "model.dtype", "auto"),
    (["eval.val_examples=50"], "eval.val_examples", 50),
    (["eval.split_seed=3"], "eval.split_seed", 3),
    (["lora.target_modules=[query,key,value]"], "lora.target_modules", ["query", "key", "value"]),
    (["train.per_task.SST-2={steps: 300}"], "train.per_task", {"SST-2": {"steps": 300}}),  # nested new key
    (["data.root=/some/where"], "data.root", "/some/where"),
    (["collect.ray_address=auto"], "collect.ray_address", "auto"),
    (["tracking.uri="], "tracking.uri", None),
    (["train.steps=5", "train.steps=7", "capture.num=1"], "train.steps", 7),  # the last wins
    (["tracking.enabled=false"], "tracking.enabled", False),
]


def _get(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


@pytest.mark.parametrize("overrides,path,expected", OVERRIDES, ids=[" ".join(o) for o, _, _ in OVERRIDES])
def test_dotted_overrides(overrides, path, expected):
    cfg = load_config(None, overrides)
    assert _get(cfg, path) == expected


def test_overrides_parse_as_yaml():
    assert parse_overrides(["a.b.c=1", "a.b.d=[x, y]", "a.e=text", "a.f=", "a.b.c=2"]) == [
        ("a.b.c", 1), ("a.b.d", ["x", "y"]), ("a.e", "text"), ("a.f", None), ("a.b.c", 2)]


def test_overrides_apply_in_order():
    over = ["train.per_task.CoLA.steps=1700", "train.per_task={}", "train.per_task.CoLA.steps=1800"]
    assert load_config(None, over).train.per_task == {"CoLA": {"steps": 1800}}


def test_override_creates_nested_sections():
    cfg = load_config(None, ["train.per_task.MRPC.lr=0.01"])
    assert cfg.train.per_task["MRPC"] == {"lr": 0.01} and cfg.train.for_task("MRPC").lr == 0.01


def test_override_into_a_scalar_is_an_error():
    with pytest.raises(ConfigError, match="train.steps.x: steps is not a section"):
        load_config(None, ["train.steps=3", "train.steps.x=1"])


def test_derive_validates_the_whole_and_keeps_the_original():
    cfg = load_config(None, ["serve.api_key=secret-key"])
    new = derive(cfg, {"trainer.output_dir": "/tmp/g", "trainer.register_model": False})
    assert (new.trainer.output_dir, new.trainer.register_model, new.serve.api_key) == ("/tmp/g", False, "secret-key")
    assert cfg.trainer.output_dir != "/tmp/g"  # a copy
    train = derive(cfg.train, {"lr": 0.5, "per_task": {}}, "train.")
    assert type(train) is type(cfg.train) and train.lr == 0.5
    for changes, error in [({"trainer.num_workers": "2"}, "trainer.num_workers: expected an integer"),
                           ({"trainer.nope": 1}, "trainer.nope: unknown setting"),
                           ({"train.lr": -1.0}, "train.lr: must be > 0")]:
        with pytest.raises(ConfigError, match=error):
            derive(cfg, changes)
    with pytest.raises(ConfigError, match="train.lr: must be > 0"):
        derive(cfg.train, {"lr": -1.0}, "train.")


@pytest.mark.parametrize("item", ["train.steps", "train.steps=[1", "tasks=[SST-2"])
def test_bad_override_syntax(item):
    with pytest.raises(ConfigError, match="override"):
        load_config(None, [item])


def test_per_task_overrides_and_capture_check():
    cfg = load_config(None, ["train.steps=10", "capture.num=5", "train.per_task={RTE: {steps: 20, lr: 0.0005}}"])
    rte, sst = cfg.train.for_task("RTE"), cfg.train.for_task("SST-2")
    assert (rte.steps, rte.lr, rte.batch_size) == (20, 0.0005, cfg.train.batch_size)
    assert (sst.steps, sst.lr) == (10, cfg.train.lr) and sst.per_task == {}
    with pytest.raises(ConfigError, match="RTE"):
        load_config(None, ["train.steps=10", "capture.num=5", "train.per_task={RTE: {steps: 4}}", "tasks=[RTE]"])


ROUND_TRIP = [
    [],
    ["tasks=[SST-2,RTE]", "train.steps=5", "capture.num=2", "capture.stride=2", "model.dtype=float32"],
    ["tasks=[SST-2, {name: mine, description: d, text_fields: [t], label_field: y, metric: accuracy, "
     "label_names: [a, b], train: tr.csv, dev: dv.csv}]"],
    ["train.per_task={SST-2: {steps: 2000}}", "lora.dropout=0.1", "data.root=/data", "tracking.uri=sqlite:////x.db"],
]


@pytest.mark.parametrize("overrides", ROUND_TRIP, ids=range(len(ROUND_TRIP)))
def test_round_trip(overrides, tmp_path):
    cfg = load_config(None, overrides)
    assert Config.from_dict(cfg.to_dict()) == cfg
    # and through a YAML file, as collect writes config.yaml
    p = tmp_path / "config.yaml"
    p.write_text(cfg.to_yaml())
    assert load_config(p) == cfg
    assert yaml.safe_load(cfg.to_yaml()) == cfg.to_dict()


def test_load_config_file_and_overrides(tmp_path, repo_dir):
    cfg = load_config(repo_dir / "configs" / "tiny.yaml", ["train.steps=8"])
    assert cfg.tasks == ["SST-2", "STS-B"] and cfg.train.steps == 8 and cfg.capture.num == 3
    p = tmp_path / "c.yaml"
    p.write_text("")  # an empty file is the defaults
    assert load_config(p) == Config()


def test_load_config_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("text,match", [("- a\n- b\n", "mapping"), ("train: [1\n", "not valid YAML"),
                                        ("train: {stepz: 3}\n", "train.stepz")])
def test_load_config_bad_file(tmp_path, text, match):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(p)


def test_data_root_from_env(monkeypatch):
    monkeypatch.setenv("RAYPDIFF_DATA_DIR", "/from/env")
    assert Config().data.root == "/from/env"
    assert load_config(None, ["data.root=/explicit"]).data.root == "/explicit"


def test_exponent_float_override():
    assert load_config(None, ["train.lr=5e-4"]).train.lr == pytest.approx(5e-4)


def test_legacy_steps_per_task_still_loads():
    """Configs saved in zoos and generators before `per_task` replaced `steps_per_task`."""
    d = Config().to_dict()
    del d["train"]["per_task"]
    d["train"]["steps_per_task"] = {"RTE": 1000}
    assert Config.from_dict(d).train.for_task("RTE").steps == 1000


def test_zoo_yaml_spells_out_the_defaults():
    """configs/zoo.yaml says every value in it is the built-in default: keep the two in step."""
    cfg = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "zoo.yaml"), [])
    default = Config()
    for section in ("model", "lora", "train", "capture", "eval"):
        assert getattr(cfg, section) == getattr(default, section), section
    assert cfg.tasks == default.tasks
