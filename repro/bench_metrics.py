"""Benchmark of ``repro.metrics`` on an MVTec-AD-sized synthetic test set.

Usage: ``python -m repro.bench_metrics --out results/benchmarks/metrics.json``

Generates 1,725 seeded 256x256 anomaly maps (smooth noise) and masks (about 2/3 of the images
carry one or two elliptic defects of a few hundred to a few thousand pixels, raised in the map),
then times ``pixel_metrics`` and ``image_auroc`` (two runs each, ``time.perf_counter``) and writes
the JSON file plus a Markdown table (same name, ``.md``) next to it, both atomically.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from repro.metrics import image_auroc, pixel_metrics
from repro.runs import atomic_write_text

N_MAPS = 1725
SIZE = 256
N_RUNS = 2


def make_data(
    n_maps: int = N_MAPS, size: int = SIZE, seed: int = 0, chunk: int = 128
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic synthetic maps (N, H, W) float32, masks (N, H, W) bool and image labels."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    maps = np.empty((n_maps, size, size), dtype=np.float32)
    for start in range(0, n_maps, chunk):  # smooth background noise, upsampled from 1/8 size
        stop = min(start + chunk, n_maps)
        low = torch.rand((stop - start, 1, size // 8, size // 8), generator=gen)
        up = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
        maps[start:stop] = up[:, 0].numpy()
    masks = np.zeros((n_maps, size, size), dtype=bool)
    labels = rng.random(n_maps) < 2 / 3
    yy, xx = np.mgrid[0:size, 0:size]
    for i in np.flatnonzero(labels):
        for _ in range(rng.integers(1, 3)):  # one or two ellipses of ~200 to ~4,000 pixels
            a, b = rng.uniform(8, 36, 2)
            cy, cx = rng.uniform(40, size - 40, 2)
            masks[i] |= ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 <= 1.0
        maps[i][masks[i]] += rng.uniform(0.1, 0.8)
    return maps, masks, labels


def _time_runs(fn: Callable[[], Any], n_runs: int = N_RUNS) -> tuple[list[float], Any]:
    runs, result = [], None
    for _ in range(n_runs):
        start = time.perf_counter()
        result = fn()
        runs.append(round(time.perf_counter() - start, 4))
    return runs, result


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# `repro.metrics` benchmark ({report['date']})",
        "",
        f"{report['n_maps']} synthetic maps of {report['size'][0]}x{report['size'][1]} "
        f"({report['data']['n_pixels']:,} pixels, {report['data']['n_defect_images']} defect "
        f"images, {report['data']['n_defect_pixels']:,} defect pixels); "
        f"{report['machine']['cpu_count']} CPUs, torch {report['machine']['torch']} "
        f"({report['machine']['torch_threads']} threads), numpy {report['machine']['numpy']}; "
        f"1-min load average before the run: {report['machine']['load_average_1min_before']}.",
        "",
        "| step | " + " | ".join(f"run {i + 1} (s)" for i in range(N_RUNS)) + " | best (s) |",
        "|---|" + "---:|" * (N_RUNS + 1),
    ]
    for name, timing in report["seconds"].items():
        runs = " | ".join(f"{t:.4f}" for t in timing["runs"])
        lines.append(f"| `{name}` | {runs} | {timing['best']:.4f} |")
    lines += [
        "",
        f"Peak resident memory of the benchmark process: {report['peak_rss_mib']:.0f} MiB.",
        "",
        "Values: " + ", ".join(f"{k} = {v:.4f}" for k, v in report["results"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


def run(out: Path, n_maps: int = N_MAPS, size: int = SIZE, seed: int = 0) -> dict[str, Any]:
    """Run the benchmark and write ``out`` (JSON) and ``out.with_suffix('.md')``."""
    load_before = os.getloadavg()[0]  # other processes on the machine skew the timings
    start = time.perf_counter()
    maps, masks, labels = make_data(n_maps, size, seed)
    generate_s = time.perf_counter() - start
    scores = maps.reshape(n_maps, -1).max(axis=1)

    pixel_runs, pixel_result = _time_runs(lambda: pixel_metrics(masks, maps))
    image_runs, image_result = _time_runs(lambda: image_auroc(labels, scores))

    report: dict[str, Any] = {
        "n_maps": n_maps,
        "size": [size, size],
        "seconds": {
            "pixel_metrics": {"runs": pixel_runs, "best": min(pixel_runs)},
            "image_auroc": {"runs": image_runs, "best": min(image_runs)},
        },
        "results": {**pixel_result, "image_auroc": image_result},
        "data": {
            "seed": seed,
            "n_pixels": int(maps.size),
            "n_defect_images": int(labels.sum()),
            "n_defect_pixels": int(masks.sum()),
            "generate_seconds": round(generate_s, 3),
        },
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_1min_before": round(load_before, 2),
        },
        "date": datetime.date.today().isoformat(),
    }
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), _markdown(report))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/metrics.json"))
    parser.add_argument("--n-maps", type=int, default=N_MAPS)
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = run(args.out, args.n_maps, args.size, args.seed)
    print(json.dumps(report["seconds"]))


if __name__ == "__main__":
    main()
