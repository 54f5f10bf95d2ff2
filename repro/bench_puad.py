"""Latency of EfficientAD and PUAD as the PUAD paper measures it (Table 3: image tensor in ->
anomaly score out), batch 1, both in the same process on the same device, at 256x256.

Weights do not change the cost, so the networks are randomly initialised and fitted on random
images (the fitted buffers have their real shapes). ``python -m repro.bench_puad --device cuda``
writes ``results/benchmarks/puad_latency_<cuda|cpu-Nthreads>[-precision].json`` and the summary
``puad_latency.md``; notebook 04 shows every such file.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from .bench import save_result, write_summary
from .env import resolve_device, results_dir, versions
from .methods.puad import EfficientADPUAD, latency_ms
from .networks.efficientad import autoencoder, pdn
from .runs import device_label


def build(size: str, image_size: int, device: torch.device, seed: int = 0) -> EfficientADPUAD:
    torch.manual_seed(seed)
    model = EfficientADPUAD(pdn(size), pdn(size, 768), autoencoder(image_size),
                            torch.zeros(1, 384, 1, 1), torch.ones(1, 384, 1, 1)).to(device)
    g = torch.Generator().manual_seed(seed)
    x_train = torch.rand(16, 3, image_size, image_size, generator=g).to(device)
    x_val = torch.rand(8, 3, image_size, image_size, generator=g).to(device)
    model.fit(x_train, x_val, (0.9, 0.995))
    return model


PRECISIONS = ("fp32", "tf32", "fp16")


def bench(device: torch.device, image_size: int = 256, repeats: int = 100,
          warmup: int = 10, precision: str = "fp32") -> dict:
    """``fp32`` (TF32 off, as PUAD's ``main.py``; the default), ``tf32`` (TF32 matmuls and
    convolutions) or ``fp16`` (every weight and the input in half precision)."""
    if precision not in PRECISIONS or (precision != "fp32" and device.type != "cuda"):
        raise ValueError(f"precision must be one of {PRECISIONS} (tf32/fp16 on CUDA only)")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest kernels
    out = {"device": device_label(device), "cpu": platform.processor() or platform.machine(),
           "image_size": image_size, "batch": 1, "repeats": repeats, "warmup": warmup,
           "precision": precision,
           "threads": torch.get_num_threads(),
           "versions": versions(), "sizes": {}}
    for size in ("S", "M"):
        model = build(size, image_size, device)
        model = model.half() if precision == "fp16" else model
        lat = latency_ms(model, image_size, device, repeats, warmup)
        out["sizes"][size] = {**lat, "overhead": lat["puad"] / lat["efficientad"] - 1}
    return out


def bench_peer(device: torch.device, image_size: int = 256, repeats: int = 100,
               warmup: int = 10) -> dict:
    """anomalib's EfficientAD and ours with the same weights, alternating in one process (batch
    1, image tensor in -> score out; anomalib's forward also returns the full-size map, ours
    the score only): the latency ratio per size. Needs the ``peer`` extra."""
    try:
        from anomalib.models.image.efficient_ad.torch_model import (
            EfficientAdModel,
            EfficientAdModelSize,
        )
    except ImportError:
        raise ValueError("--peer anomalib needs anomalib: pip install -e '.[peer]'") from None
    from .networks import median_latency_ms
    from .peers import efficientad_from_state

    out = {"device": device_label(device), "cpu": platform.processor() or platform.machine(),
           "image_size": image_size, "batch": 1, "repeats": repeats, "warmup": warmup,
           "threads": torch.get_num_threads(), "versions": versions(), "sizes": {}}
    for size, enum in (("S", EfficientAdModelSize.S), ("M", EfficientAdModelSize.M)):
        torch.manual_seed(0)
        theirs = EfficientAdModel(model_size=enum).eval()
        with torch.no_grad():
            theirs.mean_std["mean"].normal_(0, 0.1)
            theirs.mean_std["std"].uniform_(0.5, 1.5)
            for k, v in (("qa_st", 0.01), ("qb_st", 0.05), ("qa_ae", 0.02), ("qb_ae", 0.07)):
                theirs.quantiles[k].fill_(v)
        ours, _ = efficientad_from_state(theirs.state_dict(), image_size)
        g = torch.Generator().manual_seed(0)
        ours.fit(torch.rand(16, 3, image_size, image_size, generator=g),
                 torch.rand(8, 3, image_size, image_size, generator=g), (0.9, 0.995))
        theirs, ours = theirs.to(device), ours.to(device).eval()
        x = torch.rand(1, 3, image_size, image_size, device=device)
        with torch.inference_mode():
            lat = median_latency_ms({"anomalib": lambda v, m=theirs: m(v).pred_score,
                                     "ours_efficientad": lambda v, m=ours: m(v, puad=False),
                                     "ours_puad": lambda v, m=ours: m(v, puad=True)},
                                    x, repeats, warmup)
        out["sizes"][size] = {**lat, "ours_over_anomalib": lat["ours_efficientad"] /
                              lat["anomalib"]}
    return out


def _peer_rows(b: dict) -> list[list[str]]:
    return [[b["device"], size, str(b["image_size"]), str(b["repeats"]),
             f"{v['anomalib']:.2f}", f"{v['ours_efficientad']:.2f}", f"{v['ours_puad']:.2f}",
             f"{v['ours_over_anomalib']:.3f}"] for size, v in b["sizes"].items()]


def peer_summary(folder: Path) -> Path:
    return write_summary(
        folder, "puad_peer_latency", "EfficientAD latency: anomalib 2.7 vs ours (batch 1, median)",
        "Written by `python -m repro.bench_puad --peer anomalib --device <cpu|cuda>`: the same "
        "weights, the two implementations alternating in one process.",
        ["device", "size", "px", "repeats", "anomalib ms", "ours EfficientAD ms", "ours PUAD ms",
         "ours / anomalib"], _peer_rows)


def _rows(b: dict) -> list[list[str]]:
    return [[b["device"], b.get("precision", "fp32"), size, str(b["image_size"]),
             str(b["repeats"]), f"{v['efficientad']:.2f}", f"{v['puad']:.2f}",
             f"{100 * v['overhead']:+.2f}"] for size, v in b["sizes"].items()]


def summary(folder: Path) -> Path:
    """``puad_latency.md``: every ``puad_latency_*.json`` in ``folder`` as one table."""
    return write_summary(
        folder, "puad_latency", "PUAD latency (image tensor in -> score out, batch 1, median)",
        "Written by `python -m repro.bench_puad --device <cpu|cuda>`; paper Table 3: EfficientAD "
        "2.88 ms, PUAD 3.00 ms (+4.2%), hardware not stated.",
        ["device", "precision", "size", "px", "repeats", "EfficientAD ms", "PUAD ms",
         "overhead %"], _rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=None, help="default: 1000 on CUDA, 100 else")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--out", default=None, help="default: results/benchmarks")
    p.add_argument("--peer", default=None, choices=["anomalib"],
                   help="time anomalib's EfficientAD beside ours (the peer extra)")
    a = p.parse_args(argv)
    device = resolve_device(a.device)
    repeats = a.repeats or (1000 if device.type == "cuda" else 100)
    if a.peer:
        result = bench_peer(device, a.image_size, repeats)
        out = Path(a.out) if a.out else results_dir() / "benchmarks"
        path = save_result(out, "puad_peer_latency", device, result)
        print(json.dumps(result["sizes"], indent=1))
        print(f"wrote {path} and {peer_summary(out)}")
        return
    result = bench(device, a.image_size, repeats, precision=a.precision)
    out = Path(a.out) if a.out else results_dir() / "benchmarks"
    path = save_result(out, "puad_latency", device, result,
                       "" if a.precision == "fp32" else f"-{a.precision}")
    print(json.dumps(result["sizes"], indent=1))
    print(f"wrote {path} and {summary(out)}")


if __name__ == "__main__":
    main()
