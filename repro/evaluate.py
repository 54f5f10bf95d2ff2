"""From per-image scores and per-pixel maps to the metrics each paper reports."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from . import metrics
from .data import DatasetError, Record, load_mask
from .data import loco as loco_format


def evaluate(records: Sequence[Record], scores: np.ndarray, maps: torch.Tensor | np.ndarray,
             *, dataset: str, data_root: Path | None = None) -> dict[str, float]:
    """Image AUROC, pixel AUROC, pixel AP and AUPRO (MVTec AD, MPDD, VisA, DAGM); for MVTec LOCO
    the per-type AUROCs, their mean, the pooled AUROC and AU-sPRO at FPR 0.05.

    ``maps`` is (N, H, W) at the evaluation size; masks are read at that size.
    """
    maps = maps.detach().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps)
    maps = maps.reshape(len(records), *maps.shape[-2:]).astype(np.float32, copy=False)
    size = maps.shape[-2:]
    scores = np.asarray(scores, dtype=np.float64)
    if dataset == "mvtec_loco":
        out = metrics.loco_image_aurocs([r.defect_type for r in records], scores)
        config = loco_format.read_defects_config(Path(data_root) / "mvtec_loco",
                                                 records[0].category)
        try:
            regions = [loco_format.defect_regions(r, config, size) for r in records]
        except DatasetError:  # e.g. masks merged to 255 (../shared/data): no per-defect values
            out["spro_0.05"] = float("nan")
            return out
        out["spro_0.05"] = metrics.spro(maps, regions, fpr_limit=0.05)
        return out
    labels = np.array([r.label for r in records])
    out = {"image_auroc": metrics.image_auroc(labels, scores)}
    if any(r.label == 1 and not r.mask_paths for r in records):
        return out  # a folder dataset without masks: image metrics only
    masks = np.stack([load_mask(r, size) for r in records])
    out.update(metrics.pixel_metrics(masks, maps))
    return out


def defect_examples(records: Sequence[Record], images: torch.Tensor, recons: torch.Tensor,
                    maps: torch.Tensor, size: int, n: int = 3,
                    value_range: tuple[float, float] = (0.0, 1.0)) -> dict[str, np.ndarray]:
    """Arrays for a qualitative figure: up to ``n`` anomalous test images (the first of each
    defect type) with their test index, ground truth, reconstruction and map. Small on disk:
    images as uint8 (from ``value_range``), maps as float16; ``{}`` without an anomaly."""
    picked, seen = [], set()
    for i, r in enumerate(records):
        if r.label == 1 and r.defect_type not in seen and len(picked) < n:
            picked.append(i)
            seen.add(r.defect_type)
    if not picked:
        return {}
    lo, hi = value_range

    def to_uint8(x: torch.Tensor) -> np.ndarray:
        return ((x.clamp(lo, hi) - lo) * (255 / (hi - lo))).round().byte().cpu().numpy()

    return {"index": np.array(picked), "image": to_uint8(images[picked]),
            "reconstruction": to_uint8(recons[picked]),
            "mask": np.stack([load_mask(records[i], (size, size)) for i in picked]),
            "map": maps[picked].cpu().numpy().astype(np.float16)}
