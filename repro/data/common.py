"""What every dataset format shares: the error type, the record and sample types, image reading.

A *record* is what a loader finds on disk (paths, label, defect type); a *sample* is what a model
sees (tensors). Listing validates the layout (missing root, category, split, mask); loading
validates the files (unreadable or truncated image, mask of another size). Every failure is a
:class:`DatasetError` whose message names the path and what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class DatasetError(Exception):
    """A dataset on disk is not what the loader expects. The message names the path and the fix."""


@dataclass(frozen=True)
class Record:
    """One image as listed from disk.

    ``mask_paths`` is empty for normal images, one mask for MVTec-style datasets, and one PNG per
    defect channel for MVTec LOCO (the official ``ground_truth/<type>/<id>/NNN.png`` folders).
    """

    path: Path
    label: int  # 0 normal, 1 anomalous
    defect_type: str  # "good" for normal images
    dataset: str
    category: str
    mask_paths: tuple[Path, ...] = ()


class Sample(NamedTuple):
    """One image as a model sees it. A NamedTuple, so torch's default ``collate`` batches it."""

    image: torch.Tensor  # (3, H, W) float32 in [0, 1]
    mask: torch.Tensor  # (1, H, W) float32 in {0, 1}; all zeros for normal images
    label: int
    defect_type: str
    path: str


def as_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``256`` -> ``(256, 256)``; ``(h, w)`` stays; ``None`` keeps the original size."""
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def _open(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise DatasetError(f"{what} not found: {path}")
    try:
        img = Image.open(path)
        img.load()  # decode now, so a truncated file fails here and not inside a DataLoader
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(
            f"cannot read {what} {path}: {exc}. Expected a readable image file "
            f"({', '.join(IMAGE_SUFFIXES)}); re-download or delete the file."
        ) from exc
    return img


def read_image(path: Path, size: int | Sequence[int] | None = None) -> torch.Tensor:
    """RGB float tensor (3, H, W) in [0, 1]. Grayscale is replicated; RGBA drops its alpha."""
    img = _open(Path(path), "image")
    if img.mode in ("I;16", "I;16B", "I"):  # 16-bit grayscale: scale to 8 bit before RGB
        arr = np.asarray(img, dtype=np.float32)
        img = Image.fromarray((arr / max(float(arr.max()), 1.0) * 255).astype(np.uint8))
    img = img.convert("RGB")
    hw = as_size(size)
    if hw is not None and (img.height, img.width) != hw:
        img = img.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def image_size_of(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, reading only its header."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            return (img.height, img.width)
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from exc


def read_mask_raw(path: Path, expect_size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask file's values (H, W) uint8. ``expect_size`` is the (h, w) of its image."""
    path = Path(path)
    img = _open(path, "mask")
    if expect_size is not None and (img.height, img.width) != tuple(expect_size):
        raise DatasetError(
            f"mask {path} is {img.width}x{img.height} (WxH) but its image is "
            f"{expect_size[1]}x{expect_size[0]}: a mask must have its image's size."
        )
    return np.asarray(img.convert("L"))


def read_mask(
    path: Path, size: int | Sequence[int] | None = None, expect_size: tuple[int, int] | None = None
) -> np.ndarray:
    """Binary mask (H, W) bool, resized with nearest neighbour *before* binarising.

    PNG masks are positive where non-zero (MVTec stores 255, VisA small instance ids, LOCO the
    defect's pixel value); lossy JPEG masks are positive above 127.
    """
    arr = read_mask_raw(path, expect_size)
    hw = as_size(size)
    if hw is not None and arr.shape != hw:
        arr = np.asarray(Image.fromarray(arr).resize((hw[1], hw[0]), Image.Resampling.NEAREST))
    threshold = 127 if Path(path).suffix.lower() in (".jpg", ".jpeg") else 0
    return arr > threshold


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder, sorted by name (hidden files skipped)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def check_choice(dataset: str, what: str, value: str, choices) -> None:
    """``unknown mvtec_ad category 'gird'; expected one of: bottle, cable, ...``"""
    if value not in choices:
        raise DatasetError(f"unknown {dataset} {what} '{value}'; expected one of: "
                           f"{', '.join(choices)}")


def require_dir(path: Path, what: str, hint: str = "") -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what} not found: {path}" + (f". {hint}" if hint else ""))
    return path


def require_nonempty(records: list[Record], where: Path | str, split: str) -> list[Record]:
    if not records:
        raise DatasetError(f"split '{split}' is empty: no images found under {where}")
    return records


class ImageDataset(Dataset):
    """A list of records read as :class:`Sample`s at a fixed size (the size of each image if None).

    Images are resized bilinearly, masks with nearest neighbour and then binarised.
    """

    def __init__(self, records: Sequence[Record], image_size: int | Sequence[int] | None = None):
        self.records = list(records)
        self.image_size = as_size(image_size)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        rec = self.records[index]
        image = read_image(rec.path, self.image_size)
        mask = load_mask(rec, tuple(image.shape[1:]))
        return Sample(image, torch.from_numpy(mask)[None].float(), rec.label, rec.defect_type,
                      str(rec.path))


def stack_images(records: Sequence[Record], image_size: int | Sequence[int]) -> torch.Tensor:
    """The records' images at one size as a (N, 3, H, W) tensor in [0, 1]."""
    ds = ImageDataset(records, image_size)
    return torch.stack([ds[i].image for i in range(len(ds))])


def load_mask(rec: Record, size: tuple[int, int]) -> np.ndarray:
    """Union of a record's masks at ``size`` (h, w); zeros for a normal image."""
    if not rec.mask_paths:
        return np.zeros(size, dtype=bool)
    original = image_size_of(rec.path)
    out = np.zeros(size, dtype=bool)
    for p in rec.mask_paths:
        out |= read_mask(p, size, expect_size=original)
    return out


def holdout_split(
    records: Sequence[Record], fraction: float, seed: int
) -> tuple[list[Record], list[Record]]:
    """Seeded split of (training) records into (kept, held out); the held-out part has
    ``round(fraction * n)`` images, at least one when ``fraction > 0``."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    n = len(records)
    n_out = 0 if fraction == 0 else max(1, round(fraction * n))
    if n - n_out < 1:
        where = records[0].path.parent if records else "the training split"
        raise DatasetError(f"{n} training image(s) under {where}: holding out {n_out} for "
                           f"validation (fraction {fraction}) leaves none to train on; at least "
                           f"{n_out + 1} are needed")
    order = np.random.default_rng(seed).permutation(n)
    out = set(order[:n_out].tolist())
    return ([r for i, r in enumerate(records) if i not in out],
            [r for i, r in enumerate(records) if i in out])
