"""Score new images with a finished run: ``python -m repro predict --run RUN IMAGES... --out DIR``.

``RUN`` is a record file (``results/<profile>/runs/<slug>.json``) or a cell's slug
(``n2n__main__mpdd__metal_plate__default__seed0``, looked up in ``--profile``'s run folder).
The run's final weights are in the cache (``record["model"]``, written when the run finished).

Writes ``DIR/scores.csv`` (image, score, threshold, anomalous) and one heat-map overlay
``DIR/<stem>_map.png`` per image (the map resized to the image, jet colours at half opacity; the
colour scale runs from the smallest map value of the images scored together to the largest).

Threshold rule (stated in the CSV): the largest image score of the run's good images that the
model did not train on (Noise-to-Norm's and PUAD's validation split); TSDN and POUTA train on
every good image, so theirs is the largest score over their training images, which is
optimistic (new good images score a little higher). A score above the threshold is flagged.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .data import DatasetError, Record, stack_images
from .env import display_path, repo_root, resolve_path, results_dir

Scorer = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # x -> (maps, scores)


def find_record(run: str, profile: str) -> dict:
    path = Path(run)
    if path.suffix != ".json":
        path = results_dir() / profile / "runs" / f"{run}.json"
    path = resolve_path(path)
    if not path.is_file():
        raise DatasetError(f"no run record at {path}: give a record file or a cell slug of "
                           f"profile {profile} (`python -m repro plan --profile {profile}` "
                           "lists the cells)")
    return json.loads(path.read_text())


def retrain_command(record: dict) -> str:
    k = record["key"]
    variant = f" --variant {k['variant']}" if k["variant"] != "default" else ""
    return (f"python -m repro run --paper {k['paper']} --experiment {k['experiment']} "
            f"--dataset {k['dataset']} --category {k['category']}{variant} --seed {k['seed']} "
            f"--profile {k['profile']} --data-root <its DATA_ROOT>")


def load_parts(record: dict) -> dict:
    model = record.get("model")
    if not model:
        raise DatasetError(f"run {record['key']} kept no model (it finished before runs kept "
                           f"their weights, or it trains nothing); retrain it with: "
                           f"{retrain_command(record)}")
    path = repo_root() / model["path"]
    if not path.is_file():
        raise DatasetError(f"the model of run {record['key']['paper']}/{record['key']['category']}"
                           f" is not on disk any more ({path}); retrain it with: "
                           f"{retrain_command(record)}")
    return torch.load(path, map_location="cpu", weights_only=True)


def scorer(record: dict, parts: dict, device: torch.device, score: str = "") -> Scorer:
    """The run's image -> (map, image score) path, rebuilt from its config and weights."""
    from .methods.common import category_config

    k, cfg = record["key"], record["config"]
    paper = k["paper"]
    if paper == "n2n":
        from .methods import n2n
        from .networks.n2n import n2n_net

        net = n2n_net(width=cfg["width"], ram=cfg["ram"], residual=cfg["global_residual"],
                      padding_mode=cfg["conv_padding"])
        net.load_state_dict(parts["net"])
        net.to(device).eval()

        def run(x):
            maps, _ = n2n.anomaly_maps(net, n2n.normalise(x), cfg, k["seed"])
            return maps, n2n.image_scores(maps, cfg["score_rule"], cfg["score_topk"])
        return run
    cfg = category_config(cfg, k["dataset"], k["category"])
    if paper == "tsdn":
        from .methods import tsdn

        model = tsdn.make_model(cfg)
        model.load_state_dict(parts["model"])
        model.to(device).eval()

        def run(x):
            raw, _ = tsdn.predict(model, x, cfg["map_sigma"])
            return raw, raw.flatten(1).amax(1)
        return run
    if paper == "pouta":
        from .methods import pouta
        from .networks.pouta import build

        model = build(cfg["model"], cfg["rec_width"], cfg["vanilla_width"], cfg["c2f_widths"])
        model.load_state_dict(parts["model"])
        model.to(device).eval()

        def run(x):
            maps, _ = pouta.predict(model, x)
            return maps, pouta.image_scores(maps, cfg["score_pool"])
        return run
    if paper == "puad":
        from .methods import puad
        from .networks.efficientad import autoencoder, pdn

        s, c = cfg["image_size"], puad.C
        model = puad.EfficientADPUAD(
            pdn(cfg["size"], c, padding=False), pdn(cfg["size"], 2 * c, padding=False),
            autoencoder(s, c, padding=False), torch.zeros(c), torch.ones(c),
            {"input": s, "grid": None}[cfg["score_maps"]])
        model.load_state_dict(parts["model"])
        model.to(device).eval()
        name = score or "puad"

        def run(x):
            out = model.score_all(x)
            return out["map"], out[name]
        return run
    raise DatasetError(f"predict supports n2n, tsdn, pouta and puad runs, not {paper}")


