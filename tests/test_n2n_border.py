"""Noise-to-Norm's anomaly map at the image border (issue 11, point 2): the "normalized"
padding of repro.kernels.msssim (windows restricted to the image) against an independent scipy
reference, and the border behaviour of the map for identical images and for a uniform error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from repro.kernels.msssim import SIGMAS, mix_map, ms_ssim_map
from repro.methods.n2n import border_profile, ring_vs_interior


def _scipy_normalised_ms_ssim(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    """Normalised convolution by hand: zero-padded Gaussian filter (scipy mode="constant",
    truncate 2 = radius ceil(2 sigma)) divided by the same filter of an all-ones image."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def g(t, s):
        w = gaussian_filter(np.ones_like(t), (0, 0, s, s), mode="constant", truncate=2.0)
        return gaussian_filter(t, (0, 0, s, s), mode="constant", truncate=2.0) / w

    prod = 1.0
    for s in SIGMAS:
        mx, my = g(x, s), g(y, s)
        vx, vy, vxy = g(x * x, s) - mx**2, g(y * y, s) - my**2, g(x * y, s) - mx * my
        prod = prod * (2 * vxy + c2) / (vx + vy + c2)
    return prod * (2 * mx * my + c1) / (mx**2 + my**2 + c1), g(np.abs(x - y), SIGMAS[-1])


def _textured(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
    return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def test_normalized_padding_matches_scipy_normalised_convolution():
    x = _textured((2, 3, 40, 36), 0)
    y = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1),
                               dtype=torch.float64)).clamp(-1, 1)
    ref_ms, ref_l1 = _scipy_normalised_ms_ssim(x.numpy(), y.numpy(), 2.0)
    ms = ms_ssim_map(x, y, data_range=2.0, padding="normalized")
    np.testing.assert_allclose(ms.numpy(), ref_ms, atol=1e-10, rtol=0)
    ref_mix = (0.84 * (1 - ref_ms) + 0.16 * ref_l1 / 2.0).mean(axis=1, keepdims=True)
    mm = mix_map(x, y, 0.84, data_range=2.0, padding="normalized")
    np.testing.assert_allclose(mm.numpy(), ref_mix, atol=1e-10, rtol=0)
    # it differs from reflect padding at the border only (the interior is the same)
    refl = mix_map(x, y, 0.84, data_range=2.0, padding="reflect")
    r = 2 * 8  # radius of the largest window
    np.testing.assert_allclose(mm[..., r:-r, r:-r], refl[..., r:-r, r:-r], atol=1e-12)
    assert not torch.allclose(mm[..., :2, :], refl[..., :2, :])


@pytest.mark.parametrize("padding", ["normalized", "reflect"])
def test_map_of_identical_images_is_zero_everywhere(padding):
    x = _textured((2, 3, 48, 48), 2)
    m = mix_map(x, x.clone(), 0.84, data_range=2.0, padding=padding)
    assert m.shape == (2, 1, 48, 48)
    assert float(m.abs().max()) < 1e-6  # border included


def test_uniform_error_gives_no_bright_border_ring():
    """y = x + the same error everywhere: a constant image and a constant offset gives a
    constant map; an independent noise error of uniform strength on a texture gives a ring no
    brighter than the interior. Zero padding (the windows' missing pixels read as 0) fails both,
    which shows that the check can fail."""
    flat = torch.full((1, 3, 64, 64), 0.2, dtype=torch.float64)
    m = mix_map(flat + 0.3, flat, 0.84, data_range=2.0, padding="normalized")[:, 0]
    assert float(m.max() - m.min()) < 1e-9 and float(m.mean()) > 0.01

    x = _textured((4, 3, 96, 96), 3)
    noise = 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4),
                               dtype=torch.float64)  # 0.05: the map stays far below its ceiling
    y = x + noise
    stats = ring_vs_interior(border_profile(
        mix_map(y, x, 0.84, data_range=2.0, padding="normalized")[:, 0]))
    assert 0.1 < stats["interior_mean"] < 0.5
    assert stats["ring_mean"] <= stats["interior_mean"]

    # the same checks with zero-padded (un-normalised) windows, by hand with scipy
    def zero_padded_l1_map(a, b):
        return gaussian_filter(np.abs(a - b), (0, 0, 8, 8), mode="constant", truncate=2.0)

    z = zero_padded_l1_map((flat + 0.3).numpy(), flat.numpy())[0, 0]
    assert z.max() - z.min() > 0.05  # the border darkens: not constant


def test_border_profile_by_hand():
    maps = torch.zeros(2, 10, 12)
    maps[:, 0, :] = 1.0  # top row
    maps[:, :, -1] = 1.0  # right column
    prof = border_profile(maps)
    assert len(prof) == 5  # distances 0..4 on a 10 x 12 map
    # distance-0 ring: 2 * 12 + 2 * 8 = 40 pixels, of which 12 + 9 = 21 are 1
    assert prof[0] == pytest.approx(21 / 40)
    assert prof[1:] == [0.0, 0.0, 0.0, 0.0]
    stats = ring_vs_interior([3.0, 2.0, 1.0, 1.0], ring=2, inner=2)
    assert stats == {"ring_mean": 2.5, "interior_mean": 1.0, "ring_over_interior": 2.5}
