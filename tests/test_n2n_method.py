"""Noise-to-Norm protocol pieces: Eq. (1) and one tiny end-to-end run through the run store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repro.methods.n2n import (
    BlurReconstruction,
    add_noise,
    blur_floor,
    image_scores,
    normalise,
)
from repro.networks import count_parameters
from repro.networks.n2n import n2n_net


def test_raw_noise_space_equals_blending_raw_images():
    """Variant noise_space=raw: x = (1-l) x0 + l eps with eps ~ N(0.5, 0.5) in raw [0, 1]
    units, then normalised with mean 0.5 / std 0.5, is what add_noise computes on the
    normalised image."""
    raw = torch.rand(2, 3, 8, 8)
    lam = 0.3
    ours = add_noise(normalise(raw), lam, 0.5, torch.Generator().manual_seed(1), space="raw")
    z = torch.randn(raw.shape, generator=torch.Generator().manual_seed(1))
    eps_raw = 0.5 + 0.5 * z  # N(0.5, 0.5), 0.5 read as the standard deviation
    expected = normalise((1 - lam) * raw + lam * eps_raw)
    assert torch.allclose(ours, expected, atol=1e-6)
    assert add_noise(raw, 0.0, 0.5) is raw  # lambda = 0: the plain autoencoder input


def test_literal_equation_1_is_blended_in_normalised_units():
    """Default noise_space=normalised: eps ~ N(0, 0.5) drawn in the units of the normalised x0
    (the literal Eq. 1), so x = (1-l) x0 + l * 0.5 * z."""
    x0 = normalise(torch.rand(2, 3, 8, 8))
    lam = 0.3
    ours = add_noise(x0, lam, 0.5, torch.Generator().manual_seed(1))
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(ours, (1 - lam) * x0 + lam * 0.5 * z, atol=1e-6)
    with pytest.raises(ValueError):
        add_noise(x0, lam, 0.5, space="other")


@pytest.mark.parametrize(("space", "std"), [("normalised", 0.5), ("raw", 1.0)])
def test_noise_statistics_in_normalised_units(space, std):
    """On a mid-grey image (0 in normalised units) the noisy input is lambda * eps: mean 0 and
    std lambda * 0.5 for the literal reading, lambda * 1.0 (twice) for the raw-units variant."""
    x0 = torch.zeros(4, 3, 64, 64)
    noisy = add_noise(x0, 0.4, 0.5, torch.Generator().manual_seed(0), space=space)
    assert abs(noisy.mean().item()) < 0.01
    assert noisy.std().item() == pytest.approx(0.4 * std, rel=0.02)


# --- image score rule (issue 11, point 1) --------------------------------------------------

def _flat(value=0.5, size=64):
    return torch.full((size, size), value)


def test_topk_mean_by_hand_and_max():
    m = torch.arange(100, dtype=torch.float32).view(1, 10, 10)
    assert float(image_scores(m, "max")[0]) == 99.0
    assert float(image_scores(m, "topk_mean", 0.05)[0]) == pytest.approx(np.mean(range(95, 100)))
    assert float(image_scores(m, "topk_mean", 0.001)[0]) == 99.0  # at least one pixel
    with pytest.raises(ValueError):
        image_scores(m, "median")


def test_score_rule_separates_a_bright_spot_and_does_not_saturate():
    """Hand-made maps near the ceiling (about alpha = 0.84, MS-SSIM 0): every map has single
    pixels at the ceiling (as the saturated real maps do), defective maps also carry a bright
    13 x 13 spot of rising strength. The maximum is the same for all of them; the top-1% mean
    ranks the spot above every spotless map and rises with the spot."""
    ceiling, maps, labels = 0.84, [], []
    g = torch.Generator().manual_seed(0)
    for i in range(6):  # normal: flat background with a few ceiling pixels (speckle)
        m = _flat(0.3 + 0.02 * i)
        m.view(-1)[torch.randperm(m.numel(), generator=g)[:5]] = ceiling
        maps.append(m)
        labels.append(0)
    for strength in (0.55, 0.6, 0.65, 0.7, 0.75, 0.8):  # defective: + a spot
        m = _flat(0.35)
        m.view(-1)[torch.randperm(m.numel(), generator=g)[:5]] = ceiling
        m[20:33, 30:43] = strength
        maps.append(m)
        labels.append(1)
    maps = torch.stack(maps)
    old = image_scores(maps, "max").numpy()
    new = image_scores(maps, "topk_mean", 0.01).numpy()
    assert np.ptp(old) == 0.0  # saturated: every image scores the ceiling
    labels = np.array(labels)
    assert new[labels == 1].min() > new[labels == 0].max()
    assert np.all(np.diff(new[labels == 1]) > 0)  # rises with the spot's strength
    assert len(np.unique(new)) == len(new)  # not constant


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
    assert set(arrays) == {"index", "image", "reconstruction", "mask", "map", "score",
                           "pixel_hist", "pixel_edges"}
    from repro.pixelstats import binned_auroc  # the per-image histograms give the pixel AUROC

    assert binned_auroc(arrays["pixel_hist"].sum(0)) == pytest.approx(
        rec["metrics"]["pixel_auroc"], abs=0.01)
    picked = [rec["extra"]["scores"][i] for i in arrays["index"]]
    np.testing.assert_allclose(arrays["score"], picked, rtol=1e-6)
    # the image score is the configured rule (top-1% mean) of the map; both rules are stored
    assert rec["config"]["score_rule"] == "topk_mean"
    assert x["scores"] == x["scores_by_rule"]["topk_mean"]
    stored = image_scores(torch.from_numpy(arrays["map"].astype(np.float32)), "topk_mean",
                          rec["config"]["score_topk"]).numpy()
    np.testing.assert_allclose(stored, picked, atol=2e-3)  # the stored maps are float16
    assert all(a >= b for a, b in zip(x["scores_by_rule"]["max"], x["scores"], strict=True))
    assert len(x["border_profile"]) > 1 and x["border"]["interior_mean"] > 0
    assert all(rec["extra"]["labels"][i] == 1 for i in arrays["index"])
    assert arrays["image"].dtype == np.uint8 and arrays["mask"].any()


# --- the no-learning floor (issue 11, point 5) ---------------------------------------------

def test_blur_reconstruction_matches_scipy():
    from scipy.ndimage import gaussian_filter

    x = torch.rand(2, 3, 20, 24, dtype=torch.float64)
    out = BlurReconstruction(1.5, gain=0.7)(x)
    ref = gaussian_filter(x.numpy(), (0, 0, 1.5, 1.5), mode="nearest", truncate=4.0) / 0.7
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-6)  # the kernel is float32


def test_blur_floor_picks_the_sigma_with_the_lowest_validation_loss(tmp_path):
    from repro.profiles import paper_config
    from repro.runs import RunContext, RunKey

    cfg = paper_config("n2n", "smoke")
    cfg["blur_sigmas"] = [0.5, 2.0, 8.0]
    key = RunKey("n2n", "main", "mpdd", "metal_plate", "reconstruction=blur", 0, "smoke")
    ctx = RunContext(key, cfg, torch.device("cpu"), tmp_path)
    # smooth images: their best blur removes the noise without losing much structure
    x = torch.nn.functional.avg_pool2d(torch.rand(4, 3, 40, 40) * 2 - 1, 9, stride=1,
                                       padding=4, count_include_pad=False)
    net, facts = blur_floor(ctx, x)
    losses = facts["blur_val_losses"]
    assert set(losses) == {"0.5", "2.0", "8.0"}
    assert facts["best_val_loss"] == min(losses.values()) == losses[str(net.sigma)]
    assert net.gain == pytest.approx(1 - cfg["lam"]) and facts["params"] == 0
    assert len(set(losses.values())) == 3
