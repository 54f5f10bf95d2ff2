"""Noise-to-Norm (Deng et al.): train the reconstruction network on noise-blended normal images,
then score a test image by the per-pixel MS-SSIM + L1 error between the image and the
reconstruction of its noisy version.

Protocol (Sec. 4.2): 256x256, 20% of the training images held out for validation, AdamW
(betas 0.5, 0.999), cosine annealing (T_max 100, eta_min 1e-6) stepped per epoch, at most 500
epochs, early stopping after ``patience`` epochs without a lower validation loss (the weights of
the best epoch are used). Every unstated value is in ``repro.profiles.PAPER_CONFIG["n2n"]``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import precision_recall_curve
from tqdm.auto import tqdm

from ..data import holdout_split, list_records, load_mask, stack_images
from ..evaluate import defect_examples, evaluate
from ..kernels import gaussian_blur
from ..kernels.msssim import mix_loss, mix_map
from ..networks import count_parameters
from ..networks.n2n import n2n_net
from ..runs import RunContext

DATA_RANGE = 2.0  # images normalised with mean 0.5, std 0.5 live in [-1, 1]


def normalise(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> the paper's per-channel normalisation (mean 0.5, std 0.5), i.e. [-1, 1]."""
    return (x - 0.5) / 0.5


def add_noise(x0: torch.Tensor, lam: float, noise_std: float,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. (1): ``x = (1 - lam) x0 + lam eps`` with ``eps ~ N(0.5, noise_std)`` in raw [0, 1]
    units. In normalised units that is ``eps' ~ N(0, noise_std / 0.5)``; noise is drawn on the
    CPU from ``generator`` (reproducible on any device) and moved to ``x0``'s device."""
    if lam == 0:
        return x0
    eps = torch.randn(x0.shape, generator=generator) * (noise_std / 0.5)
    return (1 - lam) * x0 + lam * eps.to(x0.device, x0.dtype)


def _stack(records, size: int) -> torch.Tensor:
    return normalise(stack_images(records, size))


def _generator(*keys: int) -> torch.Generator:
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + int(k)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def validation_loss(net, x_val: torch.Tensor, cfg: dict, seed: int) -> float:
    """Mix loss on the held-out images with fixed noise (the same draw every epoch)."""
    net.eval()
    total = 0.0
    for i in range(0, len(x_val), cfg["batch_size"]):
        x0 = x_val[i:i + cfg["batch_size"]]
        noisy = add_noise(x0, cfg["lam"], cfg["noise_std"], _generator(seed, 7, i))
        total += float(mix_loss(net(noisy), x0, cfg["alpha"], cfg["sigmas"],
                                data_range=DATA_RANGE)) * len(x0)
    return total / len(x_val)


@torch.no_grad()
def anomaly_maps(net, x: torch.Tensor, cfg: dict, seed: int, batch_size: int = 8
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel maps (N, H, W) and reconstructions (N, 3, H, W) of normalised images ``x``.

    Test-time noise is seeded per image index; ``test_noise_draws`` reconstructions of
    independent draws are averaged map-wise.
    """
    net.eval()
    maps, recons = [], []
    for i in range(0, len(x), batch_size):
        x0 = x[i:i + batch_size]
        acc = torch.zeros(len(x0), 1, *x0.shape[-2:], device=x0.device)
        for d in range(cfg["test_noise_draws"]):
            rec = net(add_noise(x0, cfg["lam"], cfg["noise_std"], _generator(seed, 11, i, d)))
            acc += mix_map(rec, x0, cfg["alpha"], cfg["sigmas"], data_range=DATA_RANGE)
        maps.append(gaussian_blur(acc / cfg["test_noise_draws"], cfg["map_sigma"])[:, 0])
        recons.append(rec)
    return torch.cat(maps), torch.cat(recons)


@torch.no_grad()
def latency_ms(net, cfg: dict, device: torch.device, repeats: int = 10) -> float:
    """Median wall time of one batch-1 reconstruction + anomaly map at ``latency_size``
    (after one warm-up call)."""
    net.eval()
    size = cfg["latency_size"]
    x = torch.zeros(1, 3, size, size, device=device)
    times = []
    for r in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        mix_map(net(x), x, cfg["alpha"], cfg["sigmas"], data_range=DATA_RANGE)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if r:  # the first call is the warm-up
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def examples(test, x_test, recons, maps, size: int) -> dict[str, np.ndarray]:
    """Fig. 4-style examples (images in [-1, 1]) with each one's image score."""
    out = defect_examples(test, x_test, recons, maps, size, value_range=(-1.0, 1.0))
    if out:
        out["score"] = np.array([float(maps[i].max()) for i in out["index"]], dtype=np.float32)
    return out


def f1_threshold(masks: np.ndarray, maps: np.ndarray) -> float | None:
    """The map value that maximises pixel F1 over the test set (for the prediction panels of
    the qualitative figure only; no metric depends on it)."""
    if not masks.any():
        return None
    prec, rec, thr = precision_recall_curve(masks.ravel(), maps.ravel())
    f1 = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
    return float(thr[int(np.argmax(f1))])


def run(ctx: RunContext, data_root: Path) -> dict:
    """Train on the key's category (normal train images minus the validation hold-out) and
    evaluate on its test split."""
    cfg, key, device = ctx.config, ctx.key, ctx.device
    train_all = [r for r in list_records(data_root, key.dataset, key.category, "train")
                 if r.label == 0]
    train, val = holdout_split(train_all, cfg["val_fraction"], seed=key.seed)
    test = list_records(data_root, key.dataset, key.category, "test")
    x_train = _stack(train, cfg["image_size"]).to(device)
    x_val = _stack(val, cfg["image_size"]).to(device)

    torch.manual_seed(key.seed)
    net = n2n_net(width=cfg["width"], ram=cfg["ram"]).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], betas=tuple(cfg["betas"]),
                            weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg["t_max"],
                                                       eta_min=cfg["eta_min"])
    parts = {"model": net, "optimizer": opt, "scheduler": sched}
    saved = ctx.resume(**parts)
    epoch, best, best_state = saved.get("step", 0), saved.get("best", float("inf")), \
        saved.get("best_state")
    bad, history = saved.get("bad", 0), saved.get("history", [])

    n_seen, bs = 0, cfg["batch_size"]
    bar = tqdm(total=cfg["max_epochs"], initial=epoch, desc=f"n2n {key.category} {key.variant}",
               leave=False)
    with ctx.timer("train_s"):
        while epoch < cfg["max_epochs"] and bad < cfg["patience"]:
            net.train()
            order = torch.randperm(len(x_train), generator=_generator(key.seed, epoch))
            total = 0.0
            for b in range(0, len(order), bs):
                x0 = x_train[order[b:b + bs].to(device)]
                noisy = add_noise(x0, cfg["lam"], cfg["noise_std"],
                                  _generator(key.seed, epoch, b))
                loss = mix_loss(net(noisy), x0, cfg["alpha"], cfg["sigmas"],
                                data_range=DATA_RANGE)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(x0)
                n_seen += len(x0)
            sched.step()
            val_loss = validation_loss(net, x_val, cfg, key.seed)
            history.append({"epoch": epoch + 1, "train_loss": total / len(x_train),
                            "val_loss": val_loss, "lr": opt.param_groups[0]["lr"]})
            if val_loss < best:
                best, bad = val_loss, 0
                best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            else:
                bad += 1
            epoch += 1
            bar.update(1)
            ctx.checkpoint(epoch, parts, best=best, best_state=best_state, bad=bad,
                           history=history)
    bar.close()
    net.load_state_dict(best_state)

    x_test = _stack(test, cfg["image_size"]).to(device)
    with ctx.timer("test_s"):
        maps, recons = anomaly_maps(net, x_test, cfg, key.seed)
    scores = maps.flatten(1).amax(dim=1).cpu().numpy()
    with ctx.timer("metrics_s"):
        metrics = evaluate(test, scores, maps, dataset=key.dataset, data_root=data_root)
    train_s = ctx.timings.get("train_s", 0.0)
    masks = np.stack([load_mask(r, tuple(maps.shape[-2:])) for r in test])
    return {
        "arrays": examples(test, x_test, recons, maps, cfg["image_size"])
        if key.variant == "default" else {},
        "metrics": metrics,
        "extra": {
            "params": count_parameters(net),
            "epochs": epoch, "best_val_loss": best, "stopped_early": bad >= cfg["patience"],
            "history": history, "n_train": len(train), "n_val": len(val), "n_test": len(test),
            "train_images_per_s": n_seen / train_s if train_s and n_seen else None,
            "latency_ms": latency_ms(net, cfg, device),
            "pixel_threshold": f1_threshold(masks, maps.cpu().numpy()),
            "latency_size": cfg["latency_size"],
            "scores": [float(s) for s in scores],
            "labels": [r.label for r in test],
            "test_paths": [str(r.path.relative_to(data_root)) for r in test],
        },
    }
