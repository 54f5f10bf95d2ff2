"""The four methods across every dataset as one matrix (notebook 05, issue 15).

Each method runs at its paper configuration scaled by the profile (the ``default`` cell of its
main experiment; ``repro.grid`` tags these cells ``matrix``). The same names for the same
quantities across methods:

* ``image_auroc``: good vs every defective test image (MVTec LOCO: the pooled AUROC, PUAD's
  convention); PUAD's column is the PUAD score, ``efficientad`` is also kept;
* ``pixel_auroc``, ``aupro``: from each method's anomaly map (PUAD: EfficientAD's map);
  MVTec LOCO has ``spro`` instead (AU-sPRO at FPR 0.05, where the masks allow it);
* ``train_s`` and ``latency_ms`` (batch 1, image in -> score out, at the record's size).
"""

from __future__ import annotations

import math

import pandas as pd

METHODS = {"n2n": "Noise-to-Norm", "tsdn": "TSDN", "pouta": "POUTA", "puad": "PUAD"}
METRICS = ("image_auroc", "pixel_auroc", "aupro", "spro")


def _get(m: dict, *keys: str) -> float:
    for k in keys:
        v = m.get(k)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            return float(v)
    return math.nan


def latency_ms(record: dict) -> float:
    x = record.get("extra", {})
    lat = x.get("latency_ms")
    if isinstance(lat, dict):  # PUAD: both scores of one network
        return float(lat.get("puad", math.nan))
    if isinstance(lat, (int, float)):
        return float(lat)
    return float(x.get("cost", {}).get("latency_ms", math.nan))


def row(paper: str, record: dict) -> dict:
    """One method on one category: the shared metric names (see the module docstring)."""
    m, k = record["metrics"], record["key"]
    if paper == "puad":
        values = {"image_auroc": _get(m, "puad/auroc_pooled"),
                  "efficientad_image_auroc": _get(m, "efficientad/auroc_pooled"),
                  "pixel_auroc": _get(m, "efficientad/pixel_auroc"),
                  "aupro": _get(m, "efficientad/aupro"),
                  "spro": _get(m, "efficientad/spro_0.05")}
    else:
        values = {"image_auroc": _get(m, "image_auroc", "auroc_pooled"),
                  "pixel_auroc": _get(m, "pixel_auroc"), "aupro": _get(m, "aupro"),
                  "spro": _get(m, "spro_0.05")}
    return {"method": METHODS[paper], "dataset": k["dataset"], "category": k["category"],
            "seed": k["seed"], **values,
            "train_s": float(record.get("timings", {}).get("train_s", math.nan)),
            "total_s": float(record.get("timings", {}).get("total_s", math.nan)),
            "latency_ms": latency_ms(record), "device": record.get("device", ""),
            "data": record.get("data", {}).get("kind", "")}


def long_table(records: dict[str, dict]) -> pd.DataFrame:
    """``records``: ``{paper: {(dataset, category, variant): record}}`` -> one row per method
    and category."""
    rows = [row(paper, rec) for paper, recs in records.items() for rec in recs.values()]
    cols = ["method", "dataset", "category", "seed", "image_auroc", "efficientad_image_auroc",
            "pixel_auroc", "aupro", "spro", "train_s", "total_s", "latency_ms", "device", "data"]
    return pd.DataFrame(rows, columns=cols)


def wide(df: pd.DataFrame, metric: str, cells: list[tuple[str, str]] | None = None
         ) -> pd.DataFrame:
    """Categories as rows (``dataset/category``), methods as columns, in percent; every cell of
    ``cells`` gets a row, a method without a record shows NaN ("not run")."""
    methods = list(METHODS.values())
    if df.empty:
        index = [f"{d}/{c}" for d, c in cells or []]
        return pd.DataFrame(index=index, columns=methods, dtype=float)
    view = df.assign(cell=df.dataset + "/" + df.category).pivot_table(
        index="cell", columns="method", values=metric, aggfunc="mean", sort=False)
    index = [f"{d}/{c}" for d, c in cells] if cells else list(view.index)
    return 100 * view.reindex(index=index, columns=methods)


def winners(df: pd.DataFrame, metric: str = "image_auroc") -> pd.DataFrame:
    """Per dataset: the categories with a value for every method, each method's mean over those
    same categories (like for like), and the method with the highest mean. Datasets with no
    category on which all four ran are left out (no comparison over unlike sets)."""
    out = []
    for ds, sub in df.groupby("dataset", sort=False):
        table = sub.pivot_table(index="category", columns="method", values=metric)
        table = table.reindex(columns=list(METHODS.values())).dropna()
        if table.empty:
            continue
        means = 100 * table.mean()
        out.append({"dataset": ds, "categories": len(table), **means.round(2).to_dict(),
                    "best": means.idxmax(), "margin to 2nd": round(float(
                        means.sort_values().iloc[-1] - means.sort_values().iloc[-2]), 2)})
    return pd.DataFrame(out)


def reading(win: pd.DataFrame, profile: str) -> str:
    """A short reading of :func:`winners`, with the caveat of the profile."""
    if win.empty:
        return "No dataset has a record of all four methods yet: no reading."
    lines = []
    for d in win.to_dict("records"):
        lines.append(f"- **{d['dataset']}** ({d['categories']} categor"
                     f"{'y' if d['categories'] == 1 else 'ies'}): {d['best']} leads by "
                     f"{d['margin to 2nd']:.1f} points of image AUROC.")
    caveat = {"smoke": "Smoke runs are synthetic images and a handful of steps: this checks the "
                       "code path and says nothing about which method works on real parts.",
              "real_subset": "real_subset: a few categories with reduced training budgets on a "
                             "CPU and one seed per cell here (the claim cells have three); a "
                             "lead of a few points on tens of test images is within noise."}
    return "\n".join(lines + ["", caveat.get(profile, "")])
