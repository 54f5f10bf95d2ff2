"""Sanity baseline: a convolutional autoencoder trained with MSE on normal images; the anomaly
map is the smoothed per-pixel squared error and the image score its maximum.

Used to show the synthetic defects are learnable and to exercise the run store (checkpoints
every ``checkpoint_every`` steps; a resumed run gives the same result as an uninterrupted one).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import ImageDataset, list_records, stack_images
from ..evaluate import evaluate
from ..kernels import gaussian_blur
from ..networks import count_parameters
from ..networks.baseline import conv_autoencoder
from ..runs import RunContext


def run(ctx: RunContext, data_root: Path) -> dict:
    """Train on ``train`` normal images of the key's category, evaluate on ``test``."""
    cfg, key, device = ctx.config, ctx.key, ctx.device
    train = [r for r in list_records(data_root, key.dataset, key.category, "train")
             if r.label == 0]
    test = list_records(data_root, key.dataset, key.category, "test")
    size = cfg["image_size"]
    x_train = stack_images(train, size).to(device)  # (N, 3, H, W)

    torch.manual_seed(key.seed)
    model = conv_autoencoder(cfg["width"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    parts = {"model": model, "optimizer": opt}
    saved = ctx.resume(**parts)
    step, final_loss, last = saved.get("step", 0), saved.get("final_loss"), None

    model.train()
    with ctx.timer("train_s"):
        while step < cfg["steps"]:
            # The batch of a step depends only on (seed, step), so a resumed run sees the
            # same batches as an uninterrupted one.
            g = torch.Generator().manual_seed(key.seed * 1_000_003 + step)
            idx = torch.randint(len(x_train), (cfg["batch_size"],), generator=g).to(device)
            loss = F.mse_loss(model(x_train[idx]), x_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            last = loss.detach()  # no host sync per step
            if step % cfg["checkpoint_every"] == 0 or step == cfg["steps"]:
                ctx.checkpoint(step, parts, force=step == cfg["steps"],  # and at the end
                               final_loss=float(last))

    final_loss = float(last) if last is not None else final_loss
    model.eval()
    test_set = ImageDataset(test, size)
    maps = []
    with ctx.timer("test_s"), torch.no_grad():
        loader = torch.utils.data.DataLoader(test_set, batch_size=16)
        for batch in loader:
            x = batch.image.to(device)
            err = (model(x) - x).pow(2).mean(dim=1, keepdim=True)  # (B, 1, H, W)
            maps.append(gaussian_blur(err, cfg["smooth_sigma"])[:, 0])
    maps_t = torch.cat(maps)  # (N, H, W)
    scores = maps_t.flatten(1).amax(dim=1).cpu().numpy()
    with ctx.timer("metrics_s"):
        metrics = evaluate(test, scores, maps_t, dataset=key.dataset, data_root=data_root)
    return {
        "metrics": metrics,
        "extra": {"params": count_parameters(model), "n_train": len(train),
                  "n_test": len(test), "final_loss": final_loss},
    }
