"""Tests for repro.metrics: sklearn equality, hand-worked AUPRO/sPRO cases, slow references."""

from __future__ import annotations

import bisect
import math
import time

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from repro.metrics import (
    DefectRegion,
    aupro,
    image_auroc,
    loco_image_aurocs,
    pixel_ap,
    pixel_auroc,
    pixel_metrics,
    saturation_area,
    spro,
)

# --------------------------------------------------------------------------------------------
# Slow, obviously-correct references
# --------------------------------------------------------------------------------------------


def ref_trapezoid(x: list[float], y: list[float], x_max: float) -> float:
    """Trapezoid rule up to x_max, interpolating y linearly at x_max (official MVTec rule)."""
    correction = 0.0
    if x_max not in x:
        ins = bisect.bisect(x, x_max)
        assert 0 < ins < len(x)
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    xs = [a for a in x if a <= x_max]
    ys = [b for a, b in zip(x, y, strict=True) if a <= x_max]
    area = sum(0.5 * (ys[i] + ys[i - 1]) * (xs[i] - xs[i - 1]) for i in range(1, len(xs)))
    return area + correction


def ref_aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float) -> float:
    """Loop over the distinct thresholds; FPR and per-region overlap computed directly."""
    regions = []
    for i in range(masks.shape[0]):
        labels, n = ndimage.label(masks[i], structure=np.ones((3, 3)))
        regions += [(i, labels == k) for k in range(1, n + 1)]
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        pred = maps >= t
        fprs.append((pred & normal).sum() / normal.sum())
        pros.append(float(np.mean([(pred[i] & r).sum() / r.sum() for i, r in regions])))
    fprs.append(1.0)
    pros.append(1.0)
    return ref_trapezoid(fprs, pros, fpr_limit) / fpr_limit


def ref_spro(maps: np.ndarray, gt: list[list[DefectRegion]], fpr_limit: float) -> float:
    """Loop over the distinct thresholds; sPRO and FPR (outside the union) computed directly."""
    normal = np.ones(maps.shape, dtype=bool)
    for i, regions in enumerate(gt):
        for r in regions:
            normal[i] &= ~r.mask
    fprs, spros = [0.0], [0.0]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        pred = maps >= t
        fprs.append((pred & normal).sum() / normal.sum())
        values = [
            min((pred[i] & r.mask).sum() / r.saturation_area, 1.0)
            for i, regions in enumerate(gt)
            for r in regions
        ]
        spros.append(float(np.mean(values)))
    fprs.append(1.0)
    spros.append(1.0)
    return ref_trapezoid(fprs, spros, fpr_limit) / fpr_limit


# --------------------------------------------------------------------------------------------
# Random inputs
# --------------------------------------------------------------------------------------------


