"""TSDN protocol pieces: the loss terms of Eq. 3 against hand computations and pytorch-msssim,
the score map of Eq. 4, the test-set normalisation, and tiny end-to-end runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_msssim import ssim as reference_ssim
from sklearn.metrics import roc_auc_score
from torch.nn import functional as F

from repro.experiments import _tsdn_weights
from repro.kernels import gaussian_blur
from repro.kernels.gms import msgms_loss
from repro.methods.tsdn import (
    channel_correlation,
    encoder_choice,
    fne_loss,
    l2_loss,
    losses,
    normalise,
    score_maps,
    total_loss,
)
from repro.networks.tsdn import B5_WEIGHTS_FILE, build, fne_target
from repro.profiles import paper_config

CFG = paper_config("tsdn", "smoke")


def tiny(variant: str, **kw):
    return build(variant, encoder_name="efficientnet_lite0", encoder_weights=None, c=8,
                 widths=(8, 8, 8, 8, 8), fne_channels=4, fne_hidden=(8, 8), image_size=64, **kw)


def test_score_map_is_the_blurred_per_pixel_l2_distance():
    x = torch.zeros(1, 3, 32, 32)
    r = torch.zeros(1, 3, 32, 32)
    r[0, :, 15, 16] = torch.tensor([3.0, 4.0, 0.0])  # ||(3, 4, 0)|| = 5 at one pixel
    raw = score_maps(x, r, 0.0)
    assert raw[0, 15, 16] == 5 and raw.sum() == 5
    blurred = score_maps(x, r, 1.5)
    assert torch.allclose(blurred, gaussian_blur(raw[:, None], 1.5)[:, 0])
    assert torch.isclose(blurred.sum(), torch.tensor(5.0), rtol=1e-4)  # away from the border


def test_normalisation_over_the_test_set_keeps_the_aurocs():
    torch.manual_seed(0)
    maps = torch.rand(6, 4, 4) * 7 + 2
    norm = normalise(maps)
    assert norm.min() == 0 and norm.max() == 1
    labels = [0, 0, 1, 1, 0, 1]
    raw_scores, scores = maps.flatten(1).amax(1), norm.flatten(1).amax(1)
    assert roc_auc_score(labels, raw_scores) == roc_auc_score(labels, scores)


@pytest.mark.parametrize("variant,terms", [("t4_A", "rsg"), ("t4_E", "rsgm"),
                                           ("tsdn", "rsgmf")])
def test_loss_terms_of_eq3(variant, terms):
    torch.manual_seed(0)
    model = tiny(variant).train()
    clean = torch.rand(2, 3, 64, 64)
    surf_mask = (torch.rand(2, 1, 64, 64) > 0.8).float()
    out = model(clean)
    got = losses(out, clean, surf_mask, CFG)
    assert "".join(got) == terms
    r = out["reconstruction"]
    distance = lambda a, b: (a - b).pow(2).sum(1).sqrt().mean()  # noqa: E731
    assert CFG["l2_reading"] == "distance" and CFG["fne_reduction"] == "sum"
    assert CFG["fne_grad"] == "fne_loss"
    assert torch.isclose(got["r"], distance(r, clean))
    assert torch.isclose(got["s"], 1 - reference_ssim(r, clean, data_range=1.0), atol=1e-5)
    assert torch.isclose(got["g"], msgms_loss(r, clean))
    if "m" in got:
        assert torch.isclose(got["m"], (out["mask"] - surf_mask).abs().mean())  # 1 channel
    if "f" in got:
        target = fne_target(out["f32"], out["mask"])
        assert not target.requires_grad
        bce = F.binary_cross_entropy(out["w"], target, reduction="none")  # (B, C)
        assert torch.isclose(got["f"], bce.sum(1).mean())
    w = CFG["loss_weights"]
    expected = sum(w[k] * v for k, v in got.items())
    assert torch.isclose(total_loss(got, CFG), expected)
    assert w == {"r": 1.0, "s": 0.5, "g": 1.0, "m": 1.0, "f": 5e-5}  # printed, Sec. 3.1


def test_l2_readings_on_a_hand_made_error():
    x = torch.zeros(1, 3, 4, 5)
    r = x.clone().requires_grad_(True)
    with torch.no_grad():
        r[0, :, 1, 2] = torch.tensor([3.0, 4.0, 0.0])  # one pixel 5 away, 19 exact pixels
    assert torch.isclose(l2_loss(r, x, "distance"), torch.tensor(5 / 20))
    assert torch.isclose(l2_loss(r, x, "mse"), torch.tensor(25 / 60))
    l2_loss(r, x, "distance").backward()
    assert torch.isfinite(r.grad).all()  # sqrt at the exact pixels: gradient 0, not NaN
    assert torch.allclose(r.grad[0, :, 1, 2], torch.tensor([3.0, 4.0, 0.0]) / 5 / 20)
    assert r.grad.abs().sum() == r.grad[0, :, 1, 2].abs().sum()
    with pytest.raises(ValueError, match="l2_reading"):
        l2_loss(r, x, "l2")


def test_msgms_cannot_tell_an_inverted_reconstruction():
    """Why the skip models could invert colours under the MSE reading: L_g of R = 1 - I is 0."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    assert msgms_loss(1 - x, x) < 1e-6 < msgms_loss(x.flip(-1), x)
    assert l2_loss(1 - x, x, "distance") > l2_loss(1 - x, x, "mse") > 0


