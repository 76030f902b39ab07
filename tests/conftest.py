"""Shared fixtures: the real data root (the repo's sibling `shared/data`, or RAYPDIFF_DATA_DIR)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    env = os.environ.get("RAYPDIFF_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if not (root / "glue").is_dir():
        pytest.skip(f"real GLUE data not found at {root}")
    return root


@pytest.fixture(scope="session")
def repo_dir() -> Path:
    return REPO
