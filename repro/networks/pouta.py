"""POUTA (Wang et al., "Produce Once, Utilize Twice for Anomaly Detection", Sec. III, Fig. 4)
and its vanilla baseline (Fig. 4a).

Both share the reconstructive network, laid out as DRAEM's (Zavrtanik et al. 2021,
``model_unet.py``; reference notes 3.3) with base width ``b``: every block is two
(3x3 conv, BatchNorm, ReLU); max-pooling between encoder blocks; bilinear x2 upsampling followed
by conv-BN-ReLU in the decoder; no skip connections (a skip would carry the anomaly past the
bottleneck)::

    encoder  F_E1 = block(3 -> b)            H         F_E2 = block(b -> 2b)     H/2
             F_E3 = block(2b -> 4b)          H/4       F_E4 = block(4b -> 8b)    H/8
    mapping  F_M  = block(pool(F_E4), 8b -> 8b)        H/16
    decoder  F_D4 = block(up(F_M), 8b -> 4b)  H/8      F_D3 = block(up, 4b -> 2b) H/4
             F_D2 = block(up(F_D3), 2b -> b)  H/2      F_D1 = block(up, b -> b)   H
    output   I_r  = conv3x3(F_D1, b -> 3)

POUTA's coarse-to-fine discriminative network reads (F_Ei, F_Di) pairs of equal resolution:

* FCM (i = 1..4): ``F_Ci = conv1x1(cat[conv1x1(F_Ei), conv1x1(F_Di)])`` to ``c_i`` channels;
* HSG (i = 3, 2, 1): the deeper map (``F_C4`` for i = 3, else ``F'_C(i+1)``) is upsampled to the
  current resolution and passed through a 3x3 convolution; ``W_sp`` = sigmoid(1x1 conv to one
  channel), ``W_cn`` = sigmoid(1x1 conv of its global average); ``F'_Ci = W_sp * F_Ci * W_cn``
  (Eqs. 2-4);
* MSS heads (training only): 1x1 conv to 2 classes on ``F'_C1..3`` and ``F_C4``, upsampled to
  the input size (1x1 conv and bilinear upsampling commute, so the cheaper order is used), softmax
  in the loss;
* M_p: the four maps upsampled to the input size, concatenated, 1x1 conv to 2 classes (computed
  as the sum of the per-map slices of that convolution applied before upsampling: equal, and
  without the full-resolution concatenation).

The vanilla discriminative network is DRAEM's U-Net (six encoder blocks, base width ``d``) on
``cat[input, reconstruction]``.

Unpublished and chosen by us (the widths are ``rec_width``, ``vanilla_width`` and ``c2f_widths``
of ``repro.profiles.PAPER_CONFIG["pouta"]``): ``b``, ``d``, ``c_i``, BatchNorm and ReLU after
every FCM/HSG convolution, sigmoid gates, bilinear upsampling, PyTorch's default initialisation
(DRAEM draws conv weights from N(0, 0.02) and BatchNorm weights from N(1, 0.02); we do not).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def block(cin: int, cout: int) -> nn.Sequential:
    """DRAEM's block: two 3x3 conv-BN-ReLU."""
    return nn.Sequential(*conv_bn_relu(cin, cout), *conv_bn_relu(cout, cout))


