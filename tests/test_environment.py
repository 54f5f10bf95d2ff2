"""environment.yml and pyproject.toml pin the same versions; the Makefile installs those."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_environment_yml_and_pyproject_pin_the_same_versions():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pins = project["dependencies"] + extras["dev"] + extras["weights"] + extras["ray"] + \
        extras["slurm"] + extras["peer"]
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    assert sorted(pins) == sorted(p for p in pip if not p.startswith("-e"))
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", p) for p in pins)
    makefile = (REPO / "Makefile").read_text()
    torch_pins = [p for p in pins if p.split("==")[0] in ("torch", "torchvision")]
    assert f"pip install {' '.join(torch_pins)}" in makefile


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO / ".ci" / "run").read_text()
    assert "make test" in (REPO / "README.md").read_text()
