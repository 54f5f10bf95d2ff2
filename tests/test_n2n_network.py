"""Tests of the Noise-to-Norm reconstruction network (repro/networks/n2n.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from repro.networks import count_parameters
from repro.networks.n2n import (
    SKFF,
    N2NNet,
    ResidualAttention,
    n2n_net,
)

# --- parameter counts by hand, independent of the module code ------------------------------


def _conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def _ram(cin: int, cout: int, reduction: int = 8) -> int:
    hidden = max(cout // reduction, 4)
    pathway_a = _conv(cin, cout, 1)
    pathway_b = _conv(cin, cout, 1) + 2 * _conv(cout, cout, 3)
    attention = _conv(cout, hidden, 1) + _conv(hidden, cout, 1)
    return pathway_a + pathway_b + attention


def _skff(c: int, k: int, reduction: int = 8) -> int:
    d = max(c // reduction, 4)
    return _conv(c, d, 1, bias=False) + 1 + k * _conv(d, c, 1, bias=False)  # +1: PReLU


def expected_parameters(wf: int, ram: bool) -> int:
    def block(cin: int, cout: int) -> int:
        return _ram(cin, cout) if ram else _conv(cin, cout, 1)

    c = [wf, 2 * wf, 4 * wf, 8 * wf]
    total = _conv(3, wf, 3)  # shared shallow conv
    # encoder: level inputs wf, 2wf, 3wf, 5wf
    total += block(wf, c[0]) + block(c[0] + wf, c[1]) + block(c[1] + wf, c[2])
    total += block(c[2] + wf, c[3])  # bottom
    total += sum(_conv(4 * c[i], c[i], 1) for i in range(3))  # PS_down
    # decoder levels 2, 1, 0
    for i in range(3):
        total += _conv(c[i + 1] // 4, c[i], 1)  # PS_up
        total += _conv(c[i], c[i], 3)  # skip conv
        total += block(2 * c[i], c[i])
    total += sum(_conv(c[i], wf, 3) for i in range(4))  # side outputs
    total += _skff(wf, 4)
    total += _conv(wf, 3, 3)  # output conv
    return total


# Pinned so that a change to the arithmetic above is also caught.
PINNED = {(64, True): 10_463_796, (64, False): 2_128_772, (16, True): 656_596,
          (16, False): 134_436}


@pytest.mark.parametrize(("width", "ram"), list(PINNED))
def test_parameter_count_pinned(width: int, ram: bool) -> None:
    assert expected_parameters(width, ram) == PINNED[(width, ram)]
    assert count_parameters(n2n_net(width=width, ram=ram)) == PINNED[(width, ram)]


# --- shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "ram"), [(256, True), (64, True), (64, False), (256, False)])
def test_output_shape(size: int, ram: bool) -> None:
    torch.manual_seed(0)
    net = n2n_net(width=8 if size == 256 else 16, ram=ram).eval()
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_non_square_input() -> None:
    net = n2n_net(width=8)
    with torch.no_grad():
        assert net(torch.rand(2, 3, 48, 64)).shape == (2, 3, 48, 64)


@pytest.mark.parametrize("shape", [(1, 3, 60, 64), (1, 3, 64, 36), (1, 3, 100, 100)])
def test_size_not_divisible_by_8_raises(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="divisible by 8"):
        n2n_net(width=8)(torch.rand(*shape))


def test_wrong_channels_raises() -> None:
    with pytest.raises(ValueError):
        n2n_net(width=8)(torch.rand(1, 1, 64, 64))


def test_odd_width_raises() -> None:
    with pytest.raises(ValueError):
        N2NNet(width=7)


# --- SKFF --------------------------------------------------------------------------------------


def test_skff_weights_sum_to_one() -> None:
    torch.manual_seed(0)
    skff = SKFF(16, height=4)
    inputs = [torch.randn(2, 16, 8, 8) for _ in range(4)]
    a = skff.attention(inputs)
    assert a.shape == (4, 2, 16, 1, 1)
    assert torch.allclose(a.sum(0), torch.ones(2, 16, 1, 1), atol=1e-6)
    assert skff(inputs).shape == (2, 16, 8, 8)
    # identical inputs: a convex combination of the same map is that map
    same = torch.randn(2, 16, 8, 8)
    assert torch.allclose(skff([same] * 4), same, atol=1e-5)


def test_skff_parameters() -> None:
    assert count_parameters(SKFF(64, height=4)) == _skff(64, 4)
    assert count_parameters(SKFF(16, height=3)) == _skff(16, 3)  # d = max(2, 4) = 4


# --- RAM ---------------------------------------------------------------------------------------


def test_residual_attention_shape_and_count() -> None:
    ram = ResidualAttention(24, 16)
    assert ram(torch.randn(2, 24, 8, 8)).shape == (2, 16, 8, 8)
    assert count_parameters(ram) == _ram(24, 16)


def test_residual_attention_zero_pathway_b_is_residual_conv() -> None:
    torch.manual_seed(0)
    ram = ResidualAttention(24, 16)
    with torch.no_grad():
        for p in ram.body.parameters():
            p.zero_()
    x = torch.randn(2, 24, 8, 8)
    assert torch.allclose(ram(x), ram.residual(x), atol=1e-6)
    assert isinstance(ram.residual, nn.Conv2d) and ram.residual.kernel_size == (1, 1)


# --- gradients: all four side outputs reach the loss ---------------------------------------


@pytest.mark.parametrize("ram", [True, False])
def test_gradient_reaches_every_parameter(ram: bool) -> None:
    torch.manual_seed(0)
    net = n2n_net(width=8, ram=ram)
    x = torch.rand(2, 3, 64, 64)
    net(x).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().max() > 0, name


def test_side_outputs() -> None:
    net = n2n_net(width=8)
    with torch.no_grad():
        sides = net.side_outputs(torch.rand(1, 3, 64, 32))
    assert [s.shape for s in sides] == [(1, 8, 64, 32)] * 4


# --- ablation ----------------------------------------------------------------------------------


def _convs(module: nn.Module, k: int) -> int:
    return sum(isinstance(m, nn.Conv2d) and m.kernel_size == (k, k) for m in module.modules())


def test_ablation_has_no_3x3_in_blocks() -> None:
    full, ablated = n2n_net(width=16), n2n_net(width=16, ram=False)
    blocks = [*ablated.encoder, *ablated.decoder]
    assert len(blocks) == 7
    assert all(isinstance(b, nn.Conv2d) and b.kernel_size == (1, 1) for b in blocks)
    assert sum(_convs(b, 3) for b in blocks) == 0
    assert not any(isinstance(m, ResidualAttention) for m in ablated.modules())
    # 3x3 convs left: shallow 1 + skip 3 + side 4 + output 1 = 9; the RAMs add 2 each
    assert _convs(ablated, 3) == 9
    assert _convs(full, 3) == 9 + 2 * 7
    assert sum(isinstance(m, ResidualAttention) for m in full.modules()) == 7
    assert count_parameters(ablated) < count_parameters(full)


# --- global residual (issue 11, point 4) ---------------------------------------------------

def test_default_network_is_not_an_identity_at_init() -> None:
    """The paper's network (no global residual) starts far from the identity, so lambda = 0
    has something to learn; SRMNet's residual (variant global_residual=true) starts near it.
    With the same weights the two outputs differ by exactly the input."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    net = n2n_net(width=8).eval()
    res = n2n_net(width=8, residual=True).eval()
    res.load_state_dict(net.state_dict())
    with torch.no_grad():
        out, out_res = net(x), res(x)
    rel = float((out - x).norm() / x.norm())
    rel_res = float((out_res - x).norm() / x.norm())
    assert rel > 0.5  # not an identity
    assert rel_res < rel and rel_res < 0.5  # the residual starts close to one
    torch.testing.assert_close(out_res, out + x)
    assert not net.residual and res.residual


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_conv_padding_mode(mode: str) -> None:
    net = n2n_net(width=8, padding_mode=mode)
    convs3 = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert convs3 and all(m.padding_mode == mode for m in convs3)
    assert count_parameters(net) == count_parameters(n2n_net(width=8))
    assert net(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)
