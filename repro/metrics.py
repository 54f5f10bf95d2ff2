"""Anomaly-detection metrics: image/pixel AUROC, pixel AP, AUPRO, MVTec LOCO AU-sPRO and AUROCs.

Definitions (every result is a plain float fraction in [0, 1], never a percentage):

* ``image_auroc``, ``pixel_auroc`` -- area under the ROC curve exactly as
  ``sklearn.metrics.roc_auc_score``: one curve point per distinct score (predict "anomalous" when
  ``score >= t``), trapezoid rule.  ``pixel_auroc`` pools all pixels of all images, anomaly-free
  images included (MVTec AD convention).
* ``pixel_ap`` -- average precision exactly as ``sklearn.metrics.average_precision_score``:
  ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct thresholds.  This is the step-wise sum,
  *not* the trapezoid area under the precision-recall curve.
* ``aupro`` -- official MVTec AD evaluation (Bergmann et al., IJCV 2021; ``pro_curve_util.py``
  ``compute_pro`` and ``generic_util.py`` ``trapezoid``).  Regions are the 8-connected components
  of each ground-truth mask (``scipy.ndimage.label`` with a 3x3 all-ones structure).  At threshold
  ``t``: ``PRO(t)`` = mean over all regions of all images of the fraction of the region with
  ``score >= t``; ``FPR(t)`` = fraction of all defect-free pixels (good images included) with
  ``score >= t``.  The curve ``(0, 0)``, one point per distinct score, ``(1, 1)`` is integrated with
  the trapezoid rule up to ``fpr_limit`` (PRO linearly interpolated at exactly ``fpr_limit``) and
  divided by ``fpr_limit``.
* ``spro`` -- official MVTec LOCO AD evaluation v2 (Bergmann et al., IJCV 2022; ``src/metrics.py``,
  ``src/image.py``, ``src/util.py``).  ``sPRO(t)`` = mean over all defects (one per ground-truth
  channel/PNG) of all images of ``min(TP_area(t) / saturation_area, 1)``; ``FPR(t)`` = fraction of
  the pixels outside the union of their image's defects with ``score >= t``; the area up to
  ``fpr_limit`` (default 0.05) is computed and normalised as for AUPRO.  Saturation area as in the
  official ``GroundTruthChannel.get_saturation_area``: ``int(threshold * area)`` (truncated) for
  relative saturation, ``min(threshold, area)`` for absolute saturation.  Difference: the official
  code evaluates a discretised set of thresholds; here the curve is exact (one point per distinct
  score), i.e. the limit of infinitely many thresholds.
* ``loco_image_aurocs`` -- MVTec LOCO image level: AUROC of good vs logical and of good vs
  structural images (official evaluation), their mean (the official headline number) and good vs
  all anomalies pooled (what PUAD, Sugawara et al. 2024, reports as "AUROC (all)").

Implementation: every curve is computed exactly and vectorised.  The scores of the negatives
(or of all pixels) are sorted once by value only (``np.sort`` -- about 10x faster than any argsort
of 10^8 floats); the few positive pixels are argsorted separately, and the negative counts at each
distinct positive score are read off with ``np.searchsorted``.  Negative-only score runs are
horizontal pieces of the curves and positive-only runs vertical ones, so the curve points at the
distinct positive scores give the same areas as the full official curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

__all__ = [
    "LOCO_DEFECT_TYPES",
    "DefectRegion",
    "aupro",
    "image_auroc",
    "loco_image_aurocs",
    "pixel_ap",
    "pixel_auroc",
    "pixel_metrics",
    "saturation_area",
    "spro",
]

LOCO_DEFECT_TYPES: tuple[str, ...] = ("good", "logical_anomalies", "structural_anomalies")
_EIGHT_CONNECTIVITY = np.ones((3, 3), dtype=bool)


# --------------------------------------------------------------------------------------------
# Input conversion
# --------------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    """Return ``x`` as a numpy array; torch tensors (any device) are detached and moved to CPU."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.is_floating_point() and x.dtype not in (torch.float32, torch.float64):
            x = x.float()  # float16 / bfloat16 have no (exact) numpy counterpart
        return x.cpu().numpy()
    return np.asarray(x)