def up(cin: int, cout: int) -> nn.Sequential:
    """DRAEM's upsampling step: bilinear x2, then conv-BN-ReLU."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                         *conv_bn_relu(cin, cout))


class Reconstructive(nn.Module):
    """Encoder F_E1..F_E4, mapping layer, decoder F_D4..F_D1, reconstruction."""

    def __init__(self, b: int):
        super().__init__()
        self.enc = nn.ModuleList([block(3, b), block(b, 2 * b), block(2 * b, 4 * b),
                                  block(4 * b, 8 * b)])
        self.mapping = block(8 * b, 8 * b)
        # (up step, block) per decoder level, deepest first: outputs 4b, 2b, b, b channels
        self.dec = nn.ModuleList([
            nn.Sequential(up(8 * b, 8 * b), *conv_bn_relu(8 * b, 8 * b),
                          *conv_bn_relu(8 * b, 4 * b)),
            nn.Sequential(up(4 * b, 4 * b), *conv_bn_relu(4 * b, 4 * b),
                          *conv_bn_relu(4 * b, 2 * b)),
            nn.Sequential(up(2 * b, 2 * b), *conv_bn_relu(2 * b, 2 * b),
                          *conv_bn_relu(2 * b, b)),
            nn.Sequential(up(b, b), *conv_bn_relu(b, b), *conv_bn_relu(b, b)),
        ])
        self.out = nn.Conv2d(b, 3, 3, padding=1)
        self.enc_channels = (b, 2 * b, 4 * b, 8 * b)
        self.dec_channels = (b, b, 2 * b, 4 * b)  # F_D1..F_D4

    def forward(self, x: torch.Tensor
                ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """(I_r, [F_E1..F_E4], [F_D1..F_D4])."""
        enc = []
        for i, blk in enumerate(self.enc):
            x = blk(F.max_pool2d(x, 2) if i else x)
            enc.append(x)
        x = self.mapping(F.max_pool2d(x, 2))
        dec = []
        for blk in self.dec:
            x = blk(x)
            dec.append(x)
        return self.out(x), enc, dec[::-1]


class UNetDiscriminative(nn.Module):
    """DRAEM's discriminative U-Net (base width ``d``): 6 encoder blocks (5 poolings), decoder
    with skips, 2 output classes."""

    def __init__(self, d: int, cin: int = 6):
        super().__init__()
        w = [d, 2 * d, 4 * d, 8 * d, 8 * d, 8 * d]
        self.enc = nn.ModuleList([block(cin, w[0])] +
                                 [block(w[i - 1], w[i]) for i in range(1, 6)])
        # deepest first: up to 8d, 4d, 2d, d, d, each concatenated with the skip of its level
        u = [8 * d, 4 * d, 2 * d, d, d]
        self.ups = nn.ModuleList([up(cin_, c) for cin_, c in zip([w[5], *u[:-1]], u,
                                                                   strict=True)])
        self.dec = nn.ModuleList([block(c + s, c) for c, s in zip(u, w[4::-1], strict=True)])
        self.out = nn.Conv2d(d, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, blk in enumerate(self.enc):
            x = blk(F.max_pool2d(x, 2) if i else x)
            skips.append(x)
        x = skips.pop()
        for upper, blk in zip(self.ups, self.dec, strict=True):
            x = blk(torch.cat([upper(x), skips.pop()], dim=1))
        return self.out(x)


class FCM(nn.Module):
    """Feature contrast module: 1x1 projections of F_Ei and F_Di, concatenated, 1x1 fusion."""

    def __init__(self, c_enc: int, c_dec: int, c: int):
        super().__init__()
        self.enc = nn.Sequential(*conv_bn_relu(c_enc, c, 1))
        self.dec = nn.Sequential(*conv_bn_relu(c_dec, c, 1))
        self.fuse = nn.Sequential(*conv_bn_relu(2 * c, c, 1))

    def forward(self, e: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.enc(e), self.dec(d)], dim=1))


class HSG(nn.Module):
    """High-level semantic guidance: the deeper map gates the current one spatially and per
    channel (Eqs. 2-4)."""

    def __init__(self, c_deep: int, c: int):
        super().__init__()
        self.conv = nn.Sequential(*conv_bn_relu(c_deep, c, 3))
        self.spatial = nn.Conv2d(c, 1, 1)
        self.channel = nn.Conv2d(c, c, 1)

    def forward(self, f_c: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        g = self.conv(F.interpolate(deep, size=f_c.shape[-2:], mode="bilinear"))
        w_sp = torch.sigmoid(self.spatial(g))
        w_cn = torch.sigmoid(self.channel(g.mean(dim=(2, 3), keepdim=True)))
        return w_sp * f_c * w_cn


class CoarseToFine(nn.Module):
    """FCM on each symmetric pair, optional HSG refinement, optional MSS heads, aggregation."""

    def __init__(self, enc_channels: Sequence[int], dec_channels: Sequence[int],
                 widths: Sequence[int], hsg: bool = True, mss: bool = True):
        super().__init__()
        self.fcm = nn.ModuleList([FCM(e, d, c) for e, d, c in
                                  zip(enc_channels, dec_channels, widths, strict=True)])
        self.hsg = nn.ModuleList([HSG(widths[i + 1], widths[i]) for i in range(3)]) \
            if hsg else None
        self.heads = nn.ModuleList([nn.Conv2d(c, 2, 1) for c in widths]) if mss else None
        self.aggregate = nn.Conv2d(sum(widths), 2, 1)

    def forward(self, enc: Sequence[torch.Tensor], dec: Sequence[torch.Tensor],
                size: tuple[int, int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(M_p logits at ``size``, MSS head logits at ``size`` (training only))."""
        fc = [m(e, d) for m, e, d in zip(self.fcm, enc, dec, strict=True)]
        refined = list(fc)
        if self.hsg is not None:
            for i in (2, 1, 0):  # F'_C3 from F_C4, F'_C2 from F'_C3, F'_C1 from F'_C2
                refined[i] = self.hsg[i](fc[i], refined[i + 1])
        heads = []
        if self.heads is not None and self.training:
            heads = [_upsample(h(r), size) for h, r in zip(self.heads, refined, strict=True)]
        # M_p = conv1x1(cat[up(F'_C1), ..., up(F_C4)]), computed as the sum of each map's slice
        # of the 1x1 convolution, applied before upsampling (the two commute): the same logits
        # without a (sum(c_i), H, W) concatenation, which made POUTA memory-bound
        w, bias = self.aggregate.weight, self.aggregate.bias
        bounds = torch.tensor([0, *[r.shape[1] for r in refined]]).cumsum(0).tolist()
        logits = sum(_upsample(F.conv2d(r, w[:, a:b]), size)
                     for r, a, b in zip(refined, bounds[:-1], bounds[1:], strict=True))
        return logits + bias.view(1, -1, 1, 1), heads


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x if x.shape[-2:] == size else F.interpolate(x, size=size, mode="bilinear")


