"""The run grid as data: every cell the notebooks render, with the tables it feeds.

A cell is (paper, experiment, dataset, category, variant, seed). Which cells exist depends only
on the profile (the number of few-shot support draws) and on which categories the data folder
holds; the notebooks take their cell lists from here (:func:`cells`), and ``python -m repro
plan`` reads the same list to say which are done, missing or stale (:func:`plan`).

Tables are tagged with the paper's own names (``table4``, ``tableV``); cells that feed only a
diagnostic of ours (the Noise-to-Norm blur floor, the TSDN ablation rows on MPDD) carry the tag
``diagnostic``, PUAD's controls ``controls`` and the dataset notebook's learnability check
``learnability``.

Estimated cost (:func:`estimate_s`): the measured ``total_s`` of the cell's own record when one
exists (also a stale one: the same cell at an older config costs about the same), else the
median over the records of the same paper in the same category (the same variant first), else
of the same variant in other categories, else the median over the paper's records (at each
step the current records first, then the older ones), else
(``paper`` profile) the cell's work over the throughput measured by
``repro.bench_train`` (:func:`bench_estimate_s`), else the per-paper constant of
:data:`DEFAULT_COST_S`. The estimate is in seconds on the device the records, or the throughput
file, were made on; nothing converts CPU seconds to GPU seconds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from . import data as D
from .runs import RunKey, stale_reason
from .tables import paper_table

PAPERS = ("baseline", "n2n", "tsdn", "pouta", "puad")

# Noise-to-Norm: Table 4's lambda sweep (default = lambda 0.3) and Table 5's RAM ablation
N2N_SWEEP = ("lam=0", "lam=0.2", "default", "lam=0.4")
N2N_EXTRA = ("issue11_before", "conv_padding=zeros")  # metal_plate only: issue 11 diagnostics
# TSDN: the ablation rows (Table 3 A-D, Table 4 A-F; t3_A/B/D are t4_A/C/F)
TSDN_ROWS = ("model=t4_A", "model=t4_B", "model=t4_C", "model=t4_D", "model=t4_E", "default",
             "model=t3_C")
# metal_plate only: the earlier reading of the FNE gradient (issue 11, point 6), beside the default
TSDN_EXTRA = ("fne_grad=joint", "model=t3_C,fne_grad=joint")
TSDN_T3 = {"A": "model=t4_A", "B": "model=t4_C", "C": "model=t3_C", "D": "default"}
TSDN_T4 = {"A": "model=t4_A", "B": "model=t4_B", "C": "model=t4_C", "D": "model=t4_D",
           "E": "model=t4_E", "F": "default"}
# POUTA: Table V's rows (default = the full model) and Table IV's k-shot cells
POUTA_ABLATION = {"model=vanilla": "vanilla", "model=pouta_base": "pouta_base",
                  "model=pouta_base_hsg": "pouta_base+hsg",
                  "model=pouta_base_mss": "pouta_base+mss",
                  "default": "pouta"}
POUTA_SHOTS = (2, 4, 8)
# PUAD: the two EfficientAD sizes
PUAD_SIZES = {"default": "S", "size=M": "M"}

# seconds per run when no record says better (ours: the order of the committed real_subset runs
# on one CPU thread; a first plan of an empty store is only a rough guide)
DEFAULT_COST_S = {"baseline": 10.0, "n2n": 1500.0, "tsdn": 600.0, "pouta": 900.0,
                  "puad": 1500.0}


@dataclass(frozen=True)
class Cell:
    paper: str
    experiment: str
    dataset: str
    category: str
    variant: str
    seed: int
    tables: tuple[str, ...]

    def key(self, profile: str) -> RunKey:
        return RunKey(self.paper, self.experiment, self.dataset, self.category,
                      self.variant or "default", self.seed, profile)

    def label(self) -> str:
        return (f"{self.paper}/{self.experiment} {self.dataset}/{self.category} "
                f"{self.variant or 'default'} seed{self.seed}")


# The cells the papers' claims rest on (repro.claims compares them): they run with the
# profile's claim seeds, every other cell with seed 0 only.
CLAIM_VARIANTS = {
    "n2n": ("default", "lam=0", "ram=false"),  # lambda 0.3 vs 0; RAM on vs off
    "tsdn": TSDN_ROWS,  # every Table 3 / Table 4 row: skips, SURF, two streams, FNE
    "pouta": ("default", "model=vanilla"),  # POUTA vs the vanilla network
    "puad": ("default",),  # PUAD vs EfficientAD: two scores of the same run
}
# the datasets of the papers' own claims (TSDN's and POUTA's MPDD rows are diagnostics of ours)
CLAIM_DATASETS = {"n2n": ("mpdd",), "tsdn": ("mvtec_ad",), "pouta": ("mvtec_ad",),
                  "puad": ("mvtec_loco",)}
# (profile, paper) -> the only categories its claims rest on, where not every category present
# is one (issue 13's budget). real_subset TSDN: a grid run at 256 px costs about 27 CPU-minutes,
# so grid runs its Table 3 rows once (seed 0, shown in Table 3) and the claims rest on
# toothbrush, 3 seeds of every Table 3 / Table 4 row (no Table 4 category is in ../shared/data;
# the claims table says the paper's side is over its own categories).
CLAIM_CATEGORIES: dict[tuple[str, str], tuple[str, ...]] = {
    ("real_subset", "tsdn"): ("toothbrush",)}


def claim_categories(paper: str, profile: str) -> tuple[str, ...] | None:
    """The categories ``paper``'s claims rest on under ``profile`` (None: every category of
    :data:`CLAIM_DATASETS` present)."""
    return CLAIM_CATEGORIES.get((profile, paper))


def claim_seeds(profile: str) -> tuple[int, ...]:
    """Seeds of the claim cells: 0, 1, 2 under smoke and real_subset (issue 13); under paper
    only seed 0 unless ``--seeds`` (``make ... SEEDS=0,1,2``) asks for more, since one seed
    of the paper grid is already days of GPU time."""
    return (0,) if profile == "paper" else (0, 1, 2)


def _claim_cells(paper: str, built: list[tuple], profile: str) -> set[tuple[str, str, str]]:
    """(dataset, category, variant) of the built cells a claim compares: a claim variant on a
    claim category that also has another claim variant (PUAD compares two scores of one run)."""
    wanted = CLAIM_VARIANTS.get(paper, ())
    only = claim_categories(paper, profile)
    found: dict[tuple[str, str], set[str]] = {}
    for exp, ds, cat, variant, _ in built:
        if exp == "main" and ds in CLAIM_DATASETS.get(paper, ()) and variant in wanted and \
                (only is None or cat in only):
            found.setdefault((ds, cat), set()).add(variant)
    need = 1 if paper == "puad" else 2
    return {(ds, cat, v) for (ds, cat), vs in found.items() if len(vs) >= need for v in vs}


def support_draws(profile: str) -> int:
    """Support sets per k in Table IV (its mean and spread): 2 under smoke, else 3."""
    return 2 if profile == "smoke" else 3


def shot_variant(k: int, draw: int) -> str:
    """The variant of a k-shot cell; draw 0 keeps the name it had before there were draws."""
    return f"shots={k}" if draw == 0 else f"shots={k},support_draw={draw}"


def _n2n(root: Path, profile: str) -> list[tuple]:
    out = []
    for c in D.present_categories(root, "mpdd"):
        for v in N2N_SWEEP:
            tags = ("table1", "table2", "table4", "table5") if v == "default" else ("table4",)
            out.append(("main", "mpdd", c, v, tags))
        out.append(("main", "mpdd", c, "ram=false", ("table5",)))
        out.append(("main", "mpdd", c, "reconstruction=blur", ("diagnostic",)))
        if c == "metal_plate":
            out += [("main", "mpdd", c, v, ("diagnostic",)) for v in N2N_EXTRA]
    out += [("main", "visa", c, "default", ("table3",)) for c in D.present_categories(root, "visa")]
    return out


def _tsdn(root: Path, profile: str) -> list[tuple]:
    t3 = set(paper_table("tsdn", "table3").category)
    t4 = set(paper_table("tsdn", "table4").category)
    only = claim_categories("tsdn", profile)
    out = []
    for c in D.present_categories(root, "mvtec_ad"):
        # every row on a printed category; off the claim categories of a profile that names
        # them, only the rows of the tables that print the category
        rows = TSDN_ROWS if c in t3 | t4 else ("default",)
        if only is not None and c not in only:
            printed = {*(TSDN_T3.values() if c in t3 else ()),
                       *(TSDN_T4.values() if c in t4 else ())}
            rows = tuple(v for v in rows if v in printed or v == "default")
        for v in rows:
            tags = ["table1", "table2"] if v == "default" else []
            tags += ["table3"] * (c in t3 and v in TSDN_T3.values())
            tags += ["table4"] * (c in t4 and v in TSDN_T4.values())
            out.append(("main", "mvtec_ad", c, v, tuple(tags) or ("diagnostic",)))
    for c in D.present_categories(root, "mpdd"):
        extra = TSDN_EXTRA if c == "metal_plate" else ()
        out += [("main", "mpdd", c, v, ("diagnostic",)) for v in (*TSDN_ROWS, *extra)]
    return out


def _pouta(root: Path, profile: str) -> list[tuple]:
    out = []
    for c in D.present_categories(root, "mvtec_ad"):
        for v in POUTA_ABLATION:
            tags = ("tableI", "tableV", "tableVI") if v == "default" else \
                ("tableV", "tableVI") if v == "model=vanilla" else ("tableV",)
            out.append(("main", "mvtec_ad", c, v, tags))
        out += [("main", "mvtec_ad", c, shot_variant(k, d), ("tableIV",))
                for k in POUTA_SHOTS for d in range(support_draws(profile))]
    out += [("main", "visa", c, "default", ("tableII",))
            for c in D.present_categories(root, "visa")]
    out += [("main", "dagm", c, "default", ("tableIII",))
            for c in D.present_categories(root, "dagm")]
    out += [("main", "mpdd", c, v, ("diagnostic",)) for c in D.present_categories(root, "mpdd")
            for v in ("default", "model=vanilla")]
    return out


def _puad(root: Path, profile: str) -> list[tuple]:
    out = []
    for c in D.present_categories(root, "mvtec_loco"):
        out += [("main", "mvtec_loco", c, v, ("table1", "table2")) for v in PUAD_SIZES]
        out.append(("controls", "mvtec_loco", c, "default", ("controls",)))
    return out


def _baseline(root: Path, profile: str) -> list[tuple]:
    return [("ae", ds, c, "default", ("learnability",))
            for ds in ("mvtec_ad", "mpdd", "visa", "mvtec_loco", "dagm")
            for c in D.present_categories(root, ds)[:2]]  # two categories per dataset suffice


_BUILDERS = {"baseline": _baseline, "n2n": _n2n, "tsdn": _tsdn, "pouta": _pouta, "puad": _puad}

# The matrix (notebook 05, issue 15): each method's paper configuration ("default" of its main
# experiment, scaled by the profile) on every category of every dataset present
MATRIX_PAPERS = ("n2n", "tsdn", "pouta", "puad")
MATRIX_DATASETS = ("mvtec_ad", "mpdd", "visa", "mvtec_loco", "dagm", "folder")


def _with_matrix(paper: str, built: list[tuple], root: Path) -> list[tuple]:
    """``built`` with the tag ``matrix`` on its default main cells and the missing ones added."""
    if paper not in MATRIX_PAPERS:
        return built
    out, seen = [], set()
    for exp, ds, cat, variant, tags in built:
        if exp == "main" and variant == "default" and ds in MATRIX_DATASETS:
            tags = (*tags, "matrix")
            seen.add((ds, cat))
        out.append((exp, ds, cat, variant, tags))
    out += [("main", ds, c, "default", ("matrix",)) for ds in MATRIX_DATASETS
            for c in D.present_categories(root, ds) if (ds, c) not in seen]
    return out


def cells(profile: str, root: Path, *, paper: str | Iterable[str] | None = None,
          table: str | None = None, dataset: str | None = None, category: str | None = None,
          experiment: str | None = None, seeds: Sequence[int] | None = None,
          matrix: bool = True) -> list[Cell]:
    """Every cell of ``profile`` on the categories under ``root``, filtered (None: all).
    ``matrix=False`` leaves out the cells that only the matrix (notebook 05) renders: a paper's
    own notebook shows its own datasets.
    ``seeds`` None: the profile's rule (claim cells :func:`claim_seeds`, the others seed 0);
    else every cell with exactly these seeds."""
    papers = PAPERS if paper is None else (paper,) if isinstance(paper, str) else tuple(paper)
    unknown = set(papers) - set(PAPERS)
    if unknown:
        raise ValueError(f"unknown paper(s) {sorted(unknown)}; known: {', '.join(PAPERS)}")
    out = []
    for p in papers:
        built = _with_matrix(p, _BUILDERS[p](Path(root), profile), Path(root))
        claim = _claim_cells(p, built, profile)
        for exp, ds, cat, variant, tags in built:
            if (not matrix and tags == ("matrix",)) or \
                    (table and table not in tags) or (dataset and ds != dataset) or \
                    (category and cat != category) or (experiment and exp != experiment):
                continue
            own = seeds if seeds is not None else claim_seeds(profile) \
                if exp == "main" and (ds, cat, variant) in claim else (0,)
            out += [Cell(p, exp, ds, cat, variant, s, tags) for s in own]
    return out


def _family(variant: str) -> str:
    """A variant without its support draw: the draws of one k cost the same."""
    return ",".join(p for p in variant.split(",") if not p.startswith("support_draw="))


def estimate_s(cell: Cell, current: Sequence[dict], other: Sequence[dict] = (),
               scale: Callable[[dict], float] | None = None) -> float:
    """Seconds one run of ``cell`` takes: the ``total_s`` of its own current record, else the
    median over the current records of the same paper, experiment, category and variant (other
    seeds; support draws pooled), else of the same category (its image size and image count set
    the cost more than the variant: TSDN's grid at 256 px costs four times its 128 px
    toothbrush), else of the same variant in other categories, else over the paper's current
    records; at each step the older records (``other``: a cell at another config, data or
    code costs about the same unless the budget changed) after the current ones and before the
    next step (a cheap diagnostic of the same category says little of a cell's own cost), else
    the constant of :data:`DEFAULT_COST_S`. Each record's time is multiplied by
    ``scale(record)`` (:func:`work_ratio` in :func:`plan`: the cell's training work over the
    record's, 1 for a record of the same config and category), so juice_bottle's training
    images are not priced as metal_plate's and grid at 256 px not as its older 128 px record."""
    k = cell.key("")
    fields = ("paper", "experiment", "dataset", "category", "variant", "seed")

    def seconds(recs, same):
        return [r["timings"]["total_s"] * (scale(r) if scale else 1.0)
                for r in recs if r.get("timings", {}).get("total_s") and same(r["key"])]

    def own(rk):
        return all(rk[f] == getattr(k, f) for f in fields)

    def family(rk):
        return rk["paper"] == k.paper and rk["experiment"] == k.experiment and \
            _family(rk["variant"]) == _family(k.variant)

    def paper(rk):
        return rk["paper"] == k.paper and rk["experiment"] == k.experiment

    def category(rk):
        return paper(rk) and rk["dataset"] == k.dataset and rk["category"] == k.category

    def family_in_category(rk):
        return family(rk) and category(rk)

    order = (own, family_in_category, category, family, paper)
    for recs, same in [(recs, same) for same in order for recs in (current, other)]:
        values = seconds(recs, same)
        if values:
            return float(median(values))
    return DEFAULT_COST_S[cell.paper]


@dataclass(frozen=True)
class PlanRow:
    cell: Cell
    status: str  # done | missing | stale | failed
    estimate_s: float
    error: str = ""
    source: str = "records"  # records | benchmark (repro.bench_train) | constant

    @property
    def guessed(self) -> bool:
        """The estimate is the per-paper constant: no record of this paper to measure from."""
        return self.source == "constant"


def bench_case(cell: Cell, config: dict) -> str:
    """The ``repro.bench_train`` case whose throughput a cell trains at."""
    if cell.paper == "pouta":
        return "pouta/vanilla" if config.get("model") == "vanilla" else "pouta"
    if cell.paper == "puad":
        return f"puad/{config['size']}"
    return cell.paper


def work(cell: Cell, config: dict, n_full: int) -> dict[str, float]:
    """What a cell trains, from its config and its category's number of normal training images
    ``n_full``: ``{"images": ...}`` (N2N: an upper bound, early stopping may end it sooner) or
    ``{"steps": ...}`` (PUAD's student); ``{}`` where no benchmark case applies."""
    if cell.paper == "pouta":
        from .methods.common import category_config
        from .methods.pouta import step_budget

        cfg = category_config(config, cell.dataset, cell.category)
        n = cfg["shots"] or n_full
        steps = step_budget(cfg, n, n_full)[1] + \
            step_budget(cfg, n, n_full, cfg["rec_warmup_epochs"])[1]
        return {"images": steps * cfg["batch_size"]}
    if cell.paper == "tsdn":
        return {"images": config["epochs"] * n_full}
    if cell.paper == "n2n":
        return {"images": config["max_epochs"] * round(n_full * (1 - config["val_fraction"]))}
    if cell.paper == "puad" and cell.experiment == "main":
        return {"steps": config["steps"]}
    return {}


def work_units(cell: Cell, config: dict, n_full: int) -> float | None:
    """One number proportional to a cell's training cost: :func:`work`'s images times the
    pixels per image (``train_crop`` or ``image_size`` squared, after the category's
    ``category_overrides``, where the config has one), or its steps; None where :func:`work`
    has nothing."""
    from .methods.common import category_config

    over = dict(config.get("category_overrides") or {})
    if cell.category in over:  # older records key an override by the bare category name
        over.setdefault(f"{cell.dataset}/{cell.category}", over.pop(cell.category))
    config = category_config({**config, "category_overrides": over}, cell.dataset, cell.category)
    todo = work(cell, config, n_full)
    if "images" in todo:  # a training window (POUTA's train_crop) costs its own pixels
        side = config.get("train_crop") or config.get("image_size") or 1
        return todo["images"] * float(side) ** 2
    return float(todo["steps"]) if "steps" in todo else None


def work_ratio(cell: Cell, config: dict, n_full: int, record: dict, n_record: int) -> float:
    """How much more (or less) ``cell`` trains than the cell of ``record`` (its config and its
    category's ``n_record`` training images): the ratio of :func:`work_units`, 1 where either
    is unknown (a config :func:`work` cannot read, an empty category)."""
    rk = record["key"]
    other = Cell(rk["paper"], rk["experiment"], rk["dataset"], rk["category"], rk["variant"],
                 rk["seed"], ())
    try:
        mine, theirs = work_units(cell, config, n_full), work_units(other, record["config"],
                                                                    n_record)
    except (KeyError, TypeError, ValueError):  # an older record's config
        return 1.0
    return mine / theirs if mine and theirs else 1.0


def bench_estimate_s(cell: Cell, config: dict, counts: tuple[int, int],
                     bench: dict) -> float | None:
    """Seconds from the measured throughput of ``bench`` (``repro.bench_train``): the cell's
    work over its case's training rate, plus its test images at the case's test rate; None
    where the file has no such case."""
    case = bench["cases"].get(bench_case(cell, config))
    todo = work(cell, config, counts[0])
    if not case or not todo:
        return None
    if "images" in todo and case.get("train_images_per_s"):
        train = todo["images"] / case["train_images_per_s"]
    elif "steps" in todo and case.get("train_steps_per_s"):
        train = todo["steps"] / case["train_steps_per_s"]
    else:
        return None
    return train + counts[1] * case.get("test_s_per_image", 0.0)


def teacher_estimate_s(config: dict, bench: dict) -> float:
    """PUAD: the distillation of one teacher (once per PDN size, shared by every category)."""
    from .methods.teacher import distil_steps

    if config.get("teacher_weights"):
        return 0.0
    rate = bench["cases"].get(f"puad/{config['size']}", {}).get("distil_steps_per_s")
    return distil_steps(config) / rate if rate else 0.0


def plan(profile: str, data_root: str | None = None, bench: dict | None = None,
         **filters) -> list[PlanRow]:
    """The status of every cell of ``profile`` (filters as :func:`cells`) and its estimate:
    from the records (:func:`estimate_s`), else for the ``paper`` profile from the measured
    throughput ``bench`` (a ``repro.bench_train`` file: :func:`bench_estimate_s`, the first
    PUAD cell of each size with its teacher's distillation), else the per-paper constant."""
    from .experiments import cell_identity, resolve_data_root, store_for
    from .profiles import get_profile

    root = resolve_data_root(data_root, get_profile(profile))
    store = store_for(profile)
    found = []
    for cell in cells(profile, root, **filters):
        key, config, did = cell_identity(cell.paper, cell.experiment, cell.dataset,
                                         cell.category, variant=cell.variant, seed=cell.seed,
                                         profile=profile, data_root=data_root)
        status = store.status(key, config, did)
        why = ""
        if status == "failed":
            why = (store.failure(key) or {}).get("error", "")
        elif status == "stale":  # which part of the identity changed
            reason = stale_reason(store.get(key), key, config, did)
            why = "a record of another cell" if reason == "other cell" else f"{reason} changed"
        found.append((cell, key, config, status, why))
    current = [store.get(key) for _, key, _, status, _ in found if status == "done"]
    other = [r for _, key, _, status, _ in found if status != "done" and (r := store.get(key))]

    @functools.cache
    def counts(dataset: str, category: str) -> tuple[int, int]:
        try:
            return _counts(root, dataset, category)
        except D.DatasetError:  # a record of a category absent here: priced unscaled
            return 0, 0

    rows, teachers = [], set()
    for cell, _key, config, status, why in found:
        n_full = counts(cell.dataset, cell.category)[0]

        def scale(rec, cell=cell, config=config, n_full=n_full):
            rk = rec["key"]
            return work_ratio(cell, config, n_full, rec, counts(rk["dataset"], rk["category"])[0])

        seconds, source = estimate_s(cell, current, other, scale), "records"
        if seconds == DEFAULT_COST_S[cell.paper]:
            source = "constant"
            if bench and profile == "paper":
                measured = bench_estimate_s(cell, config, counts(cell.dataset, cell.category),
                                            bench)
                if measured is not None:
                    seconds, source = measured, "benchmark"
                    if cell.paper == "puad" and config["size"] not in teachers:
                        teachers.add(config["size"])
                        seconds += teacher_estimate_s(config, bench)
        rows.append(PlanRow(cell, status, seconds, why, source))
    return rows


def _counts(root: Path, dataset: str, category: str) -> tuple[int, int]:
    """(normal training images, test images) of a category under ``root``."""
    train = [r for r in D.list_records(root, dataset, category, "train") if r.label == 0]
    return len(train), len(D.list_records(root, dataset, category, "test"))


def format_plan(rows: Sequence[PlanRow], profile: str, bench_note: str = "") -> str:
    """One line per cell, then the counts and the estimated hours of what is left (``b``: from
    the measured throughput, ``?``: a rough constant)."""
    mark = {"records": " ", "benchmark": "b", "constant": "?"}
    lines = [f"{r.status:8} {r.cell.label():70} ~{r.estimate_s / 60:6.1f} min"
             f"{mark[r.source]}{'  ' + r.error if r.error else ''}" for r in rows]
    counts = {s: sum(r.status == s for r in rows) for s in ("done", "missing", "stale", "failed")}
    left = sum(r.estimate_s for r in rows if r.status != "done")
    per_paper = {}
    for r in rows:
        if r.status != "done":
            per_paper[r.cell.paper] = per_paper.get(r.cell.paper, 0.0) + r.estimate_s
    where = "on the device of the records"
    if any(r.source == "benchmark" and r.status != "done" for r in rows):
        where += f" or of the throughput measured in {bench_note}" if bench_note else \
            " or of the measured throughput"
    lines.append(f"profile {profile}: {len(rows)} cells, " +
                 ", ".join(f"{n} {s}" for s, n in counts.items()) +
                 f"; left: about {left / 3600:.1f} h {where}" +
                 (" (" + ", ".join(f"{p} {s / 3600:.1f} h" for p, s in per_paper.items()) + ")"
                  if per_paper else ""))
    guessed = sum(r.guessed and r.status != "done" for r in rows)
    if guessed:
        lines.append(f"{guessed} of them (marked ?) have no record of their paper to time them "
                     "by: their estimate is a rough constant (repro.grid.DEFAULT_COST_S)")
    return "\n".join(lines)


def fetch(grid_cells: Sequence[Cell], *, profile: str, data_root: str | None = None,
          device: str = "auto", with_seed: bool = False) -> dict[tuple, dict]:
    """The record of each cell, ``{(dataset, category, variant): record}`` (cells of one seed),
    or with ``with_seed`` ``{(dataset, category, variant, seed): record}``, computing missing
    ones unless the store is read-only; a cell whose data is absent or that has no current
    record in a read-only store prints one "not run" line."""
    import time

    from .compute import headline
    from .data import DatasetError
    from .experiments import cell_identity, run_cell, store_for
    from .runs import RunMissingError

    records = {}
    store = store_for(profile)
    for c in grid_cells:
        try:
            computing = not store.readonly and store.status(*cell_identity(
                c.paper, c.experiment, c.dataset, c.category, variant=c.variant, seed=c.seed,
                profile=profile, data_root=data_root)) != "done"
            if computing:  # a long cell says what it is doing (papermill streams it)
                print(f"computing {c.label()} ...", flush=True)
                t0 = time.perf_counter()
            key = (c.dataset, c.category, c.variant) + ((c.seed,) if with_seed else ())
            rec = records[key] = run_cell(
                c.paper, c.experiment, c.dataset, c.category, variant=c.variant, seed=c.seed,
                profile=profile, data_root=data_root, device=device)
            if computing:
                print(f"  done in {time.perf_counter() - t0:.0f} s: {headline(rec['metrics'])}",
                      flush=True)
        except DatasetError as exc:
            print(f"{c.dataset}/{c.category} {c.variant} seed{c.seed}: not run ({exc})")
        except RunMissingError:  # read-only rendering: no record of the current configuration
            print(f"{c.dataset}/{c.category} {c.variant} seed{c.seed}: not run (no record for "
                  "the current configuration)")
    print(f"{len(records)} of {len(grid_cells)} cells have a record")
    return records