def random_pixels(
    seed: int, n: int = 6, size: int = 12, decimals: int | None = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Masks with small blobs/rectangles on some images (others good) and possibly tied maps."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        kind = rng.integers(3)
        if kind == 1:  # speckle: many small 8-connected regions
            masks[i] = rng.random((size, size)) < 0.12
        elif kind == 2:  # one or two rectangles
            for _ in range(rng.integers(1, 3)):
                r, c = rng.integers(0, size - 1, 2)
                h, w = rng.integers(1, 5, 2)
                masks[i, r : r + h, c : c + w] = True
    masks[0, 2, 3] = True  # at least one defect pixel
    maps = rng.random(masks.shape) + 0.3 * masks
    if decimals is not None:
        maps = maps.round(decimals)
    return masks, maps.astype(np.float32)


def random_loco(seed: int, n: int = 5, size: int = 10) -> tuple[np.ndarray, list]:
    """Maps with 0-2 possibly overlapping defects per image and mixed saturation settings."""
    rng = np.random.default_rng(seed)
    maps = rng.random((n, size, size)).round(1).astype(np.float32)
    gt: list[list[DefectRegion]] = []
    for i in range(n):
        regions = []
        for _ in range(0 if i == n - 1 else rng.integers(0, 3)):
            mask = np.zeros((size, size), dtype=bool)
            r, c = rng.integers(0, size - 2, 2)
            h, w = rng.integers(1, 6, 2)
            mask[r : r + h, c : c + w] = True
            area = int(mask.sum())
            kind = rng.integers(3)
            if kind == 0:
                sat = saturation_area(area, int(rng.integers(1, 30)), relative_saturation=False)
            elif kind == 1:
                sat = max(saturation_area(area, float(rng.uniform(0.3, 1.0)), True), 1.0)
            else:
                sat = float(rng.uniform(0.5, area))  # non-integer saturation area
            regions.append(DefectRegion(mask, sat))
            maps[i][mask] += 0.2
        gt.append(regions)
    if not any(gt):
        gt[0] = [DefectRegion(np.eye(size, dtype=bool), 3.5)]
    return maps, gt


# --------------------------------------------------------------------------------------------
# AUROC / AP == scikit-learn
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_pixel_auroc_and_ap_equal_sklearn(seed: int, decimals: int | None) -> None:
    masks, maps = random_pixels(seed, decimals=decimals)
    want_auroc = roc_auc_score(masks.ravel(), maps.ravel())
    want_ap = average_precision_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(masks, maps) == pytest.approx(want_auroc, abs=1e-6)
    assert pixel_ap(masks, maps) == pytest.approx(want_ap, abs=1e-6)
    both = pixel_metrics(masks, maps)
    assert both["pixel_auroc"] == pytest.approx(want_auroc, abs=1e-6)
    assert both["pixel_ap"] == pytest.approx(want_ap, abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_pixel_metrics_tiny_defects_equal_sklearn(seed: int) -> None:
    # 1-3 defect pixels among 3,200: the AP of a small positive class.
    rng = np.random.default_rng(100 + seed)
    maps = rng.random((8, 20, 20)).round(2).astype(np.float32)
    masks = np.zeros(maps.shape, dtype=bool)
    masks.reshape(-1)[rng.choice(maps.size, size=seed + 1, replace=False)] = True
    got = pixel_metrics(masks, maps)
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-6)
    assert got["pixel_ap"] == pytest.approx(
        average_precision_score(masks.ravel(), maps.ravel()), abs=1e-6
    )


@pytest.mark.parametrize("seed", range(6))
def test_image_auroc_equals_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.4
    scores = rng.random(300) + 0.2 * labels
    tied = scores.round(1)
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert image_auroc(labels.astype(int), tied) == pytest.approx(
        roc_auc_score(labels, tied), abs=1e-6
    )
    assert isinstance(image_auroc(labels, scores), float)


def test_all_metrics_return_python_floats() -> None:
    masks, maps = random_pixels(0)
    assert all(type(v) is float for v in pixel_metrics(masks, maps).values())
    assert type(pixel_auroc(masks, maps)) is float
    assert type(pixel_ap(masks, maps)) is float
    assert type(aupro(masks, maps)) is float
    maps_l, gt = random_loco(0)
    assert type(spro(maps_l, gt)) is float


def test_torch_inputs_match_numpy() -> None:
    masks, maps = random_pixels(3, decimals=2)
    want = pixel_metrics(masks, maps)
    assert pixel_metrics(torch.from_numpy(masks), torch.from_numpy(maps)) == want
    # (N, 1, H, W) tensors, 0/1 float masks, float64 maps
    got = pixel_metrics(
        torch.from_numpy(masks).float().unsqueeze(1), torch.from_numpy(maps).double().unsqueeze(1)
    )
    assert got == pytest.approx(want, abs=1e-12)
    assert pixel_auroc(torch.from_numpy(masks), torch.from_numpy(maps)) == want["pixel_auroc"]
    labels = torch.tensor([0, 1, 1, 0, 1])
    scores = torch.tensor([0.1, 0.9, 0.4, 0.5, 0.5], requires_grad=True)
    assert image_auroc(labels, scores) == pytest.approx(
        roc_auc_score(labels.numpy(), scores.detach().numpy())
    )


def test_single_class_raises() -> None:
    maps = np.random.default_rng(0).random((2, 4, 4)).astype(np.float32)
    empty = np.zeros(maps.shape, dtype=bool)
    with pytest.raises(
        ValueError, match="pixel_auroc needs both anomalous and normal pixels; got only normal"
    ):
        pixel_auroc(empty, maps)
    with pytest.raises(ValueError, match="pixel_ap needs both .* got only anomalous"):
        pixel_ap(~empty, maps)
    with pytest.raises(ValueError, match="aupro needs both anomalous and normal pixels"):
        aupro(empty, maps)
    with pytest.raises(ValueError, match="pixel_metrics needs both"):
        pixel_metrics(empty, maps)
    with pytest.raises(ValueError, match="image_auroc needs both .* got only normal"):
        image_auroc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="got only anomalous"):
        image_auroc([1, 1], [0.1, 0.2])


