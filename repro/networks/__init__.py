"""Networks, one module per paper (each ablation is a named configuration of one module)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# torchvision's ImageNet normalisation, shared by every ImageNet backbone
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


@torch.inference_mode()
def median_latency_ms(fns: dict[str, Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor,
                      repeats: int, warmup: int) -> dict[str, float]:
    """Median wall time (ms) of each ``fns[name](x)``, its output brought to the host (the end
    of the measured path), after ``warmup`` calls; the functions alternate, so they share the
    machine's state."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats + warmup):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn(x).cpu()
            if r >= warmup:
                times[name].append((time.perf_counter() - t0) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


@torch.inference_mode()
def inference_cost(model: nn.Module, infer: Callable[[torch.Tensor], torch.Tensor], size: int,
                   device: torch.device, repeats: int, warmup: int = 3) -> dict:
    """Parameters, multiply-accumulates (FlopCounterMode FLOPs / 2) of ``model`` and the median
    latency of ``infer`` (image in, map and score out, ending on the host) at batch 1, after
    ``warmup`` calls, in milliseconds."""
    model.eval()
    x = torch.rand(1, 3, size, size, device=device)
    with FlopCounterMode(display=False) as fc:
        model(x)
    latency = median_latency_ms({"infer": infer}, x, repeats, warmup)["infer"]
    return {"params": count_parameters(model), "macs": fc.get_total_flops() / 2,
            "latency_ms": latency, "at": size}
