"""Tests for repro.kernels.surf (TSDN's Superpixel Random Filling)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.segmentation import slic

from repro.kernels.surf import (
    N_FILLED,
    N_SEGMENTS,
    SLIC_COMPACTNESS,
    SLIC_SIGMA,
    slic_segments,
    surf_fill,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _textured(size: int = 128, seed: int = 0) -> np.ndarray:
    """(size, size, 3) float image in [0, 1]: three coloured sinusoid gratings plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.5 + 0.25 * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
                    for fx, fy, ph in rng.uniform(1, 6, (3, 3))], axis=-1)
    return np.clip(img + 0.1 * rng.standard_normal(img.shape), 0, 1)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when the two label maps split the pixels identically (labels may be renamed)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1).shape[1]
    return pairs == np.unique(a).size == np.unique(b).size


def _grid_segments(size: int, cell: int, seed: int) -> torch.Tensor:
    """(size, size) labels of a grid of cell x cell squares, labels randomly permuted."""
    n_side = size // cell
    perm = torch.randperm(n_side * n_side, generator=torch.Generator().manual_seed(seed))
    grid = perm.view(n_side, n_side)
    return grid.repeat_interleave(cell, 0).repeat_interleave(cell, 1)


def _filled_labels(seg: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Labels of one image (H, W) whose superpixel the (1, H, W) mask covers; asserts that every
    superpixel is either fully covered or untouched."""
    seg, m = seg.flatten().cpu(), mask.flatten().cpu().double()
    covered = torch.bincount(seg, weights=m)
    size = torch.bincount(seg).double()
    assert ((covered == 0) | (covered == size)).all(), "a superpixel is only partly filled"
    return torch.nonzero(covered == size).flatten()


def _check_fill(images: torch.Tensor, seg: torch.Tensor, out: torch.Tensor, mask: torch.Tensor,
                n_filled: int) -> None:
    """The SURF contract for a batch, image by image."""
    assert out.shape == images.shape and mask.shape == (images.shape[0], 1, *images.shape[2:])
    assert ((mask == 0) | (mask == 1)).all()
    for i in range(images.shape[0]):
        n_b = int(seg[i].max()) + 1
        chosen = _filled_labels(seg[i], mask[i])
        assert chosen.numel() == min(n_filled, n_b)
        m = mask[i, 0].bool()
        # Outside the mask: bit-identical.
        assert torch.equal(out[i][:, ~m], images[i][:, ~m])
        # Inside: one constant colour per filled superpixel, in [0, 1].
        for label in chosen.tolist():
            px = out[i][:, seg[i] == label]                     # (3, n_px)
            assert torch.equal(px, px[:, :1].expand_as(px))
            assert ((px >= 0) & (px <= 1)).all()


# ---------------------------------------------------------------------------- slic_segments

def test_constants_are_the_papers():
    assert (N_SEGMENTS, N_FILLED) == (400, 50)
    assert (SLIC_COMPACTNESS, SLIC_SIGMA) == (10.0, 1.0)


def test_slic_segments_equals_skimage_rgb():
    img = _textured(128)
    ours = slic_segments(img)
    ref = slic(img, n_segments=400, compactness=10.0, sigma=1.0, start_label=0, channel_axis=-1)
    assert ours.dtype == np.int32 and ours.shape == (128, 128)
    assert np.array_equal(np.unique(ours), np.arange(ours.max() + 1))  # consecutive 0..n-1
    assert _same_partition(ours, ref)
    # Roughly N_s superpixels on a textured image.
    assert 0.75 * N_SEGMENTS <= ours.max() + 1 <= 1.25 * N_SEGMENTS


def test_slic_segments_grey_and_arguments_are_passed():
    grey = _textured(96, seed=1)[..., 0]
    ours = slic_segments(grey, n_segments=60, compactness=0.2, sigma=0.5)
    ref = slic(grey, n_segments=60, compactness=0.2, sigma=0.5, start_label=0, channel_axis=None)
    assert np.array_equal(np.unique(ours), np.arange(ours.max() + 1))
    assert _same_partition(ours, ref)
    assert 30 <= ours.max() + 1 <= 90


def test_slic_segments_uint8_equals_float():
    img = _textured(64, seed=2)
    u8 = np.round(img * 255).astype(np.uint8)
    assert np.array_equal(slic_segments(u8), slic_segments(u8 / 255.0))


def test_slic_segments_rejects_bad_shapes():
    with pytest.raises(ValueError):
        slic_segments(np.zeros((8, 8, 4)))


# -------------------------------------------------------------------------------- surf_fill

def test_surf_fill_on_slic_superpixels():
    imgs_np = [_textured(128, seed=s) for s in (3, 4)]
    seg = torch.from_numpy(np.stack([slic_segments(im) for im in imgs_np])).long()
    images = torch.from_numpy(np.stack(imgs_np)).permute(0, 3, 1, 2).float().contiguous()
    out, mask = surf_fill(images, seg, generator=torch.Generator().manual_seed(0))
    _check_fill(images, seg, out, mask, N_FILLED)
    # The filled region is a real change: the textured superpixels became flat.
    assert (out != images).any(dim=1).float().mean() > 0.5 * mask.mean()


@pytest.mark.parametrize("device", DEVICES)
def test_surf_fill_mixed_label_counts_in_one_batch(device):
    # 64 px images: 256 labels (4 px cells), 10 labels, exactly 50, 51, and a single label.
    seg = torch.stack([
        _grid_segments(80, 4, 0)[:64, :64],          # 16 x 16 cells -> 256 labels
        torch.arange(64).div(7, rounding_mode="floor").clamp_max(9).expand(64, 64),  # 10
        torch.arange(64 * 64).div(82, rounding_mode="floor").view(64, 64),          # 50
        torch.arange(64 * 64).div(81, rounding_mode="floor").view(64, 64),          # 51
        torch.zeros(64, 64, dtype=torch.long),                                       # 1
    ])
    seg[0] = torch.unique(seg[0], return_inverse=True)[1]  # the crop lost labels: relabel
    assert [int(s.max()) + 1 for s in seg] == [256, 10, 50, 51, 1]
    images = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    images, seg = images.to(device), seg.to(device)
    gen = torch.Generator(device=device).manual_seed(2)
    out, mask = surf_fill(images, seg, generator=gen)
    _check_fill(images, seg, out, mask, N_FILLED)
    # Images with at most 50 labels are filled completely.
    assert mask[1:3].eq(1).all() and mask[4].eq(1).all()
    assert mask[3].sum() < 64 * 64


def test_surf_fill_fewer_labels_than_n_filled_fills_everything():
    seg = _grid_segments(40, 8, 3).unsqueeze(0)                # 25 labels
    images = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    out, mask = surf_fill(images, seg, n_filled=50, generator=torch.Generator().manual_seed(0))
    assert mask.eq(1).all()
    _check_fill(images, seg, out, mask, 50)


def test_surf_fill_n_filled_zero_is_identity():
    seg = _grid_segments(32, 4, 0).unsqueeze(0)
    images = torch.rand(1, 3, 32, 32)
    out, mask = surf_fill(images, seg, n_filled=0)
    assert torch.equal(out, images) and mask.eq(0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_surf_fill_dtype_device_and_determinism(device, dtype):
    seg = torch.stack([_grid_segments(48, 4, s) for s in (0, 1)]).to(device)   # 144 labels
    images = torch.rand(2, 3, 48, 48, dtype=dtype, generator=torch.Generator().manual_seed(0))
    images = images.to(device)

    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return surf_fill(images, seg, generator=torch.Generator(device=device).manual_seed(seed))

    out, mask = run(5)
    assert out.dtype == mask.dtype == dtype
    assert out.device == mask.device == images.device
    _check_fill(images, seg, out, mask, N_FILLED)
    out2, mask2 = run(5)
    assert torch.equal(out, out2) and torch.equal(mask, mask2)
    out3, mask3 = run(6)
    assert not torch.equal(mask, mask3) and not torch.equal(out, out3)
    # Two images of one batch get different draws.
    assert not torch.equal(_filled_labels(seg[0], mask[0]).sort().values,
                           _filled_labels(seg[1], mask[1]).sort().values)


def test_surf_fill_draws_are_uniform():
    # 400 images of 10 x 10 px, one label per pixel (100 labels), 50 filled: every label is
    # filled with probability 1/2, i.e. Binomial(400, 1/2) times (mean 200, sd 10).
    b = 400
    seg = torch.arange(100).view(1, 10, 10).expand(b, 10, 10)
    images = torch.zeros(b, 3, 10, 10)
    out, mask = surf_fill(images, seg, generator=torch.Generator().manual_seed(0))
    assert mask.flatten(1).sum(1).eq(50).all()
    per_label = mask.flatten(1).sum(0)                      # (100,)
    assert (per_label - 200).abs().max() <= 50              # 5 sd
    # Colours: each channel ~ U[0, 1), channels independent (not grey).
    colours = out.permute(0, 2, 3, 1)[mask[:, 0].bool()]    # (20000, 3)
    assert ((colours >= 0) & (colours < 1)).all()
    assert torch.allclose(colours.mean(0), torch.full((3,), 0.5), atol=0.01)
    assert torch.allclose(colours.var(0), torch.full((3,), 1 / 12), atol=0.003)
    corr = torch.corrcoef(colours.T)
    assert (corr - torch.eye(3)).abs().max() < 0.05


def test_surf_fill_rejects_bad_inputs():
    images = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError):
        surf_fill(images, torch.zeros(2, 16, 15, dtype=torch.long))
    with pytest.raises(ValueError):
        surf_fill(images[:, :1], torch.zeros(2, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError):
        surf_fill(images, torch.zeros(2, 16, 16, dtype=torch.long), n_filled=-1)