def test_invalid_inputs_raise() -> None:
    masks, maps = random_pixels(1)
    bad = maps.copy()
    bad[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pixel_metrics(masks, bad)
    with pytest.raises(ValueError, match="shape"):
        pixel_auroc(masks[:, :-1], maps)
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(masks, maps, fpr_limit=0.0)
    with pytest.raises(ValueError, match="binary"):
        image_auroc([0, 1, 2], [0.1, 0.2, 0.3])


# --------------------------------------------------------------------------------------------
# AUPRO: hand-worked cases
# --------------------------------------------------------------------------------------------


def two_region_mask() -> np.ndarray:
    """4x4 image: region A = pixel (0, 0) (1 px), region B = rows 2-3 x cols 2-3 (4 px).

    A and B do not touch, even diagonally; 16 - 5 = 11 normal pixels.
    """
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, 0, 0] = True
    mask[0, 2:, 2:] = True
    return mask


def test_aupro_hand_worked_curve() -> None:
    mask = two_region_mask()
    amap = np.full((1, 4, 4), 0.1, dtype=np.float32)  # 6 normals stay at 0.1
    amap[0, 2:, 2:] = [[0.9, 0.8], [0.8, 0.4]]  # region B
    amap[0, 0, 0] = 0.6  # region A
    amap[0, 0, 1] = amap[0, 0, 2] = 0.8  # two normals tied with two B pixels
    amap[0, 0, 3] = amap[0, 1, 0] = amap[0, 1, 1] = 0.5  # three more normals
    # Curve points (FPR = normals >= t / 11, PRO = mean(A fraction, B fraction)):
    #   start        (0,    0)
    #   t=0.9        (0,    (0 + 1/4)/2 = 0.125)
    #   t=0.8        (2/11, (0 + 3/4)/2 = 0.375)   sloped segment (normals tie with B)
    #   t=0.6        (2/11, (1 + 3/4)/2 = 0.875)
    #   t=0.5        (5/11, 0.875)
    #   t=0.4        (5/11, 1.0)
    #   t=0.1        (1,    1.0)                    end (1, 1)
    # fpr_limit=0.1 < 2/11 lies on the sloped segment: PRO(0.1) = 0.125 + 0.25 * 0.1 / (2/11)
    #   = 0.2625; area = (0.125 + 0.2625) / 2 * 0.1 = 0.019375; normalised: 0.19375.
    assert aupro(mask, amap, fpr_limit=0.1) == pytest.approx(0.19375, abs=1e-12)
    # fpr_limit=0.3 between 2/11 and 5/11 on a horizontal piece at 0.875:
    #   area = (0.125 + 0.375) / 2 * 2/11 + 0.875 * (0.3 - 2/11) = (0.5 + 0.875 * 1.3) / 11
    assert aupro(mask, amap, fpr_limit=0.3) == pytest.approx((0.5 + 0.875 * 1.3) / 11 / 0.3)
    # fpr_limit=1: area = 0.5/11 + 0.875 * 3/11 + 1.0 * 6/11 = 9.125 / 11
    assert aupro(mask, amap, fpr_limit=1.0) == pytest.approx(9.125 / 11)
    assert pixel_metrics(mask, amap)["aupro"] == pytest.approx((0.5 + 0.875 * 1.3) / 11 / 0.3)


def test_aupro_interpolation_on_tied_segment() -> None:
    mask = two_region_mask()
    amap = np.full((1, 4, 4), 0.2, dtype=np.float32)  # A and all 11 normals tie at 0.2
    amap[0, 2:, 2:] = 0.9  # B found first
    # Curve: (0, 0) -> (0, 0.5) [B complete, A not] -> (1, 1) [everything at t = 0.2].
    # PRO(0.3) = 0.5 + 0.5 * 0.3 = 0.65; area = (0.5 + 0.65) / 2 * 0.3 = 0.1725 -> 0.575.
    assert aupro(mask, amap, fpr_limit=0.3) == pytest.approx(0.575)


