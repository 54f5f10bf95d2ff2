"""POUTA (Wang et al.) and its vanilla baseline: train on normal images with synthetic anomalies,
predict a pixel map; image score = max of the 21x21 average-pooled map.

Losses (Eqs. 1, 5-8): ``L_rec = MSE + (1 - SSIM)`` between the reconstruction and the clean
image; ``L_pre = focal + L1`` on the final map ``M_p``; ``L_MSS = sum_i lambda_i (focal + L1)`` on
the MSS heads (POUTA variants with MSS). The focal loss is DRAEM's: on softmax probabilities,
gamma 2, no class weights. The L1 term is between the anomaly probability and the mask.
Adam (2e-4), batch 8, 600 epochs, lr x0.2 at 80 % and 90 % of the epochs, 224x224.
An epoch is one pass over the training images (each drawn once, each a fresh synthetic sample).
Few-shot runs (Table IV, ``shots`` = k) take, by default, as many optimiser steps as the full-data
run of their category (``shot_steps``), and the k images come from one of several seeded draws
(``support_draw``), each committed under ``results/<profile>/support/``.
A profile may set values for one category (``category_overrides``) and train on random windows of
the images (``train_crop``; the test is on whole images): real_subset trains MVTec grid at 256 px on
128 px windows after a reconstruction warm-up (``rec_warmup_epochs``; issue 11).
Unstated values are in ``repro.profiles.PAPER_CONFIG["pouta"]``; the synthesis details (Perlin
scale and threshold, augmenters, self-transform ranges) in ``repro.kernels.synthesis``. The SSIM
of L_rec uses only the valid 11x11 windows (ours; DRAEM zero-pads by 5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from ..data import list_records, load_support, save_support, select_support, stack_images
from ..data import options as dataset_options
from ..data.dtd import list_textures
from ..env import results_dir
from ..evaluate import defect_examples, evaluate
from ..kernels.msssim import ssim_map
from ..kernels.synthesis import FOREGROUND, SynthesisConfig, foreground_mask, synthesize
from ..networks import inference_cost
from ..networks.pouta import build
from ..pixelstats import pixel_arrays
from ..runs import RunContext
from .common import category_config


def focal_loss(probs: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """DRAEM's focal loss on softmax probabilities (B, 2, H, W) against a {0, 1} mask
    (B, 1, H, W): ``-(1 - p_t)^gamma log p_t`` with p_t the true class's probability (one-hot
    smoothed by 1e-5 as DRAEM), averaged over pixels."""
    target = torch.cat([1 - mask, mask], dim=1).clamp(1e-5, 1 - 1e-5)
    pt = (target * probs).sum(1) + 1e-5
    return (-(1 - pt) ** gamma * pt.log()).mean()


def segmentation_loss(logits: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eqs. 5 and 7: focal + L1 between the anomaly probability and the mask."""
    probs = logits.softmax(1)
    return focal_loss(probs, mask, gamma) + (probs[:, 1:] - mask).abs().mean()


def reconstruction_loss(recon: torch.Tensor, clean: torch.Tensor, sigma: float) -> torch.Tensor:
    """Eq. 1: MSE + (1 - SSIM), SSIM with an 11x11 Gaussian window on [0, 1] images."""
    ssim = ssim_map(recon, clean, sigma, data_range=1.0, radius=5, padding="valid").mean()
    return F.mse_loss(recon, clean) + (1 - ssim)


def mean_colour_loss(images: torch.Tensor, sigma: float) -> float:
    """L_rec of a network that outputs each image's mean colour (N, 3, H, W): the value a
    collapsed reconstruction sits at (the notebook flags runs whose L_rec stays near it)."""
    flat = images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    return float(reconstruction_loss(flat, images, sigma))


def anomaly_map(logits: torch.Tensor) -> torch.Tensor:
    return logits.softmax(1)[:, 1]


