"""Tests for repro.kernels.synthesis (DRAEM / POUTA anomaly synthesis)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from repro.kernels import synthesis
from repro.kernels.synthesis import (
    AUGMENTERS,
    FOREGROUND,
    SynthesisConfig,
    augment_source,
    foreground_mask,
    perlin_mask,
    perlin_noise,
    procedural_texture,
    synthesize,
)

ALWAYS = SynthesisConfig(p_anomaly=1.0)


def _image(seed: int = 0, size: tuple[int, int] = (64, 64)) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random((3, *size), dtype=np.float32))


# ------------------------------------------------------------------------------ Perlin noise

@pytest.mark.parametrize("shape, res", [((64, 64), (4, 8)), ((100, 70), (8, 32)),
                                        ((33, 50), (1, 2)), ((64, 64), (32, 32))])
def test_perlin_noise_shape_range_determinism(shape, res):
    a = perlin_noise(shape, res, np.random.default_rng(1))
    assert a.shape == shape and a.dtype == np.float32
    assert np.isfinite(a).all() and np.abs(a).max() <= 1.5
    assert np.array_equal(a, perlin_noise(shape, res, np.random.default_rng(1)))
    assert not np.array_equal(a, perlin_noise(shape, res, np.random.default_rng(2)))


def test_perlin_noise_is_smooth():
    a = perlin_noise((128, 96), (4, 4), np.random.default_rng(0))
    neighbour = np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean()
    shuffled = np.random.default_rng(0).permutation(a.ravel()).reshape(a.shape)
    random = np.abs(np.diff(shuffled, axis=0)).mean() + np.abs(np.diff(shuffled, axis=1)).mean()
    assert neighbour < 0.1 * random
    assert a.std() > 0.1


def test_perlin_noise_is_zero_on_the_lattice():
    # Gradient noise vanishes at the lattice points (every cell's corner): 64 / 8 = 8 px cells.
    a = perlin_noise((64, 64), (8, 8), np.random.default_rng(3))
    assert np.abs(a[::8, ::8]).max() < 1e-6
    assert np.abs(a[4::8, 4::8]).max() > 0.1


def test_perlin_noise_matches_a_scalar_reference():
    # Classic Perlin, point by point, as in DRAEM's rand_perlin_2d_np: gradient angles are the
    # first draw, rng.random((ry + 1, rx + 1)) * 2 pi, with (cos, sin) along (rows, columns).
    shape, res = (48, 40), (4, 2)
    a = perlin_noise(shape, res, np.random.default_rng(5))
    angles = 2 * np.pi * np.random.default_rng(5).random((res[0] + 1, res[1] + 1))
    grad = np.stack([np.cos(angles), np.sin(angles)], -1)
    cell = (shape[0] // res[0], shape[1] // res[1])

    def fade(t):
        return 6 * t**5 - 15 * t**4 + 10 * t**3

    for y, x in [(0, 0), (5, 7), (11, 19), (30, 21), (47, 39), (13, 0)]:
        i, j = y // cell[0], x // cell[1]
        u, v = (y % cell[0]) / cell[0], (x % cell[1]) / cell[1]
        n = {(di, dj): grad[i + di, j + dj] @ np.array([u - di, v - dj])
             for di in (0, 1) for dj in (0, 1)}
        s, t = fade(u), fade(v)
        left = n[0, 0] + s * (n[1, 0] - n[0, 0])
        right = n[0, 1] + s * (n[1, 1] - n[0, 1])
        assert a[y, x] == pytest.approx(np.sqrt(2) * (left + t * (right - left)), abs=1e-6)


def test_perlin_mask_statistics():
    rng = np.random.default_rng(0)
    masks = [perlin_mask((64, 64), rng) for _ in range(200)]
    assert all(m.dtype == bool and m.shape == (64, 64) for m in masks)
    covered = np.array([m.mean() for m in masks])
    # Measured with this seed: mean 0.041, median 0.032, 9% of masks cover < 1% (6.5% are
    # empty), the largest 0.46. Over 2000 draws: mean 0.040 at 64 px, 0.049 at 224 px.
    assert 0.025 < covered.mean() < 0.065
    assert (covered < 0.01).mean() > 0.02
    assert covered.max() > 0.1
    assert len({m.tobytes() for m in masks}) > 180  # masks differ (the empty ones aside)


def test_perlin_mask_threshold():
    loose = perlin_mask((64, 64), np.random.default_rng(4), SynthesisConfig(threshold=-2.0))
    tight = perlin_mask((64, 64), np.random.default_rng(4), SynthesisConfig(threshold=0.9))
    assert loose.all()  # noise >= -1 and the rotation's fill 0 both exceed -2
    assert tight.mean() < 0.05


# -------------------------------------------------------------------------------- augmenters

@pytest.mark.parametrize("name", list(AUGMENTERS))
def test_augmenter_keeps_shape_and_range(name):
    x = _image(1)
    for seed in range(3):
        y = AUGMENTERS[name](x, np.random.default_rng(seed))
        assert y.shape == x.shape and y.dtype == torch.float32
        assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    assert torch.equal(x, _image(1))  # the input is not modified in place


def test_augmenters_change_the_image():
    x = _image(2)
    assert torch.equal(AUGMENTERS["invert"](x, np.random.default_rng(0)), 1 - x)
    changed = [name for name, f in AUGMENTERS.items()
               if any(not torch.allclose(f(x, np.random.default_rng(s)), x) for s in range(4))]
    assert len(changed) == len(AUGMENTERS)


def test_hsv_round_trip_and_reference():
    skcolor = pytest.importorskip("skimage.color")
    x = _image(3)
    h, s, v = synthesis._rgb_to_hsv(x)
    ref = skcolor.rgb2hsv(x.permute(1, 2, 0).numpy())
    assert np.allclose(np.stack([h, s, v], -1), ref, atol=1e-5)
    assert torch.allclose(synthesis._hsv_to_rgb(h, s, v), x, atol=1e-5)


def test_brightness_keeps_chroma():
    x = _image(4) * 0.5 + 0.25  # away from the clipping bounds
    y = AUGMENTERS["multiply_add_brightness"](x, np.random.default_rng(0))
    assert torch.allclose(y - synthesis._luma(y), x - synthesis._luma(x), atol=1e-5)


def test_augment_source_draws_distinct_augmenters(monkeypatch):
    calls: list[str] = []
    wrapped = {name: (lambda x, rng, name=name: calls.append(name) or x) for name in AUGMENTERS}
    monkeypatch.setattr(synthesis, "AUGMENTERS", wrapped)
    rng = np.random.default_rng(0)
    for _ in range(20):
        calls.clear()
        augment_source(_image(), rng, n=3)
        assert len(calls) == len(set(calls)) == 3


# -------------------------------------------------------------------------------- synthesize

def test_synthesize_changes_only_the_masked_region():
    x = _image(5)
    rng = np.random.default_rng(0)
    n_anomalous = 0
    for _ in range(30):
        out, mask, label = synthesize(x, rng, ALWAYS)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert mask.shape == (1, 64, 64) and mask.dtype == torch.float32
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert label == int(mask.any())
        outside = mask.expand_as(x) == 0
        assert torch.equal(out[outside], x[outside])  # bit-identical outside M
        assert out.min() >= 0 and out.max() <= 1
        n_anomalous += label
        if label:
            assert not torch.equal(out[~outside], x[~outside])
    assert n_anomalous >= 25  # ~5% of Perlin masks are empty at 64 px


def test_synthesize_normal_samples():
    x = _image(6)
    rng = np.random.default_rng(0)
    for _ in range(10):
        out, mask, label = synthesize(x, rng, SynthesisConfig(p_anomaly=0.0))
        assert torch.equal(out, x) and out is not x
        assert label == 0 and not mask.any() and mask.shape == (1, 64, 64)
    labels = [synthesize(x, rng)[2] for _ in range(200)]  # default p_anomaly = 0.5
    assert 0.35 < np.mean(labels) < 0.6


def test_synthesize_is_deterministic():
    x = _image(7)
    a = [synthesize(x, np.random.default_rng(s), ALWAYS) for s in range(6)]
    b = [synthesize(x, np.random.default_rng(s), ALWAYS) for s in range(6)]
    for (ia, ma, la), (ib, mb, lb) in zip(a, b, strict=True):
        assert torch.equal(ia, ib) and torch.equal(ma, mb) and la == lb
    assert not all(torch.equal(a[0][0], other[0]) for other in a[1:])


def test_blend_formula_with_a_plain_texture(tmp_path):
    # One flat-colour texture and no augmenters: inside M, out = (1 - beta) tex + beta x with a
    # single beta in [0, 0.8] per sample.
    path = tmp_path / "flat.png"
    Image.new("RGB", (40, 30), (255, 0, 0)).save(path)
    tex = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    x = _image(8) * 0.5 + 0.25
    cfg = SynthesisConfig(p_anomaly=1.0, p_texture=1.0, n_augmenters=0)
    rng = np.random.default_rng(0)
    betas = []
    for _ in range(10):
        out, mask, label = synthesize(x, rng, cfg, textures=[path])
        if not label:
            continue
        inside = mask[0] > 0
        beta = ((out - tex) / (x - tex))[:, inside]
        assert torch.allclose(beta, beta[0, 0], atol=1e-4)
        betas.append(beta[0, 0].item())
    assert len(betas) >= 8 and 0 <= min(betas) and max(betas) <= 0.8 + 1e-4
    assert np.ptp(betas) > 0.1


def test_procedural_texture_fallback(monkeypatch):
    used = []
    original = synthesis.procedural_texture
    monkeypatch.setattr(synthesis, "procedural_texture",
                        lambda shape, rng: used.append(shape) or original(shape, rng))
    x = _image(9)
    cfg = SynthesisConfig(p_anomaly=1.0, p_texture=1.0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        out, mask, label = synthesize(x, rng, cfg, textures=())
        if label:
            inside = mask.expand_as(x) > 0
            assert (out[inside] != x[inside]).float().mean() > 0.5
    assert used and all(shape == (64, 64) for shape in used)


def test_procedural_texture():
    a = procedural_texture((48, 80), np.random.default_rng(0))
    assert a.shape == (3, 48, 80) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1 and a.std() > 0.05
    assert torch.equal(a, procedural_texture((48, 80), np.random.default_rng(0)))
    assert not torch.equal(a, procedural_texture((48, 80), np.random.default_rng(1)))


def test_synthesize_rejects_bad_images():
    with pytest.raises(ValueError):
        synthesize(torch.rand(64, 64), np.random.default_rng(0))
    with pytest.raises(ValueError):
        synthesize(torch.zeros(3, 8, 8, dtype=torch.uint8), np.random.default_rng(0))


# -------------------------------------------------------------------------------- foreground

def test_foreground_mask():
    x = torch.full((3, 20, 20), 0.1)
    x[:, 5:15, 5:15] = 0.9  # a bright object (grey 229.5) on a dark background (25.5)
    fg = foreground_mask(x, 128, reverse=False)
    assert fg.dtype == bool and fg.shape == (20, 20)
    assert fg.sum() == 100 and fg[5:15, 5:15].all()
    assert np.array_equal(foreground_mask(x, 128, reverse=True), ~fg)
    assert all(isinstance(t, (int, float)) and isinstance(r, bool) for t, r in FOREGROUND.values())


def test_synthesize_respects_the_foreground():
    x = _image(10)
    fg = np.zeros((64, 64), dtype=bool)
    fg[16:48, 8:40] = True
    rng = np.random.default_rng(0)
    labels = []
    for _ in range(30):
        out, mask, label = synthesize(x, rng, ALWAYS, foreground=fg)
        assert not (mask[0].numpy().astype(bool) & ~fg).any()
        assert torch.equal(out[:, ~torch.from_numpy(fg)], x[:, ~torch.from_numpy(fg)])
        labels.append(label)
    assert 0 < sum(labels) < 30  # some masks miss the foreground and become normal
    empty = np.zeros((64, 64), dtype=bool)
    assert all(synthesize(x, rng, ALWAYS, foreground=empty)[2] == 0 for _ in range(5))


# ---------------------------------------------------------------------------- real DTD images

@pytest.mark.real
def test_synthesize_with_real_dtd_textures(shared_data, monkeypatch):
    from repro.data.dtd import list_textures

    textures = list_textures(shared_data / "dtd")[::40]
    assert len(textures) >= 10

    def no_fallback(shape, rng):
        raise AssertionError("the procedural fallback must not be used when DTD is given")

    monkeypatch.setattr(synthesis, "procedural_texture", no_fallback)
    x = _image(11, (96, 128))
    cfg = SynthesisConfig(p_anomaly=1.0, p_texture=1.0)
    rng = np.random.default_rng(0)
    n_anomalous = 0
    for _ in range(8):
        out, mask, label = synthesize(x, rng, cfg, textures=textures)
        assert out.shape == x.shape and mask.shape == (1, 96, 128)
        assert out.min() >= 0 and out.max() <= 1
        outside = mask.expand_as(x) == 0
        assert torch.equal(out[outside], x[outside])
        n_anomalous += label
    assert n_anomalous >= 5
