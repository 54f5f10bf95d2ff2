"""MVTec AD and MPDD: ``<cat>/train/good``, ``<cat>/test/<defect>``,
``<cat>/ground_truth/<defect>/<id>_mask.png`` (MPDD uses the MVTec AD layout)."""

from __future__ import annotations

from pathlib import Path

from .common import (
    DatasetError,
    Record,
    check_choice,
    list_images,
    require_dir,
    require_nonempty,
)

MVTEC_AD_CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill",
    "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
)
MVTEC_AD_TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
MPDD_CATEGORIES = (
    "bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes",
)
SPLITS = ("train", "test")


def list_records(root: Path, category: str, split: str, *, dataset: str = "mvtec_ad",
                 categories: tuple[str, ...] = MVTEC_AD_CATEGORIES) -> list[Record]:
    """Records of one category and split. Normal images have ``defect_type == "good"``."""
    check_choice(dataset, "category", category, categories)
    check_choice(dataset, "split", split, SPLITS)
    root = Path(root)
    require_dir(root, f"{dataset} root", "Set DATA_ROOT to the folder holding one subfolder per "
                "dataset (see README, 'Data').")
    cat_dir = require_dir(root / category, f"{dataset} category folder",
                          f"Expected the official layout {root}/{category}/train/good")
    split_dir = require_dir(cat_dir / split, f"{dataset} split folder")
    records: list[Record] = []
    for defect_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        defect = defect_dir.name
        if split == "train" and defect != "good":
            continue  # MVTec AD trains on normal images only
        for img in list_images(defect_dir):
            if defect == "good":
                records.append(Record(img, 0, "good", dataset, category))
                continue
            mask = cat_dir / "ground_truth" / defect / f"{img.stem}_mask.png"
            if not mask.is_file():
                raise DatasetError(
                    f"missing mask for defect image {img}: expected {mask}")
            records.append(Record(img, 1, defect, dataset, category, (mask,)))
    return require_nonempty(records, split_dir, split)
