r"""Gradient magnitude similarity (GMS) and its multi-scale loss (MSGMS), as used by RIAD.

TSDN (Park et al., Sec. 2.5) trains with a GMS term ``L_g`` between the input ``I`` and the
reconstruction ``R_surf`` (weight ``lambda_g = 1``, Sec. 3.1) and cites

    W. Xue, L. Zhang, X. Mou, A. C. Bovik, "Gradient magnitude similarity deviation: a highly
    efficient perceptual image quality index", IEEE Transactions on Image Processing 23(2), 2014
    (arXiv 2013).

The paper gives no further details, so we follow the multi-scale form of RIAD (Zavrtanik et al.,
"Reconstruction by inpainting for visual anomaly detection", 2021) as implemented in the public
unofficial RIAD code (plutoyuxie/Reconstruction-by-inpainting-for-visual-anomaly-detection,
``losses/gms_loss.py``)::

    g(I)   = mean over colour channels of I                       (grey)
    m(I)   = 3x3 median filter of g(I)
    G_x    = [[-1, 0, 1]] * 3 / 3,   G_y = [[1, 1, 1], [0, 0, 0], [-1, -1, -1]] / 3   (Prewitt)
    |D I|  = sqrt((G_x * m)^2 + (G_y * m)^2)                      (cross-correlation, no padding)
    GMS    = (2 |D x| |D y| + c) / (|D x|^2 + |D y|^2 + c),   c = 0.0026
    MSGMS  = 1/4 sum_{s=0..3} mean(1 - GMS(x_s, y_s)),  x_{s+1} = avg_pool_2x2(x_s)  (stride 2)

``c = 0.0026`` is Xue et al.'s ``c = 170`` for 8-bit intensities rescaled to [0, 1]
(170 / 255^2 = 0.00261); our images are in [0, 1], so it applies as is. (RIAD's code feeds
[-1, 1] images with the same c.) GMS lies in (0, 1], so the loss lies in [0, 1).

Choices made here:

* **Median padding.** ``median_padding="reflect"`` (default) reflects the image by one pixel
  before the 3x3 median (torch ``reflect`` = scipy ``mode="mirror"``). RIAD's code uses
  ``kornia.filters.MedianBlur``, which zero-pads; that pulls the border ring towards 0 and plants
  a false edge along the frame, so we prefer reflection. ``median_padding="zeros"`` reproduces
  kornia exactly. The median keeps the input size either way; only the Prewitt step is "valid",
  so maps are ``(H - 2, W - 2)``, as in RIAD.
* **Grey first.** The channel mean is taken once, before the pyramid; RIAD pools the colour
  images and averages in every GMS call. Both are linear, so the results agree up to rounding.
* **Safe square root.** ``|D I|`` is computed so that its gradient is 0 (not inf -> NaN) where
  both Prewitt responses are exactly 0 (flat regions, e.g. SURF's constant fills); the value is
  exact. RIAD's plain ``torch.sqrt`` gives NaN gradients there.

Everything is batched, differentiable and runs on the inputs' device and dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["GMS_C", "MEDIAN_PADDINGS", "gms_map", "msgms_loss"]

GMS_C = 0.0026  # Xue et al.'s c = 170 on [0, 255], rescaled to [0, 1] intensities (as RIAD)
MEDIAN_PADDINGS = ("reflect", "zeros")

# Prewitt kernels of RIAD's code, (2, 3, 3): G_x, G_y. Divided in float64 so that 1/3 is
# correctly rounded in every dtype it is cast to.
_PREWITT = torch.tensor([[[-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]],
                         [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]]],
                        dtype=torch.float64) / 3


def _check_pair(x: torch.Tensor, y: torch.Tensor, median_padding: str) -> None:
    if x.dim() != 4 or x.shape != y.shape:
        raise ValueError(f"x and y must be (B, C, H, W) tensors of the same shape, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if not (x.is_floating_point() and x.dtype == y.dtype):
        raise ValueError(f"x and y must share one floating dtype, got {x.dtype} and {y.dtype}")
    if median_padding not in MEDIAN_PADDINGS:
        raise ValueError(f"median_padding must be one of {MEDIAN_PADDINGS}, "
                         f"got {median_padding!r}")


def _median3x3(g: torch.Tensor, median_padding: str) -> torch.Tensor:
    """3x3 median of (N, 1, H, W) maps, same size (needs H, W >= 2 for reflection)."""
    if median_padding == "reflect":
        p = F.pad(g, (1, 1, 1, 1), mode="reflect")
    else:
        p = F.pad(g, (1, 1, 1, 1), mode="constant", value=0.0)
    win = p.unfold(2, 3, 1).unfold(3, 3, 1)          # (N, 1, H, W, 3, 3), a view
    return win.flatten(-2).median(dim=-1).values      # 9 values: the 5th smallest


def _gradient_magnitude(m: torch.Tensor) -> torch.Tensor:
    """Prewitt gradient magnitude of (N, 1, H, W) maps -> (N, 1, H - 2, W - 2)."""
    d = F.conv2d(m, _PREWITT.to(device=m.device, dtype=m.dtype).unsqueeze(1))  # (N, 2, h, w)
    sq = d.square().sum(dim=1, keepdim=True)
    # Double where: sqrt'(0) = inf would turn the chain rule's 0 * inf into NaN.
    pos = sq > 0
    return torch.where(pos, torch.where(pos, sq, 1.0).sqrt(), 0.0)


def _gms_grey(gx: torch.Tensor, gy: torch.Tensor, c: float, median_padding: str) -> torch.Tensor:
    """GMS map of two grey (B, 1, H, W) batches -> (B, 1, H - 2, W - 2)."""
    if min(gx.shape[-2:]) < 3:
        raise ValueError(f"GMS needs images of at least 3x3 px, got {tuple(gx.shape[-2:])} "
                         "(at the coarsest scale)")
    b = gx.shape[0]
    # One pass over x and y together: (2B, 1, H, W).
    mag = _gradient_magnitude(_median3x3(torch.cat([gx, gy]), median_padding))
    mx, my = mag[:b], mag[b:]
    return (2 * mx * my + c) / (mx.square() + my.square() + c)


def gms_map(x: torch.Tensor, y: torch.Tensor, c: float = GMS_C, *,
            median_padding: str = "reflect") -> torch.Tensor:
    """GMS map of (B, C, H, W) images in [0, 1] (channels averaged to grey)
    -> (B, 1, H - 2, W - 2), values in (0, 1], 1 where the gradient magnitudes agree."""
    _check_pair(x, y, median_padding)
    return _gms_grey(x.mean(dim=1, keepdim=True), y.mean(dim=1, keepdim=True), c,
                     median_padding)


def msgms_loss(x: torch.Tensor, y: torch.Tensor, scales: int = 4, c: float = GMS_C, *,
               median_padding: str = "reflect") -> torch.Tensor:
    """Multi-scale GMS loss (RIAD): mean(1 - GMS) at ``scales`` scales (the input, then
    successive 2x2 average pools with stride 2), averaged over the scales. Scalar tensor."""
    _check_pair(x, y, median_padding)
    if scales < 1:
        raise ValueError(f"scales must be >= 1, got {scales}")
    gx, gy = x.mean(dim=1, keepdim=True), y.mean(dim=1, keepdim=True)  # (B, 1, H, W)
    total = x.new_zeros(())
    for s in range(scales):
        if s:
            gx, gy = F.avg_pool2d(gx, 2, 2), F.avg_pool2d(gy, 2, 2)
        total = total + (1 - _gms_grey(gx, gy, c, median_padding)).mean()
    return total / scales
