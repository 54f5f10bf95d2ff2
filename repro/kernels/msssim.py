r"""Dense (per-pixel) SSIM / MS-SSIM and the MS-SSIM + L1 "mix" loss of Zhao et al.

Noise-to-Norm (Deng et al., Sec. 3.3) trains its reconstruction network with, and computes its
anomaly map from, the mix loss of

    H. Zhao, O. Gallo, I. Frosio, J. Kautz, "Loss functions for image restoration with neural
    networks", IEEE Transactions on Computational Imaging 3(1), 2017.

Formulas (per pixel ``p`` and channel; ``G_s`` is a normalised Gaussian filter of std ``s``)::

    mu_x = G_s * x,  sigma_x^2 = G_s * x^2 - mu_x^2,  sigma_xy = G_s * (x y) - mu_x mu_y
    l(p)  = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)
    cs(p) = (2 sigma_xy + C2) / (sigma_x^2 + sigma_y^2 + C2)
    C1 = (k1 L)^2, C2 = (k2 L)^2, k1 = 0.01, k2 = 0.03, L = data range
    SSIM(p)    = l(p) cs(p)
    MS-SSIM(p) = l_M(p) * prod_{j=1..M} cs_j(p)          (alpha = beta_j = 1)
                 sigma_j in SIGMAS = (0.5, 1, 2, 4, 8); l only at the largest sigma (sigma_M)
    mix(p)     = alpha (1 - MS-SSIM(p)) + (1 - alpha) (G_{sigma_M} * |x - y|)(p) / L
    mix_loss   = mean_p mix(p)

These are dense maps: every statistic is a Gaussian convolution, so the index is defined at every
pixel (Zhao's "the loss at the centre pixel of a patch", evaluated everywhere). The official Zhao
code (NVlabs/PL4NN, caffe, ``src/loss.py`` ``MSSSIML1``) evaluates it at the centre pixel of odd
training patches, with windows spanning the whole patch, and averages over batch and channels;
public PyTorch ports (e.g. psyrocloud/MS-SSIM_L1_LOSS) compute the dense form with one Gaussian
conv per sigma on a ``4 * sigma_M + 1`` = 33-tap support (radius ``2 * sigma_M`` = 16) for all
sigmas, zero padding, and an extra constant ``compensation`` factor on the loss.

Choices made here:

* **Window radius.** Default ``ceil(2 * sigma)`` per sigma (3, 5, 9, 17, 33 taps for SIGMAS), so
  the largest-sigma window is exactly the ports' 33 taps; the smaller sigmas are truncated at
  2 sigma and renormalised, whereas the ports use 33 taps for every sigma (the difference is small
  but not zero; pass ``radius=16`` to :func:`ms_ssim_map` / :func:`mix_map` / :func:`mix_loss`
  to use one common 33-tap support like the ports).
* **Channels are averaged**: MS-SSIM is computed per channel and the mix map is the mean over
  channels, as the official Zhao code does. (One popular port *multiplies* l and cs over the
  colour channels instead; we do not.)
* **Data range.** Noise-to-Norm normalises images with mean 0.5, std 0.5, i.e. to [-1, 1], so
  ``data_range=2``: C1 = (0.01 * 2)^2, C2 = (0.03 * 2)^2, and the L1 term is divided by 2.
  ``data_range`` is a required keyword to make this explicit.
* **Padding.** ``"reflect"`` by default (torch's reflect = scipy's ``mode="mirror"``), so maps
  have the input size and are defined at the borders; ``"replicate"`` (scipy ``"nearest"``) is
  available, and ``"valid"`` means no padding (output smaller by ``2 * radius``; for several
  sigmas every map is centre-cropped to the largest sigma's valid region). Reflect padding needs
  ``H, W > radius`` of the largest sigma (16 px for SIGMAS); valid needs ``H, W > 2 * radius``.
  A ``ValueError`` is raised otherwise.
  ``"normalized"`` (normalised convolution; added for Noise-to-Norm's anomaly map, issue 11)
  invents no pixels: every Gaussian moment is the weighted mean over the window's pixels that lie
  inside the image, i.e. the zero-padded filter response divided by the zero-padded filter of an
  all-ones image. Near a border the window simply becomes one-sided; a border row's error is not
  mirrored into the window a second time as with ``"reflect"``. Works for any size.
* ``pytorch_msssim.ms_ssim`` is a *different* MS-SSIM (Wang et al. 2003: a fixed 11-tap window
  on a 2x-downsampling pyramid with per-scale exponents, reduced to a scalar per image), hence it
  is not used for this loss. Its single-scale ``ssim`` equals ``ssim_map(x, y, 1.5, radius=5,
  padding="valid", ...).mean()`` (checked in tests/test_msssim.py).

Implementation: for each sigma the five moments (x, y, x^2, y^2, xy) are stacked on the channel
axis and filtered by one depthwise separable Gaussian conv (horizontal then vertical pass).
The inputs are padded once with the largest radius (padding commutes with the point-wise
products) and each sigma filters a centre crop of that. Everything is batched, differentiable,
and runs on the inputs' device and dtype; 1-D windows are cached per (sigma, radius, device,
dtype).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "SIGMAS",
    "gaussian_window",
    "ssim_components",
    "ssim_map",
    "ms_ssim_map",
    "mix_map",
    "mix_loss",
]

SIGMAS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
_PADDINGS = ("reflect", "replicate", "valid", "normalized")


def _default_radius(sigma: float) -> int:
    return max(1, math.ceil(2.0 * sigma))


@functools.lru_cache(maxsize=128)
def _cached_window(sigma: float, radius: int, device: torch.device, dtype: torch.dtype):
    # Built outside inference mode so that a window first made under torch.inference_mode()
    # (evaluation) can still be used later in a differentiable (training) call.
    with torch.inference_mode(False), torch.no_grad():
        t = torch.arange(-radius, radius + 1, dtype=torch.float64)
        g = torch.exp(-0.5 * (t / sigma) ** 2)
        g = (g / g.sum()).to(device=device, dtype=dtype)
    return g


def gaussian_window(sigma: float, radius: int | None = None, device=None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian ``exp(-t^2 / (2 sigma^2))``, ``t = -radius..radius``.

    Default ``radius = ceil(2 * sigma)`` (at least 1): 33 taps for sigma 8, the ``4 * sigma_max
    + 1`` taps that Zhao's dense PyTorch ports use for the largest sigma (they use the same
    33-tap support for the smaller sigmas too). Computed in float64, then cast to ``dtype``.
    """
    sigma = float(sigma)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    r = _default_radius(sigma) if radius is None else int(radius)
    if r < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    dev = torch.device("cpu") if device is None else torch.device(device)
    return _cached_window(sigma, r, dev, dtype).clone()


