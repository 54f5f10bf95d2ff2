"""POUTA protocol pieces: the losses against hand computations and pytorch-msssim, DRAEM's image
score rule, few-shot support lists, and a tiny end-to-end run per kind of table cell."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pytorch_msssim import ssim as reference_ssim
from torch.nn import functional as F

from repro.methods.pouta import focal_loss, image_scores, reconstruction_loss, segmentation_loss


def test_focal_loss_by_hand():
    probs = torch.tensor([[0.9, 0.2], [0.1, 0.8]]).view(1, 2, 1, 2)  # p(normal), p(anomaly)
    mask = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2)
    pt = torch.tensor([0.9, 0.8]) * (1 - 1e-5) + torch.tensor([0.1, 0.2]) * 1e-5 + 1e-5
    expected = (-(1 - pt) ** 2 * pt.log()).mean()
    assert torch.isclose(focal_loss(probs, mask, 2.0), expected, rtol=1e-5)
    # gamma 0 is the cross-entropy of the (smoothed) probabilities
    assert torch.isclose(focal_loss(probs, mask, 0.0), -pt.log().mean(), rtol=1e-5)


def test_segmentation_loss_adds_l1_of_the_anomaly_probability():
    logits = torch.randn(2, 2, 4, 4)
    mask = (torch.rand(2, 1, 4, 4) > 0.5).float()
    p = logits.softmax(1)
    expected = focal_loss(p, mask, 2.0) + (p[:, 1:] - mask).abs().mean()
    assert torch.isclose(segmentation_loss(logits, mask, 2.0), expected)


def test_reconstruction_loss_is_mse_plus_one_minus_ssim():
    """SSIM with an 11x11 Gaussian window (sigma 1.5) equals pytorch-msssim's ``ssim``."""
    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    expected = F.mse_loss(a, b) + 1 - reference_ssim(a, b, data_range=1.0, size_average=True)
    assert torch.isclose(reconstruction_loss(a, b, 1.5), expected, atol=1e-5)
    assert reconstruction_loss(a, a, 1.5).abs() < 1e-6


def test_image_score_is_max_of_21x21_average_pool():
    maps = torch.zeros(1, 64, 64)
    maps[0, 10:13, 20:23] = 1.0  # a 3x3 blob: its 21x21 average is 9/441 at best
    assert torch.isclose(image_scores(maps, 21), torch.tensor([9 / 441]))
    ref = F.avg_pool2d(maps[:, None], 21, stride=1, padding=10).amax()
    assert torch.isclose(image_scores(maps, 21)[0], ref)


@pytest.mark.slow
def test_tiny_runs_write_records_and_support_lists(synthetic_root, scratch_store, tmp_path):
    from repro.experiments import run_cell

    kw = dict(profile="smoke", data_root=str(synthetic_root), device="cpu")
    full = run_cell("pouta", "main", "mvtec_ad", "toothbrush", variant="epochs=2", **kw)
    assert set(full["metrics"]) == {"image_auroc", "pixel_auroc", "pixel_ap", "aupro"}
    assert all(0 <= v <= 1 for v in full["metrics"].values())
    assert len(full["extra"]["history"]) == 2 and "mss" in full["extra"]["history"][0]
    assert full["extra"]["cost"]["macs"] > 0 and full["extra"]["cost"]["latency_ms"] > 0

    vanilla = run_cell("pouta", "main", "mvtec_ad", "toothbrush", variant="epochs=2,"
                       "model=vanilla", **kw)
    assert "mss" not in vanilla["extra"]["history"][0]
    assert vanilla["extra"]["cost"]["params"] > full["extra"]["cost"]["params"]

    shots = run_cell("pouta", "main", "mvtec_ad", "toothbrush", variant="epochs=2,shots=2", **kw)
    assert shots["extra"]["n_train"] == 2
    support = tmp_path / "results" / "smoke" / "support" / "mvtec_ad__toothbrush__k2__seed0.json"
    listed = json.loads(support.read_text())["files"]
    assert len(listed) == 2 and all(f.startswith("toothbrush/train/good/") for f in listed)
    # a committed list is reused as is: edit it (three images now), and the run follows the file
    payload = json.loads(support.read_text())
    extra = sorted(p.name for p in (synthetic_root / "mvtec_ad" / "toothbrush" / "train" / "good")
                   .iterdir() if f"toothbrush/train/good/{p.name}" not in listed)[0]
    payload["files"] = [*listed, f"toothbrush/train/good/{extra}"]
    support.write_text(json.dumps(payload))
    again = run_cell("pouta", "main", "mvtec_ad", "toothbrush", variant="epochs=1,shots=2", **kw)
    assert again["extra"]["train_images"] == f"support set {support.name}"
    assert again["extra"]["n_train"] == 3
    assert np.isfinite(again["metrics"]["image_auroc"])