def _as_scores(x: Any, name: str) -> np.ndarray:
    """Scores as float32/float64 (float32 and float64 inputs are kept as they are, no copy)."""
    a = _to_numpy(x)
    if a.dtype in (np.float32, np.float64):
        return a
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_:
        return a.astype(np.float64)
    raise TypeError(f"{name}: scores must be real numbers, got dtype {a.dtype}")


def _as_mask(x: Any) -> np.ndarray:
    a = _to_numpy(x)
    return a if a.dtype == np.bool_ else a != 0


def _squeeze_channel(a: np.ndarray, what: str, name: str) -> np.ndarray:
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise ValueError(f"{name}: {what} must have shape (N, H, W) or (N, 1, H, W), got {a.shape}")
    return a


def _maps_and_masks(masks: Any, maps: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    maps_np = _squeeze_channel(_as_scores(maps, name), "maps", name)
    masks_np = _squeeze_channel(_as_mask(masks), "masks", name)
    if masks_np.shape != maps_np.shape:
        raise ValueError(f"{name}: masks {masks_np.shape} and maps {maps_np.shape} differ in shape")
    return masks_np, maps_np


def _check_finite(values: np.ndarray, name: str) -> None:
    if values.size and not np.isfinite(values).all():
        raise ValueError(f"{name}: scores contain NaN or infinity")


def _check_fpr_limit(fpr_limit: float, name: str) -> float:
    fpr_limit = float(fpr_limit)
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"{name}: fpr_limit must be in (0, 1], got {fpr_limit}")
    return fpr_limit


# --------------------------------------------------------------------------------------------
# Shared curve machinery
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Curve:
    """Cumulative counts at the distinct positive scores ``v_1 > v_2 > ... > v_m``."""

    n_neg: int
    n_pos: int
    neg_gt: np.ndarray  # (m,) negatives with score >  v_k
    neg_ge: np.ndarray  # (m,) negatives with score >= v_k
    pos_ge: np.ndarray  # (m,) positives with score >= v_k
    weight_ge: np.ndarray | None  # (m,) summed positive weight with score >= v_k