def image_scores(maps: torch.Tensor, pool: int) -> torch.Tensor:
    """Max of the ``pool`` x ``pool`` average-pooled map (DRAEM's rule, stride 1)."""
    return F.avg_pool2d(maps[:, None], pool, stride=1, padding=pool // 2).flatten(1).amax(1)


class SyntheticAnomalies(Dataset):
    """Training images with a fresh synthetic anomaly per ``(epoch, index)`` item (what
    :class:`EpochOrder` yields): reproducible from the seed and independent of DataLoader
    workers, persistent or not. ``crop``: train on a random ``crop`` x ``crop`` window of each
    image, drawn per (epoch, index) (None: the whole image)."""

    def __init__(self, images: torch.Tensor, textures: list[Path], cfg: SynthesisConfig,
                 foregrounds: list[np.ndarray | None], seed: int, crop: int | None = None):
        self.images, self.textures, self.cfg = images, textures, cfg
        self.foregrounds, self.seed, self.crop = foregrounds, seed, crop

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, int]):
        epoch, i = item
        rng = np.random.default_rng([self.seed, epoch, i])
        image, fg = self.images[i], self.foregrounds[i]
        if self.crop:
            h, w = image.shape[-2:]
            top, left = (int(rng.integers(0, n - self.crop + 1)) for n in (h, w))
            window = (slice(top, top + self.crop), slice(left, left + self.crop))
            image = image[(slice(None), *window)]
            fg = None if fg is None else fg[window]
        img, mask, _ = synthesize(image, rng, self.cfg, self.textures, fg)
        return img, mask, image


