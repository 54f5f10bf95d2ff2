"""Your own images: ``DATA_ROOT/folder/<name>/`` described by a small ``dataset.yaml``.

::

    good: good                  # folder of good images (relative to the dataset folder)
    defective: [crack, scratch] # folders of defective images; each folder is a defect type
    masks: masks/{defect}       # optional: mask folder of each defect folder ({defect} = name)
    mask_suffix: _mask          # optional: mask file = image stem + suffix (any image suffix)
    test_good_fraction: 0.2     # good images held out for the test split (seeded rule below)
    split_seed: 0
    max_train_images: null      # optional cap on the training images (seeded subset)
    foreground: null            # optional [grey threshold 0..255, reverse]: POUTA's
                                # foreground rule for the anomaly synthesis (none: everywhere)

The split: the good images, sorted by relative path, are permuted by NumPy's generator seeded
with ``split_seed``; the first ``round(test_good_fraction * n)`` (at least one) form the test
split's good images, the rest train (capped at ``max_train_images``, the first of that
permutation). Every defective image is a test image. Images may have any size, be grey or
colour, and use any of png/jpg/jpeg/bmp/tif/tiff in any letter case. :func:`split_listing`
gives the split as file lists, which the run writes next to its records.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from .common import IMAGE_SUFFIXES, DatasetError, Record, check_choice, list_images, require_dir

SPLITS = ("train", "test")
SPEC_FILE = "dataset.yaml"
KEYS = {"good", "defective", "masks", "mask_suffix", "test_good_fraction", "split_seed",
        "max_train_images", "foreground"}
DEFAULTS = {"masks": None, "mask_suffix": "", "test_good_fraction": 0.2, "split_seed": 0,
            "max_train_images": None, "foreground": None}
MIN_GOOD = 3  # at least two to train (one of them may be held out for validation) and one to test


def discover(root: Path) -> list[str]:
    """The folder datasets under ``DATA_ROOT/folder``: subfolders with a ``dataset.yaml``."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / SPEC_FILE).is_file())


def read_spec(root: Path, name: str) -> dict:
    """The checked ``dataset.yaml`` of ``DATA_ROOT/folder/<name>`` with the defaults filled in."""
    folder = require_dir(Path(root) / name, "folder dataset",
                         f"Expected DATA_ROOT/folder/{name}/{SPEC_FILE} (see README, 'Run the "
                         "methods on your own images')")
    path = folder / SPEC_FILE
    if not path.is_file():
        raise DatasetError(f"{path} not found: a folder dataset is described by {SPEC_FILE} "
                           "(keys good, defective, masks, mask_suffix, ...)")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DatasetError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(spec, dict):
        raise DatasetError(f"{path}: expected a mapping of keys to values, got "
                           f"{type(spec).__name__}")
    unknown = sorted(set(spec) - KEYS)
    if unknown:
        raise DatasetError(f"{path}: unknown key(s) {unknown}; expected some of {sorted(KEYS)}")
    for key in ("good", "defective"):
        if key not in spec:
            raise DatasetError(f"{path}: the key '{key}' is required")
    spec = {**DEFAULTS, **spec}
    if isinstance(spec["defective"], str):
        spec["defective"] = [spec["defective"]]
    if not isinstance(spec["defective"], list) or not spec["defective"] or \
            not all(isinstance(d, str) for d in spec["defective"]):
        raise DatasetError(f"{path}: 'defective' must be a folder name or a non-empty list of them")
    f = spec["test_good_fraction"]
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
        raise DatasetError(f"{path}: test_good_fraction must be a number in (0, 1), got {f!r}")
    for key in ("split_seed", "max_train_images"):
        v = spec[key]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0 or
                              (key == "max_train_images" and v < 2)):
            raise DatasetError(f"{path}: {key} must be a non-negative integer"
                               + (" of at least 2" if key == "max_train_images" else "")
                               + f", got {v!r}")
    fg = spec["foreground"]
    if fg is not None and not (isinstance(fg, list) and len(fg) == 2 and
                               isinstance(fg[0], (int, float)) and isinstance(fg[1], bool)):
        raise DatasetError(f"{path}: foreground must be [grey threshold, reverse (true/false)] "
                           f"or null, got {fg!r}")
    spec["path"] = path
    return spec


