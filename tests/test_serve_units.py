"""The endpoint's plain parts without Ray: the content-addressed store (ids, atomic writes, the cap, no paths but
hashes), ServeConfig validation, and AdapterMaker's batching (each request comes out as it would alone)."""
from __future__ import annotations

import io
import os
import time
import zipfile

import numpy as np
import pytest
from conftest import BUCKET

from raypdiff.config import Config, ConfigError, load_config
from raypdiff.lora import public_id
from raypdiff.serve.store import AdapterStore, adapter_id


def fill(folder):
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"x")


def test_adapter_id_is_a_hash_of_values_layout_and_base():
    v = np.arange(6, dtype=np.float32)
    a = adapter_id(v, "SST-2", "m")
    assert len(a) == 64 and a == adapter_id(v.astype(np.float64), "SST-2", "m")  # stored as float32
    assert len({a, adapter_id(v + 1e-6, "SST-2", "m"), adapter_id(v, "CoLA", "m"), adapter_id(v, "SST-2", "n")}) == 4


def test_store_put_meta_zip(where):  # on a disk and on a bucket
    store = AdapterStore(where, max_adapters=16)
    i = adapter_id(np.zeros(3, np.float32), "T", "m")
    assert not store.exists(i)
    store.put(i, fill, {"task": "T"})
    assert store.exists(i) and store.meta(i) == {"id": i, "task": "T"} and len(store) == 1
    names = zipfile.ZipFile(io.BytesIO(store.zip(i))).namelist()
    assert sorted(names) == ["adapter_config.json", "adapter_model.safetensors", "raypdiff.json"]
    store.put(i, lambda f: pytest.fail("an existing id is not written again"), {"task": "T"})
    assert [p.name for p in where.folders()] == [".used", i]  # the adapter, and the record of its use
    assert not [f for f in (where / i).files() if ".tmp" in f.name]


def test_store_zips_a_new_tasks_head_by_its_name():
    from raypdiff.newtask import HEAD_FILE
    from raypdiff.serve import store

    assert store.HEAD == HEAD_FILE


def test_store_write_failure_leaves_nothing(where):
    store = AdapterStore(where, max_adapters=16)
    i = "a" * 64

    def broken(folder):
        fill(folder)
        raise OSError("disk full")

    with pytest.raises(OSError):
        store.put(i, broken, {})
    assert not store.exists(i) and where.folders() == [] and where.files() == []


@pytest.mark.parametrize("bad", ["", "a" * 63, "A" * 64, "../" + "a" * 61, "a" * 64 + "/..", "g" * 64, "/etc/passwd"])
def test_store_takes_nothing_but_hashes(tmp_path, bad):
    store = AdapterStore(tmp_path / "s", max_adapters=16)
    assert not store.exists(bad)
    for op in (store.meta, store.zip, store.path):
        with pytest.raises(KeyError):
            op(bad)


def test_store_evicts_least_recently_used(tmp_path):
    store = AdapterStore(tmp_path / "s", max_adapters=3)
    ids = [f"{i:064x}" for i in range(5)]
    for k, i in enumerate(ids[:3]):
        store.put(i, fill, {})
        os.utime((store.path(i) / "raypdiff.json").local(), (1000 + k, 1000 + k))  # distinct ages
    store.meta(ids[0])  # a use: the oldest becomes the newest
    store.put(ids[3], fill, {})
    store.put(ids[4], fill, {})
    assert [store.exists(i) for i in ids] == [True, False, False, True, True] and len(store) == 3


def test_store_forgets_stale_uses_past_its_bound(tmp_path, monkeypatch):
    """A long-lived server's record of recent uses stays bounded: past USED_KEPT ids, those past their minute go."""
    from raypdiff.serve import store as store_mod

    monkeypatch.setattr(store_mod, "USED_KEPT", 4)
    store = AdapterStore(tmp_path / "s", max_adapters=16)
    ids = [f"{i:064x}" for i in range(6)]
    for i in ids:
        store.put(i, fill, {})
    store._used = {i: time.monotonic() - 120 for i in ids[:4]}  # four uses two minutes old
    store.meta(ids[4])
    assert set(store._used) == {ids[4]}
    store.meta(ids[5])
    assert set(store._used) == {ids[4], ids[5]}