def test_aupro_perfect_inverse_and_constant_maps() -> None:
    mask = two_region_mask()
    # Perfect: (0, 0) -> (0, 1) -> (1, 1): area 0.3 -> 1.0
    assert aupro(mask, mask.astype(np.float32)) == pytest.approx(1.0)
    # All normals ranked first: (0, 0) -> (1, 0) -> (1, 1): no area below FPR 0.3 -> 0.0
    assert aupro(mask, (~mask).astype(np.float32)) == pytest.approx(0.0)
    # Constant map: a single threshold, (0, 0) -> (1, 1): PRO(0.3) = 0.3, area 0.045 -> 0.15
    assert aupro(mask, np.zeros(mask.shape, np.float32)) == pytest.approx(0.15)


def test_aupro_weighs_regions_equally() -> None:
    # Region A: 1 pixel; region B: 3x3 = 9 pixels; 36 - 10 = 26 normals.
    mask = np.zeros((1, 6, 6), dtype=bool)
    mask[0, 0, 0] = True
    mask[0, 3:, 3:] = True
    only_small = np.zeros(mask.shape, np.float32)
    only_small[0, 0, 0] = 1.0
    only_big = np.zeros(mask.shape, np.float32)
    only_big[0, 3:, 3:] = 1.0
    # Either way: (0, 0) -> (0, 0.5) -> (1, 1), PRO(0.3) = 0.65 -> (0.5 + 0.65) / 2 = 0.575.
    # (A pixel-weighted overlap would give 1/10 vs 9/10 at FPR 0.)
    assert aupro(mask, only_small) == pytest.approx(0.575)
    assert aupro(mask, only_big) == pytest.approx(0.575)


def test_aupro_uses_eight_connectivity() -> None:
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, 0, 0] = mask[0, 1, 1] = True  # diagonal neighbours: one region with 8-connectivity
    mask[0, 3, 2:] = True  # second region, 2 pixels
    amap = np.zeros(mask.shape, np.float32)
    amap[0, 0, 0] = 1.0  # everything else ties at 0
    # 8-connected: regions {(0,0), (1,1)} and {(3,2), (3,3)}: PRO at t=1 is (1/2 + 0)/2 = 0.25.
    # Curve (0, 0) -> (0, 0.25) -> (1, 1): PRO(0.3) = 0.475, AUPRO = (0.25 + 0.475) / 2 = 0.3625.
    # (4-connectivity would give three regions, PRO 1/3 at t=1 and AUPRO 0.4333.)
    assert aupro(mask, amap) == pytest.approx(0.3625)


def test_aupro_good_images_only_add_normal_pixels() -> None:
    mask = np.zeros((2, 4, 4), dtype=bool)
    mask[0, 0, 0] = True  # one 1-pixel region; 15 + 16 = 31 normals
    amap = np.zeros(mask.shape, np.float32)
    amap[0, 0, 0] = 1.0
    amap[1, 2, 2] = 2.0  # a false positive on the good image ranks above the defect
    # Curve (0, 0) -> (1/31, 0) -> (1/31, 1) -> (1, 1): area to 0.3 = 0.3 - 1/31 -> 1 - 1/9.3
    assert aupro(mask, amap) == pytest.approx(1 - 1 / 9.3)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_aupro_matches_slow_reference(seed: int, fpr_limit: float) -> None:
    masks, maps = random_pixels(seed, n=4, size=10, decimals=1 if seed % 2 else None)
    want = ref_aupro(masks, maps, fpr_limit)
    assert aupro(masks, maps, fpr_limit) == pytest.approx(want, abs=1e-9)
    assert pixel_metrics(masks, maps, fpr_limit)["aupro"] == pytest.approx(want, abs=1e-9)


# --------------------------------------------------------------------------------------------
# sPRO
# --------------------------------------------------------------------------------------------


def test_saturation_area_definition() -> None:
    assert saturation_area(40, 0.5, relative_saturation=True) == 20.0
    assert saturation_area(5, 0.5, relative_saturation=True) == 2.0  # official int() truncation
    assert saturation_area(40, 25, relative_saturation=False) == 25.0
    assert saturation_area(10, 25, relative_saturation=False) == 10.0  # min(thr, area)


def test_defect_region_validation() -> None:
    with pytest.raises(ValueError, match="empty"):
        DefectRegion(np.zeros((3, 3), dtype=bool), 1.0)
    with pytest.raises(ValueError, match="saturation_area"):
        DefectRegion(np.ones((3, 3), dtype=bool), 0.0)
    region = DefectRegion(np.eye(3, dtype=np.uint8) * 255, 2)
    assert region.mask.dtype == np.bool_ and region.saturation_area == 2.0


