"""Noise-to-Norm (Deng et al.): train the reconstruction network on noise-blended normal images,
then score a test image by the per-pixel MS-SSIM + L1 error between the image and the
reconstruction of its noisy version.

Protocol (Sec. 4.2): 256x256, 20% of the training images held out for validation, AdamW
(betas 0.5, 0.999), cosine annealing (T_max 100, eta_min 1e-6) stepped per epoch, at most 500
epochs, early stopping after ``patience`` epochs without a lower validation loss (the weights of
the best epoch are used). Every unstated value is in ``repro.profiles.PAPER_CONFIG["n2n"]``.

Issue 11 choices (each a config key; the earlier behaviour is a named variant):

* ``noise_space`` (Eq. 1): ``"normalised"`` draws eps with std ``noise_std`` in the units of the
  normalised x0 (the literal reading), ``"raw"`` in [0, 1] units (std doubled after the
  normalisation; the earlier code). Both centre eps on mid-grey (0 in normalised units).
* ``score_rule``: the image score from the smoothed map, ``"topk_mean"`` (mean of the
  ``score_topk`` fraction of highest pixels) or ``"max"`` (the earlier rule, saturates).
* ``ssim_padding``: padding of the MS-SSIM / L1 windows of the map and the loss
  (``repro.kernels.msssim``), ``conv_padding``: padding of the network's 3x3 convs,
  ``global_residual``: SRMNet's output + input (not in the paper).
* ``reconstruction="blur"``: the no-learning floor; the "reconstruction" is a Gaussian blur of
  the noisy input divided by (1 - lambda), the blur sigma chosen on the validation loss, scored
  exactly like the network.
"""

from __future__ import annotations

import math
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
from ..pixelstats import pixel_arrays
from ..runs import RunContext

DATA_RANGE = 2.0  # images normalised with mean 0.5, std 0.5 live in [-1, 1]


