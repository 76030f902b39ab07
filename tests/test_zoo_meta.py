"""ZooMeta: meta.json read into types and written back byte for byte, older zoos' defaults, one-line errors."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from raypdiff.config import Config, ConfigError
from raypdiff.storage import Location
from raypdiff.tasks import TaskSpec
from raypdiff.zoo.store import ZooMeta, read_meta, write_meta

SPECS = [TaskSpec(name="A", description="a", text_fields=["s"], label_field="label", metric="accuracy",
                  label_names=["no", "yes"], train="a.tsv", dev="a_dev.tsv"),
         TaskSpec(name="B", description="b", text_fields=["s1", "s2"], label_field="label", metric="pearson",
                  train="b.tsv", dev="b_dev.tsv")]
LAYOUTS = {"A": [["q.lora_A", [4, 8]], ["head", [2, 8]]], "B": [["q.lora_A", [4, 8]], ["head", [1, 8]]]}


def _data(labels: list) -> SimpleNamespace:
    """What the text domain's info reads of a task's data."""
    splits = {"train": {"file": "train", "rows": 40}, "val": {"file": "train", "rows": [3, 7]},
              "test": {"file": "dev", "rows": [0, 1, 2]}}
    return SimpleNamespace(splits=splits, train=SimpleNamespace(labels=np.asarray(labels)),
                           test=SimpleNamespace(labels=np.asarray(labels[:3])))


@pytest.fixture
def written(tmp_path) -> Location:
    """A zoo folder whose meta.json write_meta wrote (no shards: read_meta needs none)."""
    zoo = Location.of(tmp_path / "zoo")
    zoo.mkdir()
    cfg = Config.from_dict({"tasks": ["A", "B"], "capture": {"num": 3, "stride": 1, "seeds": [0, 1]},
                            "train": {"steps": 6}})
    write_meta(zoo, cfg, SPECS, {"A": _data([0, 1, 1, 0]), "B": _data([0.5, 2.0, 4.5, 1.0])}, LAYOUTS, True)
    return zoo


def _variant(d: dict, name: str) -> dict:
    """Forms of meta.json raypdiff writes: derive's records (chained in either order), a style zoo's tasks."""
    d = json.loads(json.dumps(d))
    if name in ("subsample", "selection_then_subsample"):
        if name == "selection_then_subsample":
            d["selection"] = {"of": "/z", "tasks": ["A"]}
        d["capture"] = {**d["capture"], "num": 2, "per_seed": {"0": 2, "1": 1}}
        d["subsample"] = {"of": "/z", "per_task": 3, "seed": 0}
    if name == "subsample_then_selection":
        d["subsample"] = {"of": "/z", "per_task": 3, "seed": 0}
        d["selection"] = {"of": "/z2", "tasks": ["A"]}
    if name == "vision":
        d["domain"], d["base_model"] = "vision", {"unet_sha256": "ab", "vision": {"image_size": 32}}
        for info in d["tasks"].values():
            info.update(num_labels=0, metric="denoise", label_mean=None, majority=None)
    return d


def test_write_meta_keeps_the_format(written):
    """The keys and their order meta.json has always had (a reader of older zoos depends on them)."""
    d = json.loads((written / "meta.json").read_text())
    assert list(d) == ["complete", "domain", "base_model", "lora", "capture", "train", "eval", "tasks", "versions"]
    assert list(d["tasks"]) == ["A", "B"]
    assert list(d["tasks"]["A"]) == ["spec", "metric", "num_labels", "splits", "label_mean", "majority", "layout"]
    assert list(d["capture"]) == ["num", "stride", "seeds"]


@pytest.mark.parametrize("variant,indent", [("written", None), ("subsample", 1), ("selection_then_subsample", 1),
                                            ("subsample_then_selection", 1), ("vision", None)])
def test_round_trip_is_byte_identical(written, variant, indent):
    text = (written / "meta.json").read_text()
    if variant != "written":
        text = json.dumps(_variant(json.loads(text), variant), indent=indent)
    assert json.dumps(ZooMeta.from_dict(json.loads(text)).to_dict(), indent=indent) == text


def test_typed_fields(written):
    meta = read_meta(written)
    assert meta.complete is True and meta.domain == "text" and list(meta.tasks) == ["A", "B"]
    assert meta.capture.seeds == [0, 1] and meta.capture.rows(1) == 3
    a, b = meta.tasks["A"], meta.tasks["B"]
    assert TaskSpec(**a.spec) == SPECS[0] and a.num_labels == 2 and a.label_mean == 0.5 and a.majority == 1 / 3
    assert b.metric == "pearson" and b.num_labels == 1 and b.majority == 0.0
    assert meta.layout("A").size == 4 * 8 + 2 * 8 and meta.layout("A").to_json() == LAYOUTS["A"]
    cfg = meta.base_config()
    assert (cfg.model.base, cfg.model.dtype, cfg.lora.r) == (Config().model.base, Config().model.dtype, Config().lora.r)
    assert meta.base_config(dtype="float32").model.dtype == "float32"


@pytest.mark.parametrize("change,check", [
    # before domains: a text zoo (to_dict then states it)
    (lambda d: d.pop("domain"), lambda m: m.domain == "text"),
    # before subsamples: every seed holds capture.num
    (lambda d: d["capture"].pop("per_seed", None), lambda m: m.capture.per_seed is None and m.capture.rows(7) == 3),
    # a subsample's seeds: the first ones hold one more
    (lambda d: d["capture"].update(num=2, per_seed={"0": 2, "1": 1}),
     lambda m: (m.capture.rows(0), m.capture.rows(1), m.capture.rows(2)) == (2, 1, 2)),
    # the task entry of the first zoos with splits: layout before splits
    (lambda d: d["tasks"].update({t: {k: i[k] for k in ("spec", "metric", "num_labels", "layout", "splits",
                                                        "label_mean", "majority")} for t, i in d["tasks"].items()}),
     lambda m: m.layout("B").to_json() == LAYOUTS["B"] and m.tasks["B"].splits["train"]["rows"] == 40),
    # train settings saved before per_task
    (lambda d: d["train"].update(steps_per_task={}), lambda m: "steps_per_task" in m.train),
])
def test_older_meta_loads(written, change, check):
    d = json.loads((written / "meta.json").read_text())
    change(d)
    (written / "meta.json").write_text(json.dumps(d))
    assert check(read_meta(written))


@pytest.mark.parametrize("change,message", [
    (lambda d: d.pop("complete"), "key complete is missing"),
    (lambda d: d.update(base_model="x"), "key base_model is a str, expected dict"),
    (lambda d: d["capture"].update(seeds="0"), "key capture.seeds is a str, expected list"),
    (lambda d: d["capture"].update(seeds=[0, "1"]), "key capture.seeds.1 is a str, expected int"),
    (lambda d: d["capture"].update(per_seed={"0": 1.5}), "key capture.per_seed.0 is a float, expected int"),
    (lambda d: d["capture"].pop("stride"), "key capture.stride is missing"),
    (lambda d: d["tasks"]["B"].pop("layout"), "key tasks.B.layout is missing"),
    (lambda d: d["tasks"]["A"].update(num_labels=True), "key tasks.A.num_labels is a bool, expected int"),
    (lambda d: d["tasks"]["A"].update(label_mean="0.5"), "key tasks.A.label_mean is a str, expected int or float or "
                                                         "NoneType"),
    (lambda d: d["tasks"].update(A=[]), "key tasks.A is a list, expected dict"),
    (lambda d: d.update(extra=1), "key extra is not a zoo's"),
    (lambda d: d["tasks"]["A"].update(extra=1), "key tasks.A.extra is not a zoo's"),
    (lambda d: d["tasks"]["A"].pop("splits"), "a zoo from before train/val/test splits"),
])
def test_bad_key_is_one_config_error(written, change, message):
    d = json.loads((written / "meta.json").read_text())
    change(d)
    (written / "meta.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError) as e:
        read_meta(written)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith(str(written))  # names the zoo, or its meta.json


def test_not_an_object(written):
    (written / "meta.json").write_text("[]")
    with pytest.raises(ConfigError, match=r"meta\.json: not a zoo's metadata"):
        read_meta(written)


def test_a_zoo_from_before_decay_steps_is_resumed(tmp_path, data_dir):
    """A zoo whose meta.json has no train.decay_steps was trained at a constant rate: collecting into it again with
    decay_steps 0 resumes it, and with a decay is refused in one line."""
    from raypdiff.config import load_config
    from raypdiff.zoo.collect import prepare

    over = [f"data.root={data_dir}", "tasks=[RTE]", f"collect.output_dir={tmp_path / 'zoo'}", "model.max_length=16",
            "train.per_task={}", "train.steps=10", "capture.num=2", "eval.val_examples=8", "eval.test_examples=6"]
    prepare(load_config(None, over), progress=False)
    meta = tmp_path / "zoo" / "meta.json"
    old = json.loads(meta.read_text())
    del old["train"]["decay_steps"]
    meta.write_text(json.dumps(old))
    assert prepare(load_config(None, over), progress=False).todo == [("RTE", 0)]
    with pytest.raises(ConfigError, match="holds a zoo built with another train setting"):
        prepare(load_config(None, [*over, "train.decay_steps=5"]), progress=False)
