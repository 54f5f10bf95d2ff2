"""Does POUTA's reconstructive network leave the mean-colour plateau? (issue 11, point 10)

Trains the reconstructive network alone (L_rec = MSE + 1 - SSIM, Adam, batch 8) on random
``crop`` x ``crop`` windows of a category's training images resized to ``size``, with the
run's synthetic anomalies on the input, and prints every 50 steps the mean L_rec of those steps
beside the L_rec of outputting each window's mean colour (the plateau a collapsed reconstruction
sits at). A diagnostic: it writes no record.

    python -m repro.probe_pouta_rec --size 512 --crop 128 --steps 300 --seed 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .data import list_records, stack_images
from .data.dtd import list_textures
from .env import resolve_path
from .kernels.synthesis import SynthesisConfig
from .methods import pouta
from .methods.common import category_config
from .networks.pouta import Reconstructive
from .profiles import get_profile, paper_config


def probe(data_root: Path, dataset: str, category: str, *, profile: str = "real_subset",
          size: int = 256, crop: int | None = 128, steps: int = 300, lr: float = 2e-4,
          width: int | None = None, seed: int = 0, data_seed: int = 0,
          every: int = 50) -> list[dict]:
    """Rows (step, L_rec, mean-colour L_rec), each the mean over the last ``every`` steps;
    ``seed`` initialises the network, ``data_seed`` draws the windows and anomalies."""
    cfg = category_config(paper_config("pouta", profile), dataset, category)
    train = [r for r in list_records(data_root, dataset, category, "train") if r.label == 0]
    images = stack_images(train, size)
    dtd = Path(data_root) / "dtd"
    synth = SynthesisConfig(p_anomaly=cfg["p_anomaly"], p_texture=cfg["p_texture"],
                            beta_max=cfg["beta_max"])
    data = pouta.SyntheticAnomalies(images, list_textures(dtd) if (dtd / "images").is_dir()
                                    else [], synth, [None] * len(images), data_seed, crop)
    order = pouta.EpochOrder(len(data), data_seed)
    loader = DataLoader(data, batch_size=cfg["batch_size"], sampler=order)
    torch.manual_seed(seed)
    net = Reconstructive(width or cfg["rec_width"])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rows, losses, floors, step, epoch = [], [], [], 0, 0
    while step < steps:
        order.epoch, epoch = epoch, epoch + 1
        for img, _, clean in loader:
            loss = pouta.reconstruction_loss(net(img)[0], clean, cfg["ssim_sigma"])
            floors.append(pouta.mean_colour_loss(clean, cfg["ssim_sigma"]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
            if step % every == 0 or step == steps:
                rows.append({"step": step, "rec": sum(losses[-every:]) / len(losses[-every:]),
                             "mean_colour": sum(floors[-every:]) / len(floors[-every:])})
            if step == steps:
                break
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="real_subset")
    p.add_argument("--dataset", default="mvtec_ad")
    p.add_argument("--category", default="grid")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--crop", type=int, default=128, help="0: whole images")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--width", type=int, default=None, help="default: the profile's rec_width")
    p.add_argument("--seed", type=int, default=0, help="the network's initialisation")
    p.add_argument("--data-seed", type=int, default=0, help="the windows and anomalies")
    a = p.parse_args(argv)
    root = resolve_path(get_profile(a.profile).data_root)
    for r in probe(root, a.dataset, a.category, profile=a.profile, size=a.size,
                   crop=a.crop or None, steps=a.steps, lr=a.lr, width=a.width, seed=a.seed,
                   data_seed=a.data_seed):
        print(f"size {a.size} crop {a.crop} lr {a.lr} seed {a.seed} step {r['step']}: "
              f"L_rec {r['rec']:.3f}, mean colour {r['mean_colour']:.3f}", flush=True)


if __name__ == "__main__":
    main()
