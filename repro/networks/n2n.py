"""Noise-to-Norm reconstruction network (Deng et al., "Noise-to-Norm Reconstruction for
Industrial Anomaly Detection and Localization", Fig. 2).

The paper describes the network as an M-Net (Mehta & Sivaswamy 2017) on the skeleton of
SRMNet (Fan et al., "Selective residual M-Net for real image denoising", EUSIPCO 2022), with a
"residual attention module" (RAM, Fig. 3) after every feature concatenation and SKFF fusion
(Zamir et al., MIRNet, ECCV 2020) of the four decoder outputs. It gives no layer list, so the
layers below are a reconstruction.

Data flow (``wf`` = width, four levels at 1, 1/2, 1/4, 1/8 resolution, ``C_i = 2^i * wf``,
``x_i`` = the image bilinearly downsampled i times by 0.5, ``S`` = the shared shallow conv)::

    encoder  e0 = block(S(x_0))                                  wf      -> C0   (H)
             e1 = block(cat[PS_down(e0), S(x_1)])                C0 + wf -> C1   (H/2)
             e2 = block(cat[PS_down(e1), S(x_2)])                C1 + wf -> C2   (H/4)
             e3 = block(cat[PS_down(e2), S(x_3)])  (bottom)      C2 + wf -> C3   (H/8)
    decoder  d2 = block(cat[PS_up(e3), skip_conv(e2)])           2 C2    -> C2   (H/4)
             d1 = block(cat[PS_up(d2), skip_conv(e1)])           2 C1    -> C1   (H/2)
             d0 = block(cat[PS_up(d1), skip_conv(e0)])           2 C0    -> C0   (H)
    sides    s_i = up_{2^i}(conv3x3(d_i -> wf)), i = 0..2;  s_3 = up_8(conv3x3(e3 -> wf))
    output   conv3x3(SKFF(s_0, s_1, s_2, s_3) -> 3)        (+ x only with residual=True)

Taken from the public SRMNet / MIRNet code (as described in their papers and repositories):

* shallow feature conv: one 3x3 conv 3→wf (bias), *shared* across the input scales;
* M-Net left leg: at encoder level i >= 1 the image is bilinearly downsampled by 0.5 once more
  (``align_corners=False``), passed through the shared shallow conv and concatenated with the
  previous level's downsampled features, so the level inputs have wf, 2wf, 3wf, 5wf channels;
* channels per level ``2^i * wf``;
* ``PS_down(c)``: PixelUnshuffle(2) then 1x1 conv 4c→c (bias);
  ``PS_up(cin, cout)``: PixelShuffle(2) then 1x1 conv cin/4→cout (bias);
* decoder level i: ``PS_up(C_{i+1}→C_i)``, concatenated with ``skip_conv(skip_i)`` (3x3 conv
  C_i→C_i, bias), then the block (2 C_i → C_i);
* M-Net right leg: side outputs by 3x3 conv C_i→wf at the bottom and at each decoder level,
  bilinear upsampling (``align_corners=False``) to full resolution;
* SKFF (MIRNet): ``d = max(C // reduction, 4)``; sum of the K inputs → global average pool →
  1x1 conv C→d (no bias) + PReLU (one parameter) → K separate 1x1 convs d→C (no bias) → softmax
  over the K branches (per channel) → weighted sum of the inputs;
* output: 3x3 conv wf→3 (bias) on the fused map. SRMNet adds a global residual (the input
  image); Noise-to-Norm's Fig. 2 and text do not (the fused features "generate the final
  reconstructed image"), and with it lambda = 0 learns the identity (issue 11, point 4), so it is
  off by default and ``residual=True`` is a named variant (``global_residual=true``);
* no normalisation layers.

Our choices (not specified by the paper or the SRMNet/MIRNet code):

* The block after every concatenation is the RAM (:class:`ResidualAttention`), our reading of
  Fig. 3 ("global pooling, convolutional and activation layers; in both pathways a 1x1
  convolution adjusts the number of channels"; residual connection):
  pathway A = 1x1 conv in→out; pathway B = 1x1 conv in→out, 3x3 conv, ReLU, 3x3 conv, then
  channel attention (global average pool → 1x1 conv out→max(out // reduction, 4) → ReLU →
  1x1 conv → out → sigmoid, multiplying the features); output = A + B. It takes the place of
  SRMNet's selective residual block.
* Every conv has a bias except those inside SKFF (MIRNet's ``bias=False``); in particular the
  RAM convs, the channel-attention convs and the side-output convs have one.
* ``reduction`` (default 8) is shared by the RAM channel attention and SKFF.
* Ablation ``ram=False`` (paper Table 5: "we replaced the residual attention module with a 1x1
  convolutional layer, which was used to change the number of feature channels"): every block
  is a single 1x1 conv in→out (bias). As the paper's wording implies, this also removes the
  level's 3x3 convolutions (the only 3x3 convs left are the shallow, skip, side and output
  convs), so the ablation changes capacity and receptive field, not only the attention.
* ``padding_mode`` of every 3x3 conv (torch's ``"zeros"``, ``"reflect"``, ``"replicate"``):
  the papers do not say; zeros is SRMNet's (torch's default). Config key ``conv_padding``.
* Input sizes must be divisible by 8 (three PixelUnshuffle(2) steps); anything else raises
  ``ValueError`` instead of being padded. ``width`` must be even (PS_up at level 0 maps
  2wf → wf/2 channels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LEVELS = 4  # full, 1/2, 1/4, 1/8 resolution


def conv3x3(in_channels: int, out_channels: int, bias: bool = True,
            padding_mode: str = "zeros") -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias,
                     padding_mode=padding_mode)


def conv1x1(in_channels: int, out_channels: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, bias=bias)


class SKFF(nn.Module):
    """Selective kernel feature fusion (MIRNet): K same-shape maps -> one, weighted per channel
    by a softmax over the K branches."""

    def __init__(self, channels: int, height: int, reduction: int = 8) -> None:
        super().__init__()
        self.height = height
        d = max(int(channels / reduction), 4)
        self.squeeze = nn.Sequential(conv1x1(channels, d, bias=False), nn.PReLU())
        self.excite = nn.ModuleList(conv1x1(d, channels, bias=False) for _ in range(height))

    def attention(self, inputs: Sequence[Tensor]) -> Tensor:
        """(K, B, C, 1, 1) weights, summing to 1 over K."""
        if len(inputs) != self.height:
            raise ValueError(f"SKFF expects {self.height} inputs, got {len(inputs)}")
        u = torch.stack(list(inputs)).sum(0)  # (B, C, H, W)
        z = self.squeeze(F.adaptive_avg_pool2d(u, 1))  # (B, d, 1, 1)
        logits = torch.stack([fc(z) for fc in self.excite])  # (K, B, C, 1, 1)
        return logits.softmax(dim=0)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        a = self.attention(inputs)  # (K, B, C, 1, 1)
        return (a * torch.stack(list(inputs))).sum(0)  # (B, C, H, W)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation gate: features * sigmoid(MLP(global average pool))."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),  # (B, C, 1, 1)
            conv1x1(channels, hidden), nn.ReLU(inplace=True),
            conv1x1(hidden, channels), nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C, H, W)
        return x * self.gate(x)


class ResidualAttention(nn.Module):
    """RAM (our reading of the paper's Fig. 3): residual 1x1 conv + (1x1 conv, 3x3 conv, ReLU,
    3x3 conv, channel attention)."""

    def __init__(self, in_channels: int, out_channels: int, reduction: int = 8,
                 padding_mode: str = "zeros") -> None:
        super().__init__()
        self.residual = conv1x1(in_channels, out_channels)  # pathway A
        self.body = nn.Sequential(  # pathway B
            conv1x1(in_channels, out_channels),
            conv3x3(out_channels, out_channels, padding_mode=padding_mode), nn.ReLU(inplace=True),
            conv3x3(out_channels, out_channels, padding_mode=padding_mode),
            ChannelAttention(out_channels, reduction),
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, in, H, W) -> (B, out, H, W)
        return self.residual(x) + self.body(x)


class PixelShuffleDown(nn.Module):
    """SRMNet PS_down: (B, c, H, W) -> PixelUnshuffle(2) -> (B, 4c, H/2, W/2) -> 1x1 -> c."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.PixelUnshuffle(2), conv1x1(4 * channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class PixelShuffleUp(nn.Module):
    """SRMNet PS_up: (B, cin, H, W) -> PixelShuffle(2) -> (B, cin/4, 2H, 2W) -> 1x1 -> cout."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if in_channels % 4:
            raise ValueError(f"PS_up needs in_channels divisible by 4, got {in_channels}")
        self.body = nn.Sequential(nn.PixelShuffle(2), conv1x1(in_channels // 4, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def _block(in_channels: int, out_channels: int, ram: bool, reduction: int,
           padding_mode: str = "zeros") -> nn.Module:
    """The block after every concatenation: RAM, or the Table 5 ablation's single 1x1 conv."""
    if ram:
        return ResidualAttention(in_channels, out_channels, reduction, padding_mode)
    return conv1x1(in_channels, out_channels)