def threshold_of(record: dict, score: str = "") -> tuple[float, str]:
    extra = record["extra"]
    values = extra.get("threshold_scores")
    if values is None:
        raise DatasetError(f"run {record['key']} has no threshold scores (an older record); "
                           f"retrain it with: {retrain_command(record)}")
    if isinstance(values, dict):  # PUAD: one list per score
        values = values[score or "puad"]
    return float(np.max(values)), f"max score of the run's {extra['threshold_images']} good images"


def overlay(image: np.ndarray, heat: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(H, W, 3) uint8: ``image`` with ``heat`` in jet colours at half opacity."""
    from matplotlib import colormaps

    h = np.clip((heat - lo) / max(hi - lo, 1e-12), 0, 1)
    rgb = colormaps["jet"](h)[..., :3]
    return np.round(255 * (0.5 * image / 255.0 + 0.5 * rgb)).astype(np.uint8)


def predict(run: str, images: Sequence[str | Path], out: str | Path, *, profile: str = "smoke",
            device: str = "auto", score: str = "", batch_size: int = 8) -> Path:
    """Score ``images`` with run ``run``; returns the CSV's path."""
    from PIL import Image

    from .env import resolve_device

    paths = [resolve_path(p) for p in images]
    missing = [p for p in paths if not p.is_file()]
    if not paths or missing:
        raise DatasetError(f"image not found: {missing[0]}" if missing else "no images given")
    record = find_record(run, profile)
    if score and record["key"]["paper"] != "puad":
        raise DatasetError("--score chooses between PUAD's scores (puad, efficientad)")
    if score not in ("", "puad", "efficientad"):
        raise DatasetError(f"--score must be puad or efficientad, got {score!r}")
    dev = resolve_device(device)
    fn = scorer(record, load_parts(record), dev, score)
    threshold, rule = threshold_of(record, score)
    size = record["config"]["image_size"]
    if record["key"]["paper"] in ("tsdn", "pouta"):
        from .methods.common import category_config

        size = category_config(record["config"], record["key"]["dataset"],
                               record["key"]["category"])["image_size"]
    recs = [Record(p, 0, "good", "predict", "") for p in paths]
    maps, scores = [], []
    with torch.inference_mode():
        for i in range(0, len(recs), batch_size):
            m, sc = fn(stack_images(recs[i:i + batch_size], size).to(dev))
            maps.append(m.float().cpu())
            scores.append(sc.float().cpu())
    maps_t, scores_t = torch.cat(maps), torch.cat(scores)
    lo, hi = float(maps_t.min()), float(maps_t.max())
    out = resolve_path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "scores.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "score", "threshold", "anomalous", "map"])
        for p, m, sc in zip(paths, maps_t, scores_t, strict=True):
            with Image.open(p) as im:
                img = np.asarray(im.convert("RGB"))
            heat = F.interpolate(m[None, None], size=img.shape[:2], mode="bilinear")[0, 0]
            name = f"{p.stem}_map.png"
            Image.fromarray(overlay(img, heat.numpy(), lo, hi)).save(out / name)
            w.writerow([display_path(p), f"{float(sc):.6g}", f"{threshold:.6g}",
                        int(float(sc) > threshold), name])
    k = record["key"]
    (out / "README.txt").write_text(
        f"run: {k['paper']}/{k['experiment']} {k['dataset']}/{k['category']} {k['variant']} "
        f"seed {k['seed']} (profile {k['profile']})\nthreshold {threshold:.6g}: {rule}; a score "
        f"above it is flagged anomalous\nmaps: {lo:.4g} (blue) to {hi:.4g} (red) over these "
        f"images\n")
    return csv_path
