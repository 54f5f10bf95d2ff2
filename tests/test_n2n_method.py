"""Noise-to-Norm protocol pieces: Eq. (1) and one tiny end-to-end run through the run store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repro.methods.n2n import add_noise, normalise
from repro.networks import count_parameters
from repro.networks.n2n import n2n_net


def test_equation_1_in_normalised_units_equals_blending_raw_images():
    """x = (1-l) x0 + l eps with eps ~ N(0.5, 0.5) in raw [0, 1] units, then normalised with
    mean 0.5 / std 0.5, is what add_noise computes on the normalised image."""
    raw = torch.rand(2, 3, 8, 8)
    lam = 0.3
    ours = add_noise(normalise(raw), lam, 0.5, torch.Generator().manual_seed(1))
    z = torch.randn(raw.shape, generator=torch.Generator().manual_seed(1))
    eps_raw = 0.5 + 0.5 * z  # N(0.5, 0.5), 0.5 read as the standard deviation
    expected = normalise((1 - lam) * raw + lam * eps_raw)
    assert torch.allclose(ours, expected, atol=1e-6)
    assert add_noise(raw, 0.0, 0.5) is raw  # lambda = 0: the plain autoencoder input


def test_noise_statistics():
    x0 = torch.zeros(4, 3, 64, 64)
    noisy = add_noise(x0, 0.4, 0.5, torch.Generator().manual_seed(0))
    assert abs(noisy.mean().item()) < 0.01 and abs(noisy.std().item() - 0.4) < 0.01


@pytest.mark.slow
def test_tiny_run_writes_a_complete_record(synthetic_root, scratch_store):
    from repro.experiments import run_cell, store_for
    from repro.runs import RunKey

    rec = run_cell("n2n", "main", "mpdd", "metal_plate", profile="smoke",
                   data_root=str(synthetic_root), device="cpu",
                   variant="default")
    m, x = rec["metrics"], rec["extra"]
    assert set(m) == {"image_auroc", "pixel_auroc", "pixel_ap", "aupro"}
    assert all(0.0 <= v <= 1.0 for v in m.values())
    assert x["params"] == count_parameters(n2n_net(width=8))
    assert x["latency_ms"] > 0 and x["train_images_per_s"] > 0
    assert 1 <= x["epochs"] <= 25 and len(x["history"]) == x["epochs"]
    assert x["n_val"] == round(0.2 * (x["n_train"] + x["n_val"]))
    arrays = store_for("smoke").arrays(RunKey(**rec["key"]))
    assert set(arrays) == {"index", "image", "reconstruction", "mask", "map", "score"}
    picked = [rec["extra"]["scores"][i] for i in arrays["index"]]  # the image score = max of map
    np.testing.assert_allclose(arrays["score"], picked, rtol=1e-6)
    assert all(rec["extra"]["labels"][i] == 1 for i in arrays["index"])
    assert arrays["image"].dtype == np.uint8 and arrays["mask"].any()
