"""Published ImageNet weights found locally: torchvision's standard files under ``TORCH_HOME``.

Nothing is downloaded. A config value ``"auto"`` (the default of ``b5_weights`` and
``backbone_weights``) is resolved *before* a run's identity is computed (``resolve_auto``): to
``"torch_home:<file>"`` when torchvision's file for that architecture lies in
``torch.hub.get_dir()/checkpoints/`` (``$TORCH_HOME/hub/checkpoints``, the folder torchvision
itself caches into), else to ``None`` (the documented stand-in). So a record made with the
stand-in is never returned on a machine that has the published file, and the stored config names
a file, never a machine path.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .env import resolve_path

PREFIX = "torch_home:"

# config key -> torchvision architecture whose IMAGENET1K_V1 weights it names
AUTO_WEIGHT_KEYS = {"b5_weights": "efficientnet_b5", "backbone_weights": "wide_resnet101_2"}


def hub_checkpoints_dir() -> Path:
    """Where torchvision keeps downloaded weights: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def standard_file_name(arch: str) -> str:
    """torchvision's file name of ``arch``'s IMAGENET1K_V1 weights (from its weight enum),
    e.g. ``efficientnet_b5_lukemelas-1a07897c.pth``."""
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    return os.path.basename(enum.IMAGENET1K_V1.url)


def find_published(arch: str) -> Path | None:
    """The published file of ``arch`` under ``TORCH_HOME``, or None."""
    path = hub_checkpoints_dir() / standard_file_name(arch)
    return path if path.is_file() else None


def resolve_auto(config: dict) -> dict:
    """``config`` with every ``"auto"`` weight key resolved (see the module doc)."""
    out = dict(config)
    for key, arch in AUTO_WEIGHT_KEYS.items():
        if out.get(key) == "auto":
            found = find_published(arch)
            out[key] = f"{PREFIX}{found.name}" if found else None
    return out


def weight_path(value: str | os.PathLike) -> Path:
    """Where a weights file named in a config lies: ``torch_home:<file>`` (under
    :func:`hub_checkpoints_dir`) or a path (relative paths from the repository root). The
    caller checks that it exists and names the expected file in its error."""
    value = str(value)
    if value.startswith(PREFIX):
        return hub_checkpoints_dir() / value[len(PREFIX):]
    return resolve_path(value)
