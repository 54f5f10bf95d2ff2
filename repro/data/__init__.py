"""Data layer: one loader per official layout, one record/sample type, one error type.

``DATA_ROOT`` holds one subfolder per dataset, named as in ``../shared/data``:
``mvtec_ad``, ``mpdd``, ``visa``, ``mvtec_loco``, ``dagm``, ``dtd``, and ``folder`` for your own
images (:mod:`repro.data.folder`: one subfolder per dataset). With no ``DATA_ROOT`` the
synthetic datasets of :mod:`repro.data.synthetic` are written to the cache and used instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..env import display_path
from . import dagm, folder, loco, mvtec, visa
from .common import (
    DatasetError,
    ImageDataset,
    Record,
    Sample,
    holdout_split,
    load_mask,
    read_image,
    read_mask,
    stack_images,
)
from .fewshot import load_support, save_support, select_support


@dataclass(frozen=True)
class DatasetFormat:
    name: str
    categories: tuple[str, ...]
    splits: tuple[str, ...]
    lister: Callable[[Path, str, str], list[Record]]
    # the categories present under a dataset's root, for formats without fixed names
    discover: Callable[[Path], list[str]] | None = None


DATASETS: dict[str, DatasetFormat] = {
    "mvtec_ad": DatasetFormat("mvtec_ad", mvtec.MVTEC_AD_CATEGORIES, ("train", "test"),
                              mvtec.list_records),
    "mpdd": DatasetFormat(
        "mpdd", mvtec.MPDD_CATEGORIES, ("train", "test"),
        lambda root, cat, split: mvtec.list_records(root, cat, split, dataset="mpdd",
                                                    categories=mvtec.MPDD_CATEGORIES)),
    "visa": DatasetFormat("visa", visa.VISA_CATEGORIES, ("train", "test"), visa.list_records),
    "mvtec_loco": DatasetFormat("mvtec_loco", loco.LOCO_CATEGORIES, loco.SPLITS,
                                loco.list_records),
    "dagm": DatasetFormat("dagm", dagm.DAGM_CATEGORIES, ("train", "test"), dagm.list_records),
    "folder": DatasetFormat("folder", (), folder.SPLITS, folder.list_records, folder.discover),
}


def _format(dataset: str) -> DatasetFormat:
    if dataset not in DATASETS:
        raise DatasetError(f"unknown dataset '{dataset}'; expected one of: {', '.join(DATASETS)}")
    return DATASETS[dataset]


def categories(dataset: str) -> tuple[str, ...]:
    """The official category names of a dataset (none for ``folder``: see
    :func:`present_categories`)."""
    return _format(dataset).categories


def options(data_root: Path, dataset: str, category: str) -> dict:
    """Method options that a dataset sets explicitly: a folder dataset's ``dataset.yaml``
    (``foreground``); nothing for the official datasets."""
    if dataset == "folder":
        return folder.options(Path(data_root) / dataset, category)
    return {}


def list_records(data_root: Path, dataset: str, category: str, split: str) -> list[Record]:
    """Records of ``DATA_ROOT/<dataset>/<category>`` for one split (see each format module)."""
    fmt = _format(dataset)
    return fmt.lister(Path(data_root) / dataset, category, split)


def load_split(data_root: Path, dataset: str, category: str, split: str,
               image_size: int | Sequence[int] | None = None) -> ImageDataset:
    return ImageDataset(list_records(data_root, dataset, category, split), image_size)


def present_categories(data_root: Path, dataset: str) -> list[str]:
    """Official categories that have a folder under ``DATA_ROOT/<dataset>`` (for ``folder``:
    every subfolder with a ``dataset.yaml``)."""
    root = Path(data_root) / dataset
    fmt = _format(dataset)
    if fmt.discover is not None:
        return fmt.discover(root)
    return [c for c in fmt.categories if (root / c).is_dir()]


def is_synthetic(data_root: Path) -> bool:
    return (Path(data_root) / "SYNTHETIC.json").is_file()


def describe(data_root: Path, dataset: str, wanted: Sequence[str] | None = None) -> dict:
    """Provenance of the data a run used: real or synthetic, which categories were missing."""
    data_root = Path(data_root)
    present = present_categories(data_root, dataset)
    wanted = list(wanted) if wanted is not None else \
        list(_format(dataset).categories or present)
    info = {
        "kind": "synthetic" if is_synthetic(data_root) else "real",
        "root": display_path(data_root),  # relative to the repository: no machine's path
        "dataset": dataset,
        "present": [c for c in wanted if c in present],
        "missing": [c for c in wanted if c not in present],
    }
    if info["kind"] == "synthetic":
        info["synthetic"] = json.loads((data_root / "SYNTHETIC.json").read_text())
    return info


__all__ = [
    "DATASETS", "DatasetError", "DatasetFormat", "ImageDataset", "Record", "Sample",
    "categories", "describe", "options", "holdout_split", "is_synthetic", "list_records",
    "load_mask", "load_split", "load_support", "present_categories", "read_image", "read_mask",
    "save_support", "select_support", "stack_images",
]


def check_category(data_root: Path, dataset: str, category: str) -> dict:
    """What can be checked before a run trains, so that it fails in seconds rather than after
    training: both splits list images, every defective test image has its masks, and each mask
    has its image's size (header reads only). Returns the counts; raises :class:`DatasetError`
    naming the first bad file."""
    from PIL import Image

    train = list_records(data_root, dataset, category, "train")
    test = list_records(data_root, dataset, category, "test")
    n_masks = 0
    for r in test:
        if r.label == 1 and not r.mask_paths and dataset not in ("dagm", "folder"):
            raise DatasetError(f"{r.path}: a defective test image without a ground-truth mask")
        if not r.mask_paths:
            continue
        with Image.open(r.path) as im:
            size = im.size
        for m in r.mask_paths:
            if not Path(m).is_file():
                raise DatasetError(f"mask {m} of {r.path} does not exist")
            with Image.open(m) as mk:
                if mk.size != size:
                    raise DatasetError(f"mask {m} is {mk.size[0]}x{mk.size[1]} but its image "
                                       f"{r.path} is {size[0]}x{size[1]}")
            n_masks += 1
    return {"train": len(train), "test": len(test), "masks": n_masks}
