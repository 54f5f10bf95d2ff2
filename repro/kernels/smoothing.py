"""Separable Gaussian smoothing of anomaly maps (batched, on the maps' device)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian with radius ``ceil(truncate * sigma)`` (scipy's default)."""
    radius = max(1, math.ceil(truncate * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur (B, 1, H, W) maps; edges are replicated, which equals
    ``scipy.ndimage.gaussian_filter(mode="nearest", truncate=4.0)`` per map.
    ``sigma <= 0`` returns the input."""
    if sigma <= 0:
        return maps
    k = gaussian_kernel1d(sigma, device=maps.device).to(maps.dtype)
    r = (k.numel() - 1) // 2
    x = F.pad(maps, (r, r, 0, 0), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, r, r), mode="replicate")
    return F.conv2d(x, k.view(1, 1, -1, 1))