def test_spro_absolute_saturation_hand_worked() -> None:
    mask = np.zeros((4, 4), dtype=bool)
    mask[0] = True  # 4-pixel defect, absolute threshold 2 -> saturation area min(2, 4) = 2
    region = DefectRegion(mask, saturation_area(4, 2, relative_saturation=False))
    amap = np.full((1, 4, 4), 0.1, dtype=np.float32)  # 9 normals at 0.1
    amap[0, 0] = [0.9, 0.4, 0.2, 0.2]
    amap[0, 1, :3] = 0.5  # 3 normals at 0.5; 12 normals in all
    # t=0.9: TP 1 -> sPRO 1/2 at FPR 0; t=0.5: FPR 3/12 = 0.25; t=0.4: TP 2 -> saturated (1.0).
    # Curve (0,0) (0,0.5) (0.25,0.5) (0.25,1) ... (1,1).
    # limit 0.05: 0.5 * 0.05 / 0.05 = 0.5; limit 0.3: (0.5 * 0.25 + 1 * 0.05) / 0.3 = 0.175 / 0.3
    assert spro(amap, [[region]], fpr_limit=0.05) == pytest.approx(0.5)
    assert spro(amap, [[region]], fpr_limit=0.3) == pytest.approx(0.175 / 0.3)
    # Without saturation (saturation area = area = 4): 1/4 at t=0.9, 1/2 at t=0.4, 1 at t=0.2,
    # all before the FPR passes 0.25: (0,0) (0,0.25) (0.25,0.25) (0.25,1) ... (1,1)
    # -> area to 0.3 = 0.25 * 0.25 + 1.0 * 0.05 = 0.1125
    plain = DefectRegion(mask, 4)
    assert spro(amap, [[plain]], fpr_limit=0.3) == pytest.approx(0.1125 / 0.3)


def test_spro_relative_and_fractional_saturation_hand_worked() -> None:
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, :] = True
    mask[1, 0] = True  # 5-pixel defect, 11 normals
    amap = np.full((1, 4, 4), 0.1, dtype=np.float32)
    amap[0, 0] = [0.9, 0.8, 0.7, 0.6]
    amap[0, 1, 0] = 0.5
    amap[0, 1, 1], amap[0, 1, 2] = 0.85, 0.75  # normals interleaved with the defect pixels
    # Relative threshold 0.5 -> official saturation area int(0.5 * 5) = 2:
    #   t=0.9 (0, 1/2); t=0.85 (1/11, 1/2); t=0.8 (1/11, 1) -> area to 0.3 = 0.5/11 + (0.3 - 1/11)
    relative = DefectRegion(mask, saturation_area(5, 0.5, relative_saturation=True))
    assert spro(amap, [[relative]], fpr_limit=0.3) == pytest.approx((0.5 / 11 + 0.3 - 1 / 11) / 0.3)
    # Non-integer saturation area 2.5: sPRO after 1, 2, 3 pixels = 0.4, 0.8, min(1.2, 1) = 1.
    #   (0, 0.4) (1/11, 0.4) (1/11, 0.8) (2/11, 0.8) (2/11, 1) ... (1, 1)
    #   limit 0.3: 0.4/11 + 0.8/11 + 1.0 * (0.3 - 2/11) = 2.5 / 11; limit 0.05 < 1/11: 0.4
    fractional = DefectRegion(mask, 2.5)
    assert spro(amap, [[fractional]], fpr_limit=0.3) == pytest.approx(2.5 / 11 / 0.3)
    assert spro(amap, [[fractional]], fpr_limit=0.05) == pytest.approx(0.4)


