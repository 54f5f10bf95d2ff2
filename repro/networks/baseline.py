"""A small convolutional autoencoder: the sanity baseline of the foundation (not a paper).

Three stride-2 convolutions down to 1/8 resolution, a 1x1 bottleneck, and three transposed
convolutions back; the narrow bottleneck keeps it from copying defects through.
"""

from __future__ import annotations

from torch import nn


def conv_autoencoder(width: int = 32, bottleneck: int = 16) -> nn.Sequential:
    """(B, 3, H, W) in [0, 1] -> (B, 3, H, W); H and W divisible by 8."""
    w = width
    return nn.Sequential(
        nn.Conv2d(3, w, 4, 2, 1), nn.ReLU(inplace=True),  # 1/2
        nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU(inplace=True),  # 1/4
        nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.ReLU(inplace=True),  # 1/8
        nn.Conv2d(4 * w, bottleneck, 1), nn.ReLU(inplace=True),  # bottleneck
        nn.Conv2d(bottleneck, 4 * w, 1), nn.ReLU(inplace=True),
        nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.ReLU(inplace=True),  # 1/4
        nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(inplace=True),  # 1/2
        nn.ConvTranspose2d(w, 3, 4, 2, 1), nn.Sigmoid(),  # 1/1
    )
