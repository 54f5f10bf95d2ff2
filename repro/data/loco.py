"""MVTec LOCO AD: ``<cat>/{train,validation}/good``,
``<cat>/test/{good,logical_anomalies,structural_anomalies}``, one ground-truth folder per test
image (``ground_truth/<type>/<id>/000.png, 001.png, ...``, one PNG per defect, its pixel value
naming the defect in ``defects_config.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..metrics import LOCO_DEFECT_TYPES, DefectRegion, saturation_area
from .common import (
    DatasetError,
    Record,
    check_choice,
    image_size_of,
    list_images,
    read_mask,
    read_mask_raw,
    require_dir,
    require_nonempty,
)

LOCO_CATEGORIES = (
    "breakfast_box", "juice_bottle", "pushpins", "screw_bag", "splicing_connectors",
)
SPLITS = ("train", "validation", "test")
TEST_TYPES = LOCO_DEFECT_TYPES  # good, logical_anomalies, structural_anomalies


@dataclass(frozen=True)
class DefectSpec:
    defect_name: str
    pixel_value: int
    saturation_threshold: float
    relative_saturation: bool


def list_records(root: Path, category: str, split: str) -> list[Record]:
    check_choice("mvtec_loco", "category", category, LOCO_CATEGORIES)
    check_choice("mvtec_loco", "split", split, SPLITS)
    root = Path(root)
    require_dir(root, "mvtec_loco root", "Set DATA_ROOT (see README, 'Data').")
    cat_dir = require_dir(root / category, "mvtec_loco category folder",
                          f"Expected the official layout {root}/{category}/train/good")
    split_dir = require_dir(cat_dir / split, "mvtec_loco split folder")
    records: list[Record] = []
    for kind in (TEST_TYPES if split == "test" else ("good",)):
        kind_dir = split_dir / kind
        if not kind_dir.is_dir():
            continue  # a partial download may lack one anomaly type; the metrics report nan
        for img in list_images(kind_dir):
            if kind == "good":
                records.append(Record(img, 0, "good", "mvtec_loco", category))
                continue
            gt_dir = cat_dir / "ground_truth" / kind / img.stem
            masks = tuple(list_images(gt_dir)) if gt_dir.is_dir() else ()
            if not masks:
                raise DatasetError(f"missing mask for defect image {img}: expected one PNG per "
                                   f"defect in the folder {gt_dir}")
            records.append(Record(img, 1, kind, "mvtec_loco", category, masks))
    return require_nonempty(records, split_dir, split)


def read_defects_config(root: Path, category: str) -> dict[int, DefectSpec]:
    """``defects_config.json`` keyed by pixel value."""
    path = Path(root) / category / "defects_config.json"
    if not path.is_file():
        raise DatasetError(f"defects config not found: {path} (official LOCO file, needed "
                           "for sPRO saturation thresholds)")
    try:
        entries = json.loads(path.read_text())
        specs = [DefectSpec(str(e["defect_name"]), int(e["pixel_value"]),
                            float(e["saturation_threshold"]), bool(e["relative_saturation"]))
                 for e in entries]
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path} is not a list of {{defect_name, pixel_value, "
                           f"saturation_threshold, relative_saturation}} entries: {exc}") from exc
    return {s.pixel_value: s for s in specs}


def defect_regions(record: Record, config: dict[int, DefectSpec],
                   size: tuple[int, int] | None = None) -> list[DefectRegion]:
    """The sPRO regions of one test image: one per ground-truth PNG.

    The saturation area is computed at the original resolution as the official evaluation does
    and scaled by the area ratio when the mask is resized to ``size`` (h, w), so that
    ``min(TP / saturation, 1)`` means the same fraction at any evaluation size (at least one
    pixel). The official evaluation runs at the original size: pass ``size=None`` for that.
    """
    regions = []
    original = image_size_of(record.path)
    for p in record.mask_paths:
        raw = read_mask_raw(p, expect_size=original)
        values = np.unique(raw[raw > 0])
        if len(values) != 1 or int(values[0]) not in config:
            raise DatasetError(f"ground-truth {p} has pixel values {values.tolist()}; expected a "
                               f"single value listed in defects_config.json ({sorted(config)})")
        spec = config[int(values[0])]
        sat = saturation_area(int((raw > 0).sum()), spec.saturation_threshold,
                              spec.relative_saturation)
        mask = raw > 0 if size is None else read_mask(p, size)
        if not mask.any():  # a defect thinner than a pixel at ``size``: keep every touched pixel
            box = Image.fromarray((raw > 0).astype(np.uint8) * 255).resize(
                (size[1], size[0]), Image.Resampling.BOX)
            mask = np.asarray(box) > 0
        if size is not None:
            sat = max(sat * (size[0] * size[1]) / (original[0] * original[1]), 1.0)
        regions.append(DefectRegion(mask, sat))
    return regions

