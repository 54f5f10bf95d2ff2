"""Tests for repro.kernels.msssim (dense SSIM / MS-SSIM and Zhao's MS-SSIM + L1 mix loss)."""

from __future__ import annotations

import importlib
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from repro.kernels.msssim import (
    SIGMAS,
    gaussian_window,
    mix_loss,
    mix_map,
    ms_ssim_map,
    ssim_components,
    ssim_map,
)
from repro.kernels.smoothing import gaussian_kernel1d

pytorch_msssim = pytest.importorskip("pytorch_msssim")
skmetrics = pytest.importorskip("skimage.metrics")


def _pair(shape=(2, 3, 64, 64), lo=0.0, hi=1.0, noise=0.15, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    # some spatial structure so that the local statistics are not all alike
    x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
    y = (x + noise * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    scale = hi - lo
    return (lo + scale * x).to(dtype), (lo + scale * y).to(dtype)


RANGES = [(0.0, 1.0, 1.0), (-1.0, 1.0, 2.0)]  # (lo, hi, data_range)


# ----------------------------------------------------------------------------- windows
def test_gaussian_window_defaults():
    for s in SIGMAS:
        w = gaussian_window(s)
        assert w.dtype == torch.float32 and w.dim() == 1
        assert w.numel() == 2 * int(np.ceil(2 * s)) + 1
        assert float(w.sum()) == pytest.approx(1.0, abs=1e-6)
        assert torch.equal(w, w.flip(0))
    assert gaussian_window(8.0).numel() == 33  # = 4 * sigma_max + 1 of the dense ports
    # same window as the smoothing module's kernel with truncate = 2
    torch.testing.assert_close(gaussian_window(8.0), gaussian_kernel1d(8.0, truncate=2.0))
    # pytorch-msssim's window: 11 taps, sigma 1.5
    ref = importlib.import_module("pytorch_msssim.ssim")._fspecial_gauss_1d(11, 1.5).flatten()
    torch.testing.assert_close(gaussian_window(1.5, radius=5), ref, atol=1e-7, rtol=0)
    w64 = gaussian_window(2.0, radius=7, dtype=torch.float64)
    assert w64.dtype == torch.float64 and w64.numel() == 15
    with pytest.raises(ValueError):
        gaussian_window(0.0)


# ----------------------------------------------------------------------------- references
@pytest.mark.parametrize("lo,hi,data_range", RANGES)
def test_ssim_matches_pytorch_msssim(lo, hi, data_range):
    """pytorch_msssim.ssim: separable 11-tap Gaussian (sigma 1.5) with valid convolution,
    K = (0.01, 0.03), map averaged over pixels then channels (then the batch)."""
    x, y = _pair(lo=lo, hi=hi)
    ours = ssim_map(x, y, sigma=1.5, radius=5, padding="valid", data_range=data_range)
    assert ours.shape == (2, 3, 54, 54)
    ref = pytorch_msssim.ssim(x, y, data_range=data_range, win_size=11, win_sigma=1.5,
                              size_average=True)
    assert abs(float(ours.mean()) - float(ref)) < 1e-5
    ref_per_image = pytorch_msssim.ssim(x, y, data_range=data_range, win_size=11,
                                        win_sigma=1.5, size_average=False)
    torch.testing.assert_close(ours.mean(dim=(1, 2, 3)), ref_per_image, atol=1e-5, rtol=0)


@pytest.mark.parametrize("lo,hi,data_range", RANGES)
def test_ssim_matches_skimage(lo, hi, data_range):
    """skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False): it forces truncate=3.5 -> radius int(3.5 * 1.5 + 0.5) = 5,
    i.e. the same 11-tap window (a user truncate is ignored), filters with scipy
    mode="reflect" (half-sample symmetric, which no torch mode reproduces) and reports the mean
    of the map cropped by 5 px on each side. Away from the border the padding does not matter,
    so compared are (a) that cropped mean with the mean of our "valid" map, per image, and
    (b) the interior [5:-5, 5:-5] of skimage's full map with our "valid" map, per pixel."""
    x, y = _pair(lo=lo, hi=hi)
    ours = ssim_map(x, y, sigma=1.5, radius=5, padding="valid", data_range=data_range)
    for b in range(x.shape[0]):
        mssim, full = skmetrics.structural_similarity(
            x[b].numpy(), y[b].numpy(), gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=data_range, channel_axis=0, full=True)
        assert abs(float(ours[b].mean()) - mssim) < 1e-5
        # per pixel, float32 rounding (both sides compute in float32) reaches ~1e-5 where the
        # local variances are small
        np.testing.assert_allclose(ours[b].numpy(), full[:, 5:-5, 5:-5], atol=5e-5, rtol=0)
    # float64 inputs agree to rounding error
    xd, yd = x.double(), y.double()
    ours64 = ssim_map(xd, yd, sigma=1.5, radius=5, padding="valid", data_range=data_range)
    _, full = skmetrics.structural_similarity(
        xd[0].numpy(), yd[0].numpy(), gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=data_range, channel_axis=0, full=True)
    np.testing.assert_allclose(ours64[0].numpy(), full[:, 5:-5, 5:-5], atol=1e-10, rtol=0)


def _scipy_ms_ssim(x: np.ndarray, y: np.ndarray, data_range: float, mode: str) -> np.ndarray:
    """Independent float64 reference: scipy Gaussian filters with truncate=2 (radius
    int(2 sigma + 0.5) = ceil(2 sigma) for SIGMAS); scipy "mirror" = torch "reflect"."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def g(t, s):
        return gaussian_filter(t, (0, 0, s, s), mode=mode, truncate=2.0)

    prod = 1.0
    for s in SIGMAS:
        mx, my = g(x, s), g(y, s)
        vx, vy, vxy = g(x * x, s) - mx**2, g(y * y, s) - my**2, g(x * y, s) - mx * my
        prod = prod * (2 * vxy + c2) / (vx + vy + c2)
    return prod * (2 * mx * my + c1) / (mx**2 + my**2 + c1)


@pytest.mark.parametrize("padding,mode", [("reflect", "mirror"), ("replicate", "nearest")])
def test_ms_ssim_and_mix_match_scipy_reference(padding, mode):
    x, y = _pair(shape=(2, 3, 48, 40), lo=-1, hi=1, dtype=torch.float64)
    ms = ms_ssim_map(x, y, data_range=2.0, padding=padding)
    assert ms.shape == x.shape and ms.dtype == torch.float64
    ref = _scipy_ms_ssim(x.numpy(), y.numpy(), 2.0, mode)
    np.testing.assert_allclose(ms.numpy(), ref, atol=1e-10, rtol=0)
    alpha = 0.84
    l1 = gaussian_filter(np.abs(x.numpy() - y.numpy()), (0, 0, 8, 8), mode=mode, truncate=2.0)
    ref_mix = (alpha * (1 - ref) + (1 - alpha) * l1 / 2.0).mean(axis=1, keepdims=True)
    mm = mix_map(x, y, alpha, data_range=2.0, padding=padding)
    assert mm.shape == (2, 1, 48, 40)
    np.testing.assert_allclose(mm.numpy(), ref_mix, atol=1e-10, rtol=0)
    assert float(mix_loss(x, y, alpha, data_range=2.0, padding=padding)) == pytest.approx(
        ref_mix.mean(), abs=1e-10)


def test_valid_padding_is_the_interior_of_same_padding():
    x, y = _pair(shape=(1, 2, 50, 45))
    full = ms_ssim_map(x, y, data_range=1.0)
    valid = ms_ssim_map(x, y, data_range=1.0, padding="valid")
    assert valid.shape == (1, 2, 50 - 32, 45 - 32)
    torch.testing.assert_close(valid, full[..., 16:-16, 16:-16], atol=1e-6, rtol=0)
    l_map, cs_map = ssim_components(x, y, 2.0, data_range=1.0, padding="valid")
    assert l_map.shape == cs_map.shape == (1, 2, 42, 37)


def test_common_radius_option():
    """radius=16 = one 33-tap support for every sigma (the dense ports); the per-sigma default
    truncates the small sigmas at 2 sigma, which changes the map only slightly."""
    x, y = _pair(shape=(1, 3, 64, 64), lo=-1, hi=1, dtype=torch.float64)
    ms16 = ms_ssim_map(x, y, data_range=2.0, radius=16)
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    prod = 1.0
    for s in SIGMAS:
        w = gaussian_window(s, radius=16, dtype=torch.float64)
        w2 = (w[:, None] * w[None, :]).expand(15, 1, 33, 33)  # direct 2-D conv reference
        xp, yp = F.pad(x, (16,) * 4, mode="reflect"), F.pad(y, (16,) * 4, mode="reflect")
        f = F.conv2d(torch.cat([xp, yp, xp * xp, yp * yp, xp * yp], 1), w2, groups=15)
        mx, my, xx, yy, xy = f.chunk(5, 1)
        prod = prod * (2 * (xy - mx * my) + c2) / (xx - mx**2 + yy - my**2 + c2)
    ref = prod * (2 * mx * my + c1) / (mx**2 + my**2 + c1)
    torch.testing.assert_close(ms16, ref, atol=1e-10, rtol=0)
    diff = (ms16 - ms_ssim_map(x, y, data_range=2.0)).abs()
    assert 0 < float(diff.mean()) < 0.02


# ----------------------------------------------------------------------------- properties
def test_identical_images():
    x, _ = _pair(shape=(2, 3, 40, 40), lo=-1, hi=1)
    ms = ms_ssim_map(x, x, data_range=2.0)
    torch.testing.assert_close(ms, torch.ones_like(ms), atol=1e-6, rtol=0)
    mm = mix_map(x, x, 0.84, data_range=2.0)
    assert mm.shape == (2, 1, 40, 40)
    assert float(mm.abs().max()) < 1e-6
    y = x.clone().requires_grad_(True)
    loss = mix_loss(x, y, 0.84, data_range=2.0)
    assert abs(loss.item()) < 1e-6
    loss.backward()
    assert float(y.grad.abs().max()) < 1e-6


def test_different_images_positive_loss_and_gradient():
    x, y = _pair(shape=(2, 3, 40, 40), lo=-1, hi=1)
    y.requires_grad_(True)
    loss = mix_loss(x, y, 0.84, data_range=2.0)
    assert loss.item() > 0
    loss.backward()
    assert torch.isfinite(y.grad).all()
    assert float(y.grad.abs().max()) > 0


def test_gradcheck_float64():
    x, y = _pair(shape=(1, 2, 9, 9), dtype=torch.float64)
    y.requires_grad_(True)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: mix_map(a, b, 0.5, (0.5, 1.0, 2.0), data_range=1.0), (x, y))


@pytest.mark.parametrize("a,c,data_range", [(0.3, 0.25, 1.0), (-0.4, 0.7, 2.0), (0.5, -0.5, 2.0)])
def test_constant_images_by_hand(a, c, data_range):
    """Constant a vs constant a + c: mu_x = a, mu_y = a + c, all (co)variances 0 so every
    cs_j = 1 and MS-SSIM = l = (2 a (a + c) + C1) / (a^2 + (a + c)^2 + C1) everywhere; the
    filtered L1 error is |c|. Float64 (in float32, E[x^2] - mu^2 cancels only to ~1e-8, which
    moves cs by ~1e-5 for C2 = 9e-4)."""
    x = torch.full((2, 3, 32, 24), a, dtype=torch.float64)
    y = x + c
    c1 = (0.01 * data_range) ** 2
    lum = (2 * a * (a + c) + c1) / (a**2 + (a + c) ** 2 + c1)
    ms = ms_ssim_map(x, y, data_range=data_range)
    torch.testing.assert_close(ms, torch.full_like(ms, lum), atol=1e-10, rtol=0)
    alpha = 0.84
    mm = mix_map(x, y, alpha, data_range=data_range)
    expected = alpha * (1 - lum) + (1 - alpha) * abs(c) / data_range
    torch.testing.assert_close(mm, torch.full_like(mm, expected), atol=1e-10, rtol=0)
    l_map, cs_map = ssim_components(x, y, 4.0, data_range=data_range)
    torch.testing.assert_close(cs_map, torch.ones_like(cs_map), atol=1e-10, rtol=0)
    torch.testing.assert_close(l_map, torch.full_like(l_map, lum), atol=1e-10, rtol=0)
    mm32 = mix_map(x.float(), y.float(), alpha, data_range=data_range)
    assert mm32.dtype == torch.float32
    torch.testing.assert_close(mm32, torch.full_like(mm32, expected), atol=3e-4, rtol=0)


def test_locality():
    """The largest window has radius 16, so a perturbation influences only pixels within
    16 px (Chebyshev distance) of it."""
    x, _ = _pair(shape=(1, 3, 128, 128), lo=-1, hi=1)
    y = x.clone()
    y[..., 60:68, 60:68] += 0.8
    m = mix_map(x, y, 0.84, data_range=2.0)[0, 0]
    rows = torch.arange(128)
    dist_r = torch.clamp(torch.maximum(60 - rows, rows - 67), min=0)
    cheb = torch.maximum(dist_r[:, None], dist_r[None, :])
    assert float(m[cheb > 16].abs().max()) < 1e-6
    assert float(m[cheb > 40].abs().max()) < 1e-6
    assert float(m[60:68, 60:68].min()) > 0.05
    assert float(m[cheb <= 8].min()) > 1e-3  # raised around the square


def test_alpha_extremes():
    x, y = _pair(shape=(2, 3, 64, 64), lo=-1, hi=1)
    ms = ms_ssim_map(x, y, data_range=2.0)
    torch.testing.assert_close(mix_map(x, y, 1.0, data_range=2.0),
                               (1 - ms).mean(1, keepdim=True), atol=1e-6, rtol=0)
    # alpha = 0: Gaussian(sigma=8, 33 taps, reflect)-filtered L1 / data_range; reference by a
    # direct (non-separable) 2-D convolution
    w = gaussian_window(8.0)
    w2 = (w[:, None] * w[None, :]).expand(3, 1, 33, 33)
    ref = F.conv2d(F.pad((x - y).abs(), (16,) * 4, mode="reflect"), w2, groups=3) / 2.0
    l1_only = mix_map(x, y, 0.0, data_range=2.0)
    torch.testing.assert_close(l1_only, ref.mean(1, keepdim=True), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        mix_loss(x, y, 0.3, data_range=2.0),
        0.3 * mix_map(x, y, 1.0, data_range=2.0).mean()
        + 0.7 * mix_map(x, y, 0.0, data_range=2.0).mean(), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="alpha"):
        mix_map(x, y, 1.5, data_range=2.0)


def test_too_small_and_bad_inputs_raise():
    x = torch.rand(1, 3, 16, 64)
    with pytest.raises(ValueError, match=r"H and W > radius = 16"):
        ms_ssim_map(x, x, data_range=1.0)
    with pytest.raises(ValueError, match="16x64"):
        mix_loss(x, x, 0.84, data_range=1.0)
    with pytest.raises(ValueError, match=r"2 \* radius = 32"):
        ms_ssim_map(torch.rand(1, 1, 32, 40), torch.rand(1, 1, 32, 40), data_range=1.0,
                    padding="valid")
    ok = ms_ssim_map(torch.rand(1, 1, 17, 17), torch.rand(1, 1, 17, 17), data_range=1.0)
    assert ok.shape == (1, 1, 17, 17)
    assert mix_map(x, x, 0.5, data_range=1.0, padding="replicate").shape == (1, 1, 16, 64)
    with pytest.raises(ValueError, match="same shape"):
        ms_ssim_map(torch.rand(1, 1, 20, 20), torch.rand(1, 1, 20, 21), data_range=1.0)
    with pytest.raises(ValueError, match="padding"):
        ssim_map(x, x, data_range=1.0, padding="zeros")
    with pytest.raises(ValueError, match="data_range"):
        ssim_map(x, x, data_range=0.0)


def test_window_cache_survives_inference_mode():
    """Windows first built under torch.inference_mode() (evaluation) must be usable for a
    later differentiable call (training)."""
    x, y = _pair(shape=(1, 1, 24, 24), dtype=torch.float64)
    with torch.inference_mode():
        mix_map(x, y, 0.7, (0.7, 1.3), data_range=1.0)
    y.requires_grad_(True)
    mix_loss(x, y, 0.7, (0.7, 1.3), data_range=1.0).backward()
    assert torch.isfinite(y.grad).all()


def test_speed_forward_backward():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 256, 256) * 2 - 1
    y = (x + 0.1 * torch.randn_like(x)).requires_grad_(True)
    mix_loss(x[:1, :, :64, :64], y[:1, :, :64, :64], 0.84, data_range=2.0)  # warm-up
    t0 = time.perf_counter()
    loss = mix_loss(x, y, 0.84, data_range=2.0)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    print(f"\nmix_loss (8, 3, 256, 256): forward {t1 - t0:.2f} s, backward {t2 - t1:.2f} s")
    assert y.grad is not None and torch.isfinite(y.grad).all()
    assert t2 - t0 < 20.0


def test_one_reference_map_for_every_channel():
    """A (B, 1, H, W) reference is compared with every channel (TSDN's FNE target): the same
    maps as the expanded reference; other channel counts stay an error."""
    torch.manual_seed(0)
    x, ref = torch.rand(2, 5, 24, 24), torch.rand(2, 1, 24, 24)
    for padding in ("reflect", "valid"):
        torch.testing.assert_close(ssim_map(x, ref, 1.5, data_range=1.0, radius=5, padding=padding),
                                   ssim_map(x, ref.expand_as(x), 1.5, data_range=1.0, radius=5,
                                            padding=padding), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        ssim_map(x, torch.rand(2, 2, 24, 24), data_range=1.0)