def test_store_on_a_bucket_evicts_least_recently_used(s3):
    store = AdapterStore(f"s3://{BUCKET}/store-lru", max_adapters=2)
    ids = [f"{i:064x}" for i in range(4)]
    for i in ids[:2]:
        store.put(i, fill, {})
        time.sleep(1.1)  # an object's time is kept to the second
    store.meta(ids[0])  # a use (the object is written again): the oldest becomes the newest
    time.sleep(1.1)
    store.put(ids[2], fill, {})
    assert [store.exists(i) for i in ids[:3]] == [True, False, True] and len(store) == 2


@pytest.mark.parametrize("override,match", [
    ("serve.port=0", "serve.port"),
    ("serve.port=70000", "serve.port"),
    ("serve.replicas=0", "serve.replicas"),
    ("serve.threads=0", "serve.threads"),
    ("serve.max_adapters=15", "serve.max_adapters: must be >= 16"),
    ("serve.replica_cpus=-1", "serve.replica_cpus"),
    ("serve.api_key=short", "serve.api_key: use at least 8"),
    ("serve.generator=", "serve.generator"),
    ("serve.nope=1", "serve.nope: unknown setting"),
    ("serve.port=abc", "serve.port: expected an integer"),
])
def test_serve_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_api_key_is_never_saved():
    cfg = load_config(None, ["serve.api_key=a-long-secret"])
    assert cfg.serve.api_key == "a-long-secret" and cfg.to_dict()["serve"]["api_key"] is None
    assert "a-long-secret" not in cfg.to_yaml()
    assert Config.from_dict(cfg.to_dict()).serve.api_key is None


