"""DAGM 2007: ``ClassN/{Train,Test}/NNNN.PNG`` with weak elliptical labels
``ClassN/{Train,Test}/Label/NNNN_label.PNG`` for the defective images."""

from __future__ import annotations

from pathlib import Path

from .common import Record, check_choice, list_images, require_dir, require_nonempty

DAGM_CATEGORIES = tuple(f"Class{i}" for i in range(1, 11))
SPLITS = {"train": "Train", "test": "Test"}


def list_records(root: Path, category: str, split: str) -> list[Record]:
    """All images of a split; an image is defective when its ``Label/<stem>_label.PNG`` exists.

    DAGM's Train folder holds defective images too: unsupervised methods filter ``label == 0``.
    """
    check_choice("dagm", "category", category, DAGM_CATEGORIES)
    check_choice("dagm", "split", split, tuple(SPLITS))
    root = Path(root)
    require_dir(root, "dagm root", "Set DATA_ROOT (see README, 'Data').")
    cat_dir = require_dir(root / category, "dagm class folder",
                          f"Expected the official layout {root}/{category}/Train")
    split_dir = require_dir(cat_dir / SPLITS[split], "dagm split folder")
    label_dir = split_dir / "Label"
    labels = {p.stem.removesuffix("_label"): p for p in list_images(label_dir)} \
        if label_dir.is_dir() else {}
    records = []
    for img in list_images(split_dir):
        mask = labels.get(img.stem)
        records.append(Record(img, 1, "defect", "dagm", category, (mask,)) if mask else
                       Record(img, 0, "good", "dagm", category))
    return require_nonempty(records, split_dir, split)
