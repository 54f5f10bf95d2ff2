"""TSDN training and scoring (Park et al., Sec. 2.2, 2.5, 2.6 and 3.1).

One training step (Fig. 2a)::

    I (clean, [0, 1]) --SURF (cached SLIC segments, random fill)--> I_surf, M_surf
    TSDN(I_surf) -> R_surf, M'_surf, W', F_1/32
    L = 1 * L2(I, R_surf) + 0.5 * (1 - SSIM(I, R_surf)) + 1 * MSGMS(I, R_surf)
        + 1 * L2(M_surf, M'_surf) + 5e-5 * sum_c BCE(W'_c, W_gt,c(F_1/32, M'_surf))   (Eq. 3)

Test (Sec. 2.6): SURF off, only the DCD_N path; S_map = G_sigma(||I - R||_2 over the colour
channels), normalised to [0, 1] over the test set (a monotone map: AUROC does not change), image
score = max of S_map. One-stream rows of Tables 3/4 drop L_m and L_FNE; rows without SURF feed
the clean image (a plain autoencoder).

Printed: the loss weights, Adam 7e-5, 352x352, N_s 400, S_s 50. Ours (``PAPER_CONFIG["tsdn"]``):
epochs, batch size, SURF on every training image, the SSIM window of L_s (11 taps, sigma 1.5),
RIAD's MSGMS for "GMS", the blur sigma, the global normalisation of the maps, "cross-entropy" read
as binary cross-entropy with soft targets. Two readings are config keys (issue 11):

* ``l2_reading``: "pixel-wise L2 distance |I, R_surf|" (L_r, L_m) is the mean over pixels of the
  per-pixel Euclidean distance over the channels (``"distance"``, the |.,.| of Eq. 4's map), or
  the mean squared error (``"mse"``, our earlier reading). Under ``"mse"`` the colour terms are
  small and their gradient vanishes near the target, MSGMS (on grey images, blind to a sign flip
  of the gradients) wins, and the models with skips inverted MPDD metal_plate's colours.
* ``fne_reduction``: L_FNE summed over the C entries of W (``"sum"``), or averaged over them
  (``"mean"``, our earlier reading, under which W' stayed near 0.5), or summed over the batch too.
* ``fne_grad``: Sec. 2.4 "The training is optimized to minimize the cross-entropy loss L_FNE":
  the FNE's weights are trained by lambda_f L_FNE alone, W' detached where it gates F_1/32
  (``"fne_loss"``); or by every term of Eq. 3 (``"joint"``, our earlier reading, under which
  the reconstruction's gradient through W' x F_1/32 kept W' from tracking W_gt).

Diagnostics logged per epoch beside the losses: the reconstruction MSE and (FNE runs) the
correlation of W' with W_gt; W' and W_gt of every test image are stored with the record.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..data import list_records, stack_images
from ..evaluate import defect_examples, evaluate
from ..kernels import gaussian_blur
from ..kernels.gms import msgms_loss
from ..kernels.msssim import ssim_map
from ..kernels.surf import slic_segments, surf_fill
from ..networks import inference_cost
from ..networks.tsdn import build, fne_target, resolve
from ..pixelstats import pixel_arrays
from ..runs import RunContext
from ..weights import resolve_auto
from .common import category_config


def encoder_choice(cfg: dict) -> tuple[str, str | Path]:
    """The printed EfficientNet-b5 when its ImageNet weights are given (a path or
    ``"torch_home:<file>"``; ``"auto"`` is resolved here if the caller has not), else the
    stand-in."""
    b5 = resolve_auto({"b5_weights": cfg["b5_weights"]})["b5_weights"]
    if b5:
        return "efficientnet_b5", b5
    return "efficientnet_lite0", cfg["lite0_weights"]


def make_model(cfg: dict) -> torch.nn.Module:
    name, weights = encoder_choice(cfg)
    return build(cfg["model"], encoder_name=name, encoder_weights=weights, c=cfg["c"],
                 widths=cfg["widths"], fne_channels=cfg["fne_channels"],
                 fne_hidden=cfg["fne_hidden"], image_size=cfg["image_size"],
                 fne_grad=cfg["fne_grad"])


L2_READINGS = ("distance", "mse")


def l2_loss(pred: torch.Tensor, target: torch.Tensor, reading: str) -> torch.Tensor:
    """Sec. 2.5's "pixel-wise L2 distance |I, R_surf|" of (B, C, H, W) images: ``"distance"``
    = mean over pixels of the Euclidean distance over the channels (the same |.,.| as Eq. 4's
    map); ``"mse"`` = the mean squared error."""
    if reading == "mse":
        return F.mse_loss(pred, target)
    if reading != "distance":
        raise ValueError(f"l2_reading must be one of {L2_READINGS}, got {reading!r}")
    sq = (pred - target).square().sum(1)
    # the gradient of sqrt at 0 is inf: pixels with no error contribute 0 and no gradient
    pos = sq > 0
    return torch.where(pos, torch.where(pos, sq, 1.0).sqrt(), 0.0).mean()


FNE_REDUCTIONS = ("sum", "mean", "batch_sum")


def fne_loss(w: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    """L_FNE (Eq. 2): binary cross-entropy of W' (B, C) against the soft target W_gt (B, C).
    ``"sum"``: summed over the C entries of W (the cross-entropy of two vectors), mean over the
    batch; ``"mean"``: mean over the entries too (torch's default); ``"batch_sum"``: summed over
    the batch as well (torch's ``reduction="sum"``)."""
    if reduction not in FNE_REDUCTIONS:
        raise ValueError(f"fne_reduction must be one of {FNE_REDUCTIONS}, got {reduction!r}")
    bce = F.binary_cross_entropy(w, target, reduction="none")  # (B, C)
    if reduction == "mean":
        return bce.mean()
    return bce.sum(1).mean() if reduction == "sum" else bce.sum()


def losses(out: dict, clean: torch.Tensor, surf_mask: torch.Tensor | None,
           cfg: dict) -> dict[str, torch.Tensor]:
    """The weighted terms of Eq. 3 that apply to the model's outputs (unweighted values); with
    an FNE, W_gt is left in ``out["w_gt"]``."""
    r = out["reconstruction"]
    ssim = ssim_map(r, clean, cfg["ssim_sigma"], data_range=1.0, radius=5,
                    padding="valid").mean()
    terms = {"r": l2_loss(r, clean, cfg["l2_reading"]), "s": 1 - ssim,
             "g": msgms_loss(r, clean)}
    if "mask" in out:
        terms["m"] = l2_loss(out["mask"], surf_mask, cfg["l2_reading"])
    if "w" in out:  # the target comes from the predicted mask (Sec. 2.4), without gradient
        out["w_gt"] = fne_target(out["f32"], out["mask"], cfg["ssim_sigma"], cfg["fne_size"])
        terms["f"] = fne_loss(out["w"], out["w_gt"], cfg["fne_reduction"])
    return terms


def channel_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation over the C entries of each row of two (B, C) tensors -> (B,)."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


@torch.no_grad()
def diagnostics(out: dict, clean: torch.Tensor, cfg: dict) -> dict[str, torch.Tensor]:
    """Not losses, logged per epoch: the reconstruction's mean squared error ``mse`` (whatever
    ``l2_reading`` L_r uses) and, with an FNE, the mean correlation ``w_corr`` of W' with W_gt
    over the channels and the mean spread ``w_std`` of W' over the channels."""
    diag = {"mse": F.mse_loss(out["reconstruction"], clean)}
    if "w" in out:
        target = out.get("w_gt")
        if target is None:
            target = fne_target(out["f32"], out["mask"], cfg["ssim_sigma"], cfg["fne_size"])
        diag["w_corr"] = channel_correlation(out["w"], target).mean()
        diag["w_std"] = out["w"].std(1).mean()
    return diag


@torch.inference_mode()
def fne_on(model, x: torch.Tensor, cfg: dict, batch_size: int = 8
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """W' and W_gt (N, C) of images the model did not train on (eval mode; W_gt from the
    predicted mask M'_surf, as in training)."""
    model.eval()
    ws, targets = [], []
    for i in range(0, len(x), batch_size):
        out = model(x[i:i + batch_size], with_mask=True)
        ws.append(out["w"])
        targets.append(fne_target(out["f32"], out["mask"], cfg["ssim_sigma"], cfg["fne_size"]))
    return torch.cat(ws), torch.cat(targets)


def total_loss(terms: dict[str, torch.Tensor], cfg: dict) -> torch.Tensor:
    return sum(cfg["loss_weights"][k] * v for k, v in terms.items())


def score_maps(x: torch.Tensor, recon: torch.Tensor, sigma: float) -> torch.Tensor:
    """Eq. 4 before normalisation: G_sigma(||x - recon||_2 per pixel), (B, H, W)."""
    diff = (x - recon).pow(2).sum(1, keepdim=True).sqrt()
    return gaussian_blur(diff, sigma)[:, 0]


@torch.inference_mode()
def predict(model, x: torch.Tensor, sigma: float, batch_size: int = 8
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw score maps (N, H, W) and reconstructions (N, 3, H, W)."""
    model.eval()
    maps, recons = [], []
    for i in range(0, len(x), batch_size):
        r = model(x[i:i + batch_size])["reconstruction"]
        maps.append(score_maps(x[i:i + batch_size], r, sigma))
        recons.append(r)
    return torch.cat(maps), torch.cat(recons)


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Sec. 2.6: S_final in [0, 1], one min-max over the whole test set."""
    lo, hi = maps.amin(), maps.amax()
    return (maps - lo) / (hi - lo).clamp_min(1e-12)


def segments_of(images: torch.Tensor, cfg: dict) -> torch.Tensor:
    """SLIC labels (N, H, W) of every training image, computed once (they depend only on the
    image); SURF then only draws which superpixels to fill. int16 for the printed 400 labels
    keeps them small on the GPU (65 MB for 264 images at 352 px)."""
    dtype = np.int16 if cfg["n_segments"] <= 10_000 else np.int32  # SLIC gives about N_s
    return torch.stack([torch.from_numpy(slic_segments(
        img.permute(1, 2, 0).numpy(), cfg["n_segments"], cfg["slic_compactness"],
        cfg["slic_sigma"]).astype(dtype)) for img in images])


def surf_examples(model, clean: torch.Tensor, segments: torch.Tensor, cfg: dict,
                  seed: int) -> dict[str, np.ndarray]:
    """Fig. 4-style arrays: I_surf, M_surf, R_surf and (two-stream) M'_surf of two training
    images, with a fixed SURF draw."""
    gen = torch.Generator(clean.device).manual_seed(seed)
    img, mask = surf_fill(clean, segments, cfg["n_filled"], gen)
    two_stream = resolve(cfg["model"])["two_stream"]
    with torch.inference_mode():
        model.eval()
        out = model(img, with_mask=two_stream)
    u8 = lambda t: (t.clamp(0, 1) * 255).round().byte().cpu().numpy()  # noqa: E731
    arrays = {"surf_clean": u8(clean), "surf_image": u8(img), "surf_mask": u8(mask[:, 0]),
              "surf_recon": u8(out["reconstruction"])}
    if two_stream:
        arrays["surf_pred"] = u8(out["mask"][:, 0])
    return arrays


def run(ctx: RunContext, data_root: Path) -> dict:
    key, device = ctx.key, ctx.device
    cfg = category_config(ctx.config, key.dataset, key.category)
    s, flags = cfg["image_size"], resolve(cfg["model"])
    if flags["two_stream"] and not flags["surf"]:
        raise ValueError(f"TSDN variant {cfg['model']}: DCD_A learns M_surf, so it needs SURF")
    train = [r for r in list_records(data_root, key.dataset, key.category, "train")
             if r.label == 0]
    test = list_records(data_root, key.dataset, key.category, "test")
    x_train = stack_images(train, s)
    with ctx.timer("slic_s"):
        segments = segments_of(x_train, cfg) if flags["surf"] else None
    x_train = x_train.to(device)
    segments = segments.to(device) if segments is not None else None

    torch.manual_seed(key.seed)
    model = make_model(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    parts = {"model": model, "optimizer": opt}
    saved = ctx.resume(**parts)
    epoch, history = saved.get("step", 0), saved.get("history", [])
    n, bs, n_seen = len(x_train), cfg["batch_size"], 0
    bar = tqdm(total=cfg["epochs"], initial=epoch, desc=f"tsdn {key.category} {key.variant}",
               leave=False)
    with ctx.timer("train_s"):
        while epoch < cfg["epochs"]:
            model.train()
            # every epoch's order and SURF draws depend only on (seed, epoch): resumable
            order = torch.randperm(n, generator=torch.Generator().manual_seed(
                key.seed * 7919 + epoch)).to(device)
            gen = torch.Generator(device).manual_seed(key.seed * 104729 + epoch)
            totals: dict[str, float] = {}
            for i in range(0, n, bs):
                idx = order[i:i + bs]
                clean = x_train[idx]
                if flags["surf"]:
                    img, mask = surf_fill(clean, segments[idx], cfg["n_filled"], gen)
                else:
                    img, mask = clean, None
                out = model(img)
                terms = losses(out, clean, mask, cfg)
                loss = total_loss(terms, cfg)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                for k, v in {**terms, **diagnostics(out, clean, cfg)}.items():
                    totals[k] = totals.get(k, 0.0) + v.detach() * len(idx)
                n_seen += len(idx)
            epoch += 1
            bar.update(1)
            history.append({"epoch": epoch, **{k: float(v) / n for k, v in totals.items()}})
            last = epoch == cfg["epochs"]  # the end of training is always saved
            if epoch % cfg["checkpoint_every"] == 0 or last:
                ctx.checkpoint(epoch, parts, force=last, history=history)
    bar.close()

    x_test = stack_images(test, s).to(device)
    with ctx.timer("test_s"):
        raw, recons = predict(model, x_test, cfg["map_sigma"])
        maps = normalise(raw)
        scores = maps.flatten(1).amax(1).cpu().numpy()
    with ctx.timer("metrics_s"):
        metrics = evaluate(test, scores, maps, dataset=key.dataset, data_root=data_root)
    arrays = defect_examples(test, x_test, recons, maps, s)
    arrays.update(pixel_arrays(test, maps))  # pixel AUROC of any subset of the images (claims)
    if arrays and flags["two_stream"]:
        with torch.inference_mode():
            pred = model(x_test[arrays["index"]], with_mask=True)["mask"][:, 0]
        arrays["pred_mask"] = pred.cpu().numpy().astype(np.float16)
    if segments is not None:
        arrays.update(surf_examples(model, x_train[:2], segments[:2], cfg, key.seed))
    fne = None
    if flags["gate"] == "fne":  # Sec. 2.4 on the test images: does W' track W_gt?
        w, target = fne_on(model, x_test, cfg)
        arrays.update(fne_w=w.cpu().numpy().astype(np.float16),
                      fne_target=target.cpu().numpy().astype(np.float16))
        corr = channel_correlation(w, target)
        fne = {"w_corr": [float(v) for v in corr], "w_std": [float(v) for v in w.std(1)]}
    train_s = ctx.timings.get("train_s", 0.0)

    def infer(x: torch.Tensor) -> torch.Tensor:  # image in -> map and image score out
        m = score_maps(x, model(x)["reconstruction"], cfg["map_sigma"])
        return m.flatten(1).amax(1)

    # `predict`: the model, and the raw image scores of the training images (TSDN holds none out)
    train_scores, _ = predict(model, x_train.to(device), cfg["map_sigma"])
    return {
        "model": {"model": model},
        "metrics": metrics,
        "arrays": arrays,
        "extra": {
            "threshold_scores": [float(v) for v in train_scores.flatten(1).amax(1)],
            "threshold_images": "train (raw maps, before the test-set min-max)",
            "encoder": encoder_choice(cfg)[0], "flags": flags,
            "category_overrides": ctx.config["category_overrides"].get(
                f"{key.dataset}/{key.category}", {}),
            "n_train": len(train), "n_test": len(test),
            "history": history,
            "fne_test": fne,
            "train_images_per_s": n_seen / train_s if train_s and n_seen else None,
            "cost": inference_cost(model, infer, s, device, cfg["latency_repeats"]),
            "scores": [float(v) for v in scores],
            "labels": [r.label for r in test],
        },
    }
