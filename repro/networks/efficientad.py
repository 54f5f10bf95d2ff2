"""EfficientAD networks (Batzner et al., WACV 2024, Sec. 3 and Appendix A), as used by PUAD.

Layer lists as in the EfficientAD paper's Tables 6-8 and the public implementations (LeapMind
PUAD ``puad/networks.py``, nelson1425 ``common.py``, anomalib ``efficient_ad/torch_model.py``).
``padding=True`` is used for the teacher's distillation (output 64x64 at 256x256 input);
student, autoencoder and the frozen teacher in Algorithm 1 use ``padding=False`` (56x56).

PDN-S (out: 384 teacher, 768 student)::

    conv 3->128 k4 p3, ReLU, avgpool 2/2 p1,
    conv 128->256 k4 p3, ReLU, avgpool 2/2 p1,
    conv 256->256 k3 p1, ReLU,
    conv 256->out k4

PDN-M::

    conv 3->256 k4 p3, ReLU, avgpool 2/2 p1,
    conv 256->512 k4 p3, ReLU, avgpool 2/2 p1,
    conv 512->512 k1, ReLU, conv 512->512 k3 p1, ReLU,
    conv 512->out k4, ReLU, conv out->out k1

Autoencoder: five strided convolutions (k4 s2 p1, ReLU) and one 8x8 convolution down to a
64x1x1 code, then six (bilinear resize, conv k4 p2, ReLU, dropout 0.2) decoding steps, a resize
to the student's output size and two 3x3 convolutions to 384 channels.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

TEACHER_CHANNELS = 384  # "out_channels" of the teacher and of each half of the student


def pdn_small(out_channels: int = TEACHER_CHANNELS, padding: bool = False) -> nn.Sequential:
    """Patch description network, size S (receptive field 33 px)."""
    p = 1 if padding else 0
    return nn.Sequential(
        nn.Conv2d(3, 128, 4, padding=3 * p), nn.ReLU(inplace=True),
        nn.AvgPool2d(2, 2, padding=p),
        nn.Conv2d(128, 256, 4, padding=3 * p), nn.ReLU(inplace=True),
        nn.AvgPool2d(2, 2, padding=p),
        nn.Conv2d(256, 256, 3, padding=p), nn.ReLU(inplace=True),
        nn.Conv2d(256, out_channels, 4),
    )


def pdn_medium(out_channels: int = TEACHER_CHANNELS, padding: bool = False) -> nn.Sequential:
    """Patch description network, size M (receptive field 33 px, twice the width, two more
    1x1 convolutions)."""
    p = 1 if padding else 0
    return nn.Sequential(
        nn.Conv2d(3, 256, 4, padding=3 * p), nn.ReLU(inplace=True),
        nn.AvgPool2d(2, 2, padding=p),
        nn.Conv2d(256, 512, 4, padding=3 * p), nn.ReLU(inplace=True),
        nn.AvgPool2d(2, 2, padding=p),
        nn.Conv2d(512, 512, 1), nn.ReLU(inplace=True),
        nn.Conv2d(512, 512, 3, padding=p), nn.ReLU(inplace=True),
        nn.Conv2d(512, out_channels, 4), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 1),
    )


PDN = {"S": pdn_small, "M": pdn_medium}


def pdn(size: str, out_channels: int = TEACHER_CHANNELS, padding: bool = False) -> nn.Sequential:
    if size not in PDN:
        raise ValueError(f"unknown EfficientAD size '{size}'; expected S or M")
    return PDN[size](out_channels, padding)


def pdn_output_size(image_size: int, padding: bool = False) -> int:
    """Side of the PDN output for a square input (56 at 256 without padding, 64 with)."""
    return image_size // 4 if padding else image_size // 4 - 8


class _Resize(nn.Module):
    """Bilinear resize to a fixed size (the decoder's upsampling steps)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=self.size, mode="bilinear")

    def extra_repr(self) -> str:
        return f"size={self.size}"


def autoencoder(image_size: int = 256, out_channels: int = TEACHER_CHANNELS,
                padding: bool = False) -> nn.Sequential:
    """EfficientAD's autoencoder. The decoder's intermediate sizes (3, 8, 15, 32, 63, 127 at
    256x256) generalise as ``H/64 - 1, H/32, H/16 - 1, H/8, H/4 - 1, H/2 - 1``; its last resize
    matches the PDN output size. (At 64x64, a smoke-test size, the first becomes 1.)"""
    h = image_size
    if h % 64:
        raise ValueError(f"the autoencoder needs an image size divisible by 64, got {h}")

    def down(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.ReLU(inplace=True)]

    def up(size: int) -> list[nn.Module]:
        return [_Resize(size), nn.Conv2d(64, 64, 4, padding=2), nn.ReLU(inplace=True),
                nn.Dropout(0.2)]

    encoder = [*down(3, 32), *down(32, 32), *down(32, 64), *down(64, 64), *down(64, 64),
               nn.Conv2d(64, 64, h // 32)]  # 8x8 at 256 -> 64 x 1 x 1
    sizes = [max(h // 64 - 1, 1), h // 32, h // 16 - 1, h // 8, h // 4 - 1, h // 2 - 1]
    decoder = [layer for s in sizes for layer in up(s)]
    head = [_Resize(pdn_output_size(h, padding)),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(64, out_channels, 3, padding=1)]
    return nn.Sequential(*encoder, *decoder, *head)
