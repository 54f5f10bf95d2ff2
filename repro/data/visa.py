"""VisA through the official ``split_csv/1cls.csv`` (header ``object,split,label,image,mask``;
paths relative to the VisA root). This is the 90%/10% normal split Noise-to-Norm and POUTA use."""

from __future__ import annotations

import csv
from pathlib import Path

from .common import DatasetError, Record, check_choice, require_dir, require_nonempty

VISA_CATEGORIES = (
    "candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1",
    "pcb2", "pcb3", "pcb4", "pipe_fryum",
)
SPLIT_CSV = Path("split_csv") / "1cls.csv"
_COLUMNS = ["object", "split", "label", "image", "mask"]


def read_split_csv(root: Path) -> list[dict[str, str]]:
    path = Path(root) / SPLIT_CSV
    if not path.is_file():
        raise DatasetError(
            f"VisA split file not found: {path}. Expected the official split_csv/1cls.csv "
            "(from the VisA release / amazon-science/spot-diff) inside the VisA root.")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != _COLUMNS:
            raise DatasetError(f"{path} has columns {reader.fieldnames}; expected {_COLUMNS}")
        return list(reader)


def list_records(root: Path, category: str, split: str) -> list[Record]:
    check_choice("visa", "category", category, VISA_CATEGORIES)
    check_choice("visa", "split", split, ("train", "test"))
    root = Path(root)
    require_dir(root, "visa root", "Set DATA_ROOT (see README, 'Data').")
    rows = [r for r in read_split_csv(root) if r["object"] == category and r["split"] == split]
    if not rows:
        raise DatasetError(f"split '{split}' is empty: {root / SPLIT_CSV} lists no "
                           f"'{category}' rows for it")
    require_dir(root / category, "visa category folder",
                f"Expected the official layout {root}/{category}/Data/Images")
    records = []
    for r in rows:
        img = root / r["image"]
        if not img.is_file():
            raise DatasetError(f"image listed in {root / SPLIT_CSV} not found: {img}")
        if r["label"] == "normal":
            records.append(Record(img, 0, "good", "visa", category))
        elif r["label"] == "anomaly":
            if not r["mask"]:
                raise DatasetError(f"missing mask for defect image {img}: the csv row has none")
            mask = root / r["mask"]
            if not mask.is_file():
                raise DatasetError(f"missing mask for defect image {img}: expected {mask}")
            records.append(Record(img, 1, "anomaly", "visa", category, (mask,)))
        else:
            raise DatasetError(f"{root / SPLIT_CSV}: label '{r['label']}' for {img}; "
                               "expected 'normal' or 'anomaly'")
    return require_nonempty(records, root / category, split)
