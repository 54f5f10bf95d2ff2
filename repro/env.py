"""Where things live (repository, results, cache), which device to use, and library versions."""

from __future__ import annotations

import os
import platform
import random
import subprocess
from functools import cache
from pathlib import Path

import numpy as np
import torch


def repo_root() -> Path:
    """The repository (``REPRO_ROOT`` or the folder above this package)."""
    if os.environ.get("REPRO_ROOT"):
        return Path(os.environ["REPRO_ROOT"]).resolve()
    return Path(__file__).resolve().parents[1]


def results_dir() -> Path:
    return Path(os.environ.get("REPRO_RESULTS", repo_root() / "results"))


def cache_dir() -> Path:
    """Checkpoints and generated synthetic data: ``REPRO_CACHE`` or ``<repo>/.cache`` (ignored
    by git)."""
    return Path(os.environ.get("REPRO_CACHE", repo_root() / ".cache"))


def kept_teachers_dir() -> Path:
    """``results/teachers/``: distilled teachers kept outside the cache (ignored by git);
    ``experiments.restore_kept_teachers`` copies them into the cache, so another checkout or
    machine reuses them instead of distilling again. Copy a finished
    ``.cache/teachers/teacher-*.pt`` here to keep it."""
    return results_dir() / "teachers"


def resolve_path(value: str | os.PathLike) -> Path:
    """A user-given path; relative paths are taken from the repository root, so notebooks
    executed from any folder (papermill, nbval) see the same data."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else (repo_root() / p).resolve()


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available; asking for ``cuda`` without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("DEVICE=cuda was requested but torch sees no CUDA device; "
                         "use DEVICE=auto or DEVICE=cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ValueError(f"unknown DEVICE '{name}'; expected auto, cpu or cuda[:N]")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@cache
def git_commit() -> str:
    """The short commit, with ``-dirty`` when ``repro/`` differs from it (the code that ran is
    then not the commit's)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo_root(), capture_output=True, text=True,
                              timeout=5).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "repro")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if commit and dirty else commit or "unknown"


@cache
def versions() -> dict[str, str]:
    import sklearn
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "repro_commit": git_commit(),
    }


def display_path(path: str | os.PathLike) -> str:
    """``path`` as shown in rendered results: relative to the repository (e.g.
    ``../shared/data``, ``.cache/data``) so no machine's absolute path is committed."""
    return os.path.relpath(Path(path).resolve(), repo_root())