def _window(sigma: float, radius: int, like: torch.Tensor) -> torch.Tensor:
    return _cached_window(float(sigma), int(radius), like.device, like.dtype)


def _check_pair(x: torch.Tensor, y: torch.Tensor, data_range: float, padding: str,
                broadcast: bool = False):
    one_reference = broadcast and y.dim() == 4 and y.shape[1] == 1 and \
        (x.shape[0], *x.shape[2:]) == (y.shape[0], *y.shape[2:])
    if x.dim() != 4 or (x.shape != y.shape and not one_reference):
        raise ValueError(f"x and y must be (B, C, H, W) tensors of the same shape, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if not (x.is_floating_point() and y.is_floating_point()):
        raise ValueError(f"x and y must be floating point, got {x.dtype} and {y.dtype}")
    if padding not in _PADDINGS:
        raise ValueError(f"padding must be one of {_PADDINGS}, got {padding!r}")
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    if x.dtype != y.dtype:
        dt = torch.promote_types(x.dtype, y.dtype)
        x, y = x.to(dt), y.to(dt)
    return x, y


def _check_size(h: int, w: int, radius: int, sigma: float, padding: str, what: str) -> None:
    if padding == "valid":
        need, rule = 2 * radius, "2 * radius"
    elif padding == "reflect":
        need, rule = radius, "radius"
    else:  # replicate and normalized work for any size
        return
    if h <= need or w <= need:
        raise ValueError(
            f"{what} with padding={padding!r} needs H and W > {rule} = {need} px of the largest "
            f"Gaussian (sigma={sigma:g}, radius={radius}); got an image of {h}x{w}. Use larger "
            f"images, smaller sigmas, or padding='replicate'.")


def _pad(t: torch.Tensor, r: int, padding: str) -> torch.Tensor:
    if padding == "valid" or r == 0:
        return t
    if padding == "normalized":  # zeros; the filtered moments are divided by _support(...)
        return F.pad(t, (r, r, r, r))
    return F.pad(t, (r, r, r, r), mode=padding)


def _support(like: torch.Tensor, r: int, win: torch.Tensor, crop: int = 0) -> torch.Tensor:
    """(1, 1, H, W) filter response of an all-ones image zero-padded by ``r``: the weight of the
    in-image pixels in every window (1 in the interior), the divisor of ``"normalized"``."""
    ones = torch.ones(1, 1, *like.shape[-2:], device=like.device, dtype=like.dtype)
    return _filter(F.pad(ones, (r, r, r, r)), win, crop)


def _filter_moments(stack: torch.Tensor, win: torch.Tensor, crop: int, padding: str,
                    like: torch.Tensor, r_pad: int) -> torch.Tensor:
    """:func:`_filter`, then (``"normalized"``) divided by the in-image weight of each window."""
    out = _filter(stack, win, crop)
    if padding == "normalized":
        out = out / _support(like, r_pad, win, crop)
    return out


def _filter(stack: torch.Tensor, win: torch.Tensor, crop: int = 0) -> torch.Tensor:
    """Depthwise separable Gaussian filtering ("valid") of every channel of ``stack``
    after dropping ``crop`` pixels on each side."""
    if crop:
        stack = stack[..., crop:-crop, crop:-crop]
    n, k = stack.shape[1], win.numel()
    out = F.conv2d(stack, win.view(1, 1, 1, k).expand(n, 1, 1, k), groups=n)
    return F.conv2d(out, win.view(1, 1, k, 1).expand(n, 1, k, 1), groups=n)


def _l_cs(mx, my, exx, eyy, exy, c1: float, c2: float):
    mxy = mx * my
    mxx = mx * mx
    myy = my * my
    l_map = (2 * mxy + c1) / (mxx + myy + c1)
    cs_map = (2 * (exy - mxy) + c2) / ((exx - mxx) + (eyy - myy) + c2)
    return l_map, cs_map


def _moments(xp: torch.Tensor, yp: torch.Tensor) -> torch.Tensor:
    return torch.cat([xp, yp, xp * xp, yp * yp, xp * yp], dim=1)


def ssim_components(x: torch.Tensor, y: torch.Tensor, sigma: float, *, data_range: float,
                    k1: float = 0.01, k2: float = 0.03, padding: str = "reflect",
                    radius: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Luminance ``l(p)`` and contrast-structure ``cs(p)`` maps, each (B, C, H', W').

    ``H' = H`` for ``padding="reflect"``/``"replicate"``/``"normalized"``, ``H - 2 * radius``
    for ``"valid"``.
    ``radius`` defaults to ``ceil(2 * sigma)``. ``y`` may be one (B, 1, H, W) reference for
    every channel of ``x``: the same maps as with ``y.expand_as(x)``, its moments filtered once.
    """
    x, y = _check_pair(x, y, data_range, padding, broadcast=True)
    r = _default_radius(sigma) if radius is None else int(radius)
    _check_size(x.shape[-2], x.shape[-1], r, sigma, padding, "ssim")
    win = _window(sigma, r, x)
    xp, yp = _pad(x, r, padding), _pad(y, r, padding)
    if x.shape == y.shape:
        moments = _filter_moments(_moments(xp, yp), win, 0, padding, x, r).chunk(5, dim=1)
    else:
        mx, exx, exy = _filter_moments(torch.cat([xp, xp * xp, xp * yp], dim=1), win, 0,
                                       padding, x, r).chunk(3, dim=1)
        my, eyy = _filter_moments(torch.cat([yp, yp * yp], dim=1), win, 0, padding, x,
                                  r).chunk(2, dim=1)
        moments = (mx, my, exx, eyy, exy)
    return _l_cs(*moments, (k1 * data_range) ** 2, (k2 * data_range) ** 2)


def ssim_map(x: torch.Tensor, y: torch.Tensor, sigma: float = 1.5, *, data_range: float,
             radius: int | None = None, padding: str = "reflect") -> torch.Tensor:
    """Per-pixel, per-channel SSIM ``l * cs``, (B, C, H', W').

    ``sigma=1.5, radius=5, padding="valid"`` is the classic 11-tap SSIM of Wang et al. 2004
    (= ``pytorch_msssim.ssim`` after averaging); the default radius is ``ceil(2 * sigma)``."""
    l_map, cs_map = ssim_components(x, y, sigma, data_range=data_range, padding=padding,
                                    radius=radius)
    return l_map * cs_map


def _ms_ssim_and_l1(x, y, sigmas, data_range, padding, radius, with_ms, with_l1):
    """MS-SSIM map and Gaussian(sigma_max)-filtered |x - y|, both (B, C, H', W') (or None)."""
    x, y = _check_pair(x, y, data_range, padding)
    sigmas = [float(s) for s in sigmas]
    if not sigmas:
        raise ValueError("sigmas must not be empty")
    radii = [_default_radius(s) if radius is None else int(radius) for s in sigmas]
    i_max = max(range(len(sigmas)), key=lambda i: (sigmas[i], radii[i]))
    r_max = max(radii)
    _check_size(x.shape[-2], x.shape[-1], r_max, sigmas[i_max], padding, "ms_ssim")
    xp, yp = _pad(x, r_max, padding), _pad(y, r_max, padding)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    ms = None
    if with_ms:
        stack = _moments(xp, yp)
        for i, (s, r) in enumerate(zip(sigmas, radii, strict=True)):
            moments = _filter_moments(stack, _window(s, r, x), r_max - r, padding, x, r_max)
            l_map, cs_map = _l_cs(*moments.chunk(5, dim=1), c1, c2)
            ms = cs_map if ms is None else ms * cs_map
            if i == i_max:
                l_max = l_map
        ms = ms * l_max
    l1 = None
    if with_l1:
        l1 = _filter_moments((xp - yp).abs(), _window(sigmas[i_max], radii[i_max], x),
                             r_max - radii[i_max], padding, x, r_max)
    return ms, l1


def ms_ssim_map(x: torch.Tensor, y: torch.Tensor, sigmas: Sequence[float] = SIGMAS, *,
                data_range: float, padding: str = "reflect",
                radius: int | None = None) -> torch.Tensor:
    """Dense MS-SSIM ``l_{sigma_max}(p) * prod_j cs_j(p)`` per channel, (B, C, H', W').

    ``radius=None`` uses ``ceil(2 * sigma)`` per sigma; an int uses that common radius for every
    sigma (``radius=16`` = the 33-tap support of the dense public ports)."""
    ms, _ = _ms_ssim_and_l1(x, y, sigmas, data_range, padding, radius, True, False)
    return ms


def mix_map(x: torch.Tensor, y: torch.Tensor, alpha: float, sigmas: Sequence[float] = SIGMAS,
            *, data_range: float, padding: str = "reflect",
            radius: int | None = None) -> torch.Tensor:
    """Per-pixel Zhao mix averaged over channels, (B, 1, H', W')::

        alpha * (1 - MS-SSIM(p)) + (1 - alpha) * (G_{sigma_max} * |x - y|)(p) / data_range
    """
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    ms, l1 = _ms_ssim_and_l1(x, y, sigmas, data_range, padding, radius,
                             with_ms=alpha != 0.0, with_l1=alpha != 1.0)
    if l1 is None:
        out = alpha * (1.0 - ms)
    elif ms is None:
        out = (1.0 - alpha) / data_range * l1
    else:
        out = alpha * (1.0 - ms) + (1.0 - alpha) / data_range * l1
    return out.mean(dim=1, keepdim=True)


def mix_loss(x: torch.Tensor, y: torch.Tensor, alpha: float, sigmas: Sequence[float] = SIGMAS,
             *, data_range: float, padding: str = "reflect",
             radius: int | None = None) -> torch.Tensor:
    """Scalar mix loss ``mix_map(...).mean()`` (differentiable; the training loss)."""
    return mix_map(x, y, alpha, sigmas, data_range=data_range, padding=padding,
                   radius=radius).mean()
