"""Table VI of POUTA: parameters, multiply-accumulates and inference time per image of POUTA and
the vanilla method at the paper's widths and 224x224, measured in the same process.

Inference time is image in -> anomaly map and image score out, batch 1, median after warm-up
(``repro.methods.pouta.cost``). Weights do not change the cost, so the networks are randomly
initialised. ``python -m repro.bench_pouta --device cuda`` writes
``results/benchmarks/pouta_cost_<cuda|cpu-Nthreads>.json`` and the summary ``pouta_cost.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .bench import save_result, write_summary
from .env import resolve_device, results_dir, versions
from .methods.pouta import cost
from .networks.pouta import build
from .profiles import PAPER_CONFIG
from .runs import device_label


def bench(device: torch.device, size: int = 224, repeats: int = 50) -> dict:
    cfg = PAPER_CONFIG["pouta"]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    out = {"device": device_label(device), "image_size": size, "batch": 1, "repeats": repeats,
           "threads": torch.get_num_threads(), "versions": versions(),
           "widths": {k: cfg[k] for k in ("rec_width", "vanilla_width", "c2f_widths")},
           "models": {}}
    for name in ("pouta", "vanilla"):
        torch.manual_seed(0)
        model = build(name, cfg["rec_width"], cfg["vanilla_width"], cfg["c2f_widths"])
        out["models"][name] = cost(model.to(device), size, device, repeats, cfg["score_pool"])
    out["latency_ratio"] = out["models"]["pouta"]["latency_ms"] / \
        out["models"]["vanilla"]["latency_ms"]
    return out


def _rows(b: dict) -> list[list[str]]:
    return [[b["device"], b["versions"].get("repro_commit", "?"), name, f"{m['params'] / 1e6:.2f}",
             f"{m['macs'] / 1e9:.2f}", f"{m['latency_ms']:.2f}", f"{b['latency_ratio']:.2f}"]
            for name, m in b["models"].items()]


def summary(folder: Path) -> Path:
    """``pouta_cost.md``: every ``pouta_cost_*.json`` in ``folder`` next to Table VI."""
    return write_summary(
        folder, "pouta_cost", "POUTA cost (Table VI): 224x224, batch 1",
        "Written by `python -m repro.bench_pouta --device <cpu|cuda>`. Paper: POUTA 15.02 M, "
        "35.37 G, 32 ms; vanilla 28.68 M, 39.38 G, 52 ms (ratio 0.62); G read as "
        "multiply-accumulates; hardware not stated. `commit`: the code that was measured "
        "(`-dirty`: with uncommitted changes to `repro/`; the H100 file predates that mark "
        "and was measured with uncommitted code on top of 3e79bbb). 34.69 GMAC: M_p "
        "concatenates the four upsampled maps at full resolution (up to 5dfce83); 34.63: its "
        "1x1 convolution is applied before upsampling (same output, 63 M fewer MACs).",
        ["device", "commit", "model", "params M", "GMAC", "latency ms",
         "POUTA / vanilla latency"], _rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=None, help="default: 200 on CUDA, 20 else")
    p.add_argument("--out", default=None, help="default: results/benchmarks")
    a = p.parse_args(argv)
    device = resolve_device(a.device)
    repeats = a.repeats or (200 if device.type == "cuda" else 20)
    result = bench(device, PAPER_CONFIG["pouta"]["latency_size"], repeats)
    out = Path(a.out) if a.out else results_dir() / "benchmarks"
    path = save_result(out, "pouta_cost", device, result)
    print(json.dumps(result["models"], indent=1), f"ratio {result['latency_ratio']:.3f}")
    print(f"wrote {path} and {summary(out)}")


if __name__ == "__main__":
    main()
