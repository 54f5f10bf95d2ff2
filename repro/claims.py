"""The papers' claims and the statistics behind a verdict (issue 13).

A claim says one row of a paper's table beats another, e.g. "lambda 0.3 beats lambda 0". Our
evidence for it is the **paired difference** of the two rows' metric, better minus worse, in
points, over the same test images:

* per category and seed, the metric of each row on the same bootstrap resample of the test
  images (stratified by image label, so both classes stay present);
* pooled: the mean over the category's seeds (the seeds themselves resampled with replacement),
  then the mean over the categories. The point estimate is that mean without resampling; the
  95 % interval is the 2.5th and 97.5th percentile of ``N_BOOT`` resamples
  (:func:`paired_difference`).

Image AUROC resamples the per-image scores of the records; pixel AUROC resamples per-image
pixel-score histograms (``repro.pixelstats``; the run keeps them in its arrays).

**Verdict** (:func:`verdict`; the rule is printed with every claims table):

* ``supported``: the interval lies above zero (the paper's direction: better > worse);
* ``contradicted``: the interval lies below zero;
* ``inconclusive``: the interval contains zero, fewer than ``MIN_SEEDS`` seeds back a category,
  or a run behind it has not converged (:func:`converged`).

The paper's own difference is shown beside ours, over the same categories when the paper prints
per-category values (like for like), else its mean, labelled with its number of categories.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from .metrics import image_auroc
from .pixelstats import binned_auroc

N_BOOT = 2000
LEVEL = 0.95
MIN_SEEDS = 3
CONVERGENCE_FALL = 0.05  # a loss that still falls by more than 5 % over the last tenth ...
CONVERGENCE_T = 2.0  # ... and by more than twice the standard error of that fall (noisy terms)
# per method: where in the history the check ends (PUAD: before its printed lr drop at 95 %)
CONVERGENCE_END = {"puad": 0.95}
RULE = (f"Verdict rule: our paired difference (better - worse, points) with its {LEVEL:.0%} "
        f"bootstrap interval over test images and seeds ({N_BOOT} resamples): supported if the "
        f"interval is above 0, contradicted if below 0, inconclusive if it contains 0, if a "
        f"category has fewer than {MIN_SEEDS} seeds, or if a run behind it did not converge "
        f"(a loss term still falling over its last tenth, by more than {CONVERGENCE_FALL:.0%} "
        f"and by more than {CONVERGENCE_T:g} standard errors).")


@dataclass(frozen=True)
class Claim:
    paper: str
    text: str  # the claim in words
    better: str  # our variant of the row the paper finds better
    worse: str
    table: str  # the paper's table the claim is read from
    paper_better: str  # the paper table's variant of each row
    paper_worse: str
    metric: str = "image_auroc"  # image_auroc or pixel_auroc
    dataset: str = ""
    method: str = ""  # the paper table's method column
    scores: tuple[str, str] | None = None  # PUAD: two score names of the same record


CLAIMS: dict[str, list[Claim]] = {
    "n2n": [
        Claim("n2n", "noise blending: lambda 0.3 beats lambda 0", "default", "lam=0", "table4",
              "lambda=0.3", "lambda=0", dataset="mpdd", method="noise_to_norm"),
        Claim("n2n", "the residual attention module beats a 1x1 conv", "default", "ram=false",
              "table5", "ram=on", "ram=off", dataset="mpdd", method="noise_to_norm"),
        Claim("n2n", "noise blending: lambda 0.3 beats lambda 0", "default", "lam=0", "table4",
              "lambda=0.3", "lambda=0", "pixel_auroc", "mpdd", "noise_to_norm"),
        Claim("n2n", "the residual attention module beats a 1x1 conv", "default", "ram=false",
              "table5", "ram=on", "ram=off", "pixel_auroc", "mpdd", "noise_to_norm"),
    ],
    "tsdn": [
        Claim("tsdn", "skips hurt the plain AE (Table 3 A > B)", "model=t4_A", "model=t4_C",
              "table3", "A", "B", "pixel_auroc", "mvtec_ad", "tsdn"),
        Claim("tsdn", "skips help TSDN (Table 3 D > C)", "default", "model=t3_C", "table3", "D",
              "C", "pixel_auroc", "mvtec_ad", "tsdn"),
        Claim("tsdn", "SURF helps the AE (Table 4 B > A)", "model=t4_B", "model=t4_A", "table4",
              "B", "A", "pixel_auroc", "mvtec_ad", "tsdn"),
        Claim("tsdn", "SURF helps the AE with skips (Table 4 D > C)", "model=t4_D", "model=t4_C",
              "table4", "D", "C", "pixel_auroc", "mvtec_ad", "tsdn"),
        Claim("tsdn", "two streams help (Table 4 E > D)", "model=t4_E", "model=t4_D", "table4",
              "E", "D", "pixel_auroc", "mvtec_ad", "tsdn"),
        Claim("tsdn", "the FNE helps (Table 4 F > E)", "default", "model=t4_E", "table4", "F",
              "E", "pixel_auroc", "mvtec_ad", "tsdn"),
    ],
    "pouta": [
        Claim("pouta", "POUTA beats the vanilla network (Table V)", "default", "model=vanilla",
              "tableV", "pouta", "vanilla", dataset="mvtec_ad", method="pouta"),
        Claim("pouta", "POUTA beats the vanilla network (Table V)", "default", "model=vanilla",
              "tableV", "pouta", "vanilla", "pixel_auroc", "mvtec_ad", "pouta"),
    ],
    "puad": [
        # ours: the AUROC of good against every anomalous test image from the per-image
        # scores (pooled); Table 3 does not say how its per-category AUROC pools the logical
        # and structural images (its mean matches Table 2), read as the same pooled AUROC
        Claim("puad", "PUAD beats EfficientAD-S (Table 3)", "default", "default", "table3", "",
              "", dataset="mvtec_loco", method="puad", scores=("puad", "efficientad")),
    ],
}
NOTEBOOK = {"n2n": "01_noise_to_norm.ipynb", "tsdn": "02_tsdn.ipynb", "pouta": "03_pouta.ipynb",
            "puad": "04_puad.ipynb"}

# per method: the loss terms of its history and the part of the history the check reads
LOSS_KEYS = {"n2n": ("train_loss", "val_loss"), "tsdn": ("r", "s", "g", "m", "f"),
             "pouta": ("rec", "pre", "mss"), "puad": ("st_ae", "ae", "hard", "penalty"),
             "baseline": ("loss",)}


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def auroc_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Image AUROC of each row of ``scores`` (R, n) for one label vector (ties count half): the
    batched form of ``repro.metrics.image_auroc`` for thousands of bootstrap resamples."""
    labels = np.asarray(labels).astype(bool)
    ranks = rankdata(np.atleast_2d(scores), axis=-1)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    return (ranks[:, labels].sum(-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


@dataclass
class Unit:
    """One category and seed of a claim: both rows' per-image evidence on the same test images.
    Image AUROC: ``labels`` and scores ``a`` (better) and ``b`` (worse); pixel AUROC: ``a`` and
    ``b`` are (n, 2, bins) histograms and ``labels`` the image labels (for stratifying)."""

    category: str
    seed: int
    labels: np.ndarray
    a: np.ndarray
    b: np.ndarray
    kind: str = "image_auroc"

    def metric(self, which: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        if self.kind == "pixel_auroc":
            h = which.reshape(len(which), -1).astype(np.float64)
            if weights is None:
                return binned_auroc(h.sum(0).reshape(which.shape[1:]))
            return binned_auroc((weights @ h).reshape(len(weights), *which.shape[1:]))
        if weights is None:
            return image_auroc(self.labels, which)
        # a stratified resample keeps the label layout: every row has the labels of the first
        return auroc_rows(self.labels[weights[0]], which[weights])

    def difference(self) -> float:
        return float(self.metric(self.a) - self.metric(self.b))

    def resampled(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` bootstrap differences, both rows on the same stratified resample."""
        groups = [np.flatnonzero(self.labels == v) for v in (0, 1)]
        if self.kind == "pixel_auroc":  # resample counts per image: weights (n, images)
            w = np.zeros((n, len(self.labels)))
            for g in groups:
                if len(g):
                    w[:, g] = rng.multinomial(len(g), np.full(len(g), 1 / len(g)), size=n)
            return self.metric(self.a, w) - self.metric(self.b, w)
        idx = np.concatenate([g[rng.integers(0, len(g), (n, len(g)))] for g in groups if len(g)],
                             axis=1)
        return self.metric(self.a, idx) - self.metric(self.b, idx)


@dataclass
class Difference:
    mean: float  # points (x100)
    lo: float
    hi: float
    categories: tuple[str, ...]
    seeds: dict[str, int] = field(default_factory=dict)  # seeds per category

    @property
    def min_seeds(self) -> int:
        return min(self.seeds.values()) if self.seeds else 0


def paired_difference(units: Sequence[Unit], n_boot: int = N_BOOT, seed: int = 0) -> Difference:
    """The pooled paired difference (points) and its bootstrap interval; see the module doc."""
    if not units:
        raise ValueError("no units: neither row has a record")
    rng = np.random.default_rng(seed)
    by_cat: dict[str, list[Unit]] = {}
    for u in units:
        by_cat.setdefault(u.category, []).append(u)
    point = np.mean([np.mean([u.difference() for u in us]) for us in by_cat.values()])
    reps = np.zeros(n_boot)
    for us in by_cat.values():
        boot = np.stack([u.resampled(n_boot, rng) for u in us])  # (seeds, n_boot)
        k = len(us)
        pick = rng.integers(0, k, (n_boot, k))  # seeds with replacement
        col = rng.integers(0, n_boot, (n_boot, k))  # an independent image resample for each
        reps += boot[pick, col].mean(1)
    reps /= len(by_cat)
    alpha = (1 - LEVEL) / 2
    lo, hi = np.quantile(reps, [alpha, 1 - alpha])
    return Difference(100 * float(point), 100 * float(lo), 100 * float(hi),
                      tuple(sorted(by_cat)), {c: len(us) for c, us in by_cat.items()})


def verdict(diff: Difference, converged: bool = True) -> str:
    """``supported``, ``contradicted`` or ``inconclusive (why)`` by :data:`RULE`."""
    if not converged:
        return "inconclusive (not converged)"
    if diff.min_seeds < MIN_SEEDS:
        return f"inconclusive ({diff.min_seeds} seed{'s' * (diff.min_seeds != 1)})"
    if diff.lo > 0:
        return "supported"
    if diff.hi < 0:
        return "contradicted"
    return "inconclusive"


def converged(history: Sequence[Mapping], keys: Iterable[str], fall: float = CONVERGENCE_FALL,
              t_min: float = CONVERGENCE_T, end: float = 1.0) -> tuple[bool, list[str]]:
    """(converged, the loss terms still falling): a term whose mean over the second half of
    the last tenth of the history (up to the fraction ``end`` of it) is below its mean over
    the first half by more than ``fall`` (relative) and by more than ``t_min`` standard errors
    of that difference (so the noise of a batch-1 loss is not read as a trend). Entries without
    the term (POUTA's warm-up has no segmentation loss) are skipped."""
    falling = []
    history = list(history)[:max(1, round(len(history) * end))]
    for key in keys:
        values = np.array([h[key] for h in history if h.get(key) is not None], dtype=float)
        if len(values) < 4:
            continue
        tail = values[-max(4, len(values) // 10):]
        a, b = tail[: len(tail) // 2], tail[len(tail) // 2:]
        drop = a.mean() - b.mean()
        se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        if drop > fall * abs(a.mean()) and drop > t_min * se:
            falling.append(f"{key} {a.mean():.4g} -> {b.mean():.4g}")
    return not falling, falling


# ---------------------------------------------------------------------------------------------
# From records to a claims table
# ---------------------------------------------------------------------------------------------


def _evidence(rec: dict, arrays: Mapping | None, claim: Claim, which: str) -> np.ndarray | None:
    if claim.metric == "pixel_auroc":
        return None if arrays is None or "pixel_hist" not in arrays else arrays["pixel_hist"]
    scores = rec["extra"]["scores"]
    if claim.scores:
        return np.asarray(scores[claim.scores[0 if which == "a" else 1]], dtype=float)
    return np.asarray(scores, dtype=float)


def _labels(rec: dict) -> np.ndarray:
    if "labels" in rec["extra"]:
        return np.asarray(rec["extra"]["labels"])
    return np.array([t != "good" for t in rec["extra"]["defect_types"]], dtype=int)  # LOCO


def units_of(claim: Claim, records: Mapping[tuple, dict],
             arrays: Mapping[tuple, Mapping] | None = None) -> list[Unit]:
    """The claim's units from ``records`` keyed (dataset, category, variant, seed) (and their
    arrays, for pixel AUROC); a category and seed counts only when both rows have a record."""
    arrays = arrays or {}
    out = []
    for (ds, cat, variant, seed), rec in sorted(records.items()):
        if ds != claim.dataset or variant != claim.better:
            continue
        other = records.get((ds, cat, claim.worse, seed))
        if other is None:
            continue
        a = _evidence(rec, arrays.get((ds, cat, variant, seed)), claim, "a")
        b = _evidence(other, arrays.get((ds, cat, claim.worse, seed)), claim, "b")
        if a is None or b is None:
            continue
        out.append(Unit(cat, seed, _labels(rec), a, b, claim.metric))
    return out


def paper_difference(claim: Claim, categories: Sequence[str]) -> tuple[float, str]:
    """The paper's difference (points) over our categories where it prints them (like for
    like), else its mean, and a note saying which."""
    from .tables import paper_table

    df = paper_table(claim.paper, claim.table)
    methods = [claim.method, "efficientad"] if claim.scores else [claim.method]
    df = df[(df.dataset == claim.dataset) & (df.metric == claim.metric)
            & df.method.isin(methods)]

    def rows(variant: str, method: str | None = None) -> pd.Series:
        sel = df[df.variant.fillna("") == variant]
        if method:
            sel = sel[sel.method == method]
        return sel.set_index("category")["value"]

    if claim.scores:
        better, worse = rows("", "puad"), rows("", "efficientad")
    else:
        better, worse = rows(claim.paper_better), rows(claim.paper_worse)
    printed = sorted((set(better.index) & set(worse.index)) - {"mean"})
    same = [c for c in categories if c in printed]
    if same and len(same) == len(categories):
        return float((better[same] - worse[same]).mean()), \
            "same category" if len(same) == 1 else f"same {len(same)} categories"
    from .data import categories as official

    # a mean-only table (POUTA's Table V) averages the dataset's official categories
    n_paper = len(printed) or len(official(claim.dataset)) or "?"
    if "mean" in better.index and "mean" in worse.index:
        return float(better["mean"] - worse["mean"]), \
            f"paper mean over {n_paper} categories, ours over {len(categories)}"
    if printed:
        return float((better[printed] - worse[printed]).mean()), \
            f"paper over its {len(printed)} categories, ours over {len(categories)}"
    return float("nan"), "not printed"


def claims_table(paper: str, records: Mapping[tuple, dict], profile: str,
                 arrays: Mapping[tuple, Mapping] | None = None,
                 n_boot: int = N_BOOT) -> pd.DataFrame:
    """One row per claim of ``paper``: ours with interval, the paper's, what backs it, the
    verdict. ``records`` keyed (dataset, category, variant, seed)."""
    keys = LOSS_KEYS.get(paper, ())
    rows = []
    for claim in CLAIMS[paper]:
        units = units_of(claim, records, arrays)
        row = {"paper": paper, "profile": profile, "claim": claim.text, "metric": claim.metric,
               "notebook": NOTEBOOK[paper]}
        if not units:
            rows.append({**row, "ours": np.nan, "lo": np.nan, "hi": np.nan, "paper_diff": np.nan,
                         "paper_note": "", "categories": "", "seeds": 0,
                         "not_converged": "", "verdict": "not run"})
            continue
        diff = paired_difference(units, n_boot)
        still = []
        for u in units:
            for variant in {claim.better, claim.worse}:
                rec = records[(claim.dataset, u.category, variant, u.seed)]
                ok, falling = converged(rec["extra"].get("history", []), keys,
                                        end=CONVERGENCE_END.get(paper, 1.0))
                if not ok:
                    still.append(f"{u.category}/{variant}/seed{u.seed}: {', '.join(falling)}")
        p, note = paper_difference(claim, diff.categories)
        rows.append({**row, "ours": diff.mean, "lo": diff.lo, "hi": diff.hi, "paper_diff": p,
                     "paper_note": note, "categories": ", ".join(diff.categories),
                     "seeds": diff.min_seeds, "not_converged": "; ".join(sorted(set(still))),
                     "verdict": verdict(diff, converged=not still)})
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame, link_prefix: str | None = "") -> str:
    """The claims table as Markdown: claim, ours [interval], paper, backing, verdict; each
    claim links to ``<link_prefix><notebook>`` (None: no links)."""
    lines = ["| claim | metric | ours (points) [95 % CI] | paper | categories x seeds | "
             "verdict |", "|---|---|---|---|---|---|"]
    for r in table.itertuples():
        ours = "not run" if np.isnan(r.ours) else f"{r.ours:+.2f} [{r.lo:+.2f}, {r.hi:+.2f}]"
        paper = "-" if np.isnan(r.paper_diff) else f"{r.paper_diff:+.2f} ({r.paper_note})"
        back = f"{r.categories} x {r.seeds}" if r.categories else "-"
        claim = f"[{r.claim}]({link_prefix}{r.notebook})" if link_prefix is not None else r.claim
        lines.append(f"| {claim} | {r.metric} | {ours} | {paper} | {back} | {r.verdict} |")
    return "\n".join(lines) + "\n"


def current_records(paper: str, profile: str, data_root: str | None = None
                    ) -> tuple[dict[tuple, dict], dict[tuple, Mapping]]:
    """The current records (and arrays) of ``paper``'s claim cells under ``profile``, keyed
    (dataset, category, variant, seed): read only, nothing is computed; a stale record does
    not count."""
    from . import grid
    from .experiments import cell_identity, resolve_data_root, store_for
    from .profiles import get_profile

    root = resolve_data_root(data_root, get_profile(profile))
    store = store_for(profile)
    variants = {v for c in CLAIMS[paper] for v in (c.better, c.worse)}
    only = grid.claim_categories(paper, profile)
    records, arrays = {}, {}
    for cell in grid.cells(profile, root, paper=paper, experiment="main", matrix=False):
        if cell.variant not in variants or (only is not None and cell.category not in only):
            continue
        key, config, did = cell_identity(cell.paper, cell.experiment, cell.dataset,
                                         cell.category, variant=cell.variant, seed=cell.seed,
                                         profile=profile, data_root=data_root)
        if store.status(key, config, did) == "done":
            k = (cell.dataset, cell.category, cell.variant, cell.seed)
            records[k], arrays[k] = store.get(key), store.arrays(key)
    return records, arrays


def all_claims(profile: str, data_root: str | None = None, n_boot: int = N_BOOT
               ) -> pd.DataFrame:
    """Every paper's claims table under ``profile`` (empty where the data is absent)."""
    from .data import DatasetError

    tables = []
    for paper in CLAIMS:
        try:
            records, arrays = current_records(paper, profile, data_root)
        except DatasetError:
            continue
        tables.append(claims_table(paper, records, profile, arrays, n_boot))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def show(paper: str, profile: str, data_root: str | None = None) -> pd.DataFrame:
    """Display ``paper``'s claims table under ``profile`` in a notebook (Markdown: the rule, the
    table, the runs that had not converged) and return it."""
    from .report import md

    records, arrays = current_records(paper, profile, data_root)
    table = claims_table(paper, records, profile, arrays)
    text = [RULE, "", to_markdown(table, link_prefix=None)]
    if profile == "smoke":
        text.insert(0, "**smoke**: tiny synthetic data and a few steps; these verdicts check "
                       "the code path and say nothing about the paper.\n")
    late = []
    for r in table.itertuples():
        runs = r.not_converged.split("; ") if r.not_converged else []
        if runs:
            more = f"; and {len(runs) - 3} more" if len(runs) > 3 else ""
            late.append(f"- {r.claim} ({r.metric}): {'; '.join(runs[:3])}{more}")
    if late:
        text += ["Runs whose losses were still falling (the claim is inconclusive):", *late]
    md("\n".join(text))
    return table
