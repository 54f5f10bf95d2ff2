"""Loose real samples that are not in an official layout (``../shared/data``'s
``dagm_samples`` and ``visa/samples``): read as records for figures and sanity checks only."""

from __future__ import annotations

from pathlib import Path

from .common import DatasetError, Record, list_images, require_dir, require_nonempty


def dagm_samples(root: Path) -> list[Record]:
    """``images/<class>-<id>.PNG`` with ``labels/<class>-<id>_label.PNG`` for defective ones."""
    root = Path(root)
    images = require_dir(root / "images", "dagm_samples images folder")
    label_dir = root / "labels"
    labels = {p.stem.removesuffix("_label"): p for p in list_images(label_dir)} \
        if label_dir.is_dir() else {}
    records = []
    for img in list_images(images):
        category = f"Class{img.stem.split('-')[0]}"
        mask = labels.get(img.stem)
        records.append(Record(img, 1, "defect", "dagm", category, (mask,)) if mask
                       else Record(img, 0, "good", "dagm", category))
    return require_nonempty(records, images, "samples")


def visa_samples(root: Path) -> list[Record]:
    """``samples/<category>/defective.jpg`` with a lossy JPEG mask ``ground_truth.jpg``."""
    samples = require_dir(Path(root) / "samples", "visa samples folder")
    records = []
    for cat_dir in sorted(p for p in samples.iterdir() if p.is_dir()):
        img, mask = cat_dir / "defective.jpg", cat_dir / "ground_truth.jpg"
        if not img.is_file():
            continue
        if not mask.is_file():
            raise DatasetError(f"missing mask for defect image {img}: expected {mask}")
        records.append(Record(img, 1, "anomaly", "visa", cat_dir.name, (mask,)))
    return require_nonempty(records, samples, "samples")
