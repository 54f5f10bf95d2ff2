"""Deterministic synthetic stand-ins for six industrial anomaly-detection datasets.

Why: the real datasets (MVTec AD, MPDD, VisA, MVTec LOCO AD, DAGM 2007, DTD) are large
downloads with restrictive licences, yet the loaders, training code, notebooks and CI must run
end to end without them.  This module *writes* small datasets to disk in the official folder
layouts so that exactly the same loader code paths are exercised as with the real data.

Images are procedural: "objects" (a part with holes, stripes or labels, jittered in position,
rotation and illumination) and stationary "textures" (grids, weaves, wood, grain, tiles, ...).
Defects (scratch, contamination, hole, crack, colour change) are drawn on normal images and
their ground-truth masks are the changed pixels, so an anomaly detector trained on the normal
images can genuinely learn the task.  Everything is a pure function of the seed, dataset,
category, split and index, so the same spec gives byte-identical files.
"""

from __future__ import annotations

import colorsys
import csv
import hashlib
import json
import os
import shutil
import socket
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = [
    "GENERATOR_VERSION",
    "SyntheticSpec",
    "ensure_synthetic",
    "is_texture",
    "write_all",
    "write_dagm",
    "write_dtd",
    "write_loco",
    "write_mvtec",
    "write_visa",
]

GENERATOR_VERSION: int = 1
"""Bump whenever the drawing code changes: it is part of the cache fingerprint."""

PROVENANCE_FILE = "SYNTHETIC.json"
TEXTURE_NAMES = frozenset({"carpet", "grid", "leather", "tile", "wood"})
GRAYSCALE_NAMES = frozenset({"grid"})  # the real MVTec "grid" images are single-channel
DEFECT_KINDS = ("scratch", "contamination", "hole", "crack", "color")
GRAY_DEFECT_KINDS = ("scratch", "contamination", "hole", "crack")  # colour change is invisible
TEXTURE_KINDS = ("grid", "weave", "wood", "grain", "cells", "stripes", "bubbles")
OBJECT_KINDS = ("plate", "bracket", "screw", "pill", "board", "brush")
JPEG_QUALITY = 95
MIN_DEFECT_FRACTION = 0.004  # defect area, as a fraction of the image ("roughly 0.5% .. 5%")
MAX_DEFECT_FRACTION = 0.05

