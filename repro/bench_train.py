"""Training throughput at the ``paper`` profile's settings, measured on the real code path, for
``plan``'s estimate of the cells that have no record yet (issue 12).

Each case runs one real cell of the paper profile for a short budget (two epochs, or a few steps)
on a generated synthetic folder, in a temporary run store, and keeps what its record measured:
training images per second (N2N, TSDN, POUTA, at the paper's image size, batch and widths),
student steps per second and teacher distillation steps per second (PUAD), and test seconds per
image. Synthetic data has the images' sizes of the official layouts' resizing, so the throughput
is that of real data up to image decoding. ``python -m repro.bench_train --device cuda`` writes
``results/benchmarks/train_<cuda|cpu-Nthreads>.json``; ``plan --profile paper`` then estimates a
cell as its work (steps or images, from the config and the training-set size under ``DATA_ROOT``)
over the throughput of the newest file of the device kind it is asked for (``--bench-device``).

Stand-ins are measured as what runs: without the printed encoder/teacher weights under
``TORCH_HOME`` the TSDN encoder and the PUAD distillation backbone are the Lite0 stand-in, and the
file says so.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch

from .env import resolve_device, results_dir, versions
from .runs import atomic_write_text, device_label

# paper -> (experiment, dataset, category, variant of a short run at the paper's settings)
CASES = {
    "n2n": ("main", "mpdd", "metal_plate", "max_epochs=2"),
    "tsdn": ("main", "mvtec_ad", "grid", "epochs=2"),
    "pouta": ("main", "mvtec_ad", "grid", "epochs=2"),
    "pouta/vanilla": ("main", "mvtec_ad", "grid", "epochs=2,model=vanilla"),
    "puad/S": ("main", "mvtec_loco", "juice_bottle", "steps=20,distil_steps=10"),
    "puad/M": ("main", "mvtec_loco", "juice_bottle", "size=M,steps=20,distil_steps=10"),
}


def measure(record: dict) -> dict:
    """What a short run's record says about throughput."""
    e, t = record["extra"], record["timings"]
    out = {"test_s_per_image": t.get("test_s", 0.0) / max(e.get("n_test", 1), 1)}
    if e.get("train_images_per_s"):
        out["train_images_per_s"] = e["train_images_per_s"]
    if e.get("train_steps_per_s"):
        out["train_steps_per_s"] = e["train_steps_per_s"]
    teacher = e.get("teacher", {})
    if teacher.get("source") == "distilled" and not teacher.get("cached") and t.get("teacher_s"):
        out["distil_steps_per_s"] = teacher["steps"] / t["teacher_s"]
    if "encoder" in e:
        out["encoder"] = e["encoder"]
    if teacher:
        out["teacher"] = teacher.get("backbone", teacher.get("source"))
    return out


def bench(device: str = "auto", cases: dict = CASES) -> dict:
    """Run every case in a temporary store and return the throughput file's content."""
    from .data.synthetic import SyntheticSpec, write_all
    from .experiments import run_cell

    dev = resolve_device(device)
    keep = {k: os.environ.get(k) for k in ("REPRO_RESULTS", "REPRO_CACHE", "REPRO_READONLY")}
    out = {"device": device_label(dev), "threads": torch.get_num_threads(),
           "versions": versions(), "profile": "paper", "cases": {}}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        # small files (the methods resize to the paper's sizes), 16 training images: a few steps
        root = write_all(Path(tmp) / "data", SyntheticSpec(
            image_size=64, loco_size=(48, 64), n_train=16, n_test_good=4,
            n_test_defect_per_type=1, n_validation=4))
        os.environ.update(REPRO_RESULTS=f"{tmp}/results", REPRO_CACHE=f"{tmp}/cache")
        os.environ.pop("REPRO_READONLY", None)
        try:
            for name, (exp, ds, cat, variant) in cases.items():
                rec = run_cell(name.split("/")[0], exp, ds, cat, variant=variant,
                               profile="paper", data_root=str(root), device=str(dev))
                out["cases"][name] = {"cell": f"{ds}/{cat} {variant}", **measure(rec)}
                print(f"{name}: {out['cases'][name]}", flush=True)
        finally:
            for k, v in keep.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return out


def tag(device_text: str, threads: int) -> str:
    return "cuda" if device_text.startswith("cuda") else f"cpu-{threads}threads"


def save(result: dict, folder: Path | None = None) -> Path:
    """Write the file of the device; cases measured before on the same device and not remeasured
    are kept (each case carries the commit and note it was measured with)."""
    folder = folder or results_dir() / "benchmarks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"train_{tag(result['device'], result['threads'])}.json"
    stamp = {"commit": result["versions"].get("repro_commit", "?"), "note": result.get("note", "")}
    cases = {name: {**case, **stamp} for name, case in result["cases"].items()}
    if path.is_file():
        cases = {**json.loads(path.read_text()).get("cases", {}), **cases}
    atomic_write_text(path, json.dumps({**result, "cases": cases}, indent=1, sort_keys=True) + "\n")
    return path


def load(kind: str = "cuda", folder: Path | None = None) -> tuple[dict, Path] | None:
    """The throughput file of a device kind (``cuda`` or ``cpu``), or None."""
    folder = folder or results_dir() / "benchmarks"
    files = sorted(folder.glob(f"train_{kind}*.json"))
    return (json.loads(files[-1].read_text()), files[-1]) if files else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.bench_train", description=__doc__)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--only", default=None, help="comma-separated cases, e.g. pouta,puad/S")
    ap.add_argument("--note", default="", help="kept in the file, e.g. what else ran meanwhile")
    args = ap.parse_args(argv)
    cases = CASES if not args.only else {k: CASES[k] for k in args.only.split(",")}
    for name, case in cases.items():  # saved one by one: an interrupted bench keeps what it has
        result = bench(args.device, {name: case})
        if args.note:
            result["note"] = args.note
        print(f"wrote {save(result)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
