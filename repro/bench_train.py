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
    """The throughput file of a device kind (``cuda``, ``cuda-converted`` or ``cpu``), or None;
    ``cuda`` is a measured GPU file only."""
    folder = folder or results_dir() / "benchmarks"
    files = sorted(f for f in folder.glob(f"train_{kind}*.json")
                   if kind == "cuda-converted" or "converted" not in f.name)
    return (json.loads(files[-1].read_text()), files[-1]) if files else None


# bench_train case -> (latency file stem, path to the batch-1 latency in ms in that file)
LATENCY_OF = {
    "pouta": ("pouta_cost", ("models", "pouta", "latency_ms")),
    "pouta/vanilla": ("pouta_cost", ("models", "vanilla", "latency_ms")),
    "puad/S": ("puad_latency", ("sizes", "S", "efficientad")),
    "puad/M": ("puad_latency", ("sizes", "M", "efficientad")),
}
RATES = ("train_images_per_s", "train_steps_per_s", "distil_steps_per_s")


def _latency(folder: Path, stem: str, tag_: str, path: tuple) -> tuple[float, str] | None:
    file = folder / f"{stem}_{tag_}.json"
    if not file.is_file():
        return None
    content = value = json.loads(file.read_text())
    for part in path:
        if part not in value:
            return None
        value = value[part]
    return float(value), content["device"]


def convert(cpu: dict, folder: Path | None = None) -> dict:
    """A rough GPU throughput file made from a measured CPU one (no GPU measurement exists):
    each case's rates times the ratio of its network's batch-1 inference latency on the CPU
    of the same thread count to that on the GPU, from the committed latency files (POUTA's
    cost table, PUAD's latency table). N2N and TSDN have no GPU latency file and borrow the
    geometric mean of the others' ratios. Batch 1 leaves a GPU mostly idle while a CPU is busy
    at any batch, so the ratios understate a GPU's training speed-up at batch 8-16: an estimate
    from this file is an upper bound on GPU time. ``plan --bench-device cuda-converted``."""
    folder = folder or results_dir() / "benchmarks"
    cpu_tag, ratios, gpu = tag(cpu["device"], cpu["threads"]), {}, set()
    for case, (stem, path) in LATENCY_OF.items():
        on_cpu, on_gpu = _latency(folder, stem, cpu_tag, path), _latency(folder, stem, "cuda", path)
        if on_cpu and on_gpu:
            ratios[case] = (on_cpu[0] / on_gpu[0], f"{stem}: {on_cpu[0]:.1f} / {on_gpu[0]:.2f} ms")
            gpu.add(on_gpu[1])
    if not ratios:
        raise ValueError(f"no pair of latency files ({cpu_tag} and cuda) under {folder}")
    mean = float(torch.tensor([r for r, _ in ratios.values()]).log().mean().exp())
    cases = {}
    for name, case in cpu["cases"].items():
        ratio, why = ratios.get(name, (mean, "geometric mean of the measured ratios"))
        out = {k: v * ratio if k in RATES else v for k, v in case.items()}
        if "test_s_per_image" in case:
            out["test_s_per_image"] = case["test_s_per_image"] / ratio
        cases[name] = {**out, "ratio": ratio, "ratio_from": why}
    return {**cpu, "device": f"{' / '.join(sorted(gpu))} (converted from {cpu['device']})",
            "converted_from": cpu["device"], "cases": cases}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.bench_train", description=__doc__)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--only", default=None, help="comma-separated cases, e.g. pouta,puad/S")
    ap.add_argument("--note", default="", help="kept in the file, e.g. what else ran meanwhile")
    ap.add_argument("--convert-from", default=None, metavar="FILE",
                    help="write train_cuda-converted.json from this measured CPU file and the "
                    "latency files (a rough GPU estimate where no GPU was measured)")
    args = ap.parse_args(argv)
    if args.convert_from:
        out = convert(json.loads(Path(args.convert_from).read_text()))
        path = results_dir() / "benchmarks" / "train_cuda-converted.json"
        atomic_write_text(path, json.dumps(out, indent=1, sort_keys=True) + "\n")
        for name, case in out["cases"].items():
            print(f"{name}: x{case['ratio']:.0f} ({case['ratio_from']})")
        print(f"wrote {path}")
        return 0
    cases = CASES if not args.only else {k: CASES[k] for k in args.only.split(",")}
    for name, case in cases.items():  # saved one by one: an interrupted bench keeps what it has
        result = bench(args.device, {name: case})
        if args.note:
            result["note"] = args.note
        print(f"wrote {save(result)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
