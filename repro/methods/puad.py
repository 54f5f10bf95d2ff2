"""PUAD (Sugawara & Imamura): EfficientAD (Batzner et al.) for *picturable* anomalies plus a
Mahalanobis distance on spatially averaged features for *unpicturable* ones.

One run trains one EfficientAD (size S or M) on a category's ``train/good`` images and scores
the test split four ways, all from the same networks:

* ``efficientad``: max of the combined, quantile-normalised local (teacher vs student ST half)
  and global (autoencoder vs student AE half) map (Sec. 3.2);
* ``puad``: z(EfficientAD) + z(Mahalanobis on the student's first 384 channels averaged over
  space) with the z-scores from the validation split (Sec. 3.3-3.4; the paper's PUAD);
* ``puad_teacher``: the same with the teacher's normalised output (Table 1 rows "Teacher");
* ``mahalanobis`` / ``mahalanobis_teacher``: the distances alone (diagnostics).

``controls_run`` (experiment ``puad/controls``) scores the same distance on features learnt
without the category (RGB mean/std, ImageNet Lite0 global features, an untrained PDN), so a
reader sees what the student's features add (issue 11).

Algorithm 1 of EfficientAD as in the public code (reference notes 4.3): teacher frozen and
normalised per channel on the training images; hard feature loss (q = 0.999); ImageNet penalty;
autoencoder and student-autoencoder losses on a colour-augmented copy; Adam (1e-4, weight decay
1e-5), batch 1, 70,000 steps, lr x0.1 at 95 %; quantiles 0.9 / 0.995 of the validation maps.
Unstated values are in ``repro.profiles.PAPER_CONFIG["puad"]``.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..data import DatasetError, holdout_split, list_records, load_mask, stack_images
from ..data.common import image_size_of, list_images
from ..data.dtd import list_textures
from ..env import resolve_path
from ..evaluate import evaluate
from ..metrics import image_auroc, loco_image_aurocs
from ..networks import IMAGENET_MEAN, IMAGENET_STD, count_parameters, median_latency_ms
from ..networks.efficientad import TEACHER_CHANNELS, autoencoder, pdn
from ..runs import RunContext
from .teacher import (
    ImageFiles,
    distil,
    endless,
    imagenet_normalise,
    load_teacher_file,
    random_grayscale,
)

C = TEACHER_CHANNELS
SCORES = ("efficientad", "puad", "puad_teacher", "mahalanobis", "mahalanobis_teacher")


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------

def natural_images(cfg: dict, data_root: Path) -> tuple[list[Path], str]:
    """ImageNet-like images for the penalty and the distillation: ``imagenet_dir`` (every image
    below it) when set, else the DTD images under ``DATA_ROOT/dtd`` (our documented substitute;
    the record says which)."""
    if cfg["imagenet_dir"]:
        root = resolve_path(cfg["imagenet_dir"])
        if not root.is_dir():
            raise FileNotFoundError(f"imagenet_dir not found: {root} (a folder of natural "
                                    "images, e.g. ImageNet's train/ with one folder per class)")
        paths = sorted(p for d in [root, *sorted(q for q in root.rglob("*") if q.is_dir())]
                       for p in list_images(d))
        if not paths:
            raise DatasetError(f"no images found below imagenet_dir {root}")
        return paths, f"imagenet_dir {root} ({len(paths)} images)"
    paths = list_textures(Path(data_root) / "dtd")
    return paths, f"substitute: DTD under DATA_ROOT/dtd ({len(paths)} images; no imagenet_dir)"


def augment(x: torch.Tensor, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    """One of brightness, contrast or saturation with a factor from U(lo, hi) (the autoencoder
    branch's augmentation, torchvision's definitions)."""
    kind = int(torch.randint(3, (1,), generator=generator))
    f = float(torch.empty(1).uniform_(lo, hi, generator=generator))
    if kind == 0:
        return (x * f).clamp(0, 1)
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    if kind == 1:
        return (f * x + (1 - f) * gray.mean(dim=(2, 3), keepdim=True)).clamp(0, 1)
    return (f * x + (1 - f) * gray).clamp(0, 1)


# --------------------------------------------------------------------------------------------
# The inference model: image tensor in -> scores out
# --------------------------------------------------------------------------------------------

def fuse_normalisation(teacher: nn.Sequential, mean: torch.Tensor, std: torch.Tensor
                       ) -> nn.Sequential:
    """A copy of the teacher whose last convolution outputs ``(T(x) - mean) / std`` directly."""
    fused = copy.deepcopy(teacher)
    last = fused[-1]
    m, s = mean.flatten().to(last.weight), std.flatten().to(last.weight)
    with torch.no_grad():
        last.weight.div_(s.view(-1, 1, 1, 1))
        last.bias.sub_(m).div_(s)
    return fused


def mahalanobis_factor(features: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, W mu)`` with ``W = pinv(Sigma)^(1/2)``, Sigma the Ledoit-Wolf covariance of
    ``features`` (N, D): then ``M(y) = ||W y - W mu||`` equals Eq. 2 with the pseudo-inverse."""
    lw = LedoitWolf().fit(features)
    precision = np.linalg.pinv(lw.covariance_)
    vals, vecs = np.linalg.eigh((precision + precision.T) / 2)
    w = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    return torch.from_numpy(w).float(), torch.from_numpy(w @ lw.location_).float()


