"""Profiles: named overrides on top of each paper's configuration. The one source of truth for
hyperparameters; every value cites the paper section or says it is our choice.

- ``paper``: every hyperparameter as printed; needs the full datasets (``DATA_ROOT``) and a GPU.
- ``real_subset``: the partial real datasets in ``../shared/data`` at reduced size/steps, CPU.
- ``smoke``: synthetic data written on the fly, tiny images, a handful of steps. Every table cell
  still goes through the real code path; numbers are *not* a reproduction.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from .data.synthetic import SyntheticSpec


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    data_root: str | None  # None: synthetic data generated from ``synthetic``
    needs_real_data: bool = False  # True: refuse to fall back to synthetic data
    synthetic: SyntheticSpec = field(default_factory=SyntheticSpec)
    overrides: dict[str, dict] = field(default_factory=dict)  # paper -> config overrides


# Per-paper configuration as printed (later issues fill in the four papers).
# ``baseline`` is not a paper: a small convolutional autoencoder that shows the data layer,
# run store and tables work end to end and that the synthetic defects are learnable.
PAPER_CONFIG: dict[str, dict] = {
    "baseline": {
        "image_size": 256,  # our choice, the usual MVTec resolution
        "width": 32,  # channels of the first conv; doubled at each of 3 downsamplings
        "steps": 2000,
        "batch_size": 8,
        "lr": 1e-3,  # Adam
        "checkpoint_every": 100,
        "smooth_sigma": 2.0,  # Gaussian smoothing of the error map, in pixels at image_size
    },
}

PROFILES: dict[str, Profile] = {
    "paper": Profile(
        "paper",
        "every printed hyperparameter; full datasets under DATA_ROOT; a GPU",
        data_root=None,
        needs_real_data=True,
    ),
    "real_subset": Profile(
        "real_subset",
        "the partial real datasets in ../shared/data, reduced steps for a 2-core CPU",
        data_root="../shared/data",
        overrides={"baseline": {"image_size": 64, "steps": 150, "checkpoint_every": 25,
                                "smooth_sigma": 1.0}},
    ),
    "smoke": Profile(
        "smoke",
        "synthetic data, tiny images, a handful of steps: checks the code path, not the paper",
        data_root=None,
        synthetic=SyntheticSpec(),
        overrides={"baseline": {"image_size": 64, "steps": 150, "checkpoint_every": 25,
                                "smooth_sigma": 1.0}},
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile '{name}'; expected one of: {', '.join(PROFILES)}")
    return PROFILES[name]


def paper_config(paper: str, profile: str) -> dict:
    """The paper's printed configuration with the profile's overrides applied."""
    if paper not in PAPER_CONFIG:
        raise ValueError(f"no configuration for '{paper}'; known: {', '.join(PAPER_CONFIG)}")
    config = copy.deepcopy(PAPER_CONFIG[paper])
    unknown = set(get_profile(profile).overrides.get(paper, {})) - set(config)
    if unknown:  # a typo in an override must not silently fall back to the paper value
        raise ValueError(f"profile '{profile}' overrides unknown {paper} keys: {sorted(unknown)}")
    config.update(copy.deepcopy(get_profile(profile).overrides.get(paper, {})))
    return config