def _count_ge_gt(
    ref_sorted: np.ndarray, keys_asc: np.ndarray, block: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Number of references ``>= key`` and ``> key`` for ascending ``keys_asc``.

    Blocked ``np.searchsorted``: each block of consecutive keys is searched only in the slice of
    ``ref_sorted`` between its smallest and largest key, which stays in cache for both searches
    (fewer cache misses than two plain searches over 10^8 references).
    """
    n_ref = ref_sorted.size
    left = np.empty(keys_asc.size, dtype=np.int64)
    right = np.empty(keys_asc.size, dtype=np.int64)
    for start in range(0, keys_asc.size, block):
        keys = keys_asc[start : start + block]
        lo = int(np.searchsorted(ref_sorted, keys[0], side="left"))
        hi = int(np.searchsorted(ref_sorted, keys[-1], side="right"))
        window = ref_sorted[lo:hi]
        left[start : start + block] = lo + np.searchsorted(window, keys, side="left")
        right[start : start + block] = lo + np.searchsorted(window, keys, side="right")
    return n_ref - left, n_ref - right


def _curve(
    ref_sorted: np.ndarray,
    pos: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    ref_includes_pos: bool = False,
) -> _Curve:
    """Operating points of the positives ``pos`` against the ascending ``ref_sorted``.

    ``ref_sorted`` holds the negative scores, or all scores (positives included) when
    ``ref_includes_pos``; the negative counts are then obtained by subtraction.
    """
    order = np.argsort(pos)[::-1]  # descending; the order inside ties is irrelevant
    sorted_pos = pos[order]
    last = np.flatnonzero(sorted_pos[1:] != sorted_pos[:-1])
    last = np.append(last, sorted_pos.size - 1)  # last index of each tie group
    ref_ge, ref_gt = _count_ge_gt(ref_sorted, sorted_pos[last][::-1])
    ref_ge, ref_gt = ref_ge[::-1], ref_gt[::-1]
    n_ref = ref_sorted.size
    pos_ge = last + 1
    if ref_includes_pos:
        pos_gt = np.concatenate(([0], pos_ge[:-1]))
        ref_ge = ref_ge - pos_ge
        ref_gt = ref_gt - pos_gt
        n_ref -= pos.size
    weight_ge = None if weights is None else np.cumsum(weights[order])[last]
    return _Curve(n_ref, pos.size, ref_gt, ref_ge, pos_ge, weight_ge)


def _curve_xy(curve: _Curve, cum_y: np.ndarray, y_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Points (0,0), per distinct positive score (x before, y before), (x after, y after), end."""
    m = cum_y.size
    x = np.empty(2 * m + 2, dtype=np.float64)
    y = np.empty(2 * m + 2, dtype=np.float64)
    x[0], y[0] = 0.0, 0.0
    x[1:-1:2], x[2:-1:2] = curve.neg_gt, curve.neg_ge
    y[1], y[3:-1:2], y[2:-1:2] = 0.0, cum_y[:-1], cum_y
    x[-1], y[-1] = curve.n_neg, cum_y[-1]
    return x / curve.n_neg, y / y_scale


def _area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under the polyline (x, y) for x in [0, x_max] (official ``trapezoid``).

    ``x`` must be non-decreasing and start at 0.  If ``x_max`` is not a curve point, ``y`` is
    linearly interpolated at ``x_max`` between its neighbouring points.
    """
    ins = int(np.searchsorted(x, x_max, side="right"))  # == bisect.bisect(x, x_max)
    area = float(np.sum(0.5 * (y[1:ins] + y[: ins - 1]) * np.diff(x[:ins])))
    if ins < x.size and x[ins - 1] < x_max:
        x0, x1, y0, y1 = x[ins - 1], x[ins], y[ins - 1], y[ins]
        y_interp = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        area += float(0.5 * (y_interp + y0) * (x_max - x0))
    return area


def _auroc(curve: _Curve) -> float:
    x, y = _curve_xy(curve, curve.pos_ge.astype(np.float64), float(curve.n_pos))
    return _area_up_to(x, y, 1.0)


def _average_precision(curve: _Curve) -> float:
    recall_step = np.diff(curve.pos_ge, prepend=0) / curve.n_pos
    precision = curve.pos_ge / (curve.pos_ge + curve.neg_ge)
    return float(np.sum(recall_step * precision))


def _normalised_area(curve: _Curve, n_regions: int, fpr_limit: float) -> float:
    assert curve.weight_ge is not None
    x, y = _curve_xy(curve, curve.weight_ge, float(n_regions))
    return _area_up_to(x, y, fpr_limit) / fpr_limit


def _binary_auroc(pos: np.ndarray, neg: np.ndarray, name: str) -> float:
    neg_sorted = np.sort(neg)
    _check_finite(pos, name)
    _check_finite(neg_sorted[[0, -1]], name)
    return _auroc(_curve(neg_sorted, pos))


# --------------------------------------------------------------------------------------------
# Image level
# --------------------------------------------------------------------------------------------


def image_auroc(labels: Any, scores: Any) -> float:
    """Image-level AUROC (== ``sklearn.metrics.roc_auc_score(labels, scores)``).

    ``labels``: 1/True = anomalous, 0/False = good; ``scores``: higher = more anomalous.
    """
    lab = _to_numpy(labels).reshape(-1)
    sc = _as_scores(scores, "image_auroc").reshape(-1)
    if lab.shape != sc.shape:
        raise ValueError(f"image_auroc: {lab.size} labels but {sc.size} scores")
    if lab.dtype != np.bool_:
        if not np.isin(lab, (0, 1)).all():
            raise ValueError("image_auroc: labels must be binary (0/1 or bool)")
        lab = lab == 1
    n_pos = int(np.count_nonzero(lab))
    if n_pos == 0 or n_pos == lab.size:
        only = "normal (label 0)" if n_pos == 0 else "anomalous (label 1)"
        raise ValueError(
            f"image_auroc needs both anomalous and normal images; got only {only} images"
        )
    return _binary_auroc(sc[lab], sc[~lab], "image_auroc")


def loco_image_aurocs(defect_types: Sequence[str], scores: Any) -> dict[str, float]:
    """MVTec LOCO image-level AUROCs from per-image defect types and anomaly scores.

    Returns ``auroc_logical`` (good vs logical), ``auroc_structural`` (good vs structural),
    ``auroc_mean`` (their mean, the official headline) and ``auroc_pooled`` (good vs all
    anomalies).  An entry whose classes are missing from the input is ``nan``.
    """
    types = np.asarray([str(t) for t in defect_types], dtype=str)
    unknown = sorted(set(types.tolist()) - set(LOCO_DEFECT_TYPES))
    if unknown:
        raise ValueError(
            f"loco_image_aurocs: unknown defect type(s) {unknown}; expected {LOCO_DEFECT_TYPES}"
        )
    sc = _as_scores(scores, "loco_image_aurocs").reshape(-1)
    if sc.size != types.size:
        raise ValueError(f"loco_image_aurocs: {types.size} defect types but {sc.size} scores")
    good = sc[types == "good"]

    def auroc_vs_good(anomalous: np.ndarray) -> float:
        if good.size == 0 or anomalous.size == 0:
            return float("nan")
        return _binary_auroc(anomalous, good, "loco_image_aurocs")

    logical = auroc_vs_good(sc[types == "logical_anomalies"])
    structural = auroc_vs_good(sc[types == "structural_anomalies"])
    return {
        "auroc_logical": logical,
        "auroc_structural": structural,
        "auroc_mean": (logical + structural) / 2.0,
        "auroc_pooled": auroc_vs_good(sc[types != "good"]),
    }


# --------------------------------------------------------------------------------------------
# Pixel level (MVTec AD)
# --------------------------------------------------------------------------------------------


def _pixel_curve(masks: Any, maps: Any, name: str, with_regions: bool) -> tuple[_Curve, int]:
    """One value-sort of all pixels plus an argsort of the anomalous pixels -> shared curve."""
    masks_np, maps_np = _maps_and_masks(masks, maps, name)
    n_images = maps_np.shape[0]
    defect_images = np.flatnonzero(masks_np.reshape(n_images, -1).any(axis=1))
    pos_parts: list[np.ndarray] = []
    weight_parts: list[np.ndarray] = []
    n_regions = 0
    for i in defect_images:
        rows = np.flatnonzero(masks_np[i].any(axis=1))
        cols = np.flatnonzero(masks_np[i].any(axis=0))
        box = (i, slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        mask = masks_np[box]  # bounding box of the defects: same pixel order, faster labelling
        pos_parts.append(maps_np[box][mask])
        if with_regions:
            labels, n_found = ndimage.label(mask, structure=_EIGHT_CONNECTIVITY)
            ids = labels[mask]
            weight_parts.append(1.0 / np.bincount(ids)[ids])  # 1 / |region| per pixel
            n_regions += n_found
    n_pos = sum(p.size for p in pos_parts)
    if n_pos == 0 or n_pos == maps_np.size:
        only = "normal pixels (all masks are empty)" if n_pos == 0 else "anomalous pixels"
        raise ValueError(f"{name} needs both anomalous and normal pixels; got only {only}")
    pos = np.concatenate(pos_parts)
    _check_finite(pos, name)
    all_sorted = np.sort(maps_np, axis=None)  # the one big sort (values only, no argsort)
    _check_finite(all_sorted[[0, -1]], name)
    weights = np.concatenate(weight_parts) if with_regions else None
    return _curve(all_sorted, pos, weights, ref_includes_pos=True), n_regions


def pixel_auroc(masks: Any, maps: Any) -> float:
    """Pixel-level AUROC over all pixels of all images (== ``roc_auc_score`` on the pixels)."""
    curve, _ = _pixel_curve(masks, maps, "pixel_auroc", with_regions=False)
    return _auroc(curve)


def pixel_ap(masks: Any, maps: Any) -> float:
    """Pixel-level average precision (== ``average_precision_score``; step-wise, no trapezoid)."""
    curve, _ = _pixel_curve(masks, maps, "pixel_ap", with_regions=False)
    return _average_precision(curve)


def aupro(masks: Any, maps: Any, fpr_limit: float = 0.3) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (official MVTec AD definition)."""
    fpr_limit = _check_fpr_limit(fpr_limit, "aupro")
    curve, n_regions = _pixel_curve(masks, maps, "aupro", with_regions=True)
    return _normalised_area(curve, n_regions, fpr_limit)


def pixel_metrics(masks: Any, maps: Any, fpr_limit: float = 0.3) -> dict[str, float]:
    """``{"pixel_auroc", "pixel_ap", "aupro"}`` computed from one shared sort of the pixels."""
    fpr_limit = _check_fpr_limit(fpr_limit, "pixel_metrics")
    curve, n_regions = _pixel_curve(masks, maps, "pixel_metrics", with_regions=True)
    return {
        "pixel_auroc": _auroc(curve),
        "pixel_ap": _average_precision(curve),
        "aupro": _normalised_area(curve, n_regions, fpr_limit),
    }


# --------------------------------------------------------------------------------------------
# sPRO (MVTec LOCO AD)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DefectRegion:
    """One ground-truth defect (channel) of an image: its boolean (H, W) mask and saturation area.

    ``eq=False``: regions compare by identity (a numpy mask has no single truth value).
    """

    mask: np.ndarray
    saturation_area: float

    def __post_init__(self) -> None:
        mask = _as_mask(self.mask)
        if mask.ndim != 2:
            raise ValueError(f"DefectRegion: mask must be 2-D (H, W), got shape {mask.shape}")
        if not mask.any():
            raise ValueError("DefectRegion: mask is empty (a defect needs at least one pixel)")
        sat = float(self.saturation_area)
        if not (math.isfinite(sat) and sat > 0):
            raise ValueError(f"DefectRegion: saturation_area must be finite and > 0, got {sat}")
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "saturation_area", sat)