def quantiles_of(v: torch.Tensor, qs: tuple[float, ...]) -> torch.Tensor:
    """``torch.quantile`` of all values (linear interpolation); through NumPy above
    torch.quantile's input limit of 2**24 elements (many upsampled validation maps)."""
    flat = v.flatten()
    if flat.numel() <= 2 ** 24:
        return torch.quantile(flat, torch.tensor(qs, device=v.device, dtype=v.dtype))
    return torch.as_tensor(np.quantile(flat.cpu().numpy(), qs), device=v.device, dtype=v.dtype)


class EfficientADPUAD(nn.Module):
    """Teacher (normalisation fused), student and autoencoder with everything fitted after
    training as buffers. ``forward(x)`` takes images in [0, 1] and returns one score per image:
    EfficientAD's, or PUAD's with ``puad=True``."""

    def __init__(self, teacher: nn.Module, student: nn.Module, ae: nn.Module,
                 t_mean: torch.Tensor, t_std: torch.Tensor, score_size: int | None = None):
        super().__init__()
        # score_maps "input" (PUAD's code): the maps are upsampled bilinearly to the input size
        # (score_size, no padding) before the quantiles and the image maximum; None: the PDN grid
        self.score_size = score_size
        self.teacher = fuse_normalisation(teacher, t_mean, t_std).eval()
        self.student, self.ae = student.eval(), ae.eval()
        self.register_buffer("in_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("in_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        # combined = a_st * map_st + a_ae * map_ae + bias (quantile normalisation, 0.5 each)
        self.register_buffer("map_affine", torch.tensor([1.0, 1.0, 0.0]))
        for name in ("w_student", "w_teacher"):
            self.register_buffer(name, torch.eye(C))
        for name in ("wmu_student", "wmu_teacher"):
            self.register_buffer(name, torch.zeros(C))
        # z-normalisation: mean, std of the EfficientAD score and of both distances
        self.register_buffer("z", torch.tensor([[0.0, 1.0]] * 3))
        # the PUAD path with the z-scores folded in (see ``fold``): 4 extra kernels in all
        self.register_buffer("puad_affine", torch.tensor([1.0, 1.0, 0.0]))
        self.register_buffer("puad_w", torch.eye(C))
        self.register_buffer("puad_bias", torch.zeros(C))

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (x - self.in_mean) / self.in_std
        return self.teacher(x), self.student(x), self.ae(x)

    @staticmethod
    def raw_maps(t: torch.Tensor, s: torch.Tensor, a: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        return (t - s[:, :C]).pow(2).mean(1), (a - s[:, C:]).pow(2).mean(1)

    def score_resolution(self, m: torch.Tensor) -> torch.Tensor:
        """Maps (N, h, w) at the resolution where quantiles and image maxima are taken."""
        if self.score_size is None:
            return m
        size = (self.score_size, self.score_size)
        return F.interpolate(m[:, None], size=size, mode="bilinear")[:, 0]

    def image_max(self, m: torch.Tensor) -> torch.Tensor:
        """The image score of combined maps: their maximum (bilinear upsampling is linear, so
        the maximum of the upsampled combined map is that of the upsampled, combined parts)."""
        return self.score_resolution(m).flatten(1).amax(1)

    def combined_map(self, t, s, a) -> torch.Tensor:
        st, ae = self.raw_maps(t, s, a)
        k = self.map_affine
        return k[0] * st + k[1] * ae + k[2]

    @staticmethod
    def distance(features: torch.Tensor, w: torch.Tensor, wmu: torch.Tensor) -> torch.Tensor:
        """Eq. 2 on spatially averaged features: ``||W y - W mu||``."""
        return torch.linalg.vector_norm(features.mean((2, 3)) @ w.T - wmu, dim=1)

    def forward(self, x: torch.Tensor, puad: bool = False) -> torch.Tensor:
        t, s, a = self.outputs(x)
        if not puad:
            return self.image_max(self.combined_map(t, s, a))
        # z(max map) = max(z-scaled map); z(distance) = ||(W y - W mu) / std|| - mean / std,
        # the constant moved into the map's bias: the sum costs one addition
        st, ae = self.raw_maps(t, s, a)
        k = self.puad_affine
        score = self.image_max(k[0] * st + k[1] * ae + k[2])
        v = torch.addmm(self.puad_bias, s[:, :C].mean((2, 3)), self.puad_w.T)
        return score + torch.linalg.vector_norm(v, dim=1)

    @torch.no_grad()
    def fold(self) -> None:
        """Fold the z-scores into the map affine and the Mahalanobis factor (``forward``'s PUAD
        path): ``(max(m) - m0) / s0 + (d - m1) / s1 = max(m / s0 + c) + ||W (y - mu) / s1||``
        with ``c = -m0 / s0 - m1 / s1`` (the standard deviations are positive)."""
        (m0, s0), (m1, s1) = self.z[0], self.z[1]
        self.puad_affine.copy_(self.map_affine / s0)
        self.puad_affine[2] -= m0 / s0 + m1 / s1
        self.puad_w.copy_(self.w_student / s1)
        self.puad_bias.copy_(-self.wmu_student / s1)

    @torch.inference_mode()
    def score_all(self, x: torch.Tensor, batch_size: int = 16) -> dict[str, torch.Tensor]:
        """Every score and the combined maps of images ``x`` (N, 3, H, W)."""
        out = {k: [] for k in (*SCORES, "map")}
        z = self.z
        for i in range(0, len(x), batch_size):
            t, s, a = self.outputs(x[i:i + batch_size])
            m = self.combined_map(t, s, a)
            e = self.image_max(m)
            ds = self.distance(s[:, :C], self.w_student, self.wmu_student)
            dt = self.distance(t, self.w_teacher, self.wmu_teacher)
            ze = (e - z[0, 0]) / z[0, 1]
            out["map"].append(m)
            out["efficientad"].append(e)
            out["mahalanobis"].append(ds)
            out["mahalanobis_teacher"].append(dt)
            out["puad"].append(ze + (ds - z[1, 0]) / z[1, 1])
            out["puad_teacher"].append(ze + (dt - z[2, 0]) / z[2, 1])
        return {k: torch.cat(v) for k, v in out.items()}

    @torch.inference_mode()
    def fit(self, x_train: torch.Tensor, x_val: torch.Tensor, quantiles: tuple[float, float],
            batch_size: int = 16) -> dict:
        """Quantile map normalisation and z-scores on the validation images, Mahalanobis
        statistics on the training images. Returns what was fitted (for the record).
        The quantiles are taken on the maps at :meth:`score_resolution`: upsampled to the input
        size as in PUAD's code, or on the PDN output grid as in nelson1425's."""
        def run(x):
            ts, ss, st, ae = [], [], [], []
            for i in range(0, len(x), batch_size):
                t, s, a = self.outputs(x[i:i + batch_size])
                m_st, m_ae = self.raw_maps(t, s, a)
                ts.append(t.mean((2, 3)))
                ss.append(s[:, :C].mean((2, 3)))
                st.append(self.score_resolution(m_st))
                ae.append(self.score_resolution(m_ae))
            return torch.cat(ts), torch.cat(ss), torch.cat(st), torch.cat(ae)

        t_tr, s_tr, _, _ = run(x_train)
        for who, feats in (("student", s_tr), ("teacher", t_tr)):
            w, wmu = mahalanobis_factor(feats.double().cpu().numpy())
            getattr(self, f"w_{who}").copy_(w)
            getattr(self, f"wmu_{who}").copy_(wmu)
        _, _, st_val, ae_val = run(x_val)
        qa, qb = quantiles
        q_st, q_ae = quantiles_of(st_val, (qa, qb)), quantiles_of(ae_val, (qa, qb))
        # 0.5 * 0.1 * (st - qa) / (qb - qa) + 0.5 * 0.1 * (ae - qa') / (qb' - qa')
        a_st, a_ae = 0.05 / (q_st[1] - q_st[0]), 0.05 / (q_ae[1] - q_ae[0])
        self.map_affine.copy_(torch.stack([a_st, a_ae, -a_st * q_st[0] - a_ae * q_ae[0]]))
        self.z.copy_(torch.tensor([[0.0, 1.0]] * 3))
        raw = self.score_all(x_val, batch_size)
        for i, k in enumerate(("efficientad", "mahalanobis", "mahalanobis_teacher")):
            v = raw[k]
            self.z[i] = torch.stack([v.mean(), v.std(unbiased=False).clamp_min(1e-12)])
        self.fold()
        return {"quantiles_st": q_st.tolist(), "quantiles_ae": q_ae.tolist(),
                "z": {k: self.z[i].tolist() for i, k in
                      enumerate(("efficientad", "mahalanobis_student", "mahalanobis_teacher"))}}


# --------------------------------------------------------------------------------------------
# Training (Algorithm 1)
# --------------------------------------------------------------------------------------------

def _cuda_rng(device: torch.device) -> torch.Tensor | None:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def teacher_for(cfg: dict, train_paths: list[Path], naturals: list[Path],
                natural_source: str, device: torch.device, seed: int
                ) -> tuple[nn.Module, dict]:
    """The teacher file, or the teacher distilled on natural images only (``distil_images
    = "natural"``: one file per PDN size shared by every category, as the paper's one ImageNet
    distillation). ``"natural+train"`` (the old variant, only without ``imagenet_dir``) adds the
    category's ``train/good`` images, so each category distils its own teacher."""
    if cfg["teacher_weights"]:
        return load_teacher_file(resolve_path(cfg["teacher_weights"]), cfg["size"])
    if cfg["distil_images"] not in ("natural", "natural+train"):
        raise ValueError(f"distil_images must be 'natural' or 'natural+train', not "
                         f"{cfg['distil_images']!r}")
    paths, source = naturals, natural_source
    if cfg["distil_images"] == "natural+train" and not cfg["imagenet_dir"]:
        paths = [*naturals, *train_paths]
        source = f"{natural_source} + train/good ({len(train_paths)} images)"
    seed = seed if cfg["distil_seed"] is None else cfg["distil_seed"]
    return distil(cfg, paths, source, device, seed, cfg["workers"])


@torch.no_grad()
def teacher_statistics(teacher: nn.Module, x: torch.Tensor, batch_size: int = 16
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the teacher's output over the training images."""
    outs = torch.cat([teacher(imagenet_normalise(x[i:i + batch_size]))
                      for i in range(0, len(x), batch_size)])
    return outs.mean(dim=(0, 2, 3), keepdim=True), outs.std(dim=(0, 2, 3), keepdim=True)


def hard_loss(t: torch.Tensor, s: torch.Tensor, q: float) -> torch.Tensor:
    """Mean of the squared differences at or above their ``q``-quantile."""
    d = (t - s) ** 2
    d_hard = torch.quantile(d.flatten(), q)
    return d[d >= d_hard].mean()


def train(ctx: RunContext, teacher: nn.Module, x_train: torch.Tensor, penalty_paths: list[Path]
          ) -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor, list[dict]]:
    cfg, device, seed = ctx.config, ctx.device, ctx.key.seed
    s = cfg["image_size"]
    t_mean, t_std = teacher_statistics(teacher, x_train)
    torch.manual_seed(seed)
    student = pdn(cfg["size"], 2 * C, padding=False).to(device)
    ae = autoencoder(s, C, padding=False).to(device)
    params = [*student.parameters(), *ae.parameters()]
    opt = torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=int(cfg["lr_drop_fraction"] *
                                                               cfg["steps"]), gamma=0.1)
    gen = torch.Generator().manual_seed(seed)
    parts = {"student": student, "ae": ae, "optimizer": opt, "scheduler": sched}
    saved = ctx.resume(**parts)
    if saved:  # the draws (images, augmentation) and the autoencoder's dropout continue as before
        gen.set_state(saved["generator"])
        torch.set_rng_state(saved["rng"])
        if saved["cuda_rng"] is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
    step, history = saved.get("step", 0), saved.get("history", [])
    penalty = endless(ImageFiles(penalty_paths, s, resize=2 * s), 1, seed * 1000 + step,
                      cfg["workers"], pin_memory=device.type == "cuda") if cfg["penalty"] else None
    lo, hi = cfg["augment_range"]
    student.train()
    ae.train()
    bar = tqdm(total=cfg["steps"], initial=step, desc=f"efficientad {cfg['size']}", leave=False)
    running, n_running = {}, 0
    while step < cfg["steps"]:
        x = x_train[int(torch.randint(len(x_train), (1,), generator=gen))][None]
        x_aug = augment(x, lo, hi, gen)
        with torch.no_grad():
            t = (teacher(imagenet_normalise(x)) - t_mean) / t_std
            t_aug = (teacher(imagenet_normalise(x_aug)) - t_mean) / t_std
        losses = {"hard": hard_loss(t, student(imagenet_normalise(x))[:, :C], cfg["hard_quantile"])}
        if penalty is not None:
            p = random_grayscale(next(penalty).to(device, non_blocking=True), cfg["penalty_gray_p"],
                                 gen)
            losses["penalty"] = student(imagenet_normalise(p))[:, :C].pow(2).mean()
        a = ae(imagenet_normalise(x_aug))
        s_aug = student(imagenet_normalise(x_aug))[:, C:]
        losses["ae"] = (t_aug - a).pow(2).mean()
        losses["st_ae"] = (a - s_aug).pow(2).mean()
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        for k, v in losses.items():  # summed on the device: no host sync per step
            running[k] = running.get(k, 0.0) + v.detach()
        n_running += 1  # a window resumed mid-way holds fewer steps than log_every
        log_every = max(cfg["steps"] // 50, 1)
        if step % log_every == 0 or step == cfg["steps"]:
            history.append({"step": step, "lr": opt.param_groups[0]["lr"],
                            **{k: v.item() / n_running for k, v in running.items()}})
            running, n_running = {}, 0
        last = step == cfg["steps"]  # the end of training is always saved
        if step % cfg["checkpoint_every"] == 0 or last:
            ctx.checkpoint(step, parts, force=last, generator=gen.get_state(), history=history,
                           rng=torch.get_rng_state(), cuda_rng=_cuda_rng(device))
    bar.close()
    return student, ae, t_mean, t_std, history


# --------------------------------------------------------------------------------------------
# Latency, examples, the run
# --------------------------------------------------------------------------------------------

@torch.inference_mode()
def latency_ms(model: EfficientADPUAD, size: int, device: torch.device, repeats: int = 100,
               warmup: int = 10) -> dict[str, float]:
    """Median wall time (ms) of image tensor in -> anomaly score out, batch 1, for EfficientAD
    and PUAD, measured alternately in the same process after ``warmup`` calls of each."""
    model.eval()
    dtype = next(model.parameters()).dtype
    x = torch.rand(1, 3, size, size, device=device).to(dtype)
    return median_latency_ms({"efficientad": lambda v: model(v, puad=False),
                              "puad": lambda v: model(v, puad=True)}, x, repeats, warmup)


def examples(test, x_test, maps, scores: dict[str, np.ndarray], size: int) -> dict:
    """Fig. 2-style examples: a good image; the logical anomaly that EfficientAD scores highest
    ("picturable") and lowest ("unpicturable"); the highest-scoring structural anomaly."""
    types = np.array([r.defect_type for r in test])
    e = scores["efficientad"]
    picked, roles = [], []

    def take(mask, best, role):
        idx = np.flatnonzero(mask)
        if len(idx):
            picked.append(int(idx[np.argmax(e[idx]) if best else np.argmin(e[idx])]))
            roles.append(role)

    take(types == "good", False, "good")
    if (types == "logical_anomalies").any():
        take(types == "logical_anomalies", True, "logical, highest EfficientAD score")
        take(types == "logical_anomalies", False, "logical, lowest EfficientAD score")
        take(types == "structural_anomalies", True, "structural, highest EfficientAD score")
    else:  # a dataset without LOCO's defect types
        take(types != "good", True, "defective, highest EfficientAD score")
        take(types != "good", False, "defective, lowest EfficientAD score")
    up = F.interpolate(maps[picked][:, None], size=(size, size), mode="bilinear")[:, 0]
    return {
        "image": (x_test[picked] * 255).round().byte().cpu().numpy(),
        "mask": np.stack([load_mask(test[i], (size, size)) for i in picked]),
        "map": up.cpu().numpy().astype(np.float16),
        "role": np.array(roles),
        **{f"score_{k}": v[picked].astype(np.float32) for k, v in scores.items()},
    }


VALIDATION_SPLIT = ("mvtec_loco",)  # datasets with a validation split of good images


def splits(cfg: dict, data_root: Path, dataset: str, category: str) -> tuple[list, list, list]:
    """Train, validation and test records. Without a validation split (every dataset but MVTec
    LOCO) a seeded ``val_fraction`` of train/good is held out, as PUAD's code does (15 %)."""
    train = list_records(data_root, dataset, category, "train")
    if dataset in VALIDATION_SPLIT:
        val = list_records(data_root, dataset, category, "validation")
    else:
        train, val = holdout_split(train, cfg["val_fraction"], cfg["val_seed"])
    return train, val, list_records(data_root, dataset, category, "test")


def image_aurocs(dataset: str, test: list, scores) -> dict[str, float]:
    """MVTec LOCO's four image AUROCs; elsewhere the pooled AUROC (good vs every defect)."""
    if dataset == "mvtec_loco":
        return loco_image_aurocs([r.defect_type for r in test], scores)
    return {"auroc_pooled": image_auroc(np.array([r.label for r in test]), scores)}


def full_size_maps(maps: torch.Tensor, size: tuple[int, int], pad: int) -> torch.Tensor:
    """Combined maps at the original image size: padded by ``pad`` px of zeros per side (the
    border lost to the unpadded convolutions, at 256x256 input: 4 px of 64) and resized."""
    maps = F.pad(maps[:, None], (pad, pad, pad, pad)) if pad else maps[:, None]
    return torch.cat([F.interpolate(maps[i:i + 8], size=size, mode="bilinear")
                      for i in range(0, len(maps), 8)])[:, 0]


def run(ctx: RunContext, data_root: Path) -> dict:
    cfg, key, device = ctx.config, ctx.key, ctx.device
    cpu0 = time.process_time()
    s = cfg["image_size"]
    train_rec, val_rec, test = splits(cfg, data_root, key.dataset, key.category)
    naturals, natural_source = natural_images(cfg, data_root)
    x_train = stack_images(train_rec, s).to(device)
    x_val = stack_images(val_rec, s).to(device)

    with ctx.timer("teacher_s"):
        cpu = time.process_time()
        teacher, teacher_info = teacher_for(cfg, [r.path for r in train_rec],
                                            naturals, natural_source, device, key.seed)
        ctx.timings["teacher_cpu_s"] = time.process_time() - cpu
    # the teacher was distilled with padding; Algorithm 1 uses the same weights without
    frozen = pdn(cfg["size"], C, padding=False).to(device)
    frozen.load_state_dict(teacher.state_dict())
    frozen.eval().requires_grad_(False)
    with ctx.timer("train_s"):
        cpu = time.process_time()
        student, ae, t_mean, t_std, history = train(ctx, frozen, x_train, naturals)
        ctx.timings["train_cpu_s"] = time.process_time() - cpu
    score_size = {"input": s, "grid": None}[cfg["score_maps"]]
    model = EfficientADPUAD(frozen, student, ae, t_mean, t_std, score_size).to(device)
    with ctx.timer("fit_s"):
        fitted = model.fit(x_train, x_val, tuple(cfg["map_quantiles"]))

    x_test = stack_images(test, s).to(device)
    with ctx.timer("test_s"):
        out = model.score_all(x_test)
    scores = {k: out[k].cpu().numpy().astype(np.float64) for k in SCORES}
    pad = (s // 4 - out["map"].shape[-1]) // 2  # 4 at 256 (56 -> 64)
    with ctx.timer("metrics_s"):
        metrics = {f"{k}/{m}": v for k in SCORES
                   for m, v in image_aurocs(key.dataset, test, scores[k]).items()}
        spro_note = "off in this profile (spro=false)"
        if key.dataset != "mvtec_loco":  # pixel metrics of the EfficientAD map
            spro_note = "MVTec LOCO only"
            full = full_size_maps(out["map"], (s, s), pad)
            pixel = evaluate(test, scores["efficientad"], full, dataset=key.dataset)
            metrics.update({f"efficientad/{m}": v for m, v in pixel.items()
                            if m != "image_auroc"})
            del full
        elif cfg["spro"]:
            try:
                full = full_size_maps(out["map"], image_size_of(test[0].path), pad)
                metrics["efficientad/spro_0.05"] = evaluate(
                    test, scores["efficientad"], full, dataset=key.dataset,
                    data_root=data_root)["spro_0.05"]
                spro_note = "EfficientAD maps at the original image size"
                del full
            except DatasetError as exc:  # e.g. masks without per-defect pixel values
                spro_note = f"not computed: {exc}"
    lat = latency_ms(model, cfg["latency_size"], device, cfg["latency_repeats"])
    ctx.timings["total_cpu_s"] = time.process_time() - cpu0  # this process's CPU seconds
    train_s = ctx.timings.get("train_s", 0.0)
    steps_run = cfg["steps"] - (ctx.resumed_from or 0)
    val_scores = model.score_all(x_val)  # `predict`: the model and the validation scores
    return {
        "model": {"model": model},
        "metrics": metrics,
        "arrays": examples(test, x_test, out["map"], scores, s),
        "extra": {
            "teacher": teacher_info, "penalty_images": natural_source if cfg["penalty"]
            else "penalty off",
            "params": {"teacher": count_parameters(frozen), "student": count_parameters(student),
                       "autoencoder": count_parameters(ae)},
            "fitted": fitted, "history": history, "spro": spro_note,
            "threshold_scores": {k: [float(v) for v in val_scores[k]]
                                 for k in ("efficientad", "puad")},
            "threshold_images": "validation",
            "n_train": len(train_rec), "n_val": len(val_rec), "n_test": len(test),
            "validation": "validation split" if key.dataset in VALIDATION_SPLIT else
                          f"{len(val_rec)} of train/good held out (val_fraction "
                          f"{cfg['val_fraction']}, seed {cfg['val_seed']})",
            "score_maps": cfg["score_maps"],
            "train_steps_per_s": steps_run / train_s if train_s and steps_run > 0 else None,
            "latency_ms": lat, "latency_size": cfg["latency_size"],
            "latency_overhead": lat["puad"] / lat["efficientad"] - 1,
            "scores": {k: [float(v) for v in scores[k]] for k in SCORES},
            "defect_types": [r.defect_type for r in test],
            "test_paths": [str(r.path.relative_to(data_root)) for r in test],
        },
    }


# --------------------------------------------------------------------------------------------
# Controls: the same Mahalanobis score on features that learn nothing about the category
# --------------------------------------------------------------------------------------------

CONTROLS = ("rgb_stats", "lite0_global", "random_pdn")


@torch.no_grad()
def control_features(name: str, x: torch.Tensor, net: nn.Module | None, batch_size: int = 16
                     ) -> torch.Tensor:
    """(N, D) features of images ``x`` in [0, 1] for a control:

    * ``rgb_stats``: per-channel mean and standard deviation of the pixels (D = 6);
    * ``lite0_global``: the ImageNet EfficientNet-Lite0's pooled head features, the input of its
      classifier (D = 1280);
    * ``random_pdn``: an untrained PDN of the run's size (PyTorch's default initialisation, seeded;
      no padding, as the student), output averaged over space (D = 384), as PUAD's feature."""
    if name == "rgb_stats":
        return torch.cat([x.mean((2, 3)), x.std((2, 3), unbiased=False)], dim=1)
    out = []
    for i in range(0, len(x), batch_size):
        v = imagenet_normalise(x[i:i + batch_size])
        if name == "lite0_global":
            f = net.head(_lite0_trunk(net, v))
        else:
            f = net(v)
        out.append(f.mean((2, 3)))
    return torch.cat(out)


def _lite0_trunk(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """EfficientNet-Lite0 up to its last stage (the head's input)."""
    x = net.stem(x)
    for stage in net.stages:
        x = stage(x)
    return x


def controls_run(ctx: RunContext, data_root: Path) -> dict:
    """The controls of PUAD's Mahalanobis score on one category (issue 11, point 12): the
    distance of Eq. 2 (Ledoit-Wolf on the training images, pseudo-inverse) on three features
    that are not trained on the category, scored on the test split, with mean and std of each
    distance on the validation split (to z-normalise and add to EfficientAD's score as PUAD
    does; see notebook 04)."""
    from ..networks.efficientnet_lite import efficientnet_lite0

    cfg, key, device = ctx.config, ctx.key, ctx.device
    cpu0 = time.process_time()
    s = cfg["image_size"]
    split = dict(zip(("train", "validation", "test"),
                     splits(cfg, data_root, key.dataset, key.category), strict=True))
    x = {name: stack_images(recs, s).to(device) for name, recs in split.items()}
    torch.manual_seed(key.seed)
    nets = {"rgb_stats": None,
            "lite0_global": efficientnet_lite0(cfg["lite0_weights"]).to(device).eval(),
            "random_pdn": pdn(cfg["size"], C, padding=False).to(device).eval()}
    types = [r.defect_type for r in split["test"]]
    metrics, scores, z, dims = {}, {}, {}, {}
    for name in CONTROLS:
        with ctx.timer(f"{name}_s"):
            feats = {k: control_features(name, v, nets[name]) for k, v in x.items()}
            w, wmu = mahalanobis_factor(feats["train"].double().cpu().numpy())
            dist = {k: EfficientADPUAD.distance(f[:, :, None, None], w.to(f), wmu.to(f))
                    for k, f in feats.items()}
        dims[name] = feats["train"].shape[1]
        z[name] = [float(dist["validation"].mean()),
                   float(dist["validation"].std(unbiased=False).clamp_min(1e-12))]
        scores[name] = [float(v) for v in dist["test"].cpu()]
        aurocs = image_aurocs(key.dataset, split["test"], scores[name])
        metrics.update({f"{name}/{m}": v for m, v in aurocs.items()})
    ctx.timings["total_cpu_s"] = time.process_time() - cpu0
    return {
        "metrics": metrics,
        "extra": {
            "features": {"rgb_stats": "per-channel mean and std of the RGB pixels",
                         "lite0_global": "ImageNet EfficientNet-Lite0, pooled head features",
                         "random_pdn": f"untrained PDN-{cfg['size']} (seed {key.seed}), "
                                       "spatial mean"},
            "dims": dims, "z": z, "scores": scores, "defect_types": types,
            "test_paths": [str(r.path.relative_to(data_root)) for r in split["test"]],
            "n_train": len(split["train"]), "n_val": len(split["validation"]),
            "n_test": len(split["test"]),
        },
    }
