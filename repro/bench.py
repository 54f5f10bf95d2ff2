"""Plumbing shared by the benchmark scripts (``bench_pouta``, ``bench_puad``): one JSON file per
machine in ``results/benchmarks/`` and a Markdown summary of every such file of a benchmark."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .runs import atomic_write_text


def save_result(folder: Path, stem: str, device: torch.device, result: dict,
                suffix: str = "") -> Path:
    """``<stem>_<cuda|cpu-Nthreads><suffix>.json``, written atomically."""
    tag = "cuda" if device.type == "cuda" else f"cpu-{torch.get_num_threads()}threads"
    path = Path(folder) / f"{stem}_{tag}{suffix}.json"
    atomic_write_text(path, json.dumps(result, indent=1) + "\n")
    return path


def write_summary(folder: Path, stem: str, title: str, intro: str, columns: Sequence[str],
                  rows: Callable[[dict], list[Sequence[str]]]) -> Path:
    """``<stem>.md``: ``rows(result)`` of every ``<stem>_*.json`` in ``folder``, one table."""
    lines = [f"| {' | '.join(r)} |" for path in sorted(Path(folder).glob(f"{stem}_*.json"))
             for r in rows(json.loads(path.read_text()))]
    text = "\n".join([f"# {title}", "", intro, "", f"| {' | '.join(columns)} |",
                      "|" + "---|" * len(columns), *lines]) + "\n"
    out = Path(folder) / f"{stem}.md"
    atomic_write_text(out, text)
    return out