Array = np.ndarray


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines a synthetic dataset tree (and hence its cache folder)."""

    seed: int = 0
    image_size: int = 128
    loco_size: tuple[int, int] = (96, 128)
    n_train: int = 24
    n_test_good: int = 8
    n_test_defect_per_type: int = 4
    n_validation: int = 8
    mvtec_ad: tuple[str, ...] = ("grid", "toothbrush")
    mpdd: tuple[str, ...] = ("metal_plate",)
    visa: tuple[str, ...] = ("candle", "pcb1")
    mvtec_loco: tuple[str, ...] = ("juice_bottle",)
    dagm: tuple[str, ...] = ("Class1",)
    dtd: tuple[str, ...] = ("banded", "bubbly")
    folder: tuple[str, ...] = ("parts",)  # own-data layout (repro.data.folder)

    def fingerprint(self) -> str:
        """Short stable digest of all fields and the generator version (cache key)."""
        payload = json.dumps(
            {"spec": asdict(self), "generator_version": GENERATOR_VERSION}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# Determinism helpers
# --------------------------------------------------------------------------------------------


def _rng(*keys: object) -> np.random.Generator:
    """A generator seeded by a stable hash of the keys (Python's hash() is salted per run)."""
    digest = hashlib.sha256("\x1f".join(map(str, keys)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def _name_hash(name: str) -> int:
    return zlib.crc32(name.encode())


def is_texture(name: str) -> bool:
    """Texture categories are the MVTec AD textures and the DAGM classes ("Class1", ...)."""
    return name in TEXTURE_NAMES or name.startswith("Class")


def _hsv(h: float, s: float, v: float) -> Array:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def _luma(img: Array) -> Array:
    return img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _with_luma(rgb: Array, target: float) -> Array:
    """The colour rescaled (then lifted towards white if needed) to the given luminance."""
    out = np.clip(rgb * target / max(float(_luma(rgb)), 1e-3), 0, 1)
    lum = float(_luma(out))
    if lum < target:
        out = out + (target - lum) / (1 - lum) * (1 - out)
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Category styles
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Style:
    """Per-category appearance, derived from (seed, name) so categories differ but are stable."""

    name: str
    texture: bool
    kind: str
    gray: bool
    defects: tuple[str, str]
    colors: dict[str, Array] = field(hash=False, compare=False)
    period: float = 0.1  # texture period, as a fraction of the image size
    angle: float = 0.0  # radians
    rot0: float = 0.0  # object base rotation, degrees


def _pick_kind(name: str, texture: bool) -> str:
    low = name.lower()
    if texture:
        table = {"grid": "grid", "carpet": "weave", "wood": "wood", "leather": "grain",
                 "tile": "cells", "banded": "stripes", "striped": "stripes", "bubbly": "bubbles"}
        if low in table:
            return table[low]
        return TEXTURE_KINDS[_name_hash(name) % len(TEXTURE_KINDS)]
    hints = (("brush", "brush"), ("screw", "screw"), ("plate", "plate"), ("pcb", "board"),
             ("board", "board"), ("capsule", "pill"), ("pill", "pill"), ("candle", "pill"),
             ("bracket", "bracket"))
    for key, kind in hints:
        if key in low:
            return kind
    return OBJECT_KINDS[_name_hash(name) % len(OBJECT_KINDS)]


def _pick_defects(name: str, gray: bool) -> tuple[str, str]:
    """Two defect types per category, from the name only (so folder names ignore the seed)."""
    kinds = GRAY_DEFECT_KINDS if gray else DEFECT_KINDS
    h = _name_hash(name)
    first = h % len(kinds)
    second = (first + 1 + (h // 7) % (len(kinds) - 1)) % len(kinds)
    return kinds[first], kinds[second]


def _style(seed: int, name: str, *, texture: bool | None = None,
           gray: bool | None = None) -> _Style:
    """The category's look; `texture`/`gray` override the name-based choice (VisA and LOCO are
    always objects, DAGM always grayscale textures, whatever the caller names them)."""
    texture = is_texture(name) if texture is None else texture
    gray = (texture and name in GRAYSCALE_NAMES) if gray is None else gray
    kind = _pick_kind(name, texture)
    r = _rng("style", seed, name)
    hue = r.uniform()
    if gray:
        lo, hi = r.uniform(0.22, 0.35), r.uniform(0.6, 0.75)
        colors = {"base": np.full(3, lo, np.float32), "accent": np.full(3, hi, np.float32)}
    elif texture:
        colors = {"base": _hsv(hue, r.uniform(0.25, 0.6), r.uniform(0.45, 0.65)),
                  "accent": _hsv(hue + r.uniform(-0.08, 0.08), r.uniform(0.3, 0.7),
                                 r.uniform(0.2, 0.35))}
    else:
        # Fixed luminance ranges keep the part distinct from the background and dark defects
        # (cracks, holes) visible on it, whatever the hue.
        dark_bg = r.uniform() < 0.6
        bg_v = r.uniform(0.1, 0.2) if dark_bg else r.uniform(0.8, 0.9)
        body_l = r.uniform(0.5, 0.65) if dark_bg else r.uniform(0.38, 0.5)
        colors = {"bg": _hsv(hue + 0.5, r.uniform(0.0, 0.15), bg_v),
                  "body": _with_luma(_hsv(hue, r.uniform(0.25, 0.65), 0.7), body_l),
                  "body2": _with_luma(_hsv(hue + r.uniform(0.25, 0.4), r.uniform(0.4, 0.7), 0.7),
                                      body_l + r.uniform(-0.05, 0.05)),
                  "accent": _hsv(hue + 0.1, 0.05, 0.93),
                  "dark": _hsv(hue, 0.3, 0.12)}
    foreign_h = hue + 0.5 + r.uniform(-0.1, 0.1)
    colors["foreign"] = _hsv(foreign_h, 0.85, 0.55)
    colors["tint"] = _hsv(foreign_h + 0.15, 0.9, 0.9)
    return _Style(name=name, texture=texture, kind=kind, gray=gray,
                  defects=_pick_defects(name, gray), colors=colors,
                  period=float(r.uniform(0.07, 0.1)), angle=float(r.uniform(0, np.pi)),
                  rot0=float(r.uniform(-20, 20)))


# --------------------------------------------------------------------------------------------
# Drawing primitives (signed distances in "normalised" units: 1.0 == the shorter image side)
# --------------------------------------------------------------------------------------------


def _cov(d: Array, px: float) -> Array:
    """Anti-aliased coverage of the region d < 0 (1-pixel soft edge)."""
    return np.clip(0.5 - d * px, 0.0, 1.0).astype(np.float32)


def _sd_box(u: Array, v: Array, cx: float, cy: float, a: float, b: float, r: float = 0.0) -> Array:
    qx = np.abs(u - cx) - a + r
    qy = np.abs(v - cy) - b + r
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0) - r


def _sd_circle(u: Array, v: Array, cx: float, cy: float, r: float) -> Array:
    return np.hypot(u - cx, v - cy) - r


def _mix(base: Array, color: Array, a: Array) -> Array:
    return base * (1.0 - a[..., None]) + np.asarray(color, np.float32) * a[..., None]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int],
                  sigma: float | tuple[float, float]) -> Array:
    """Unit-variance Gaussian-filtered noise (periodic boundary so textures stay stationary)."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return n / (n.std() + 1e-6)


def _grid(size: tuple[int, int]) -> tuple[Array, Array]:
    """Pixel-centre coordinates (y, x)."""
    h, w = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    return y, x


# --------------------------------------------------------------------------------------------
# Textures
# --------------------------------------------------------------------------------------------


def _rotated(x: Array, y: Array, angle: float) -> tuple[Array, Array]:
    c, s = np.cos(angle), np.sin(angle)
    return c * x + s * y, -s * x + c * y


def _render_texture(st: _Style, rng: np.random.Generator, size: tuple[int, int]) -> Array:
    """A stationary texture with random phase, so every crop looks like every other crop."""
    h, w = size
    s = min(h, w)
    y, x = _grid(size)
    period = st.period * s
    c0, c1 = st.colors["base"], st.colors["accent"]
    angle = st.angle + rng.normal(0, 0.01)
    xr, yr = _rotated(x, y, angle)
    ph = rng.uniform(0, 2 * np.pi, 4)
    kind = st.kind
    if kind == "grid":
        px_, py_ = rng.uniform(0, period, 2)
        dx = np.abs((xr + px_) % period - period / 2)
        dy = np.abs((yr + py_) % period - period / 2)
        width = max(0.7, 0.1 * period)
        wire = np.maximum(np.exp(-((dx / width) ** 2)), np.exp(-((dy / width) ** 2)))
        shadow = np.maximum(np.exp(-(((dx - 1.5 * width) / width) ** 2)),
                            np.exp(-(((dy - 1.5 * width) / width) ** 2)))
        t = 0.15 + 0.85 * wire - 0.25 * shadow * (1 - wire) + 0.04 * _smooth_noise(rng, size, 1.0)
        img = _mix(np.broadcast_to(c0, (h, w, 3)), c1, np.clip(t, 0, 1))
    elif kind == "weave":
        weave = np.sin(2 * np.pi * xr / period + ph[0]) * np.sin(2 * np.pi * yr / period + ph[1])
        fibres = _smooth_noise(rng, size, (0.6, 2.5))
        t = 0.5 + 0.35 * np.tanh(2.5 * weave) + 0.12 * fibres
        img = _mix(np.broadcast_to(c0, (h, w, 3)), c1, np.clip(t, 0, 1))
    elif kind == "wood":
        warp = _smooth_noise(rng, size, s / 8) * 0.6 * period
        streak = _smooth_noise(rng, size, (0.6, 6.0))
        rings = np.sin(2 * np.pi * (yr + warp) / (1.6 * period) + ph[0])
        t = 0.5 + 0.35 * rings + 0.12 * streak
        img = _mix(np.broadcast_to(c0, (h, w, 3)), c1, np.clip(t, 0, 1))
    elif kind == "grain":
        pores = 1 / (1 + np.exp(-4 * (_smooth_noise(rng, size, 1.2) - 1.0)))
        folds = _smooth_noise(rng, size, 0.15 * s)
        t = 0.15 + 0.6 * pores + 0.05 * folds
        img = _mix(np.broadcast_to(c0, (h, w, 3)), c1, np.clip(t, 0, 1))
    elif kind == "cells":
        spots = np.clip((_smooth_noise(rng, size, 1.3) - 1.1) * 2.0, 0, 1)
        mottle = _smooth_noise(rng, size, 3.0)
        t = 0.1 + 0.08 * mottle + 0.75 * spots
        img = _mix(np.broadcast_to(c0, (h, w, 3)), c1, np.clip(t, 0, 1))
    elif kind == "stripes":
        warp = _smooth_noise(rng, size, s / 10)
        band = np.sin(2 * np.pi * xr / (1.5 * period) + ph[0] + 0.6 * warp)
        t = 0.5 + 0.45 * np.tanh(3 * band) + 0.05 * _smooth_noise(rng, size, 1.0)
        img = _mix(np.broadcast_to(c0, (h, w, 3)), c1, np.clip(t, 0, 1))
    elif kind == "bubbles":
        t = 0.2 + 0.05 * _smooth_noise(rng, size, 2.0)
        area = 0.0
        while area < 0.7 * h * w:
            r = rng.uniform(0.3, 1.0) * period
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            d = np.hypot(x - cx, y - cy)
            t = t + 0.5 * np.exp(-(((d - r) / 0.8) ** 2)) + 0.15 * (d < r)
            area += np.pi * r * r
        img = _mix(np.broadcast_to(c0, (h, w, 3)), c1, np.clip(t, 0, 1))
    else:  # pragma: no cover - kinds come from TEXTURE_KINDS
        raise ValueError(f"unknown texture kind {kind!r}")
    return np.ascontiguousarray(img, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Objects
# --------------------------------------------------------------------------------------------


def _wave(t: Array, period: float, px: float) -> Array:
    """sin(2 pi t / period), faded out as the period nears the pixel pitch (no aliasing moire)."""
    fade = np.clip((period * px - 2.5) / 2.5, 0.0, 1.0)
    return (np.sin(2 * np.pi * t / period) * fade).astype(np.float32)


def _text_bars(u: Array, v: Array, cx: float, cy: float, a: float, b: float, px: float) -> Array:
    """Coverage of a few bars that read as printed text (faded ink: sharp, high-contrast
    print would make sub-pixel jitter dominate the normal image-to-image variation)."""
    out = np.zeros_like(u)
    thick = max(b / 7, 0.6 / px)  # never thinner than ~1 pixel: sub-pixel lines alias
    for i, frac in enumerate((0.75, 0.55, 0.65)):
        row = cy - b + (i + 1) * 2 * b / 4
        out = np.maximum(out, _cov(_sd_box(u, v, cx - a * (1 - frac), row, a * frac, thick), px))
    return 0.55 * out


def _object_layers(kind: str, u: Array, v: Array, px: float, st: _Style,
                   rng: np.random.Generator) -> tuple[Array, Array]:
    """Colour and coverage of the part in its own frame (u, v)."""
    col = st.colors
    shape = (*u.shape, 3)
    body = np.broadcast_to(col["body"], shape).astype(np.float32)
    if kind == "plate":
        d = _sd_box(u, v, 0, 0, 0.34, 0.24, 0.06)
        for cx in (-0.26, 0.26):
            for cy in (-0.16, 0.16):
                d = np.maximum(d, -_sd_circle(u, v, cx, cy, 0.04))
        brushed = 0.04 * _wave(v, 0.03, px)
        body = body * (1 + brushed[..., None])
        label = _cov(_sd_box(u, v, 0, 0, 0.13, 0.07, 0.01), px)
        body = _mix(body, col["accent"], label)
        body = _mix(body, col["dark"], _text_bars(u, v, 0, 0, 0.11, 0.06, px))
    elif kind == "bracket":
        d = np.minimum(_sd_box(u, v, -0.14, 0.0, 0.08, 0.32, 0.03),
                       _sd_box(u, v, 0.06, 0.24, 0.28, 0.08, 0.03))
        d = np.maximum(d, -_sd_circle(u, v, -0.14, -0.2, 0.035))
        d = np.maximum(d, -_sd_circle(u, v, 0.24, 0.24, 0.035))
        ridge = _cov(_sd_box(u, v, -0.14, 0.02, 0.015, 0.16), px)
        body = _mix(body, col["body"] * 0.7, ridge)
    elif kind == "screw":
        head = _sd_circle(u, v, 0, -0.28, 0.11)
        shaft = _sd_box(u, v, 0, 0.1, 0.055, 0.3, 0.03)
        d = np.minimum(head, shaft)
        thread = 0.5 + 0.5 * _wave(v + 0.3 * u, 0.045, px)
        on_shaft = _cov(shaft, px) * (1 - _cov(head, px))
        body = body * (1 - 0.35 * (thread * on_shaft))[..., None]
        slot = _cov(_sd_box(u, v, 0, -0.28, 0.075, 0.016), px)
        body = _mix(body, col["dark"], slot)
    elif kind == "pill":
        d = _sd_box(u, v, 0, 0, 0.3, 0.12, 0.12)
        right = np.clip(0.5 + u * px, 0, 1)
        body = _mix(body, col["body2"], right)
        body = _mix(body, col["dark"], _text_bars(u, v, 0.15, 0, 0.08, 0.05, px))
        highlight = np.exp(-(((v + 0.06) / 0.03) ** 2)) * 0.25
        body = body + highlight[..., None]
    elif kind == "board":
        d = _sd_box(u, v, 0, 0, 0.36, 0.3, 0.02)
        traces = np.clip((_wave(v, 0.06, px) - 0.6) * 2.5, 0, 1) * (np.abs(u) < 0.3)
        body = _mix(body, col["body"] * 1.3, traces.astype(np.float32))
        for cx, cy, a, b in ((-0.15, -0.1, 0.09, 0.07), (0.16, 0.12, 0.11, 0.05)):
            body = _mix(body, col["dark"], _cov(_sd_box(u, v, cx, cy, a, b, 0.005), px))
        for cx in (-0.3, 0.3):
            for cy in (-0.24, 0.24):
                body = _mix(body, np.array([0.85, 0.7, 0.3]), _cov(_sd_circle(u, v, cx, cy, 0.025),
                                                                    px))
        body = _mix(body, col["accent"], _cov(_sd_box(u, v, 0.15, -0.17, 0.1, 0.04), px))
    elif kind == "brush":
        handle = _sd_box(u, v, 0.1, 0, 0.36, 0.05, 0.05)
        head = _sd_box(u, v, -0.3, 0, 0.13, 0.085, 0.03)
        d = np.minimum(handle, head)
        bristles = 0.5 + 0.5 * _wave(u, 0.035, px) * _wave(v, 0.035, px)
        on_head = _cov(head, px)
        tufts = _mix(np.broadcast_to(col["accent"], shape), col["body2"], 0.5 * bristles)
        body = _mix(body, tufts, on_head)
        grip = _cov(_sd_box(u, v, 0.3, 0, 0.12, 0.025, 0.025), px) * (1 - on_head)
        body = _mix(body, col["body2"], grip)
    else:  # pragma: no cover - kinds come from OBJECT_KINDS
        raise ValueError(f"unknown object kind {kind!r}")
    grain = _smooth_noise(rng, u.shape, 0.8)[..., None] * 0.02
    return np.clip(body + grain, 0, 1).astype(np.float32), _cov(d, px)


def _render_object(st: _Style, rng: np.random.Generator,
                   size: tuple[int, int]) -> tuple[Array, Array, Array]:
    """A jittered part on a background; returns (image, part coverage, background layer)."""
    h, w = size
    s = min(h, w)
    y, x = _grid(size)
    x = (x - w / 2) / s
    y = (y - h / 2) / s
    dx, dy = rng.uniform(-0.015, 0.015, 2)
    theta = np.deg2rad(st.rot0 + rng.uniform(-2.5, 2.5))
    u, v = _rotated(x - dx, y - dy, theta)
    light = 1 + 0.12 * (0.6 * u - 0.8 * v)
    body, alpha = _object_layers(st.kind, u, v, float(s), st, rng)
    body = body * light[..., None]
    bg = st.colors["bg"] * (1 + 0.08 * (0.5 * x + 0.3 * y))[..., None]
    bg = bg + 0.01 * _smooth_noise(rng, size, 2.0)[..., None]
    # Soft contact shadow so the part sits on the background like a photographed object.
    shadow = ndimage.gaussian_filter(alpha, 0.02 * s)
    bg = bg * (1 - 0.3 * np.roll(shadow, (1, 1), axis=(0, 1)))[..., None]
    img = _mix(bg, body, alpha)
    return img.astype(np.float32), alpha, bg.astype(np.float32)


def _finish(img: Array, rng: np.random.Generator) -> Array:
    """Global illumination change and sensor noise, applied after defects (like a camera)."""
    gain = 1 + rng.uniform(-0.04, 0.04)
    noise = rng.normal(0, 0.012, img.shape[:2]).astype(np.float32)[..., None]
    return np.clip(img * gain + noise, 0, 1)


# --------------------------------------------------------------------------------------------
# Defects
# --------------------------------------------------------------------------------------------


@dataclass
class _Canvas:
    """Where a defect may go and what a hole reveals."""

    domain: Array  # coverage of the surface that can be damaged (1 everywhere for textures)
    under: Array | None  # image revealed by a hole/missing chunk (None: a dark cavity)
    foreign: Array  # colour of foreign material
    tint: Array  # target hue of a colour change
    gray: bool


def _pick_centre(rng: np.random.Generator, domain: Array, margin: int) -> tuple[float, float]:
    inside = domain > 0.99
    if margin > 0:
        eroded = ndimage.binary_erosion(inside, iterations=margin)
        inside = eroded if eroded.any() else inside
    ys, xs = np.nonzero(inside)
    i = int(rng.integers(len(ys)))
    return float(ys[i]) + 0.5, float(xs[i]) + 0.5


def _dist_to_points(size: tuple[int, int], pts: Array) -> Array:
    y, x = _grid(size)
    d, _ = cKDTree(pts).query(np.stack([y.ravel(), x.ravel()], 1))
    return d.reshape(size).astype(np.float32)


def _curve(rng: np.random.Generator, cy: float, cx: float, length: float) -> Array:
    """Quadratic Bezier of the given length through (cy, cx), sampled every half pixel."""
    ang = rng.uniform(0, np.pi)
    dy, dx = np.sin(ang), np.cos(ang)
    p0 = np.array([cy - dy * length / 2, cx - dx * length / 2])
    p2 = np.array([cy + dy * length / 2, cx + dx * length / 2])
    bend = rng.uniform(-0.2, 0.2) * length
    p1 = np.array([cy, cx]) + bend * np.array([dx, -dy])
    t = np.linspace(0, 1, max(4, int(length * 2)))[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _walk(rng: np.random.Generator, cy: float, cx: float, length: float) -> Array:
    """Jagged random walk (crack) centred on (cy, cx), sampled every half pixel."""
    n = max(4, int(length * 2))
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.12, n))
    steps = 0.5 * np.stack([np.sin(heading), np.cos(heading)], 1)
    pts = np.cumsum(steps, 0)
    pts = pts - pts[n // 2] + np.array([cy, cx])
    start = pts[int(rng.integers(n // 4, 3 * n // 4))]
    m = n // 3
    b_heading = heading[0] + rng.choice([-1, 1]) * rng.uniform(0.6, 1.2)
    b_heading = b_heading + np.cumsum(rng.normal(0, 0.15, m))
    branch = start + np.cumsum(0.5 * np.stack([np.sin(b_heading), np.cos(b_heading)], 1), 0)
    return np.concatenate([pts, branch])


def _blob(rng: np.random.Generator, size: tuple[int, int], cy: float, cx: float,
          r0: float, wobble: float) -> Array:
    """Irregular round region (radius modulated by low harmonics), as anti-aliased coverage."""
    y, x = _grid(size)
    ang = np.arctan2(y - cy, x - cx)
    aspect = rng.uniform(0.6, 1.0)
    rot = rng.uniform(0, np.pi)
    r = r0 / np.sqrt(np.cos(ang - rot) ** 2 + (np.sin(ang - rot) / aspect) ** 2) * np.sqrt(aspect)
    for k in (2, 3, 5):
        r = r * (1 + wobble * rng.uniform(0, 1) / k * np.sin(k * ang + rng.uniform(0, 2 * np.pi)))
    return _cov(np.hypot(y - cy, x - cx) - r, 1.0)


def _draw_defect(kind: str, img: Array, rng: np.random.Generator,
                 canvas: _Canvas) -> tuple[Array, Array]:
    """Draw one defect; returns (new image, coverage of the changed pixels)."""
    size = img.shape[:2]
    s = min(size)
    dom = (canvas.domain > 0.5).astype(np.float32)
    lum = _luma(img)
    if kind in ("scratch", "crack"):
        cy, cx = _pick_centre(rng, canvas.domain, max(1, int(0.02 * s)))
        if kind == "scratch":
            pts = _curve(rng, cy, cx, rng.uniform(0.3, 0.5) * s)
            width = max(1.6, 0.02 * s) * rng.uniform(1.0, 1.3)
        else:
            pts = _walk(rng, cy, cx, rng.uniform(0.3, 0.45) * s)
            width = max(1.5, 0.016 * s)
        alpha = np.clip(width / 2 + 0.5 - _dist_to_points(size, pts), 0, 1) * dom
        if kind == "scratch":
            local = float(np.mean(lum[alpha > 0.5])) if (alpha > 0.5).any() else 0.5
            sign = 1.0 if local < 0.5 else -1.0
            target = np.clip(img + sign * rng.uniform(0.3, 0.4), 0, 1)
        else:
            target = img * rng.uniform(0.25, 0.35)
        return _mix_img(img, target, alpha), alpha
    cy, cx = _pick_centre(rng, canvas.domain, max(1, int(0.04 * s)))
    if kind == "contamination":
        alpha = _blob(rng, size, cy, cx, rng.uniform(0.045, 0.085) * s, 0.5) * dom
        speckle = 1 + 0.15 * _smooth_noise(rng, size, 1.0)[..., None]
        foreign = canvas.foreign
        if canvas.gray:
            local = float(np.mean(lum[alpha > 0.5])) if (alpha > 0.5).any() else 0.5
            foreign = np.full(3, 0.08 if local > 0.45 else 0.9, np.float32)
        return _mix_img(img, np.clip(foreign * speckle, 0, 1), alpha), alpha
    if kind == "hole":
        chunk = _blob(rng, size, cy, cx, rng.uniform(0.045, 0.08) * s, 0.8)
        if canvas.under is not None:
            alpha = chunk * canvas.domain
            return _mix_img(img, canvas.under, alpha), alpha
        depth = ndimage.distance_transform_edt(chunk > 0.5)
        cavity = 0.06 + 0.12 * np.exp(-depth / 2.0)
        cavity = cavity + 0.02 * _smooth_noise(rng, size, 1.0)
        target = np.repeat(cavity[..., None], 3, axis=2).astype(np.float32)
        return _mix_img(img, target, chunk), chunk
    if kind == "color":
        alpha = _blob(rng, size, cy, cx, rng.uniform(0.06, 0.1) * s, 0.3) * dom
        tint = canvas.tint / max(float(_luma(canvas.tint[None, None])[0, 0]), 0.2)
        recolored = lum[..., None] * tint * 0.9 + 0.1 * canvas.tint
        target = np.clip(0.25 * img + 0.75 * recolored, 0, 1)
        return _mix_img(img, target, alpha), alpha
    raise ValueError(f"unknown defect kind {kind!r}")


def _mix_img(img: Array, target: Array, alpha: Array) -> Array:
    a = alpha[..., None]
    return (img * (1 - a) + target * a).astype(np.float32)


def _defect_with_mask(kind: str, img: Array, rng: np.random.Generator,
                      canvas: _Canvas) -> tuple[Array, Array]:
    """Draw a defect whose changed area is within the target size range; return (img, mask)."""
    h, w = img.shape[:2]
    best: tuple[Array, Array] | None = None
    for _ in range(30):
        new, alpha = _draw_defect(kind, img, rng, canvas)
        # Changed by at least half a grey level (what can show after quantisation), plus the
        # solid interior of the defect even where it happens to match the old colour.
        changed = np.abs(new - img).max(axis=2) > 0.5 / 255
        mask = changed | (alpha > 0.5)
        frac = mask.mean()
        if MIN_DEFECT_FRACTION <= frac <= MAX_DEFECT_FRACTION:
            return new, mask
        if best is None or frac > best[1].mean():
            best = (new, mask)
    assert best is not None
    return best


# --------------------------------------------------------------------------------------------
# Sample generation (one image; pure function of its keys)
# --------------------------------------------------------------------------------------------


def _draw_sample(st: _Style, size: tuple[int, int], defect: str | None,
                 rng: np.random.Generator) -> tuple[Array, Array, Array | None]:
    """(clean image, image with the defect, boolean mask) before camera effects; the two
    images differ exactly inside the mask (kept separate so tests can check that)."""
    if st.texture:
        img = _render_texture(st, rng, size)
        canvas = _Canvas(np.ones(size, np.float32), None, st.colors["foreign"],
                         st.colors["tint"], st.gray)
    else:
        img, alpha, bg = _render_object(st, rng, size)
        canvas = _Canvas(alpha, bg, st.colors["foreign"], st.colors["tint"], st.gray)
    if defect is None:
        return img, img, None
    damaged, mask = _defect_with_mask(defect, img, rng, canvas)
    return img, damaged, mask


def _sample(st: _Style, size: tuple[int, int], defect: str | None,
            rng: np.random.Generator) -> tuple[Array, Array | None]:
    """A normal image (defect None) or a defective one with its boolean mask."""
    _, img, mask = _draw_sample(st, size, defect, rng)
    img = _finish(img, rng)
    if st.gray:
        img = np.repeat(_luma(img)[..., None], 3, axis=2)
    return img, mask


def _to_uint8(img: Array) -> Array:
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _save_image(img: Array, path: Path, *, gray: bool = False, jpeg: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = _to_uint8(img)
    pil = Image.fromarray(arr[..., 0] if gray else arr, "L" if gray else "RGB")
    if jpeg:
        pil.save(path, "JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)
    else:
        pil.save(path, "PNG")


def _save_mask(mask: Array, path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask, value, 0).astype(np.uint8), "L").save(path, "PNG")


# --------------------------------------------------------------------------------------------
# MVTec AD / MPDD
# --------------------------------------------------------------------------------------------


def write_mvtec(root: str | os.PathLike[str], categories: Iterable[str], *, seed: int = 0,
                image_size: int = 128, n_train: int = 24, n_test_good: int = 8,
                n_test_defect_per_type: int = 4, dataset: str = "mvtec_ad") -> Path:
    """MVTec AD layout (MPDD uses the same one): train/good, test/<type>, ground_truth/<type>.

    `dataset` only salts the random streams so MVTec AD and MPDD images differ.
    """
    root = Path(root)
    size = (image_size, image_size)
    for cat in categories:
        st = _style(seed, cat)
        base = root / cat
        for split, n in (("train", n_train), ("test", n_test_good)):
            for i in range(n):
                img, _ = _sample(st, size, None, _rng(seed, dataset, cat, split, "good", i))
                _save_image(img, base / split / "good" / f"{i:03d}.png", gray=st.gray)
        for defect in st.defects:
            for i in range(n_test_defect_per_type):
                img, mask = _sample(st, size, defect, _rng(seed, dataset, cat, "test", defect, i))
                assert mask is not None
                _save_image(img, base / "test" / defect / f"{i:03d}.png", gray=st.gray)
                _save_mask(mask, base / "ground_truth" / defect / f"{i:03d}_mask.png", 255)
    return root


def write_folder(root: str | os.PathLike[str], names: Iterable[str], *, seed: int = 0,
                 image_size: int = 128, n_train: int = 24, n_test_good: int = 8,
                 n_test_defect_per_type: int = 4) -> Path:
    """Folder datasets (:mod:`repro.data.folder`) as a user might bring them: ``good/`` and one
    folder per defect type, masks under ``masks/<type>/<stem>_mask.png``, a ``dataset.yaml``;
    the suffixes mix letter cases and PNG with JPEG (``.PNG``, ``.jpg``), as real folders do."""
    root = Path(root)
    size = (image_size, image_size)
    n_good = n_train + n_test_good
    for name in names:
        st = _style(seed, name)
        base = root / name
        for i in range(n_good):
            img, _ = _sample(st, size, None, _rng(seed, "folder", name, "good", i))
            suffix = (".png", ".PNG", ".jpg")[i % 3]
            _save_image(img, base / "good" / f"img{i:03d}{suffix}", gray=st.gray,
                        jpeg=suffix == ".jpg")
        for defect in st.defects:
            for i in range(n_test_defect_per_type):
                img, mask = _sample(st, size, defect, _rng(seed, "folder", name, defect, i))
                assert mask is not None
                _save_image(img, base / defect / f"{defect}_{i:02d}.PNG", gray=st.gray)
                _save_mask(mask, base / "masks" / defect / f"{defect}_{i:02d}_mask.png", 255)
        fraction = n_test_good / n_good
        (base / "dataset.yaml").write_text(
            "# written by repro.data.synthetic.write_folder\n"
            "good: good\n"
            f"defective: [{', '.join(st.defects)}]\n"
            "masks: masks/{defect}\n"
            "mask_suffix: _mask\n"
            f"test_good_fraction: {fraction:.6f}\n"
            f"split_seed: {seed}\n")
    return root


# --------------------------------------------------------------------------------------------
# VisA
# --------------------------------------------------------------------------------------------


def write_visa(root: str | os.PathLike[str], categories: Iterable[str], *, seed: int = 0,
               image_size: int = 128, n_train: int = 24, n_test_good: int = 8,
               n_test_defect_per_type: int = 4) -> Path:
    """VisA layout: <cat>/Data/{Images,Masks}/... and split_csv/1cls.csv; masks store 1."""
    root = Path(root)
    size = (image_size, image_size)
    rows: list[list[str]] = []
    for cat in categories:
        st = _style(seed, cat, texture=False)
        normal = 0
        for split, n in (("train", n_train), ("test", n_test_good)):
            for _ in range(n):
                img, _ = _sample(st, size, None, _rng(seed, "visa", cat, "normal", normal))
                rel = f"{cat}/Data/Images/Normal/{normal:04d}.JPG"
                _save_image(img, root / rel, jpeg=True)
                rows.append([cat, split, "normal", rel, ""])
                normal += 1
        for i in range(2 * n_test_defect_per_type):
            defect = st.defects[i % 2]
            img, mask = _sample(st, size, defect, _rng(seed, "visa", cat, "anomaly", i))
            assert mask is not None
            rel = f"{cat}/Data/Images/Anomaly/{i:03d}.JPG"
            rel_mask = f"{cat}/Data/Masks/Anomaly/{i:03d}.png"
            _save_image(img, root / rel, jpeg=True)
            _save_mask(mask, root / rel_mask, 1)
            rows.append([cat, "test", "anomaly", rel, rel_mask])
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    with open(root / "split_csv" / "1cls.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["object", "split", "label", "image", "mask"])
        writer.writerows(rows)
    return root


# --------------------------------------------------------------------------------------------
# MVTec LOCO AD
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    name: str
    shape: str  # "circle" | "label" | "capsule"
    cx: float
    cy: float
    color: tuple[float, float, float]


_LOCO_PARTS = (("round_item", "circle", -0.33, -0.02), ("label", "label", 0.03, -0.2),
               ("bar", "capsule", 0.3, 0.17))
_LOCO_FREE_SLOT = (-0.05, 0.17)
_LOCO_LOGICAL = (("missing_round_item",), ("extra_round_item",), ("wrong_color",),
                 ("swapped_items",), ("missing_label", "wrong_color"))
_LOCO_STRUCTURAL = ("scratch", "contamination", "broken_item")


_LOCO_DEFECT_NAMES = ("missing_round_item", "missing_label", "extra_round_item", "wrong_color",
                      "swapped_items", "scratch", "contamination", "broken_item")


def _loco_pixel_value(name: str) -> int:
    return 255 - _LOCO_DEFECT_NAMES.index(name)


def _loco_config(size: tuple[int, int]) -> list[dict[str, object]]:
    """defects_config.json entries, like the official file.

    Missing parts use absolute saturation (the part's pixel area at this image size, as the
    official thresholds are areas at full resolution); the other defects relative 1.0.
    """
    s = min(size)
    absolute = {"missing_round_item": int(round(np.pi * (0.1 * s) ** 2)),
                "missing_label": int(round(4 * 0.14 * 0.08 * s * s))}
    return [{"defect_name": n, "pixel_value": _loco_pixel_value(n),
             "saturation_threshold": absolute.get(n, 1.0), "relative_saturation": n not in absolute}
            for n in _LOCO_DEFECT_NAMES]


def _part_layers(p: _Part, u: Array, v: Array, px: float, dark: Array) -> tuple[Array, Array]:
    shape = (*u.shape, 3)
    rgb = np.broadcast_to(np.array(p.color, np.float32), shape).astype(np.float32)
    if p.shape == "circle":
        d = _sd_circle(u, v, p.cx, p.cy, 0.1)
        hl = np.exp(-((np.hypot(u - p.cx + 0.035, v - p.cy + 0.035) / 0.03) ** 2)) * 0.3
        rgb = rgb + hl[..., None]
    elif p.shape == "label":
        d = _sd_box(u, v, p.cx, p.cy, 0.14, 0.08, 0.015)
        rgb = _mix(rgb, dark, _text_bars(u, v, p.cx, p.cy, 0.12, 0.07, px))
    else:
        d = _sd_box(u, v, p.cx, p.cy, 0.15, 0.045, 0.045)
        rgb = rgb * (1 + 0.15 * np.exp(-(((v - p.cy + 0.015) / 0.015) ** 2)))[..., None]
    return np.clip(rgb, 0, 1).astype(np.float32), _cov(d, px)


_Renderer = Callable[[Sequence[_Part]], tuple[Array, list[Array]]]


def _loco_scene(st: _Style, rng: np.random.Generator,
                size: tuple[int, int]) -> tuple[list[_Part], _Renderer, Array]:
    """Nominal parts, a renderer for any part list (drawn on the same jittered tray, so all
    variants of a scene align) and the tray coverage."""
    h, w = size
    s = min(h, w)
    y, x = _grid(size)
    dx, dy = rng.uniform(-0.012, 0.012, 2)
    u, v = (x - w / 2) / s - dx, (y - h / 2) / s - dy
    colors = [st.colors["body"], st.colors["accent"], st.colors["body2"]]
    parts = []
    for (name, shape, cx, cy), c in zip(_LOCO_PARTS, colors, strict=True):
        jx, jy = rng.uniform(-0.006, 0.006, 2)
        cj = np.clip(c * (1 + rng.uniform(-0.03, 0.03)), 0, 1)
        parts.append(_Part(name, shape, cx + jx, cy + jy, tuple(float(a) for a in cj)))
    table = st.colors["bg"] * (1 + 0.06 * u)[..., None] + 0.01 * _smooth_noise(rng, size, 2)[
        ..., None]
    tray_d = _sd_box(u, v, 0, 0, 0.58, 0.4, 0.06)
    tray_a = _cov(tray_d, s)
    rim = np.clip(tray_a - _cov(tray_d + 0.02, s), 0, 1)
    tray_col = np.clip(st.colors["bg"] * 0.3 + 0.6, 0, 1)
    tray = _mix(np.broadcast_to(tray_col, (h, w, 3)), 0.5 * tray_col + st.colors["dark"], rim)
    tray = tray * (1 + 0.02 * _smooth_noise(rng, size, 1.5))[..., None]
    empty = _mix(table, tray, tray_a).astype(np.float32)
    dark = st.colors["dark"]

    def render(items: Sequence[_Part]) -> tuple[Array, list[Array]]:
        img = empty.copy()
        alphas = []
        for p in items:
            rgb, a = _part_layers(p, u, v, float(s), dark)
            img = _mix(img, rgb, a)
            alphas.append(a)
        return img.astype(np.float32), alphas

    return parts, render, tray_a


def _loco_sample(st: _Style, rng: np.random.Generator, size: tuple[int, int],
                 defects: Sequence[str]) -> tuple[Array, list[tuple[str, Array]]]:
    """A LOCO scene with the given logical or structural defects; returns (img, [(name, mask)])."""
    parts, render, tray_a = _loco_scene(st, rng, size)
    _, nominal = render(parts)
    items = list(parts)
    masks: list[tuple[str, Array]] = []
    for name in defects:
        if name.startswith("missing_"):
            k = [p.name for p in parts].index(name[len("missing_"):])
            items = [p for p in items if p.name != parts[k].name]
            masks.append((name, nominal[k] > 0.02))
        elif name == "extra_round_item":
            cx, cy = _LOCO_FREE_SLOT
            extra = replace(parts[0], cx=cx + rng.uniform(-0.01, 0.01), cy=cy)
            items.append(extra)
        elif name == "wrong_color":
            present = [p.name for p in items]
            # In the two-defect combination the recoloured part must be a present one.
            k = 2 if "missing_label" in defects else int(rng.integers(0, 3))
            idx = present.index(parts[k].name)
            h_shift = rng.uniform(0.3, 0.7)
            r, g, b = parts[k].color
            hh, ss, vv = colorsys.rgb_to_hsv(r, g, b)
            new = colorsys.hsv_to_rgb((hh + h_shift) % 1, max(ss, 0.6), max(vv, 0.5))
            items[idx] = replace(parts[k], color=tuple(float(c) for c in new))
            masks.append((name, nominal[k] > 0.02))
        elif name == "swapped_items":  # never combined with a missing part: indices hold
            a, b = parts[1], parts[2]
            items[1] = replace(a, cx=b.cx, cy=b.cy)
            items[2] = replace(b, cx=a.cx, cy=a.cy)
    img, alphas = render(items)
    if "extra_round_item" in defects:
        masks.append(("extra_round_item", alphas[-1] > 0.02))
    if "swapped_items" in defects:
        union = np.maximum.reduce([nominal[1], nominal[2], alphas[1], alphas[2]])
        masks.append(("swapped_items", union > 0.02))
    foreign, tint = st.colors["foreign"], st.colors["tint"]
    for name in defects:
        if name == "broken_item":
            k = int(rng.integers(0, 3))
            others = [p for p in items if p.name != parts[k].name]
            under, _ = render(others)
            canvas = _Canvas(nominal[k], under, foreign, tint, False)
            img, mask = _defect_with_mask("hole", img, rng, canvas)
            masks.append((name, mask))
        elif name in ("scratch", "contamination"):
            canvas = _Canvas(tray_a, None, foreign, tint, False)
            img, mask = _defect_with_mask(name, img, rng, canvas)
            masks.append((name, mask))
    order = {n: i for i, n in enumerate(defects)}
    masks.sort(key=lambda nm: order[nm[0]])
    return _finish(img, rng), masks


def write_loco(root: str | os.PathLike[str], categories: Iterable[str], *, seed: int = 0,
               size: tuple[int, int] = (96, 128), n_train: int = 24, n_validation: int = 8,
               n_test_good: int = 8, n_test_defect_per_type: int = 4) -> Path:
    """MVTec LOCO AD layout: ground truth is one folder per test image, one PNG per defect.

    Logical anomalies break a composition rule (missing / extra / recoloured / swapped part),
    structural ones damage the surface; some logical images carry two defects (two PNGs).
    """
    root = Path(root)
    size = (int(size[0]), int(size[1]))
    for cat in categories:
        st = _style(seed, cat, texture=False)
        base = root / cat
        base.mkdir(parents=True, exist_ok=True)
        (base / "defects_config.json").write_text(json.dumps(_loco_config(size), indent=2) + "\n")
        for split, sub, n in (("train", "good", n_train), ("validation", "good", n_validation),
                              ("test", "good", n_test_good)):
            for i in range(n):
                img, _ = _loco_sample(st, _rng(seed, "loco", cat, split, i), size, ())
                _save_image(img, base / split / sub / f"{i:03d}.png")
        groups = (("logical_anomalies", _LOCO_LOGICAL),
                  ("structural_anomalies", tuple((k,) for k in _LOCO_STRUCTURAL)))
        for folder, combos in groups:
            for i in range(n_test_defect_per_type * len(combos)):
                combo = combos[i % len(combos)]
                img, masks = _loco_sample(st, _rng(seed, "loco", cat, folder, i), size, combo)
                _save_image(img, base / "test" / folder / f"{i:03d}.png")
                for j, (name, mask) in enumerate(masks):
                    _save_mask(mask, base / "ground_truth" / folder / f"{i:03d}" / f"{j:03d}.png",
                               _loco_pixel_value(name))
    return root


# --------------------------------------------------------------------------------------------
# DAGM 2007
# --------------------------------------------------------------------------------------------


def _ellipse_label(mask: Array) -> Array:
    """A coarse ellipse covering the defect, like the weak labels shipped with DAGM."""
    ys, xs = np.nonzero(mask)
    pts = np.stack([ys, xs], 1).astype(np.float64) + 0.5
    centre = pts.mean(0)
    cov = np.cov((pts - centre).T) + np.eye(2) * 2.0
    inv = np.linalg.inv(cov)
    diff = pts - centre
    k2 = np.einsum("ni,ij,nj->n", diff, inv, diff).max()
    y, x = _grid(mask.shape)
    g = np.stack([y - centre[0], x - centre[1]], -1)
    d2 = np.einsum("hwi,ij,hwj->hw", g, inv, g)
    return (d2 <= k2 * 1.2 + 1.0) | mask


def write_dagm(root: str | os.PathLike[str], classes: Iterable[str], *, seed: int = 0,
               image_size: int = 128, n_train: int = 24, n_test_good: int = 8,
               n_test_defect_per_type: int = 4) -> Path:
    """DAGM 2007 layout: <Class>/{Train,Test}/NNNN.PNG, Label/NNNN_label.PNG and Labels.txt.

    Like the real data, Train also contains defective images; the labels are ellipses.
    """
    root = Path(root)
    size = (image_size, image_size)
    for cls in classes:
        st = _style(seed, cls, texture=True, gray=True)
        for split, n_good, n_bad in (("Train", n_train, n_test_defect_per_type),
                                     ("Test", n_test_good, 2 * n_test_defect_per_type)):
            flags = np.array([0] * n_good + [1] * n_bad)
            _rng(seed, "dagm", cls, split, "order").shuffle(flags)
            folder = root / cls / split
            lines = ["1"]
            n_def = 0
            for i, flag in enumerate(flags, start=1):
                stem = f"{i:04d}"
                defect = st.defects[n_def % 2] if flag else None
                img, mask = _sample(st, size, defect, _rng(seed, "dagm", cls, split, i))
                _save_image(img, folder / f"{stem}.PNG", gray=True)
                if flag:
                    assert mask is not None
                    n_def += 1
                    _save_mask(_ellipse_label(mask), folder / "Label" / f"{stem}_label.PNG", 255)
                    lines.append(f"{i}\t1\t{stem}.PNG\t0\t{stem}_label.PNG")
                else:
                    lines.append(f"{i}\t0\t{stem}.PNG\t0\t0")
            (folder / "Label").mkdir(parents=True, exist_ok=True)
            (folder / "Label" / "Labels.txt").write_text("\n".join(lines) + "\n")
    return root


# --------------------------------------------------------------------------------------------
# DTD
# --------------------------------------------------------------------------------------------


def write_dtd(root: str | os.PathLike[str], classes: Iterable[str], *, seed: int = 0,
              image_size: int = 128, n_per_class: int = 12) -> Path:
    """DTD layout images/<class>/<class>_NNNN.jpg: varied colour textures (anomaly sources)."""
    root = Path(root)
    size = (image_size, image_size)
    for cls in classes:
        base = _style(seed, cls, texture=True, gray=False)
        for i in range(1, n_per_class + 1):
            r = _rng(seed, "dtd", cls, i)
            colors = dict(base.colors)
            hue = r.uniform()
            colors["base"] = _hsv(hue, r.uniform(0.2, 0.8), r.uniform(0.4, 0.9))
            colors["accent"] = _hsv(hue + r.uniform(0.1, 0.6), r.uniform(0.3, 0.9),
                                    r.uniform(0.1, 0.5))
            st = replace(base, colors=colors, period=float(base.period * r.uniform(0.7, 1.5)),
                         angle=float(r.uniform(0, np.pi)))
            img = _finish(_render_texture(st, r, size), r)
            _save_image(img, root / "images" / cls / f"{cls}_{i:04d}.jpg", jpeg=True)
    return root


# --------------------------------------------------------------------------------------------
# Everything, and the atomic cache
# --------------------------------------------------------------------------------------------


def _provenance(spec: SyntheticSpec) -> str:
    return json.dumps({"generator": __name__, "generator_version": GENERATOR_VERSION,
                       "fingerprint": spec.fingerprint(), "spec": asdict(spec)},
                      indent=2, sort_keys=True) + "\n"


def write_all(root: str | os.PathLike[str], spec: SyntheticSpec) -> Path:
    """All six datasets under root/{mvtec_ad,mpdd,visa,mvtec_loco,dagm,dtd}, a folder dataset
    under root/folder, and SYNTHETIC.json."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    common = {"seed": spec.seed, "n_train": spec.n_train, "n_test_good": spec.n_test_good,
              "n_test_defect_per_type": spec.n_test_defect_per_type}
    write_mvtec(root / "mvtec_ad", spec.mvtec_ad, image_size=spec.image_size, **common)
    write_mvtec(root / "mpdd", spec.mpdd, image_size=spec.image_size, dataset="mpdd", **common)
    write_visa(root / "visa", spec.visa, image_size=spec.image_size, **common)
    write_loco(root / "mvtec_loco", spec.mvtec_loco, size=spec.loco_size,
               n_validation=spec.n_validation, **common)
    write_dagm(root / "dagm", spec.dagm, image_size=spec.image_size, **common)
    write_dtd(root / "dtd", spec.dtd, seed=spec.seed, image_size=spec.image_size)
    write_folder(root / "folder", spec.folder, image_size=spec.image_size, **common)
    (root / PROVENANCE_FILE).write_text(_provenance(spec))
    return root


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(cache_dir: Path, final_name: str) -> None:
    """Delete temp folders left by killed generations on this host (live ones are kept)."""
    host = socket.gethostname()
    for tmp in cache_dir.glob(f".{final_name}.tmp-*"):
        tag = tmp.name[len(f".{final_name}.tmp-"):]
        parts = tag.rsplit("-", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        if parts[0] == host and not _pid_alive(int(parts[1])):
            shutil.rmtree(tmp, ignore_errors=True)


def ensure_synthetic(cache_dir: str | os.PathLike[str], spec: SyntheticSpec) -> Path:
    """Return cache_dir/synthetic-<fingerprint>, generating it atomically if it is missing.

    The tree is written into a temporary sibling and renamed into place, so an interrupted
    run never leaves a half dataset that a later call would take as complete.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / f"synthetic-{spec.fingerprint()}"
    if (final / PROVENANCE_FILE).is_file():
        return final
    _remove_stale_temps(cache_dir, final.name)
    tag = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = cache_dir / f".{final.name}.tmp-{tag}"
    try:
        write_all(tmp, spec)
        if final.exists() and not (final / PROVENANCE_FILE).is_file():
            shutil.rmtree(final)  # not produced by us (we only ever rename complete trees)
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / PROVENANCE_FILE).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final

