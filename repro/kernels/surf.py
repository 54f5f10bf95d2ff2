r"""Superpixel Random Filling (SURF), TSDN's anomaly synthesis.

TSDN (Park et al., "Two-Stream Decoder Feature Normality Estimating Network", Sec. 2.2): "we
first split the original image I into N_s superpixels using the simple linear iterative
clustering algorithm [SLIC, Achanta et al. 2012]. Then, we randomly fill a fixed number S_s of
the superpixels with random colors to generate a distorted image I_surf. In addition, we produce
a binary mask M_surf that localizes the randomly filled superpixels."

Printed in the paper (Sec. 3.1, "we empirically set N_s and S_s to 400 and 50"):
:data:`N_SEGMENTS` = 400, :data:`N_FILLED` = 50.

Not given by the paper (our choices):

* SLIC implementation: ``skimage.segmentation.slic`` on the RGB image (converted to CIELAB by
  skimage, its default for 3-channel images), ``max_num_iter=10`` and
  ``enforce_connectivity=True`` (skimage defaults), labels relabelled to ``0..n-1``.
  SLIC returns *about* N_s segments (fewer or more, depending on the image); all of them are
  candidates.
* :data:`SLIC_COMPACTNESS` = 10: skimage's default, and the value recommended for CIELAB
  images (balances colour and spatial proximity; larger is more square).
* :data:`SLIC_SIGMA` = 1: Gaussian pre-smoothing (pixels) so that sensor noise and fine texture
  do not make superpixel boundaries ragged; the value used in skimage's SLIC examples
  (skimage's default is 0, no smoothing).
* Choice of the superpixels: ``min(S_s, n)`` distinct labels, uniformly at random among the
  ``n`` labels of the image (all subsets equally likely).
* Colour distribution: one colour per filled superpixel, each RGB channel drawn independently
  from U[0, 1) (the paper only says "random colors"). The whole superpixel gets that constant
  colour (no blending), and pixels outside the mask are left bit-identical.

Design: the SLIC segmentation depends only on the image, so the caller computes it once per
training image with :func:`slic_segments` (numpy, CPU) and caches it; :func:`surf_fill` is a
batched torch op that draws the labels and colours and fills them on the images' device.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.segmentation import slic

__all__ = ["N_FILLED", "N_SEGMENTS", "SLIC_COMPACTNESS", "SLIC_SIGMA", "slic_segments",
           "surf_fill"]

N_SEGMENTS = 400        # N_s, TSDN Sec. 3.1
N_FILLED = 50           # S_s, TSDN Sec. 3.1
SLIC_COMPACTNESS = 10.0  # our choice (skimage default, suited to CIELAB)
SLIC_SIGMA = 1.0         # our choice (skimage examples' pre-smoothing)


def slic_segments(image: np.ndarray, n_segments: int = N_SEGMENTS,
                  compactness: float = SLIC_COMPACTNESS,
                  sigma: float = SLIC_SIGMA) -> np.ndarray:
    """SLIC superpixels of an (H, W, 3) RGB or (H, W) grey image (uint8, or float in [0, 1])
    -> int32 (H, W) labels ``0..n-1``, consecutive (n is about ``n_segments``)."""
    if image.ndim == 3 and image.shape[-1] == 3:
        channel_axis = -1
    elif image.ndim == 2:
        channel_axis = None
    else:
        raise ValueError(f"image must be (H, W, 3) or (H, W), got shape {image.shape}")
    labels = slic(image, n_segments=n_segments, compactness=compactness, sigma=sigma,
                  start_label=0, channel_axis=channel_axis)
    # Relabel so that the labels are exactly 0..n-1 (surf_fill counts labels as max + 1).
    _, consecutive = np.unique(labels, return_inverse=True)
    return consecutive.reshape(labels.shape).astype(np.int32)


def surf_fill(images: torch.Tensor, segments: torch.Tensor, n_filled: int = N_FILLED,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill ``min(n_filled, n_b)`` random superpixels of every image with random colours.

    ``images``: (B, 3, H, W) float in [0, 1]; ``segments``: (B, H, W) integer labels, per image
    ``0..n_b-1`` with every label present (as :func:`slic_segments` returns; ``n_b`` may differ
    per image). Returns ``(images_surf (B, 3, H, W), masks (B, 1, H, W))``, both in the images'
    dtype, on their device; masks are 1 on the filled superpixels and 0 elsewhere, and the
    pixels outside them are bit-identical to the input. Random draws (label scores, then
    colours) come from ``generator``, which must live on the images' device (or be None).
    """
    if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"images must be a float (B, 3, H, W) tensor, got {images.dtype} "
                         f"{tuple(images.shape)}")
    b, _, h, w = images.shape
    if segments.shape != (b, h, w):
        raise ValueError(f"segments must be (B, H, W) = {(b, h, w)}, got {tuple(segments.shape)}")
    if n_filled < 0:
        raise ValueError(f"n_filled must be >= 0, got {n_filled}")
    dev = images.device
    seg = segments.to(device=dev, dtype=torch.long).reshape(b, h * w)  # (B, HW)
    n_labels = seg.amax(dim=1, keepdim=True) + 1                        # (B, 1): n_b
    n_max = int(n_labels.max())  # the only host sync: sizes the draws below

    # Uniform random subset of size min(n_filled, n_b) per image: random scores, labels that do
    # not exist in an image (>= n_b) score -1 so that topk takes every real label first.
    scores = torch.rand(b, n_max, generator=generator, device=dev)      # (B, L)
    exists = torch.arange(n_max, device=dev) < n_labels                 # (B, L)
    scores = torch.where(exists, scores, -1.0)
    top = scores.topk(min(n_filled, n_max), dim=1).indices              # (B, k)
    chosen = torch.zeros_like(exists).scatter_(1, top, True)            # (B, L)
    colours = torch.rand(b, 3, n_max, generator=generator, device=dev, dtype=images.dtype)

    # Per-pixel lookups of the label tables.
    fill = chosen.gather(1, seg).view(b, 1, h, w)                        # (B, 1, H, W) bool
    colour_px = colours.gather(2, seg.unsqueeze(1).expand(b, 3, h * w)).view(b, 3, h, w)
    return torch.where(fill, colour_px, images), fill.to(images.dtype)
