"""Helpers the notebooks share: dataset inventories, sample grids, saving figures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .data import DATASETS, DatasetError, Record, list_records, load_mask, present_categories
from .data import read_image as _read_image
from .tables import output_dir

SPLITS_OF = {name: fmt.splits for name, fmt in DATASETS.items()}


def inventory(data_root: Path, datasets: Sequence[str] | None = None) -> pd.DataFrame:
    """Counts per dataset, category, split and defect type of what is under ``data_root``.

    A category whose folder exists but does not load is listed with its error in ``problem``.
    """
    rows = []
    for ds in datasets or DATASETS:
        for cat in present_categories(data_root, ds):
            for split in SPLITS_OF[ds]:
                try:
                    recs = list_records(data_root, ds, cat, split)
                except DatasetError as exc:
                    rows.append({"dataset": ds, "category": cat, "split": split,
                                 "defect_type": "", "images": 0, "masks": 0,
                                 "problem": str(exc).replace(str(data_root), "$DATA_ROOT")})
                    continue
                for dt in sorted({r.defect_type for r in recs}):
                    sel = [r for r in recs if r.defect_type == dt]
                    rows.append({"dataset": ds, "category": cat, "split": split,
                                 "defect_type": dt, "images": len(sel),
                                 "masks": sum(len(r.mask_paths) for r in sel), "problem": ""})
    return pd.DataFrame(rows, columns=["dataset", "category", "split", "defect_type", "images",
                                       "masks", "problem"])


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Image (H, W, 3) in [0, 1] with the mask tinted red."""
    out = image.copy()
    out[mask] = (1 - alpha) * out[mask] + alpha * np.array([1.0, 0.0, 0.0])
    return out


def pick_examples(records: Sequence[Record], n_defect: int = 3) -> list[Record]:
    """One normal image and up to ``n_defect`` anomalous ones of different defect types."""
    good = [r for r in records if r.label == 0][:1]
    bad, seen = [], set()
    for r in records:
        if r.label == 1 and r.defect_type not in seen:
            bad.append(r)
            seen.add(r.defect_type)
    for r in records:  # fill up when there are fewer defect types than slots
        if len(bad) >= n_defect:
            break
        if r.label == 1 and r not in bad:
            bad.append(r)
    return good + bad[:n_defect]


def sample_grid(rows: Sequence[tuple[str, Sequence[Record]]], size: int = 160) -> plt.Figure:
    """A grid: one row per (title, records), masks overlaid in red."""
    ncol = max(len(r) for _, r in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.1 * ncol, 2.3 * len(rows)),
                             squeeze=False)
    for i, (title, recs) in enumerate(rows):
        for j in range(ncol):
            ax = axes[i, j]
            ax.axis("off")
            if j >= len(recs):
                continue
            rec = recs[j]
            img = _read_image(rec.path, None)
            h, w = img.shape[1:]
            scale = size / max(h, w)
            hw = (max(1, round(h * scale)), max(1, round(w * scale)))
            img = _read_image(rec.path, hw).permute(1, 2, 0).numpy()
            ax.imshow(overlay(img, load_mask(rec, hw)))
            ax.set_title(f"{title}\n{rec.defect_type}" if j == 0 else rec.defect_type,
                         fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, profile: str, name: str) -> Path:
    """PNG under ``<results>/<profile>/figures/`` (the staging folder during ``make
    reproduce``); Agg PNGs are byte-stable across runs."""
    path = output_dir(profile) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    return path


def convergence(records: dict, paper: str, profile: str) -> pd.DataFrame:
    """Every loss term of every run (``repro.claims.LOSS_KEYS``): one panel per term, one line
    per run (x: the history's epoch or step), saved as ``figures/<paper>_losses.png``; and one
    row per run saying whether it converged by ``repro.claims.converged`` (a run that had not
    makes the claims it backs inconclusive). ``records`` keyed (dataset, category, variant)."""
    from .claims import CONVERGENCE_END, CONVERGENCE_FALL, LOSS_KEYS, converged

    keys = LOSS_KEYS[paper]
    rows = []
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
    for (ds, cat, variant), rec in sorted(records.items()):
        history = rec["extra"].get("history") or []
        ok, falling = converged(history, keys, end=CONVERGENCE_END.get(paper, 1.0))
        rows.append({"data": f"{ds}/{cat}", "variant": variant, "entries": len(history),
                     "converged": "yes" if ok else "NO", "still falling": "; ".join(falling)})
        for ax, key in zip(axes[0], keys, strict=True):
            pts = [(h.get("epoch", h.get("step")), h[key]) for h in history
                   if h.get(key) is not None]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, y, lw=0.8, alpha=0.7,
                        label=f"{cat} {variant}" if len(records) <= 8 else None)
    for ax, key in zip(axes[0], keys, strict=True):
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch or step", fontsize=8)
        if ax.get_lines() and min(min(line.get_ydata()) for line in ax.get_lines()) > 0:
            ax.set_yscale("log")
    if len(records) <= 8 and axes[0, 0].get_legend_handles_labels()[0]:
        axes[0, -1].legend(fontsize=6, loc="upper right")
    fig.suptitle(f"{paper}: every loss term of every run ({profile}); not converged: a term "
                 f"still falling over the last tenth (> {CONVERGENCE_FALL:.0%}, > 2 s.e.)",
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, profile, f"{paper}_losses")
    return pd.DataFrame(rows, columns=["data", "variant", "entries", "converged",
                                       "still falling"])


def show_table(df: pd.DataFrame, floatfmt: str = ".2f", max_rows: int = 40) -> None:
    """A DataFrame as a Markdown table in the notebook (GitHub and JupyterLab render it)."""
    more = f"\n\n({len(df) - max_rows} more rows in the CSV)" if len(df) > max_rows else ""
    md(df.head(max_rows).to_markdown(index=False, floatfmt=floatfmt) + more)


