"""The generator checkpoint: safetensors + JSON round trip, migration of the pickled generator.pt, and pickles refused
with one error line (nothing in them runs)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors import safe_open
from test_generator_units import COND

from raypdiff import checkpoint, cli
from raypdiff.config import ConfigError
from raypdiff.generate import Generator


def legacy_payload(cfg, state, prep) -> dict:
    """What version 1's train.save_generator pickled into generator.pt."""
    return {"config": cfg.to_dict(), "ae": state["ae"], "denoiser_ema": state["ema"], "denoiser": state["denoiser"],
            "latent_stats": state["latent_stats"], "history": state["history"],
            **{k: prep[k] for k in ("normalizer", "bank", "task_names", "num_params", "tasks", "zoo", "base_model",
                                    "lora", "examples")}, "domain": "text", "base_fingerprint": None}


class Payload:
    """A pickle that runs code when unpickled: it would create `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_round_trip_keeps_every_tensor_and_field(tiny_state, tmp_path):
    cfg, state, prep = tiny_state
    saved = checkpoint.from_training(cfg, state, prep)
    path = checkpoint.save(tmp_path / checkpoint.GENERATOR_FILE, saved)
    back = checkpoint.load(tmp_path)  # the folder or the file
    for part in ("ae", "denoiser", "latent_stats"):
        a, b = getattr(saved, part), getattr(back, part)
        assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a), part
    assert sorted(back.bank) == ["a", "b"] and all(np.array_equal(back.bank[t], prep["bank"][t]) for t in back.bank)
    for k, (m, s) in prep["normalizer"]["stats"].items():
        np.testing.assert_array_equal(back.normalizer["stats"][k][0], m)
        np.testing.assert_array_equal(back.normalizer["stats"][k][1], s)
    for f in ("config", "task_names", "num_params", "tasks", "base_model", "lora", "examples", "history", "zoo"):
        assert getattr(back, f) == json.loads(json.dumps(getattr(saved, f))), f
    with safe_open(str(path), framework="pt") as f:  # a plain safetensors file: the header says what it is
        meta = f.metadata()
    assert meta["format"] == checkpoint.FORMAT and meta["version"] == str(checkpoint.VERSION)
    assert json.loads(meta["raypdiff"])["task_names"] == ["a", "b"]


def test_migrated_generator_samples_as_before(tiny_state, tmp_path):
    cfg, state, prep = tiny_state
    torch.save(legacy_payload(cfg, state, prep), tmp_path / checkpoint.LEGACY_FILE)
    with pytest.raises(ConfigError, match="raypdiff migrate"):
        Generator(tmp_path)  # a pickled generator is never loaded
    assert cli.main(["migrate", str(tmp_path)]) == 0
    direct = checkpoint.save(tmp_path / "direct" / checkpoint.GENERATOR_FILE, checkpoint.from_training(cfg, state, prep))
    migrated, fresh = Generator(tmp_path), Generator(direct)
    assert migrated.path.name == checkpoint.GENERATOR_FILE
    cond = migrated.conditions("a", 3)
    assert cond.shape == (3, COND + 1)
    np.testing.assert_array_equal(migrated.vectors(cond, "a", seed=2), fresh.vectors(cond, "a", seed=2))


@pytest.mark.parametrize("where", ["folder", "file", "migrate", "serve"])
def test_a_malicious_pickle_is_refused_in_one_line(tmp_path, capsys, where):
    marker = tmp_path / "pwned"
    bad = tmp_path / "gen" / checkpoint.LEGACY_FILE
    bad.parent.mkdir()
    torch.save({"denoiser_ema": Payload(marker)}, bad)
    argv = {"folder": ["generate", "--generator", str(bad.parent), "--task", "a", "--out", str(tmp_path / "o")],
            "file": ["generate", "--generator", str(bad), "--task", "a", "--out", str(tmp_path / "o")],
            "migrate": ["migrate", str(bad)],
            "serve": ["serve", "--generator", str(bad.parent)]}[where]
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raypdiff: error: "), err
    assert ("refused" if where == "migrate" else "never loaded") in err[0], err[0]
    assert not marker.exists(), "the pickle's code ran"
    assert not (tmp_path / "gen" / checkpoint.GENERATOR_FILE).exists()


def test_a_newer_checkpoint_version_is_one_line(tiny_state, tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / checkpoint.GENERATOR_FILE),
              metadata={"format": checkpoint.FORMAT, "version": str(checkpoint.VERSION + 1), "raypdiff": "{}"})
    with pytest.raises(ConfigError, match="upgrade raypdiff"):
        checkpoint.load(tmp_path)


def test_a_damaged_header_is_one_line(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / checkpoint.GENERATOR_FILE),
              metadata={"format": checkpoint.FORMAT, "version": "x", "raypdiff": "{}"})
    with pytest.raises(ConfigError, match="damaged raypdiff generator checkpoint"):
        checkpoint.load(tmp_path)


def test_a_numpy_1_pickle_migrates(tiny_state, tmp_path):
    """numpy 1.x names its array rebuilder numpy.core.multiarray, numpy 2.x numpy._core.multiarray: both migrate."""
    cfg, state, prep = tiny_state
    torch.save(legacy_payload(cfg, state, prep), tmp_path / checkpoint.LEGACY_FILE)
    raw = (tmp_path / checkpoint.LEGACY_FILE).read_bytes()
    import zipfile

    src = zipfile.ZipFile(tmp_path / checkpoint.LEGACY_FILE)
    old = tmp_path / "old" / checkpoint.LEGACY_FILE
    old.parent.mkdir()
    with zipfile.ZipFile(old, "w") as z:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            z.writestr(item, data)
    assert raw and b"numpy.core.multiarray" in zipfile.ZipFile(old).read(
        next(n for n in zipfile.ZipFile(old).namelist() if n.endswith("data.pkl")))
    assert checkpoint.migrate(old).is_file()