class EpochOrder(Sampler):
    """The shuffled ``(epoch, index)`` items of epoch ``self.epoch`` (set before each pass).

    The order is the one a fresh ``DataLoader(shuffle=True, generator=Generator().manual_seed(
    seed * 7919 + epoch))`` gave, which the records before persistent workers were trained on:
    such a loader first draws its workers' base seed from that generator, then the permutation.
    The sampler runs in the main process, so one DataLoader with persistent workers serves every
    epoch (the workers are not restarted at each epoch)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        torch.empty((), dtype=torch.int64).random_(generator=g)  # the loader's base-seed draw
        return iter([(self.epoch, i) for i in torch.randperm(self.n, generator=g).tolist()])


def support_path(ctx: RunContext, k: int, draw: int = 0) -> Path:
    """Where a few-shot support set is committed: ``results/<profile>/support/...json`` (draw 0
    keeps the name it had before there were several draws)."""
    key = ctx.key
    tag = f"__draw{draw}" if draw else ""
    return results_dir() / key.profile / "support" / \
        f"{key.dataset}__{key.category}__k{k}{tag}__seed{key.seed}.json"


def support_seed(seed: int, draw: int) -> int:
    """The seed of ``select_support`` for a draw: the run's seed for draw 0 (the lists committed
    before there were draws), ``seed + 1000 * draw`` for the others."""
    return seed + 1000 * draw


def training_records(ctx: RunContext, cfg: dict, data_root: Path) -> tuple[list, list, str]:
    """(the run's training images, all normal training images, a note on which)."""
    key = ctx.key
    train = [r for r in list_records(data_root, key.dataset, key.category, "train")
             if r.label == 0]  # DAGM: defect-free training images only
    if not cfg["shots"]:
        return train, train, f"all {len(train)} normal training images"
    path = support_path(ctx, cfg["shots"], cfg["support_draw"])
    if path.is_file():  # the committed list wins: everyone reruns the same shots
        return (load_support(path, data_root / key.dataset), train,
                f"support set {path.name}")
    seed = support_seed(key.seed, cfg["support_draw"])
    support = select_support(train, cfg["shots"], seed)
    save_support(path, support, data_root / key.dataset, seed=seed)
    return support, train, f"support set {path.name} (new)"


def step_budget(cfg: dict, n_train: int, n_full: int, epochs: int | None = None
                ) -> tuple[int, int]:
    """(epochs, optimiser steps) of a run on ``n_train`` images of a category that has ``n_full``.

    An epoch is one pass in batches of ``batch_size``: ``ceil(n / batch_size)`` steps; the full
    run takes ``epochs`` of them (``cfg["epochs"]`` unless given: the warm-up passes its own). A
    few-shot run (``shots`` > 0) with ``shot_steps`` = "full" takes the full run's number of
    steps (as many passes over the k images as that needs, the last one cut short if needed);
    with "epochs" it takes ``epochs`` passes over the k images (the old reading: 120 steps for
    k <= 8 in real_subset)."""
    epochs = cfg["epochs"] if epochs is None else epochs
    per_epoch = -(-n_train // cfg["batch_size"])
    if not cfg["shots"] or cfg["shot_steps"] == "epochs":
        return epochs, epochs * per_epoch
    if cfg["shot_steps"] != "full":
        raise ValueError(f"shot_steps must be 'full' or 'epochs', got {cfg['shot_steps']!r}")
    steps = epochs * -(-n_full // cfg["batch_size"])
    return -(-steps // per_epoch), steps


@torch.inference_mode()
def predict(model, x: torch.Tensor, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Anomaly maps (N, H, W) and reconstructions (N, 3, H, W)."""
    model.eval()
    maps, recons = [], []
    for i in range(0, len(x), batch_size):
        out = model(x[i:i + batch_size])
        maps.append(anomaly_map(out["logits"]))
        recons.append(out["reconstruction"])
    return torch.cat(maps), torch.cat(recons)


def cost(model, size: int, device: torch.device, repeats: int, pool: int) -> dict:
    """Table VI: parameters, MACs and the batch-1 latency of image in -> map and image score (max
    of the ``pool`` x ``pool`` average) out."""
    return inference_cost(model, lambda x: image_scores(anomaly_map(model(x)["logits"]), pool),
                          size, device, repeats)


def foreground_rule(enabled: bool, data_root: Path, dataset: str, category: str
                    ) -> tuple[float, bool] | None:
    """The foreground rule of the anomaly synthesis: MemSeg's table for the MVTec AD object
    categories; a folder dataset's explicit ``foreground`` option; otherwise none. Keyed by the
    dataset as well as the name, so a folder dataset called "toothbrush" gets no MVTec rule."""
    if not enabled:
        return None
    if dataset == "mvtec_ad":
        return FOREGROUND.get(category)
    return dataset_options(data_root, dataset, category).get("foreground")


def run(ctx: RunContext, data_root: Path) -> dict:
    key, device = ctx.key, ctx.device
    cfg = category_config(ctx.config, key.dataset, key.category)
    s = cfg["image_size"]
    train, full, train_note = training_records(ctx, cfg, data_root)
    epochs, max_steps = step_budget(cfg, len(train), len(full))
    warm_epochs, warm_steps = step_budget(cfg, len(train), len(full), cfg["rec_warmup_epochs"])
    test = list_records(data_root, key.dataset, key.category, "test")
    x_train = stack_images(train, s)
    dtd = Path(data_root) / "dtd"
    textures = list_textures(dtd) if (dtd / "images").is_dir() else []
    fg_rule = foreground_rule(cfg["foreground"], data_root, key.dataset, key.category)
    foregrounds = [foreground_mask(img, *fg_rule) if fg_rule else None for img in x_train]
    synth = SynthesisConfig(p_anomaly=cfg["p_anomaly"], p_texture=cfg["p_texture"],
                            beta_max=cfg["beta_max"])
    data = SyntheticAnomalies(x_train, textures, synth, foregrounds, key.seed, cfg["train_crop"])
    order = EpochOrder(len(data), key.seed)
    loader = DataLoader(data, batch_size=cfg["batch_size"], sampler=order,
                        num_workers=cfg["workers"], persistent_workers=cfg["workers"] > 0,
                        pin_memory=device.type == "cuda")

    torch.manual_seed(key.seed)
    model = build(cfg["model"], cfg["rec_width"], cfg["vanilla_width"],
                  cfg["c2f_widths"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    milestones = [int(m * epochs) for m in cfg["lr_milestones"]]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=cfg["lr_gamma"])
    parts = {"model": model, "optimizer": opt, "scheduler": sched}
    saved = ctx.resume(**parts)
    epoch, history = saved.get("step", 0), saved.get("history", [])
    steps = saved.get("steps", 0)
    lam = cfg["mss_weights"]
    n_seen = 0
    bar = tqdm(total=warm_epochs + epochs, initial=epoch,
               desc=f"pouta {key.category} {key.variant}", leave=False)
    with ctx.timer("train_s"):
        while epoch < warm_epochs + epochs:
            # the reconstruction warm-up (rec_warmup_epochs, ours; 0 in the paper): L_rec alone
            # on the reconstructive network, before the joint training and its lr schedule
            warm = epoch < warm_epochs
            model.train()
            order.epoch = epoch
            totals, n_epoch = {}, 0
            for img, mask, clean in loader:
                if steps == (warm_steps if warm else warm_steps + max_steps):
                    break  # a few-shot run's last pass may end early
                img, mask, clean = (t.to(device, non_blocking=True) for t in (img, mask, clean))
                if warm:
                    losses = {"rec": reconstruction_loss(model.reconstructive(img)[0], clean,
                                                         cfg["ssim_sigma"])}
                else:
                    out = model(img)
                    losses = {"rec": reconstruction_loss(out["reconstruction"], clean,
                                                         cfg["ssim_sigma"]),
                              "pre": segmentation_loss(out["logits"], mask, cfg["focal_gamma"])}
                    if out["heads"]:
                        losses["mss"] = sum(w * segmentation_loss(h, mask, cfg["focal_gamma"])
                                            for w, h in zip(lam, out["heads"], strict=True))
                loss = sum(losses.values())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
                for k, v in losses.items():
                    totals[k] = totals.get(k, 0.0) + v.detach() * len(img)
                n_seen += len(img)
                n_epoch += len(img)
            if not warm:
                sched.step()
            epoch += 1
            bar.update(1)
            history.append({"epoch": epoch, "lr": opt.param_groups[0]["lr"],
                            **({"phase": "warmup"} if warm else {}),
                            **{k: v.item() / n_epoch for k, v in totals.items()}})
            last = epoch == warm_epochs + epochs  # the end of training is always saved
            if epoch % cfg["checkpoint_every"] == 0 or last:
                ctx.checkpoint(epoch, parts, force=last, history=history, steps=steps)
    bar.close()

    x_test = stack_images(test, s).to(device)
    with ctx.timer("test_s"):
        maps, recons = predict(model, x_test)
        scores = image_scores(maps, cfg["score_pool"]).cpu().numpy()
    with ctx.timer("metrics_s"):
        metrics = evaluate(test, scores, maps, dataset=key.dataset, data_root=data_root)
    train_s = ctx.timings.get("train_s", 0.0)
    # `predict`: the model, and the image scores of its training images (none are held out)
    train_maps, _ = predict(model, x_train.to(device))
    return {
        "model": {"model": model},
        "metrics": metrics,
        "arrays": {**defect_examples(test, x_test, recons, maps, s),
                   **pixel_arrays(test, maps)},  # pixel AUROC of any subset (repro.claims)
        "extra": {
            "threshold_scores": [float(v) for v in image_scores(train_maps, cfg["score_pool"])],
            "threshold_images": "train",
            "train_images": train_note, "n_train": len(train), "n_test": len(test),
            "n_full_train": len(full), "steps": steps, "warmup_steps": warm_steps,
            "category_overrides": ctx.config["category_overrides"].get(
                f"{key.dataset}/{key.category}", {}),
            "textures": f"{len(textures)} DTD images" if textures
            else "none found: procedural textures",
            "foreground": list(fg_rule) if fg_rule else None,
            "history": history,
            "rec_mean_colour": mean_colour_loss(x_train, cfg["ssim_sigma"]),
            "train_images_per_s": n_seen / train_s if train_s and n_seen else None,
            "cost": cost(model, cfg["latency_size"], device, cfg["latency_repeats"],
                         cfg["score_pool"]),
            "scores": [float(v) for v in scores],
            "labels": [r.label for r in test],
        },
    }