def test_spro_overlapping_channels() -> None:
    a, b, c = (0, 0), (0, 1), (0, 2)
    r1 = np.zeros((4, 4), dtype=bool)
    r2 = np.zeros((4, 4), dtype=bool)
    r1[a] = r1[b] = True  # channel 1: {a, b}
    r2[b] = r2[c] = True  # channel 2: {b, c} -- pixel b belongs to both
    amap = np.full((1, 4, 4), 0.3, dtype=np.float32)  # 13 normals (outside the union) at 0.3
    amap[0][b], amap[0][a], amap[0][c] = 0.9, 0.5, 0.1
    gt = [[DefectRegion(r1, 2), DefectRegion(r2, 2)]]
    # t=0.9: b counts for both channels: (1/2 + 1/2)/2 = 0.5 at FPR 0; t=0.5: r1 full -> 0.75;
    # t=0.3: FPR 1 (all 13 normals); t=0.1: 1.0.  Area to 0.05 at 0.75 -> 0.75.
    assert spro(amap, gt, fpr_limit=0.05) == pytest.approx(0.75)
    assert spro(amap, gt, fpr_limit=1.0) == pytest.approx(0.75)


def test_spro_good_images_only_contribute_to_fpr() -> None:
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 0] = True
    amap = np.zeros((2, 4, 4), dtype=np.float32)
    amap[0, 0, 0] = 1.0
    amap[1, 2, 2] = 2.0  # one false positive on the good image; 15 + 16 = 31 normals
    gt = [[DefectRegion(mask, 1)], []]
    # Curve (0,0) (1/31,0) (1/31,1) (1,1): area to 0.05 = 0.05 - 1/31 -> 1 - 20/31 = 11/31
    assert spro(amap, gt, fpr_limit=0.05) == pytest.approx(11 / 31)
    # The same good image with a map below the defect adds normals but no false positive:
    amap[1, 2, 2] = 0.0
    assert spro(amap, gt, fpr_limit=0.05) == pytest.approx(1.0)


def test_spro_needs_a_region() -> None:
    with pytest.raises(ValueError, match="at least one defect region"):
        spro(np.zeros((2, 3, 3), np.float32), [[], []])


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_spro_matches_slow_reference(seed: int, fpr_limit: float) -> None:
    maps, gt = random_loco(seed)
    assert spro(maps, gt, fpr_limit) == pytest.approx(ref_spro(maps, gt, fpr_limit), abs=1e-9)
    assert spro(torch.from_numpy(maps), gt, fpr_limit) == spro(maps, gt, fpr_limit)


# --------------------------------------------------------------------------------------------
# LOCO image level
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_loco_image_aurocs_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    types = rng.choice(["good", "logical_anomalies", "structural_anomalies"], size=120)
    scores = (rng.random(120) + 0.3 * (types != "good")).round(1)
    got = loco_image_aurocs(list(types), scores)
    good = types == "good"
    for key, kind in [
        ("auroc_logical", "logical_anomalies"),
        ("auroc_structural", "structural_anomalies"),
    ]:
        keep = good | (types == kind)
        assert got[key] == pytest.approx(roc_auc_score(~good[keep], scores[keep]), abs=1e-6)
    assert got["auroc_mean"] == pytest.approx((got["auroc_logical"] + got["auroc_structural"]) / 2)
    assert got["auroc_pooled"] == pytest.approx(roc_auc_score(~good, scores), abs=1e-6)


def test_loco_missing_type_gives_nan_and_unknown_raises() -> None:
    types = ["good", "good", "logical_anomalies", "logical_anomalies"]
    got = loco_image_aurocs(types, torch.tensor([0.1, 0.2, 0.15, 0.9]))
    assert got["auroc_logical"] == pytest.approx(0.75)
    assert math.isnan(got["auroc_structural"])
    assert math.isnan(got["auroc_mean"])
    assert got["auroc_pooled"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="unknown defect type.*'broken'"):
        loco_image_aurocs(["good", "broken"], [0.1, 0.2])


# --------------------------------------------------------------------------------------------
# Speed
# --------------------------------------------------------------------------------------------


def test_pixel_metrics_speed_200_maps() -> None:
    rng = np.random.default_rng(0)
    maps = rng.random((200, 256, 256), dtype=np.float32)
    masks = np.zeros(maps.shape, dtype=bool)
    for i in range(0, 200, 3):
        for j in (0, 1):  # two defect images out of three, 48x48 = 2,304 pixels each
            r, c = rng.integers(0, 200, 2)
            masks[i + j, r : r + 48, c : c + 48] = True
    maps[masks] += 0.5
    start = time.perf_counter()
    result = pixel_metrics(masks, maps)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"pixel_metrics took {elapsed:.2f} s for 200 maps of 256x256"
    assert 0.5 < result["pixel_auroc"] <= 1.0 and 0.0 < result["aupro"] <= 1.0