def show_long(df: pd.DataFrame, columns: Sequence[str] | None = None, floatfmt: str = ".2f",
              index: bool = True) -> None:
    """A long-format table (ours beside the paper's) as Markdown, "-" for a missing cell;
    ``columns`` picks and orders them, with ``value`` shown as "ours" and ``paper_value`` as
    "paper"."""
    if columns is not None:
        df = df[list(columns)].rename(columns={"value": "ours", "paper_value": "paper"})
    md(df.to_markdown(index=index, floatfmt=floatfmt).replace(" nan ", "   - "))


def standin_notice(records: Sequence[dict], profile: str, what: str = "this table") -> None:
    """Above a table built from runs that used a stand-in (the record's ``weights``: the list
    ``standins``, or ``standin`` with its ``note``): a red box under the ``paper`` profile,
    where it changes what the numbers mean, and one line under the other profiles."""
    records = list(records)
    used = [r for r in records if r["weights"].get("standin")]
    if not used:
        return
    names = sorted({s for r in used
                    for s in (r["weights"].get("standins") or [r["weights"]["note"]])})
    if profile == "paper":
        from IPython.display import HTML, display

        items = "".join(f"<li>{s}</li>" for s in names)
        display(HTML(f'<div style="border:2px solid #c00;background:#fee;padding:6px 10px">'
                     f"<b>Stand-in, not the paper's setting:</b> {len(used)} of {len(records)} "
                     f"runs behind {what} used<ul>{items}</ul>Put the published weights under "
                     "TORCH_HOME/hub/checkpoints (PUAD's ImageNet images: set imagenet_dir) to "
                     "run as printed.</div>"))
    else:
        print(f"note: {len(used)} of {len(records)} runs behind {what} use a stand-in: "
              f"{'; '.join(names)}")


def md(text: str) -> None:
    """Show Markdown (a table, a provenance header with its bold labels) as rendered Markdown
    in the notebook, not as printed text."""
    from IPython.display import Markdown, display

    display(Markdown(text))


def plot_ours_vs_paper(joined: pd.DataFrame, metric: str, title: str, profile: str, name: str,
                  method: str | None = None, variant: str | None = None) -> plt.Figure:
    """Per category: our value (bar; error bar: standard deviation over seeds, where there
    are several) beside the paper's printed value (marker), for one metric of a joined table
    (``repro.tables.join_with_paper``); saved as ``figures/<name>.png``."""
    df = joined[joined["metric"] == metric]
    if method is not None:
        df = df[df["method"] == method]
    if variant is not None:
        df = df[df["variant"].fillna("") == variant]
    df = df[df["value"].notna() | df["paper_value"].notna()]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(df) + 1.5), 3.0))
    x = np.arange(len(df))
    sd = df["sd"].fillna(0).to_numpy() if "sd" in df else None
    ax.bar(x, df["value"].fillna(0), yerr=sd, capsize=2, color="tab:blue", alpha=0.8,
           label="ours (sd over seeds)")
    ax.plot(x, df["paper_value"], "o", color="tab:red", ms=5, label="paper")
    seeds = df["seeds"].fillna(0).astype(int) if "seeds" in df else [1] * len(df)
    ax.set_xticks(x, [f"{c}\n({s} seed{'s' * (s != 1)})" if s else f"{c}\n(not run)"
                      for c, s in zip(df["category"], seeds, strict=True)],
                  rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    save_figure(fig, profile, name)
    return fig


def select(runs: dict, dataset: str, variants) -> list[dict]:
    """The records of ``runs`` (keyed (dataset, category, variant, seed), ``grid.fetch`` with
    ``with_seed``) of one dataset and a set of variants, every seed."""
    return [r for (ds, _, v, _), r in runs.items() if ds == dataset and v in variants]


def mean_grey(path: Path) -> float:
    """The mean grey level (0-255) of one image file."""
    from PIL import Image

    with Image.open(path) as im:
        return float(np.asarray(im.convert("L"), dtype=np.float64).mean())


def support_brightness(records: dict, data_root: Path, profile: str) -> pd.DataFrame:
    """Each few-shot record (``records`` keyed (dataset, category, variant), values with
    ``extra.train_images`` = "support set <file>") against the brightness of its images: the
    mean grey level of each support image, the range of the good test images' mean grey
    levels, and whether some support image lies in that range. A
    support set drawn from other acquisition conditions than the good test images can make a
    model fitted to k images flag every good test image, whatever it does on defect pixels."""
    from .data import load_support
    from .env import results_dir

    rows = []
    for (ds, cat, v), r in records.items():
        note = str(r["extra"].get("train_images", ""))
        if not note.startswith("support set "):
            continue
        name = note.removeprefix("support set ").split()[0]  # "<file>" or "<file> (new)"
        support_file = results_dir() / profile / "support" / name
        support = [mean_grey(s.path) for s in load_support(support_file, Path(data_root) / ds)]
        good = [mean_grey(g.path) for g in list_records(data_root, ds, cat, "test") if g.label == 0]
        lo, hi = min(good), max(good)
        rows.append({"category": cat, "run": v,
                     "support mean grey": " ".join(f"{s:.1f}" for s in support),
                     "good test mean grey": f"{lo:.1f}-{hi:.1f}",
                     "support in the good test range": any(lo <= s <= hi for s in support),
                     "image AUROC": 100 * r["metrics"]["image_auroc"],
                     "pixel AUROC": 100 * r["metrics"]["pixel_auroc"]})
    return pd.DataFrame(rows)