def options(root: Path, name: str) -> dict:
    """The method options a folder dataset sets explicitly (never inferred from its name)."""
    fg = read_spec(root, name)["foreground"]
    return {"foreground": tuple(fg) if fg is not None else None}


def _masks(folder: Path, spec: dict, defect: str) -> dict[str, Path] | None:
    if spec["masks"] is None:
        return None
    mask_dir = require_dir(folder / str(spec["masks"]).format(defect=defect),
                           f"mask folder of '{defect}'", f"from masks: {spec['masks']!r} in "
                           f"{spec['path']}")
    by_stem = {}
    suffix = spec["mask_suffix"]
    for m in list_images(mask_dir):
        if not m.stem.endswith(suffix):
            raise DatasetError(f"mask {m} does not end in '{suffix}' (mask_suffix in "
                               f"{spec['path']}): expected <image stem>{suffix}.<image suffix>")
        by_stem[m.stem[:len(m.stem) - len(suffix)] if suffix else m.stem] = m
    return by_stem


def _good_split(folder: Path, spec: dict) -> tuple[list[Path], list[Path]]:
    good_dir = require_dir(folder / spec["good"], "folder of good images",
                           f"from good: {spec['good']!r} in {spec['path']}")
    good = list_images(good_dir)
    if len(good) < MIN_GOOD:
        raise DatasetError(f"{len(good)} good image(s) in {good_dir}: at least {MIN_GOOD} are "
                           f"needed (two to train, one to test); images end in "
                           f"{', '.join(IMAGE_SUFFIXES)} (any case)")
    order = np.random.default_rng(spec["split_seed"]).permutation(len(good))
    n_test = max(1, round(spec["test_good_fraction"] * len(good)))
    if len(good) - n_test < 2:
        raise DatasetError(f"{len(good)} good images in {good_dir} with test_good_fraction "
                           f"{spec['test_good_fraction']} leave {len(good) - n_test} to train; "
                           "at least 2 are needed")
    test = sorted(good[i] for i in order[:n_test])
    train = [good[i] for i in order[n_test:]]
    if spec["max_train_images"] is not None:
        train = train[:spec["max_train_images"]]
    return sorted(train), test


def list_records(root: Path, name: str, split: str) -> list[Record]:
    """Records of folder dataset ``name``: train = good images not held out; test = the held-out
    good images and every defective image (with its mask where masks are given)."""
    check_choice("folder", "split", split, SPLITS)
    spec = read_spec(root, name)
    folder = Path(root) / name
    train, test_good = _good_split(folder, spec)
    if split == "train":
        return [Record(p, 0, "good", "folder", name) for p in train]
    records = [Record(p, 0, "good", "folder", name) for p in test_good]
    for defect in spec["defective"]:
        defect_dir = require_dir(folder / defect, f"folder of defective images '{defect}'",
                                 f"listed under defective in {spec['path']}")
        images = list_images(defect_dir)
        if not images:
            raise DatasetError(f"no images in {defect_dir} (listed under defective in "
                               f"{spec['path']})")
        masks = _masks(folder, spec, defect)
        if masks is not None:
            stems = {p.stem for p in images}
            orphans = sorted(str(m) for s, m in masks.items() if s not in stems)
            if orphans:
                raise DatasetError(f"mask {orphans[0]} matches no image in {defect_dir} "
                                   f"(expected an image named <stem> for <stem>"
                                   f"{spec['mask_suffix']}.<suffix>)")
        for p in images:
            mask = ()
            if masks is not None:
                if p.stem not in masks:
                    raise DatasetError(f"defective image {p} has no mask: expected "
                                       f"{p.stem}{spec['mask_suffix']}.<image suffix> in the "
                                       f"mask folder {str(spec['masks']).format(defect=defect)}")
                mask = (masks[p.stem],)
            records.append(Record(p, 1, defect, "folder", name, mask))
    return records


def split_listing(root: Path, name: str) -> dict:
    """The split as relative file lists (written next to the records: reproducible)."""
    folder = Path(root) / name
    out = {}
    for split in SPLITS:
        out[split] = [str(r.path.relative_to(folder)) for r in list_records(root, name, split)]
    spec = read_spec(root, name)
    out["rule"] = {k: spec[k] for k in ("test_good_fraction", "split_seed", "max_train_images")}
    return out
