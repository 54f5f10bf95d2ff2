"""anomalib's EfficientAD and DRAEM beside ours: one key mapping each, and importers of anomalib
checkpoints (``python -m repro puad-from-anomalib`` / ``pouta-from-anomalib``).

The layouts (checked by ``tests/test_peer.py`` against anomalib 2.7.0, the ``peer`` extra):

* EfficientAD: our PDNs and autoencoder are ``nn.Sequential``\\ s (nelson1425's layout, whose
  published teacher files load as they are); anomalib names the convolutions ``conv1..``,
  ``encoder.enconv1..6``, ``decoder.deconv1..8``. Both hold the same convolutions in the same
  order, so the mapping pairs the i-th convolution of each. anomalib normalises the teacher
  output with ``mean_std``; we fold that normalisation into the teacher's last convolution.
* DRAEM: our vanilla network (``repro.networks.pouta.Vanilla`` at DRAEM's widths 128 / 64) and
  anomalib's ``DraemModel`` hold the same 347 tensors; anomalib's discriminative decoder names
  its levels ``up_b, up1..4`` / ``db_b, db1..4`` / ``fin_out``, ours ``ups.0..4`` / ``dec.0..4``
  / ``out``; every other tensor pairs in order.

Nothing here downloads: a checkpoint is a local file. This module is not imported by the
methods, so it is not part of any record's code version.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .data import DatasetError

TEACHER_CHANNELS = 384


def _convs(module: nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if isinstance(m, nn.Conv2d)]


def efficientad_keys(ours: nn.Module, prefix: str, size: str, part: str) -> dict[str, str]:
    """``{anomalib key: our key}`` of one part (``teacher``, ``student`` or ``ae``) of
    EfficientAD-``size``: the i-th convolution of each side, weight and bias."""
    convs = _convs(ours)
    if part == "ae":
        names = [f"encoder.enconv{i}" for i in range(1, 7)] + \
            [f"decoder.deconv{i}" for i in range(1, 9)]
    else:
        names = [f"conv{i}" for i in range(1, (5 if size == "S" else 7))]
    if len(names) != len(convs):
        raise ValueError(f"EfficientAD-{size} {part}: {len(names)} convolutions in anomalib's "
                         f"layout, {len(convs)} in ours")
    return {f"{prefix}{a}.{w}": f"{b}.{w}" for a, b in zip(names, convs, strict=True)
            for w in ("weight", "bias")}


def size_of(state: Mapping[str, torch.Tensor], prefix: str = "") -> str:
    """``S`` or ``M`` from a state dict in either layout (PDN-M has 6 convolutions)."""
    if f"{prefix}conv1.weight" in state:
        return "M" if f"{prefix}conv6.weight" in state else "S"
    n = sum(1 for k in state if k.startswith(prefix) and k.endswith(".weight")
            and state[k].ndim == 4)
    if n in (4, 6):
        return "S" if n == 4 else "M"
    raise ValueError(f"not a PDN state dict: {n} convolution weights under '{prefix}'")


def to_ours(state: Mapping[str, torch.Tensor], ours: nn.Module, prefix: str, size: str,
            part: str) -> dict[str, torch.Tensor]:
    """The anomalib tensors of one EfficientAD part renamed to our layout (shapes checked)."""
    mapping = efficientad_keys(ours, prefix, size, part)
    missing = [k for k in mapping if k not in state]
    if missing:
        raise ValueError(f"not an anomalib EfficientAD-{size} {part}: {missing[0]} is missing")
    out = {mapping[k]: state[k] for k in mapping}
    mine = ours.state_dict()
    for k, v in out.items():
        if tuple(v.shape) != tuple(mine[k].shape):
            raise ValueError(f"EfficientAD {part} tensor {k}: shape {tuple(v.shape)} in the "
                             f"file, {tuple(mine[k].shape)} in EfficientAD-{size}")
    return out


def teacher_state(obj, size: str | None = None) -> tuple[dict[str, torch.Tensor], str, str]:
    """A teacher's tensors in our layout from what ``torch.load`` gave: nelson1425's whole
    pickled ``nn.Sequential`` or its state dict (our layout already), or anomalib's
    ``SmallPatchDescriptionNetwork`` / ``MediumPatchDescriptionNetwork`` state dict (``conv1``
    ...), bare or under ``teacher.`` / ``model.teacher.``. Returns (state, size, layout)."""
    from .networks.efficientad import pdn

    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("not a teacher: expected a state dict or a pickled PDN module")
    for prefix in ("", "teacher.", "model.teacher."):
        if f"{prefix}conv1.weight" in obj:
            found = size_of(obj, prefix)
            if size and found != size:
                raise ValueError(f"an EfficientAD-{found} teacher, not {size}")
            ours = pdn(found, TEACHER_CHANNELS, padding=True)
            return to_ours(obj, ours, prefix, found, "teacher"), found, "anomalib"
    found = size_of(obj)
    if size and found != size:
        raise ValueError(f"an EfficientAD-{found} teacher, not {size}")
    ours = pdn(found, TEACHER_CHANNELS, padding=True)
    try:
        ours.load_state_dict(obj)
    except RuntimeError as exc:
        raise ValueError(f"not a PDN-{found} teacher with {TEACHER_CHANNELS} channels: {exc}") \
            from None
    return dict(obj), found, "nelson1425"


def import_teacher(path: str | Path, size: str, cache: Path) -> tuple[Path, str]:
    """``teacher_weights`` as our loader reads it: a file already in our (nelson1425's) layout
    is used as it is; anomalib's layout is converted once into ``cache/teachers/`` (named by the
    file's content hash). Returns (path to load, layout)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"teacher weights not found: {path} (a PDN-{size} teacher: "
                           "nelson1425's teacher_small.pth / teacher_medium.pth, or anomalib's)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
        state, _, layout = teacher_state(obj, size)
    except (ValueError, RuntimeError, EOFError, OSError) as exc:
        raise DatasetError(f"{path}: {exc}") from None
    if layout == "nelson1425":
        return path, layout
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    out = Path(cache) / "teachers" / f"imported-{size}-{digest}.pt"
    if not out.is_file():
        from .runs import atomic_torch_save

        atomic_torch_save(state, out)
    return out, layout


# --------------------------------------------------------------------------------------------
# DRAEM
# --------------------------------------------------------------------------------------------

_DRAEM_DECODER = [(r"decoder_segment\.up_b\.", "ups.0."),
                  (r"decoder_segment\.up(\d)\.", r"ups.\1."),
                  (r"decoder_segment\.db_b\.", "dec.0."),
                  (r"decoder_segment\.db(\d)\.", r"dec.\1."),
                  (r"decoder_segment\.fin_out\.0\.", "out.")]


def draem_keys(theirs: Mapping[str, torch.Tensor], ours: nn.Module,
               prefix: str = "") -> dict[str, str]:
    """``{anomalib DraemModel key: our Vanilla key}``: the discriminative decoder by name,
    every other tensor in order (shapes checked)."""
    mine = ours.state_dict()
    a_keys = [k for k in theirs if k.startswith(prefix)]
    mapping, rest_a = {}, []
    for k in a_keys:
        short = k[len(prefix):]
        if short.startswith("discriminative_subnetwork.decoder_segment."):
            name = short[len("discriminative_subnetwork."):]
            for pat, rep in _DRAEM_DECODER:
                name = re.sub(pat, rep, name)
            mapping[k] = "discriminative." + name
        else:
            rest_a.append(k)
    rest_o = [k for k in mine if k not in set(mapping.values())]
    if len(rest_a) != len(rest_o):
        raise ValueError(f"not a DRAEM state dict: {len(a_keys)} tensors, ours {len(mine)}")
    mapping.update(zip(rest_a, rest_o, strict=True))
    for a, o in mapping.items():
        if o not in mine or tuple(theirs[a].shape) != tuple(mine[o].shape):
            raise ValueError(f"DRAEM tensor {a}: shape {tuple(theirs[a].shape)} does not fit our "
                             f"{o} (DRAEM's widths are 128 and 64)")
    return mapping


def draem_to_ours(theirs: Mapping[str, torch.Tensor], prefix: str = "") -> nn.Module:
    """Our vanilla network at DRAEM's widths holding anomalib's DRAEM weights."""
    from .networks.pouta import Vanilla

    ours = Vanilla(128, 64)
    mapping = draem_keys(theirs, ours, prefix)
    ours.load_state_dict({o: theirs[a] for a, o in mapping.items()})
    return ours.eval()


def load_lightning_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of an anomalib (Lightning) checkpoint, with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
        raise DatasetError(f"{path} is not a readable checkpoint: {type(exc).__name__}: "
                           f"{exc}") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise DatasetError(f"{path}: expected a Lightning checkpoint with a 'state_dict'")
    return state


def efficientad_from_state(state: Mapping[str, torch.Tensor], image_size: int = 256):
    """Our ``EfficientADPUAD`` from an anomalib EfficientAD state dict (``model.`` prefix
    optional): teacher, student, autoencoder and the teacher's channel mean/std."""
    from .methods.puad import EfficientADPUAD
    from .networks.efficientad import autoencoder, pdn

    prefix = "model." if any(k.startswith("model.teacher.") for k in state) else ""
    if f"{prefix}teacher.conv1.weight" not in state or f"{prefix}ae.encoder.enconv1.weight" \
            not in state:
        found = "DRAEM" if any("reconstructive_subnetwork" in k for k in state) else "another model"
        raise DatasetError(f"not an anomalib EfficientAD checkpoint (it holds {found})")
    size = size_of(state, f"{prefix}teacher.")
    c = state[f"{prefix}teacher.conv{4 if size == 'S' else 6}.weight"].shape[0]
    nets = {"teacher": pdn(size, c, padding=False), "student": pdn(size, 2 * c, padding=False),
            "ae": autoencoder(image_size, c, padding=False)}
    for part, net in nets.items():
        net.load_state_dict(to_ours(state, net, f"{prefix}{part}.", size, part))
    mean = state[f"{prefix}mean_std.mean"].flatten()
    std = state[f"{prefix}mean_std.std"].flatten()
    if not torch.any(std != 0):
        raise DatasetError("the checkpoint's teacher mean/std are not set (an untrained model)")
    return EfficientADPUAD(nets["teacher"], nets["student"], nets["ae"], mean, std,
                           image_size), size


# --------------------------------------------------------------------------------------------
# Bring an anomalib model: its checkpoint scored by our code on your data
# --------------------------------------------------------------------------------------------


def _root(data_root: str | Path) -> Path:
    from .env import resolve_path

    root = resolve_path(data_root)
    if not root.is_dir():
        raise DatasetError(f"DATA_ROOT not found: {root}")
    return root


def puad_from_anomalib(ckpt: str | Path, data_root: str | Path, dataset: str, category: str,
                       device: str = "auto", image_size: int = 256) -> dict:
    """PUAD's score on a trained anomalib EfficientAD: its teacher, student and autoencoder
    as they are; the map quantiles and z-scores refitted on the validation split (or PUAD's
    15 % hold-out of train/good) and the Mahalanobis statistics on the training images, by
    PUAD's rules (``repro.methods.puad``); EfficientAD's and PUAD's AUROCs on the test split."""
    from .data import check_category, stack_images
    from .env import resolve_device
    from .methods import puad
    from .profiles import paper_config

    root = _root(data_root)
    check_category(root, dataset, category)
    model, size = efficientad_from_state(load_lightning_state(ckpt), image_size)
    dev = resolve_device(device)
    model.to(dev)
    cfg = paper_config("puad", "paper")
    train, val, test = puad.splits(cfg, root, dataset, category)
    fitted = model.fit(stack_images(train, image_size).to(dev), stack_images(val, image_size)
                       .to(dev), tuple(cfg["map_quantiles"]))
    out = model.score_all(stack_images(test, image_size).to(dev))
    aurocs = {k: puad.image_aurocs(dataset, test, out[k].cpu().numpy().astype(float))
              for k in ("efficientad", "puad")}
    return {"checkpoint": str(ckpt), "size": size, "dataset": dataset, "category": category,
            "n_train": len(train), "n_val": len(val), "n_test": len(test),
            "auroc": aurocs, "fitted": fitted}


def pouta_vanilla_from_anomalib(ckpt: str | Path, data_root: str | Path, dataset: str,
                                category: str, device: str = "auto", image_size: int = 256,
                                score_pool: int = 21) -> dict:
    """A trained anomalib DRAEM as POUTA's vanilla row: our vanilla network holding its weights,
    scored by our code (DRAEM's ``score_pool`` x ``score_pool`` average-pooled maximum) on the
    test split: image AUROC, pixel AUROC, pixel AP and AUPRO."""
    from .data import check_category, list_records, stack_images
    from .env import resolve_device
    from .evaluate import evaluate
    from .methods.pouta import image_scores, predict

    state = load_lightning_state(ckpt)
    prefix = "model." if any(k.startswith("model.reconstructive_subnetwork") for k in state) \
        else ""
    if not any(k.startswith(f"{prefix}reconstructive_subnetwork") for k in state):
        found = "EfficientAD" if any("teacher.conv1" in k for k in state) else "another model"
        raise DatasetError(f"not an anomalib DRAEM checkpoint (it holds {found})")
    try:
        ours = draem_to_ours({k: v for k, v in state.items() if k.startswith(prefix)}, prefix)
    except ValueError as exc:
        raise DatasetError(f"{ckpt}: {exc}") from None
    root = _root(data_root)
    check_category(root, dataset, category)
    dev = resolve_device(device)
    test = list_records(root, dataset, category, "test")
    maps, _ = predict(ours.to(dev), stack_images(test, image_size).to(dev))
    scores = image_scores(maps, score_pool).cpu().numpy()
    metrics = evaluate(test, scores, maps, dataset=dataset, data_root=root)
    return {"checkpoint": str(ckpt), "dataset": dataset, "category": category,
            "n_test": len(test), "score_pool": score_pool, "metrics": metrics}
