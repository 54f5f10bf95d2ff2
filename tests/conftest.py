"""Shared fixtures: the real pieces in ../shared/data (skipped when absent) and small
synthetic datasets written once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# tests that kill and resume runs need a checkpoint at every offer, not every 10 minutes
os.environ.setdefault("REPRO_CHECKPOINT_S", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real dataset pieces not found at {SHARED_DATA} (only on the team's "
                    "machines; see README 'Data')")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic DATA_ROOT with every format (64 px images)."""
    from repro.data.synthetic import SyntheticSpec, write_all

    root = tmp_path_factory.mktemp("synthetic")
    write_all(root, SyntheticSpec(image_size=64, loco_size=(48, 64), n_train=8, n_test_good=4,
                                  n_test_defect_per_type=2, n_validation=4))
    return root


@pytest.fixture
def scratch_store(tmp_path, monkeypatch) -> Path:
    """Run records and caches in a fresh temporary folder, computing allowed."""
    monkeypatch.setenv("REPRO_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("REPRO_READONLY", raising=False)
    return tmp_path
