"""Shared fixtures: the real pieces in ../shared/data (skipped when absent) and small
synthetic datasets written once per session."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

# tests that kill and resume runs need a checkpoint at every offer, not every 10 minutes
os.environ.setdefault("REPRO_CHECKPOINT_S", "0")

REPO = Path(__file__).resolve().parents[1]
_getaddrinfo = socket.getaddrinfo


def _local_only(host, *args, **kwargs):
    """CI has no network: a name lookup for anything but this machine fails here as it does
    there, so a test that would download (anomalib's DTD, torchvision weights) fails on every
    machine, not only in CI."""
    name = host.decode() if isinstance(host, bytes) else host
    try:
        ipaddress.ip_address(name)  # a numeric address needs no lookup
    except (TypeError, ValueError):
        if name not in (None, "", "localhost", socket.gethostname(), socket.getfqdn()):
            raise socket.gaierror(socket.EAI_NONAME,
                                  f"tests run offline: lookup of {name!r}") from None
    return _getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", _local_only)
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