def _upsample(x: Tensor, factor: int) -> Tensor:
    if factor == 1:
        return x
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class N2NNet(nn.Module):
    """Noise-to-Norm reconstruction M-Net. (B, 3, H, W) -> (B, 3, H, W), H and W divisible
    by 8. ``ram=False`` is the paper's Table 5 ablation (blocks become 1x1 convs);
    ``residual=True`` adds SRMNet's global residual (output + input), not in the paper."""

    def __init__(self, width: int = 64, ram: bool = True, reduction: int = 8,
                 residual: bool = False, padding_mode: str = "zeros") -> None:
        super().__init__()
        if width < 2 or width % 2:
            raise ValueError(f"width must be a positive even number, got {width}")
        wf, pm = width, padding_mode
        self.width, self.ram, self.residual = wf, ram, residual
        ch = [wf * 2**i for i in range(LEVELS)]  # [wf, 2wf, 4wf, 8wf]
        enc_in = [wf] + [ch[i - 1] + wf for i in range(1, LEVELS)]  # [wf, 2wf, 3wf, 5wf]

        self.shallow = conv3x3(3, wf, padding_mode=pm)  # shared across the input scales
        # Encoder (M-Net left leg + contracting path); level 3 is the bottom.
        self.encoder = nn.ModuleList(
            _block(enc_in[i], ch[i], ram, reduction, pm) for i in range(LEVELS))
        self.down = nn.ModuleList(PixelShuffleDown(ch[i]) for i in range(LEVELS - 1))
        # Decoder, indexed by the level it produces (0, 1, 2).
        self.up = nn.ModuleList(PixelShuffleUp(ch[i + 1], ch[i]) for i in range(LEVELS - 1))
        self.skip = nn.ModuleList(conv3x3(ch[i], ch[i], padding_mode=pm)
                                  for i in range(LEVELS - 1))
        self.decoder = nn.ModuleList(
            _block(2 * ch[i], ch[i], ram, reduction, pm) for i in range(LEVELS - 1))
        # M-Net right leg: side outputs of levels 0, 1, 2 and the bottom (3).
        self.side = nn.ModuleList(conv3x3(ch[i], wf, padding_mode=pm) for i in range(LEVELS))
        self.fuse = SKFF(wf, height=LEVELS, reduction=reduction)
        self.tail = conv3x3(wf, 3, padding_mode=pm)

    def side_outputs(self, x: Tensor) -> list[Tensor]:
        """The four full-resolution (B, wf, H, W) side maps, ordered level 0, 1, 2, bottom."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % 8 or w % 8:
            raise ValueError(f"N2NNet needs H and W divisible by 8, got {h}x{w}")

        skips: list[Tensor] = []
        image = x
        feat = self.encoder[0](self.shallow(image))  # (B, C0, H, W)
        for i in range(1, LEVELS):
            skips.append(feat)  # (B, C_{i-1}, H/2^{i-1}, W/2^{i-1})
            image = F.interpolate(image, scale_factor=0.5, mode="bilinear",
                                  align_corners=False)  # (B, 3, H/2^i, W/2^i)
            feat = torch.cat([self.down[i - 1](feat), self.shallow(image)], 1)  # C_{i-1} + wf
            feat = self.encoder[i](feat)  # (B, C_i, H/2^i, W/2^i)

        sides: dict[int, Tensor] = {LEVELS - 1: self.side[LEVELS - 1](feat)}  # (B, wf, H/8, W/8)
        for i in reversed(range(LEVELS - 1)):
            feat = torch.cat([self.up[i](feat), self.skip[i](skips[i])], 1)  # (B, 2 C_i, ...)
            feat = self.decoder[i](feat)  # (B, C_i, H/2^i, W/2^i)
            sides[i] = self.side[i](feat)  # (B, wf, H/2^i, W/2^i)
        return [_upsample(sides[i], 2**i) for i in range(LEVELS)]  # 4 x (B, wf, H, W)

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, 3, H, W)
        fused = self.fuse(self.side_outputs(x))  # (B, wf, H, W)
        out = self.tail(fused)  # (B, 3, H, W)
        return out + x if self.residual else out


def n2n_net(*, width: int = 64, ram: bool = True, residual: bool = False,
            padding_mode: str = "zeros") -> N2NNet:
    """Builder: the full model (``ram=True``) or the Table 5 ablation (``ram=False``);
    ``residual`` and ``padding_mode`` as in :class:`N2NNet`."""
    return N2NNet(width=width, ram=ram, residual=residual, padding_mode=padding_mode)
