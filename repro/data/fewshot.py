"""Few-shot support sets: a seeded rule, saved and loaded as explicit file lists (JSON)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .common import DatasetError, Record


def select_support(records: Sequence[Record], k: int, seed: int) -> list[Record]:
    """``k`` normal training images drawn without replacement by ``numpy.random.default_rng(seed)``
    from the records sorted by path (so the choice does not depend on listing order)."""
    pool = sorted((r for r in records if r.label == 0), key=lambda r: str(r.path))
    if not 0 < k <= len(pool):
        raise DatasetError(f"cannot draw a {k}-shot support set from {len(pool)} normal images")
    idx = np.sort(np.random.default_rng(seed).choice(len(pool), size=k, replace=False))
    return [pool[i] for i in idx]


def save_support(path: Path, support: Sequence[Record], root: Path, *, seed: int) -> None:
    """Write the support set as paths relative to the dataset root (portable between machines)."""
    root = Path(root)
    payload = {
        "dataset": support[0].dataset, "category": support[0].category, "k": len(support),
        "seed": seed,
        "rule": "numpy default_rng(seed).choice over normal train images sorted by path",
        "files": [r.path.relative_to(root).as_posix() for r in support],
    }
    from ..runs import atomic_write_text  # unique temp name: concurrent writers never collide

    atomic_write_text(Path(path), json.dumps(payload, indent=1) + "\n")


def load_support(path: Path, root: Path) -> list[Record]:
    """Read a saved support set back; every listed file must exist under ``root``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"support-set file not found: {path}")
    try:
        payload = json.loads(path.read_text())
        files, dataset, category = payload["files"], payload["dataset"], payload["category"]
    except (ValueError, KeyError) as exc:
        raise DatasetError(f"{path} is not a support-set file ({exc})") from exc
    out = []
    for f in files:
        p = Path(root) / f
        if not p.is_file():
            raise DatasetError(f"support image listed in {path} not found: {p}")
        out.append(Record(p, 0, "good", dataset, category))
    return out
