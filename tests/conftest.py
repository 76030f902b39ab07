"""Shared fixtures: the real data root (the repo's sibling `shared/data`, or RAYPDIFF_DATA_DIR)."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import REPO, data_root


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if not (root / "glue").is_dir():
        pytest.skip(f"real GLUE data not found at {root}")
    return root


@pytest.fixture(scope="session")
def repo_dir() -> Path:
    return REPO
