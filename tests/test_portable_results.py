"""Committed results name no machine's absolute path (records, executed notebooks)."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ABSOLUTE = re.compile(r'"(/(?:work|home|tmp|root|Users|mnt|data)/[^"]*)"')


def test_committed_results_hold_no_absolute_paths():
    found = []
    for path in sorted((REPO / "results").rglob("*")):
        if path.suffix in (".json", ".ipynb", ".md", ".csv"):
            hit = ABSOLUTE.search(path.read_text(errors="replace"))
            if hit:
                found.append(f"{path.relative_to(REPO)}: {hit.group(1)}")
    assert not found, found[:5]


def test_describe_writes_a_repository_relative_root(synthetic_root):
    from repro.data import describe

    root = describe(synthetic_root, "mvtec_ad", ["grid"])["root"]
    assert not Path(root).is_absolute() and json.dumps(root)
