"""POUTA and vanilla networks: DRAEM's published layout reproduced (known parameter counts), our
widths pinned against Table VI, the coarse-to-fine modules against Eqs. 2-4, and the ablation
configurations."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from repro.networks import count_parameters
from repro.networks.pouta import (
    HSG,
    VARIANTS,
    CoarseToFine,
    Reconstructive,
    UNetDiscriminative,
    build,
)
from repro.profiles import PAPER_CONFIG

CFG = PAPER_CONFIG["pouta"]
WIDTHS = dict(b=CFG["rec_width"], d=CFG["vanilla_width"], widths=CFG["c2f_widths"])


def macs(model: torch.nn.Module, size: int = 224) -> float:
    """Multiply-accumulates of convolutions and matrix products (FlopCounterMode FLOPs / 2)."""
    model.eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return fc.get_total_flops() / 2


def test_draem_layout_has_draems_parameter_counts():
    """At DRAEM's widths (128 / 64) the two sub-networks have the stock DRAEM sizes (the sums of
    its conv and BatchNorm parameters: 69,048,579 and 28,374,146)."""
    assert count_parameters(Reconstructive(128)) == 69_048_579
    assert count_parameters(UNetDiscriminative(64)) == 28_374_146


def test_our_widths_against_table_vi():
    """Table VI at 224x224: POUTA 15.02 M / 35.37 G, vanilla 28.68 M / 39.38 G (G read as
    multiply-accumulates). Our widths come within 2% as Fig. 4 draws the network (34.69 G); the
    M_p aggregation, computed before upsampling, executes 63 M fewer (34.63 G, 2.1% under)."""
    pouta, vanilla = build("pouta", **WIDTHS), build("vanilla", **WIDTHS)
    assert count_parameters(pouta) == 14_960_512
    assert count_parameters(vanilla) == 28_533_356
    assert macs(pouta) == pytest.approx(34.63e9, rel=1e-3)
    assert macs(vanilla) == pytest.approx(39.27e9, rel=1e-3)
    for ours, printed in [(count_parameters(pouta), 15.02e6), (macs(pouta), 35.37e9),
                          (count_parameters(vanilla), 28.68e6), (macs(vanilla), 39.38e9)]:
        assert abs(ours / printed - 1) < 0.025


def test_symmetric_features_have_equal_resolutions():
    rec = Reconstructive(8)
    recon, enc, dec = rec(torch.zeros(2, 3, 64, 64))
    assert recon.shape == (2, 3, 64, 64)
    assert [e.shape[-1] for e in enc] == [d.shape[-1] for d in dec] == [64, 32, 16, 8]
    assert [e.shape[1] for e in enc] == list(rec.enc_channels)
    assert [d.shape[1] for d in dec] == list(rec.dec_channels)


def test_hsg_follows_equations_2_to_4():
    torch.manual_seed(0)
    hsg = HSG(6, 4).eval()
    f_c, deep = torch.randn(1, 4, 8, 8), torch.randn(1, 6, 4, 4)
    with torch.no_grad():
        g = hsg.conv(torch.nn.functional.interpolate(deep, size=(8, 8), mode="bilinear"))
        w_sp = torch.sigmoid(hsg.spatial(g))  # (1, 1, 8, 8)
        w_cn = torch.sigmoid(hsg.channel(g.mean(dim=(2, 3), keepdim=True)))  # (1, 4, 1, 1)
        assert torch.allclose(hsg(f_c, deep), w_sp * f_c * w_cn)


def test_ablation_variants_are_one_model_with_modules_switched():
    kinds = {name: build(name, b=8, d=8, widths=(8, 8, 16, 32)) for name in VARIANTS}
    assert kinds["pouta_base"].discriminative.hsg is None
    assert kinds["pouta_base"].discriminative.heads is None
    assert kinds["pouta_base_hsg"].discriminative.hsg is not None
    assert kinds["pouta_base_mss"].discriminative.heads is not None
    x = torch.rand(2, 3, 32, 32)
    for name, model in kinds.items():
        model.train()
        out = model(x)
        assert out["logits"].shape == (2, 2, 32, 32) and out["reconstruction"].shape == x.shape
        n_heads = 4 if name in ("pouta", "pouta_base_mss") else 0
        assert len(out["heads"]) == n_heads
        assert all(h.shape == (2, 2, 32, 32) for h in out["heads"])
        model.eval()
        assert model(x)["heads"] == []  # MSS is used only in training
    with pytest.raises(ValueError, match="unknown POUTA variant"):
        build("pouta_plus", b=8, d=8, widths=(8, 8, 8, 8))


def test_coarse_to_fine_reads_only_the_reconstructive_features():
    """The discriminative network of POUTA has no image input of its own: once the
    reconstructive network's outputs are cut from the graph, the predicted map no longer depends
    on the image. The vanilla U-Net reads the image directly, so it still does."""
    def cut(_module, _inputs, out):
        recon, enc, dec = out
        return recon.detach(), [e.detach() for e in enc], [d.detach() for d in dec]

    for variant, depends in (("pouta", False), ("vanilla", True)):
        model = build(variant, 4, 4, (4, 4, 8, 8)).eval().requires_grad_(False)
        model.reconstructive.register_forward_hook(cut)
        x = torch.rand(1, 3, 32, 32, requires_grad=True)
        assert model(x)["logits"].requires_grad is depends, variant


def test_aggregation_equals_the_1x1_convolution_of_the_upsampled_concatenation():
    """M_p is computed slice by slice before upsampling; it must equal Fig. 4's order."""
    torch.manual_seed(0)
    c2f = CoarseToFine((4, 8, 16, 32), (4, 4, 8, 16), (4, 6, 8, 16)).eval()
    enc = [torch.randn(2, c, 32 >> i, 32 >> i) for i, c in enumerate((4, 8, 16, 32))]
    dec = [torch.randn(2, c, 32 >> i, 32 >> i) for i, c in enumerate((4, 4, 8, 16))]
    with torch.no_grad():
        logits, _ = c2f(enc, dec, (32, 32))
        fc = [m(e, d) for m, e, d in zip(c2f.fcm, enc, dec, strict=True)]
        refined = list(fc)
        for i in (2, 1, 0):
            refined[i] = c2f.hsg[i](fc[i], refined[i + 1])
        ups = [F.interpolate(r, size=(32, 32), mode="bilinear") for r in refined]
        expected = c2f.aggregate(torch.cat(ups, dim=1))
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)

