"""Tests for repro.kernels.gms (GMS map and RIAD's multi-scale GMS loss)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from repro.kernels.gms import GMS_C, gms_map, msgms_loss

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# scipy's "mirror" is torch's "reflect" (d c b | a b c d); "constant" with cval 0 is kornia's
# zero padding.
SCIPY_MODE = {"reflect": "mirror", "zeros": "constant"}
PREWITT_X = np.array([[-1.0, 0.0, 1.0]] * 3) / 3
PREWITT_Y = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]]) / 3


def _ref_gms(x: np.ndarray, y: np.ndarray, c: float, median_padding: str) -> np.ndarray:
    """Independent reference for one (C, H, W) pair -> (H - 2, W - 2), in float64."""

    def magnitude(img: np.ndarray) -> np.ndarray:
        med = ndimage.median_filter(img.mean(axis=0), size=3, mode=SCIPY_MODE[median_padding],
                                    cval=0.0)
        gx = ndimage.correlate(med, PREWITT_X)[1:-1, 1:-1]  # valid region: no padding used
        gy = ndimage.correlate(med, PREWITT_Y)[1:-1, 1:-1]
        return np.hypot(gx, gy)

    mx, my = magnitude(x.astype(np.float64)), magnitude(y.astype(np.float64))
    return (2 * mx * my + c) / (mx**2 + my**2 + c)


def _ref_msgms(x: np.ndarray, y: np.ndarray, scales: int, c: float, median_padding: str) -> float:
    def pool(img: np.ndarray) -> np.ndarray:  # 2x2 average, stride 2 (floor)
        ch, h, w = img.shape
        return img[:, :h // 2 * 2, :w // 2 * 2].reshape(ch, h // 2, 2, w // 2, 2).mean((2, 4))

    losses = []
    for s in range(scales):
        if s:
            x, y = pool(x), pool(y)
        losses.append((1 - _ref_gms(x, y, c, median_padding)).mean())
    return float(np.mean(losses))


def _smooth_pair(b: int = 2, size: int = 40, noise: float = 0.1, seed: int = 0):
    """A smooth random colour image batch and a noisy copy, float32 in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, size // 4, size // 4, generator=g)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear")
    y = (x + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x, y


def _step(size: int, height: float) -> torch.Tensor:
    """(1, 3, size, size): 0 left of the middle column boundary, ``height`` right of it."""
    img = torch.zeros(1, 3, size, size, dtype=torch.float64)
    img[..., size // 2:] = height
    return img


# ------------------------------------------------------------------------------------ maps

@pytest.mark.parametrize("median_padding", ["reflect", "zeros"])
def test_gms_map_matches_scipy_reference(median_padding):
    x, y = _smooth_pair(b=2, size=37, noise=0.15)  # odd size on purpose
    ours = gms_map(x, y, median_padding=median_padding)
    assert ours.shape == (2, 1, 35, 35) and ours.dtype == torch.float32
    for i in range(2):
        ref = _ref_gms(x[i].numpy(), y[i].numpy(), GMS_C, median_padding)
        np.testing.assert_allclose(ours[i, 0].numpy(), ref, atol=1e-5, rtol=0)
    # float64 agrees to rounding.
    ours64 = gms_map(x.double(), y.double(), median_padding=median_padding)
    ref0 = _ref_gms(x[0].numpy(), y[0].numpy(), GMS_C, median_padding)
    np.testing.assert_allclose(ours64[0, 0].numpy(), ref0, atol=1e-12, rtol=0)


def test_gms_padding_matters_only_at_the_border():
    x, y = _smooth_pair(b=1, size=24, noise=0.15, seed=1)
    a = gms_map(x, y, median_padding="reflect")
    b = gms_map(x, y, median_padding="zeros")
    # Interior outputs only see median pixels whose windows are inside the image.
    assert torch.equal(a[..., 1:-1, 1:-1], b[..., 1:-1, 1:-1])
    assert not torch.equal(a, b)


def test_identical_images_give_map_one_and_loss_zero():
    x, _ = _smooth_pair(b=3, size=32)
    assert torch.equal(gms_map(x, x), torch.ones(3, 1, 30, 30))
    assert msgms_loss(x, x).item() == 0.0


def test_gms_map_is_symmetric_and_per_image():
    x, y = _smooth_pair(b=3, size=32, seed=2)
    full = gms_map(x, y)
    assert torch.equal(full, gms_map(y, x))
    torch.testing.assert_close(full[1:2], gms_map(x[1:2], y[1:2]), rtol=0, atol=1e-6)


def test_step_edge_hand_computed():
    # Step between columns 15 and 16 of a 32 px image: the 3x3 median keeps it, the Prewitt
    # x-response is the step height at the two output columns whose 3 px support straddles it
    # (output columns 14 and 15, i.e. input columns 15 and 16), 0 elsewhere; y-response 0.
    size, c = 32, GMS_C
    edge, flat = _step(size, 1.0), torch.full((1, 3, size, size), 0.5, dtype=torch.float64)
    m = gms_map(edge, flat)[0, 0]
    expected = torch.ones(size - 2, size - 2, dtype=torch.float64)
    expected[:, 14:16] = c / (1 + c)                         # (0 + c) / (1^2 + 0 + c)
    torch.testing.assert_close(m, expected, rtol=0, atol=1e-12)

    # Same edge, heights 1 and 0.5: (2 * 1 * 0.5 + c) / (1 + 0.25 + c).
    m = gms_map(edge, _step(size, 0.5))[0, 0]
    expected[:, 14:16] = (1 + c) / (1.25 + c)
    torch.testing.assert_close(m, expected, rtol=0, atol=1e-12)

    # The step stays at a pooling boundary at every scale (32, 16, 8, 4 px), so each scale has
    # two edge columns out of (w - 2): loss = mean over scales of 2 / (w - 2) * (1 - c/(1+c)).
    loss = msgms_loss(edge, flat)
    expected_loss = np.mean([2 / (w - 2) for w in (32, 16, 8, 4)]) / (1 + c)
    assert loss.item() == pytest.approx(expected_loss, abs=1e-12)


# ------------------------------------------------------------------------------------ loss

@pytest.mark.parametrize("median_padding", ["reflect", "zeros"])
def test_msgms_loss_matches_reference(median_padding):
    x, y = _smooth_pair(b=2, size=44, noise=0.1, seed=3)  # 44 -> 22 -> 11 -> 5 (floor)
    ours = msgms_loss(x, y, median_padding=median_padding)
    ref = np.mean([_ref_msgms(x[i].numpy(), y[i].numpy(), 4, GMS_C, median_padding)
                   for i in range(2)])  # equal image sizes: batch mean = mean of image means
    assert ours.shape == ()
    assert ours.item() == pytest.approx(ref, abs=1e-5)
    one = msgms_loss(x, y, scales=1, median_padding=median_padding)
    assert one.item() == pytest.approx(
        (1 - gms_map(x, y, median_padding=median_padding)).mean().item(), abs=1e-7)


def test_msgms_loss_in_unit_interval_and_increases_with_noise():
    x, _ = _smooth_pair(b=2, size=64, seed=4)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    losses = [msgms_loss(x, (x + s * noise).clamp(0, 1)).item() for s in (0.0, 0.02, 0.1, 0.3)]
    assert losses[0] == 0.0
    assert all(0 <= v <= 1 for v in losses)
    assert losses == sorted(losses) and len(set(losses)) == 4
    # Unrelated (uniform noise) images are further still.
    other = torch.rand(x.shape, generator=torch.Generator().manual_seed(6))
    assert msgms_loss(x, other).item() > losses[-1]


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_are_finite_including_flat_regions(device):
    # Flat regions have zero gradient magnitude, where a plain sqrt has an infinite derivative.
    # They are black (0) so that the Prewitt responses are exactly 0 whatever the conv's
    # summation order (other constants can leave rounding residues of ~1e-8).
    x, y = _smooth_pair(b=2, size=32, seed=7)
    x[..., :16] = 0.0
    y[..., :16] = 0.0
    x, y = x.to(device).requires_grad_(), y.to(device)
    loss = msgms_loss(x, y)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert x.grad.device == x.device

    flat = torch.zeros(1, 3, 32, 32, device=device, requires_grad=True)
    msgms_loss(flat, flat.detach().clone()).backward()
    assert torch.isfinite(flat.grad).all()


def test_bad_inputs_raise():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError):
        gms_map(x, x[..., :15])
    with pytest.raises(ValueError):
        gms_map(x, x.double())
    with pytest.raises(ValueError):
        gms_map(x, x, median_padding="replicate")
    with pytest.raises(ValueError):  # 16 -> 8 -> 4 -> 2 px at the 4th scale
        msgms_loss(x, x, scales=4)
    assert msgms_loss(x, x, scales=3).item() == 0.0
