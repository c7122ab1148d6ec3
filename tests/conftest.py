"""Shared fixtures: tiny models of every family, the embedded default, shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The project's shared folder (``$LAPE_SHARED_DIR`` or ``../shared``)."""
    return Path(os.environ.get("LAPE_SHARED_DIR", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """The paper's published neuron sets; tests that need them skip when absent."""
    path = shared_dir() / "data" / "official-lape-neurons"
    if not path.is_dir():
        pytest.skip(f"published neuron sets not found at {path}")
    return path


@pytest.fixture(scope="session")
def default_model():
    """The embedded Gemma 3 270M (converted on first use, cached afterwards)."""
    from lape_utils import load_model

    return load_model("gemma-3-270m")


_TINY: dict = {}


@pytest.fixture
def tiny():
    """Factory of tiny random models: ``tiny("llama")``, cached per family."""
    from lape_utils import load_model

    def make(family: str = "llama"):
        if family not in _TINY:
            _TINY[family] = load_model(f"tiny-{family}")
        return _TINY[family]

    return make


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip where there is no CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
