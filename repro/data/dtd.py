"""DTD (Describable Textures Dataset) as an anomaly-texture source: ``images/<class>/*.jpg``."""

from __future__ import annotations

from pathlib import Path

from .common import DatasetError, list_images, require_dir


def list_textures(root: Path, classes: tuple[str, ...] | None = None) -> list[Path]:
    """All texture images (of the given classes, or all present), sorted."""
    images_dir = require_dir(Path(root) / "images", "DTD images folder",
                             "Expected the official layout <DTD root>/images/<class>/*.jpg")
    present = sorted(p.name for p in images_dir.iterdir() if p.is_dir())
    wanted = present if classes is None else list(classes)
    out: list[Path] = []
    for c in wanted:
        if c not in present:
            raise DatasetError(f"DTD class folder not found: {images_dir / c}")
        out += list_images(images_dir / c)
    if not out:
        raise DatasetError(f"no texture images found under {images_dir}")
    return out