def saturation_area(area: int, saturation_threshold: float, relative_saturation: bool) -> float:
    """Saturation area of a defect as in the official MVTec LOCO evaluation.

    Relative: ``int(saturation_threshold * area)`` (truncated like the official code);
    absolute: ``min(saturation_threshold, area)``.
    """
    if relative_saturation:
        return float(int(saturation_threshold * area))
    return float(min(saturation_threshold, area))


def _saturated_weights(n_pixels: int, sat_area: float) -> np.ndarray:
    """Weights of a region's pixels in descending score order.

    Their cumulative sum after ``k`` pixels is ``min(k / sat_area, 1)``: ``1 / sat_area`` each
    for the first ``floor(sat_area)`` pixels, the fractional remainder for the next one, then 0.
    """
    return np.diff(np.minimum(np.arange(n_pixels + 1) / sat_area, 1.0))


def spro(maps: Any, gt_regions: Sequence[Sequence[DefectRegion]], fpr_limit: float = 0.05) -> float:
    """Normalised area under the sPRO curve up to ``fpr_limit`` (MVTec LOCO AU-sPRO).

    ``gt_regions[i]`` lists the defects of image ``i`` (empty for a good image).  Overlapping
    defects are handled exactly: a pixel counts for every defect that contains it, and only
    pixels outside all defects of their image count as negatives.
    """
    fpr_limit = _check_fpr_limit(fpr_limit, "spro")
    maps_np = _squeeze_channel(_as_scores(maps, "spro"), "maps", "spro")
    if len(gt_regions) != maps_np.shape[0]:
        raise ValueError(f"spro: {maps_np.shape[0]} maps but {len(gt_regions)} gt_regions entries")
    neg_parts: list[np.ndarray] = []
    pos_parts: list[np.ndarray] = []
    weight_parts: list[np.ndarray] = []
    for amap, regions in zip(maps_np, gt_regions, strict=True):
        union = np.zeros(amap.shape, dtype=bool)
        for region in regions:
            if region.mask.shape != amap.shape:
                raise ValueError(
                    f"spro: region mask {region.mask.shape} does not match map {amap.shape}"
                )
            union |= region.mask
            values = np.sort(amap[region.mask])[::-1]
            pos_parts.append(values)
            weight_parts.append(_saturated_weights(values.size, region.saturation_area))
        neg_parts.append(amap[~union])
    n_regions = len(pos_parts)
    if n_regions == 0:
        raise ValueError("spro needs at least one defect region; got only good images")
    neg = np.sort(np.concatenate(neg_parts))
    if neg.size == 0:
        raise ValueError("spro needs defect-free pixels; every pixel lies in a defect")
    pos = np.concatenate(pos_parts)
    _check_finite(pos, "spro")
    _check_finite(neg[[0, -1]], "spro")
    curve = _curve(neg, pos, np.concatenate(weight_parts))
    return _normalised_area(curve, n_regions, fpr_limit)
