"""Per-image histograms of pixel scores, split by ground truth, so that the pixel AUROC of any
subset of the test images (a bootstrap resample, repro.claims) can be recomputed without
keeping the maps. The bin edges are quantiles of all the run's pixel scores, so every bin holds
about the same share of pixels; pixels in one bin count as ties (half a pair), which is the
only difference from the exact pixel AUROC (``tests/test_claims.py`` bounds it)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .data import Record, load_mask

BINS = 256


def pixel_histograms(maps: np.ndarray, masks: np.ndarray, bins: int = BINS
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(hist, edges)``: ``hist[i, 0]`` counts image i's normal pixels per bin and
    ``hist[i, 1]`` its anomalous ones (uint32, (N, 2, bins)); ``edges`` the inner bin edges."""
    maps = np.asarray(maps, dtype=np.float32).reshape(len(maps), -1)
    masks = np.asarray(masks).reshape(len(maps), -1) > 0
    edges = np.quantile(maps, np.arange(1, bins) / bins).astype(np.float32)
    index = np.searchsorted(edges, maps, side="right")  # 0 .. bins-1
    hist = np.zeros((len(maps), 2, bins), dtype=np.uint32)
    for i in range(len(maps)):
        hist[i, 0] = np.bincount(index[i][~masks[i]], minlength=bins)
        hist[i, 1] = np.bincount(index[i][masks[i]], minlength=bins)
    return hist, edges


def binned_auroc(hist: np.ndarray) -> np.ndarray:
    """Pixel AUROC from summed histograms ``(..., 2, bins)`` (normal, anomalous); NaN where one
    class has no pixel."""
    hist = np.asarray(hist, dtype=np.float64)
    normal, anomalous = hist[..., 0, :], hist[..., 1, :]
    below = np.cumsum(normal, axis=-1) - normal  # normal pixels in lower bins
    pairs = (anomalous * (below + 0.5 * normal)).sum(-1)
    total = anomalous.sum(-1) * normal.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, pairs / np.where(total > 0, total, 1), np.nan)


def pixel_arrays(records: Sequence[Record], maps) -> dict[str, np.ndarray]:
    """``{"pixel_hist", "pixel_edges"}`` of a run's test maps (N, H, W), masks read at the maps'
    size, for the run's arrays; ``{}`` without an anomalous image."""
    if not any(r.label for r in records):
        return {}
    maps = maps.detach().cpu().numpy() if hasattr(maps, "detach") else np.asarray(maps)
    maps = maps.reshape(len(records), *maps.shape[-2:])
    hist, edges = pixel_histograms(maps, np.stack([load_mask(r, maps.shape[-2:])
                                                   for r in records]))
    return {"pixel_hist": hist, "pixel_edges": edges}