def test_fne_loss_reductions():
    torch.manual_seed(0)
    w, target = torch.rand(4, 6).clamp(0.01, 0.99), torch.rand(4, 6)
    mean = fne_loss(w, target, "mean")
    assert torch.isclose(mean, F.binary_cross_entropy(w, target))
    assert torch.isclose(fne_loss(w, target, "sum"), 6 * mean)  # the sum over C, per sample
    assert torch.isclose(fne_loss(w, target, "batch_sum"), 24 * mean)
    with pytest.raises(ValueError, match="fne_reduction"):
        fne_loss(w, target, "max")


def test_channel_correlation_matches_numpy():
    torch.manual_seed(0)
    a, b = torch.rand(3, 10), torch.rand(3, 10)
    got = channel_correlation(a, b)
    want = [np.corrcoef(a[i].numpy(), b[i].numpy())[0, 1] for i in range(3)]
    assert np.allclose(got.numpy(), want, atol=1e-6)
    assert torch.allclose(channel_correlation(a, 2 * a + 1), torch.ones(3))


def test_encoder_choice_and_standin_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = {**CFG, "b5_weights": "auto"}
    assert encoder_choice(cfg) == ("efficientnet_lite0", "packaged")  # no file: stand-in
    assert encoder_choice({**CFG, "b5_weights": None})[0] == "efficientnet_lite0"
    assert _tsdn_weights({"b5_weights": None})["standin"] is True
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / B5_WEIGHTS_FILE).write_bytes(b"")
    resolved = f"torch_home:{B5_WEIGHTS_FILE}"
    assert encoder_choice(cfg) == ("efficientnet_b5", resolved)
    assert encoder_choice({**CFG, "b5_weights": resolved}) == ("efficientnet_b5", resolved)
    assert _tsdn_weights({"b5_weights": resolved})["standin"] is False


@pytest.mark.slow
def test_tiny_runs_write_records(synthetic_root, scratch_store):
    from repro.experiments import run_cell

    kw = dict(profile="smoke", data_root=str(synthetic_root), device="cpu")
    full = run_cell("tsdn", "main", "mvtec_ad", "grid", variant="epochs=2", **kw)
    assert set(full["metrics"]) == {"image_auroc", "pixel_auroc", "pixel_ap", "aupro"}
    assert all(0 <= v <= 1 for v in full["metrics"].values())
    assert set(full["extra"]["history"][0]) == {"epoch", "r", "s", "g", "m", "f", "mse",
                                                "w_corr", "w_std"}
    assert full["extra"]["encoder"] == "efficientnet_lite0"
    assert "Lite0" in full["weights"]["note"] and full["weights"]["standin"] is True
    n_test = full["extra"]["n_test"]
    assert len(full["extra"]["fne_test"]["w_corr"]) == n_test
    assert all(-1 <= v <= 1 for v in full["extra"]["fne_test"]["w_corr"])
    cost = full["extra"]["cost"]
    assert cost["params"] > 0 and cost["macs"] > 0 and cost["latency_ms"] > 0
    assert full["extra"]["train_images_per_s"] > 0
    # the per-image pixel histograms give back the run's pixel AUROC (repro.claims)
    from repro.experiments import store_for
    from repro.pixelstats import binned_auroc
    from repro.runs import RunKey

    arrays = store_for("smoke").arrays(RunKey(**full["key"]))
    assert arrays["pixel_hist"].shape == (n_test, 2, 256)
    assert binned_auroc(arrays["pixel_hist"].sum(0)) == pytest.approx(
        full["metrics"]["pixel_auroc"], abs=0.01)

    ae = run_cell("tsdn", "main", "mvtec_ad", "grid", variant="epochs=1,model=t4_A", **kw)
    assert set(ae["extra"]["history"][0]) == {"epoch", "r", "s", "g", "mse"}
    assert ae["extra"]["fne_test"] is None
    assert ae["extra"]["flags"] == {"two_stream": False, "skips": False, "gate": "none",
                                    "surf": False}
    assert ae["extra"]["cost"]["params"] < cost["params"]
    assert np.isfinite(ae["metrics"]["pixel_auroc"])


@pytest.mark.parametrize("variant", ["t3_C", "tsdn"])
def test_fne_grad_decides_which_loss_trains_the_fne(variant):
    """fne_grad (issue 11, point 6): "fne_loss" gives the same outputs as "joint", yet the
    reconstruction's gradient no longer reaches the FNE's weights; L_FNE's does under both."""
    outs, models = {}, {}
    for reading in ("fne_loss", "joint"):
        torch.manual_seed(0)
        models[reading] = tiny(variant, fne_grad=reading).train()
        torch.manual_seed(1)
        outs[reading] = models[reading](torch.rand(2, 3, 64, 64))
    for k in outs["joint"]:
        torch.testing.assert_close(outs["fne_loss"][k], outs["joint"][k], rtol=0, atol=0)
    for reading, reaches in (("fne_loss", False), ("joint", True)):
        params = list(models[reading].fne.parameters())
        grads = torch.autograd.grad(outs[reading]["reconstruction"].square().mean(), params,
                                    allow_unused=True, retain_graph=True)
        assert any(g is not None and g.abs().any() for g in grads) == reaches, reading
        target = torch.rand_like(outs[reading]["w"])
        grads = torch.autograd.grad(fne_loss(outs[reading]["w"], target, "sum"), params)
        assert all(g.abs().any() for g in grads[-2:])  # the last layer learns from L_FNE
    with pytest.raises(ValueError, match="fne_grad"):
        tiny(variant, fne_grad="both")