class POUTA(nn.Module):
    def __init__(self, b: int, widths: Sequence[int], hsg: bool = True, mss: bool = True):
        super().__init__()
        self.reconstructive = Reconstructive(b)
        self.discriminative = CoarseToFine(self.reconstructive.enc_channels,
                                           self.reconstructive.dec_channels, widths, hsg, mss)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        recon, enc, dec = self.reconstructive(x)
        logits, heads = self.discriminative(enc, dec, tuple(x.shape[-2:]))
        return {"reconstruction": recon, "logits": logits, "heads": heads}


class Vanilla(nn.Module):
    """Fig. 4(a): the reconstructive network, then a U-Net on [input, reconstruction]."""

    def __init__(self, b: int, d: int):
        super().__init__()
        self.reconstructive = Reconstructive(b)
        self.discriminative = UNetDiscriminative(d)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        recon, _, _ = self.reconstructive(x)
        return {"reconstruction": recon,
                "logits": self.discriminative(torch.cat([x, recon], dim=1)), "heads": []}


# Table V rows as named configurations of one model
VARIANTS: dict[str, dict] = {
    "vanilla": {"kind": "vanilla"},
    "pouta_base": {"kind": "pouta", "hsg": False, "mss": False},
    "pouta_base_hsg": {"kind": "pouta", "hsg": True, "mss": False},
    "pouta_base_mss": {"kind": "pouta", "hsg": False, "mss": True},
    "pouta": {"kind": "pouta", "hsg": True, "mss": True},
}


def build(variant: str, b: int, d: int, widths: Sequence[int]) -> nn.Module:
    if variant not in VARIANTS:
        raise ValueError(f"unknown POUTA variant '{variant}'; expected one of {list(VARIANTS)}")
    v = VARIANTS[variant]
    if v["kind"] == "vanilla":
        return Vanilla(b, d)
    return POUTA(b, widths, hsg=v["hsg"], mss=v["mss"])