@pytest.mark.parametrize("base,expected", [("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
                                           ("bert-base-uncased", "bert-base-uncased"), ("/models/x", "/models/x")])
def test_public_id(base, expected):
    assert public_id(base) == expected


def test_maker_batches_requests_each_as_alone(tiny_generator, tmp_path):
    """Several requests in one sampling batch give the adapters each gives alone (to float precision: kernels round
    differently at other batch sizes, ~1e-6 here); a bad request fails alone; the same request alone, the same id."""
    from safetensors.numpy import load_file

    from raypdiff.generate import Generator
    from raypdiff.serve.adapters import AdapterMaker

    maker = AdapterMaker(Generator(tiny_generator["dir"]), AdapterStore(tmp_path / "s", 100))
    reqs = [{"task": "SST-2", "num": 2, "seed": 1}, {"task": "NOPE"},
            {"description": "Is the review happy?", "label_names": ["no", "yes"],
             "examples": [{"text": "great", "label": "yes"}], "num": 1, "seed": 2, "guidance": 0.5},
            {"task": "STS-B", "num": 1, "seed": 3, "quality": 0.2}]
    together = maker.make(reqs)
    assert together[1] == {"error": "unknown task 'NOPE' for this generator (trained on: SST-2, STS-B)"}

    def tensors(id_):
        return load_file(str(maker.store.path(id_) / "adapter_model.safetensors"))

    for req, got in zip(reqs, together):
        if "error" in got:
            continue
        (alone,) = maker.make([req])
        assert [a["id"] for a in maker.make([req])[0]["adapters"]] == [a["id"] for a in alone["adapters"]]
        for a, b in zip(got["adapters"], alone["adapters"]):
            ta, tb = tensors(a["id"]), tensors(b["id"])
            assert ta.keys() == tb.keys() and all(np.allclose(ta[k], tb[k], rtol=0, atol=1e-5) for k in ta)
    assert [a["layout_task"] for r in together if "adapters" in r for a in r["adapters"]] == \
        ["SST-2", "SST-2", "new-task", "STS-B"]
    built = together[2]["adapters"][0]["built"]  # a new description: one adapter, body and head chosen on its examples
    assert built["body"] in ("base", "generated:0") and set(built["leave_one_out"]) == {"base", "generated:0"}


def test_new_task_adapter_predicts_as_its_downloaded_folder(tiny_generator, tmp_path):
    """POST /v1/adapters with a new description stores a body + head folder; the predictor's probabilities are the
    folder's under plain transformers + peft (newtask.TaskAdapter), for any label count."""
    from raypdiff.generate import Generator
    from raypdiff.newtask import TaskAdapter
    from raypdiff.serve.adapters import AdapterMaker, AdapterPredictor

    store = AdapterStore(tmp_path / "s", 100)
    maker = AdapterMaker(Generator(tiny_generator["dir"]), store)
    ex = [{"text": t, "label": y} for t, y in [("the striker scored twice", "sport"), ("a late goal won it", "sport"),
                                                ("shares fell today", "money"), ("the bank raised rates", "money"),
                                                ("a faster chip", "tech"), ("the new phone is out", "tech")]]
    (res,) = maker.make([{"description": "What is the headline about?", "label_names": ["sport", "money", "tech"],
                          "examples": ex, "num": 2, "seed": 0}])
    info = res["adapters"][0]
    assert info["built"]["head"] in ("prototype", "logistic") and info["regression"] is False
    assert "head.safetensors" in zipfile.ZipFile(io.BytesIO(store.zip(info["id"]))).namelist()  # downloads carry it
    predictor = AdapterPredictor(store)
    texts = ["the goalkeeper saved a penalty", "inflation is rising", "a new laptop"]
    got = predictor.predict(predictor.load(info["id"]), texts)
    logits = TaskAdapter(store.path(info["id"])).logits(texts)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for g, p in zip(got, probs):
        np.testing.assert_allclose([g["probabilities"][n] for n in ("sport", "money", "tech")], p, atol=1e-5)
        assert g["label"] == ["sport", "money", "tech"][int(p.argmax())]


@pytest.mark.parametrize("args,match", [
    (["--generator", "/nonexistent/gen"], "--generator: generator not found at /nonexistent/gen"),
    (["--generator", "models:/raypdiff-generator/1", "serve.tracking_uri=sqlite:////nonexistent/mlflow.db"],
     "models:/raypdiff-generator/1: no MLflow store at sqlite:////nonexistent/mlflow.db"),
    (["--port", "0"], "serve.port: 0 is not a TCP port"),
    (["--replicas", "0"], "serve.replicas: must be >= 1"),
    (["serve.max_adapters=3"], "serve.max_adapters: must be >= 16"),
])
@pytest.mark.full  # a fresh interpreter per case
def test_serve_command_bad_input(args, match, tmp_path):
    """One line on stderr, exit 2, before any Ray starts."""
    import subprocess
    import sys

    from helpers import REPO, private_ray_env

    r = subprocess.run([sys.executable, "-m", "raypdiff.cli", "serve", *args], cwd=REPO, capture_output=True,
                       text=True, timeout=120, env=private_ray_env(tmp_path / "ray"))
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raypdiff: error: ") and match in lines[0], r.stderr[-2000:]
    assert not (tmp_path / "ray").exists()


def test_serve_command_unknown_registered_version(tiny_generator, tmp_path):
    import subprocess
    import sys

    from helpers import REPO, private_ray_env

    r = subprocess.run([sys.executable, "-m", "raypdiff.cli", "serve", "--generator", "models:/raypdiff-generator/99",
                        f"serve.tracking_uri={tiny_generator['uri']}"], cwd=REPO, capture_output=True, text=True,
                       timeout=120, env=private_ray_env(tmp_path / "ray"))
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(
        "raypdiff: error: models:/raypdiff-generator/99: cannot load from the MLflow store"), r.stderr[-2000:]