def normalise(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> the paper's per-channel normalisation (mean 0.5, std 0.5), i.e. [-1, 1]."""
    return (x - 0.5) / 0.5


NOISE_SPACES = ("normalised", "raw")


def add_noise(x0: torch.Tensor, lam: float, noise_std: float,
              generator: torch.Generator | None = None, space: str = "normalised"
              ) -> torch.Tensor:
    """Eq. (1): ``x = (1 - lam) x0 + lam eps`` on the normalised image ``x0``.

    ``space="normalised"`` (the literal reading: eps is blended with the *normalised* x0):
    ``eps ~ N(0, noise_std)`` in normalised units, centred on mid-grey. ``space="raw"`` (the
    earlier code): ``eps ~ N(0.5, noise_std)`` in raw [0, 1] units, i.e. ``N(0, noise_std / 0.5)``
    after the normalisation. Noise is drawn on the CPU from ``generator`` (reproducible on any
    device) and moved to ``x0``'s device."""
    if space not in NOISE_SPACES:
        raise ValueError(f"noise space must be one of {NOISE_SPACES}, got {space!r}")
    if lam == 0:
        return x0
    std = noise_std if space == "normalised" else noise_std / 0.5
    eps = torch.randn(x0.shape, generator=generator) * std
    return (1 - lam) * x0 + lam * eps.to(x0.device, x0.dtype)


def _noisy(x0: torch.Tensor, cfg: dict, generator: torch.Generator) -> torch.Tensor:
    return add_noise(x0, cfg["lam"], cfg["noise_std"], generator, cfg["noise_space"])


def _mix_map(rec: torch.Tensor, x0: torch.Tensor, cfg: dict) -> torch.Tensor:
    return mix_map(rec, x0, cfg["alpha"], cfg["sigmas"], data_range=DATA_RANGE,
                   padding=cfg["ssim_padding"])


def _mix_loss(rec: torch.Tensor, x0: torch.Tensor, cfg: dict) -> torch.Tensor:
    return mix_loss(rec, x0, cfg["alpha"], cfg["sigmas"], data_range=DATA_RANGE,
                    padding=cfg["ssim_padding"])


SCORE_RULES = ("topk_mean", "max")


def image_scores(maps: torch.Tensor, rule: str, topk: float = 0.01) -> torch.Tensor:
    """(N, H, W) maps -> (N,) image scores. ``"max"``: the map's maximum. ``"topk_mean"``: the
    mean of its ``ceil(topk * H * W)`` highest pixels (at least one): a region must be bright,
    not a single pixel at the map's ceiling."""
    flat = maps.flatten(1)
    if rule == "max":
        return flat.amax(dim=1)
    if rule == "topk_mean":
        if not 0 < topk <= 1:
            raise ValueError(f"score_topk must be in (0, 1], got {topk}")
        k = max(1, math.ceil(topk * flat.shape[1]))
        return flat.topk(k, dim=1).values.mean(dim=1)
    raise ValueError(f"score_rule must be one of {SCORE_RULES}, got {rule!r}")


def border_profile(maps: torch.Tensor, depth: int = 24) -> list[float]:
    """Mean map value at distance d = 0..depth-1 pixels from the nearest image border (the
    bright-border diagnostic of issue 11)."""
    h, w = maps.shape[-2:]
    i = torch.arange(h).view(-1, 1)
    j = torch.arange(w).view(1, -1)
    dist = torch.minimum(torch.minimum(i, h - 1 - i), torch.minimum(j, w - 1 - j))
    m = maps.float().cpu()
    return [float(m[:, dist == d].mean()) for d in range(min(depth, int(dist.max()) + 1))]


def ring_vs_interior(profile: list[float], ring: int = 6, inner: int = 17) -> dict:
    """Mean of a ``ring`` px border band and of the distances >= ``inner`` in a
    :func:`border_profile` (inner clipped to the profile's depth); equal-weight per distance."""
    inner = min(inner, len(profile) - 1)
    ring_mean = float(np.mean(profile[:ring]))
    interior = float(np.mean(profile[inner:]))
    return {"ring_mean": ring_mean, "interior_mean": interior,
            "ring_over_interior": ring_mean / interior if interior > 0 else None}


class BlurReconstruction(torch.nn.Module):
    """The no-learning floor: ``G_sigma * x / gain`` per channel (replicated edges)."""

    def __init__(self, sigma: float, gain: float = 1.0) -> None:
        super().__init__()
        self.sigma, self.gain = float(sigma), float(gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 3, H, W)
        b, c, h, w = x.shape
        return gaussian_blur(x.reshape(b * c, 1, h, w), self.sigma).reshape(b, c, h, w) / \
            self.gain


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
        noisy = _noisy(x0, cfg, _generator(seed, 7, i))
        total += float(_mix_loss(net(noisy), x0, cfg)) * len(x0)
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
            rec = net(_noisy(x0, cfg, _generator(seed, 11, i, d)))
            acc += _mix_map(rec, x0, cfg)
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
        _mix_map(net(x), x, cfg)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if r:  # the first call is the warm-up
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def examples(test, x_test, recons, maps, size: int, scores) -> dict[str, np.ndarray]:
    """Fig. 4-style examples (images in [-1, 1]) with each one's image score."""
    out = defect_examples(test, x_test, recons, maps, size, value_range=(-1.0, 1.0))
    if out:
        out["score"] = np.array([float(scores[i]) for i in out["index"]], dtype=np.float32)
    return {**out, **pixel_arrays(test, maps)}  # pixel AUROC of any subset (repro.claims)


def f1_threshold(masks: np.ndarray, maps: np.ndarray) -> float | None:
    """The map value that maximises pixel F1 over the test set (for the prediction panels of
    the qualitative figure only; no metric depends on it)."""
    if not masks.any():
        return None
    prec, rec, thr = precision_recall_curve(masks.ravel(), maps.ravel())
    f1 = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
    return float(thr[int(np.argmax(f1))])


def train_network(ctx: RunContext, x_train: torch.Tensor, x_val: torch.Tensor) -> tuple:
    """Train the network (resumable, early stopping on the validation loss); returns the net
    with the best epoch's weights and the training facts for the record."""
    cfg, key, device = ctx.config, ctx.key, ctx.device
    torch.manual_seed(key.seed)
    net = n2n_net(width=cfg["width"], ram=cfg["ram"], residual=cfg["global_residual"],
                  padding_mode=cfg["conv_padding"]).to(device)
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
                noisy = _noisy(x0, cfg, _generator(key.seed, epoch, b))
                loss = _mix_loss(net(noisy), x0, cfg)
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
            last = epoch == cfg["max_epochs"] or bad >= cfg["patience"]  # always saved
            ctx.checkpoint(epoch, parts, force=last, best=best, best_state=best_state, bad=bad,
                           history=history)
    bar.close()
    net.load_state_dict(best_state)
    train_s = ctx.timings.get("train_s", 0.0)
    return net, {
        "params": count_parameters(net),
        "epochs": epoch, "best_val_loss": best, "stopped_early": bad >= cfg["patience"],
        "history": history,
        "train_images_per_s": n_seen / train_s if train_s and n_seen else None,
    }


def blur_floor(ctx: RunContext, x_val: torch.Tensor) -> tuple:
    """The no-learning floor: the blur of the noisy input (divided by 1 - lambda, Eq. 1's
    contrast loss for zero-mean noise) whose sigma gives the lowest validation loss."""
    cfg = ctx.config
    gain = 1.0 - cfg["lam"]
    with ctx.timer("train_s"):
        losses = {s: validation_loss(BlurReconstruction(s, gain), x_val, cfg, ctx.key.seed)
                  for s in cfg["blur_sigmas"]}
    sigma = min(losses, key=losses.get)
    return BlurReconstruction(sigma, gain), {
        "params": 0, "epochs": 0, "best_val_loss": losses[sigma], "stopped_early": False,
        "history": [], "train_images_per_s": None, "blur_sigma": sigma, "blur_gain": gain,
        "blur_val_losses": {str(s): v for s, v in losses.items()},
    }


def run(ctx: RunContext, data_root: Path) -> dict:
    """Train on the key's category (normal train images minus the validation hold-out) and
    evaluate on its test split (``reconstruction="blur"``: the no-learning floor instead)."""
    cfg, key, device = ctx.config, ctx.key, ctx.device
    train_all = [r for r in list_records(data_root, key.dataset, key.category, "train")
                 if r.label == 0]
    train, val = holdout_split(train_all, cfg["val_fraction"], seed=key.seed)
    test = list_records(data_root, key.dataset, key.category, "test")
    x_val = _stack(val, cfg["image_size"]).to(device)
    if cfg["reconstruction"] == "network":
        net, facts = train_network(ctx, _stack(train, cfg["image_size"]).to(device), x_val)
    elif cfg["reconstruction"] == "blur":
        net, facts = blur_floor(ctx, x_val)
    else:
        raise ValueError(f"reconstruction must be 'network' or 'blur', got "
                         f"{cfg['reconstruction']!r}")

    x_test = _stack(test, cfg["image_size"]).to(device)
    with ctx.timer("test_s"):
        maps, recons = anomaly_maps(net, x_test, cfg, key.seed)
    by_rule = {r: image_scores(maps, r, cfg["score_topk"]).cpu().numpy() for r in SCORE_RULES}
    scores = by_rule[cfg["score_rule"]]
    with ctx.timer("metrics_s"):
        metrics = evaluate(test, scores, maps, dataset=key.dataset, data_root=data_root)
    masks = np.stack([load_mask(r, tuple(maps.shape[-2:])) for r in test])
    labels = np.array([r.label for r in test])
    good = torch.as_tensor(labels == 0, device=maps.device)
    good = good if good.any() else torch.ones_like(good)
    # the bright-border diagnostic (issue 11): the map by distance from the border over the good
    # test images, with this run's SSIM window padding and with the other one (same noise)
    other = "reflect" if cfg["ssim_padding"] != "reflect" else "normalized"
    with ctx.timer("diagnostic_s"):
        maps_other, _ = anomaly_maps(net, x_test, {**cfg, "ssim_padding": other}, key.seed)
    profiles = {cfg["ssim_padding"]: border_profile(maps[good]),
                other: border_profile(maps_other[good])}
    threshold = {}
    if cfg["reconstruction"] == "network":  # `predict`: the trained network and the scores of
        val_maps, _ = anomaly_maps(net, x_val, cfg, key.seed)  # the held-out good images
        threshold = {"threshold_scores": [float(v) for v in image_scores(
            val_maps, cfg["score_rule"], cfg["score_topk"])], "threshold_images": "validation"}
    return {
        "model": {"net": net} if cfg["reconstruction"] == "network" else {},
        "arrays": examples(test, x_test, recons, maps, cfg["image_size"], scores)
        if key.variant in ("default", "reconstruction=blur") else pixel_arrays(test, maps),
        "metrics": metrics,
        "extra": {
            **facts, **threshold,
            "n_train": len(train), "n_val": len(val), "n_test": len(test),
            "latency_ms": latency_ms(net, cfg, device),
            "pixel_threshold": f1_threshold(masks, maps.cpu().numpy()),
            "latency_size": cfg["latency_size"],
            "scores": [float(s) for s in scores],
            "scores_by_rule": {r: [float(v) for v in sc] for r, sc in by_rule.items()},
            "labels": [int(v) for v in labels],
            "test_paths": [str(r.path.relative_to(data_root)) for r in test],
            # mean map value by distance from the border, over the good test images
            "border_profile": profiles[cfg["ssim_padding"]],
            "border": ring_vs_interior(profiles[cfg["ssim_padding"]]),
            "border_by_ssim_padding": {k: {"profile": v, **ring_vs_interior(v)}
                                       for k, v in profiles.items()},
        },
    }
