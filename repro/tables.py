"""Paper tables versus ours.

Every rendered table is written as ``results/<profile>/tables/<paper>_<table>.csv`` in the long
format of the transcribed paper tables (``paper,table,dataset,category,method,variant,metric,
value,unit,note``) plus ``paper_value, diff, profile, data, weights, device``, and as Markdown.
``value`` is ours (percent where the paper prints percent); a paper cell we have not computed
keeps an empty ``value``: "not reproduced yet" stays visible.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from .env import results_dir
from .runs import atomic_write_text

KEY = ["dataset", "category", "method", "variant", "metric"]
COLUMNS = ["paper", "table", *KEY, "value", "unit", "note"]
META = ["profile", "data", "weights", "device"]
SEED_COLUMNS = ["sd", "seeds"]  # over the seeds of a cell: standard deviation and count
OUT_COLUMNS = [*COLUMNS, *SEED_COLUMNS, "paper_value", "diff", *META]
MEAN_NOTE = "mean of "  # add_means' note, which _like_for_like_means reads back
OWN_METHOD = {"n2n": "noise_to_norm", "tsdn": "tsdn", "pouta": "pouta", "puad": "puad"}


def paper_tables() -> list[tuple[str, str]]:
    """(paper, table) of every transcribed table shipped in ``repro/paper_tables``."""
    files = resources.files("repro.paper_tables").iterdir()
    names = sorted(f.name[:-4] for f in files if f.name.endswith(".csv"))
    return [tuple(n.split("_", 1)) for n in names]


def paper_table(paper: str, table: str) -> pd.DataFrame:
    """The printed table in long format; ``value`` as float (the printed string in ``printed``)."""
    path = resources.files("repro.paper_tables") / f"{paper}_{table}.csv"
    if not path.is_file():
        known = ", ".join(f"{p}_{t}" for p, t in paper_tables())
        raise ValueError(f"no paper table {paper}_{table}; known: {known}")
    with path.open() as f:
        df = pd.read_csv(f, dtype=str, keep_default_na=False)
    df["printed"] = df["value"]
    df["value"] = df["value"].astype(float)
    return df


def cells_from_records(records: Iterable[dict], *, paper: str, table: str, method: str,
                       metrics: dict[str, str], percent: bool = True,
                       variant: Callable[[dict], str] | None = None) -> pd.DataFrame:
    """Our long-format rows from run records, one per cell and metric: records of several
    seeds of one cell give their mean in ``value``, with ``sd`` (sample standard deviation,
    NaN for one seed) and ``seeds`` (how many).

    ``metrics`` maps a record metric to the table's metric name (e.g. ``{"image_auroc":
    "image_auroc"}``); ``variant`` gives a record's table variant (default: its key's variant,
    with ``default`` shown as empty).
    """
    rows = []
    for rec in records:
        k = rec["key"]
        var = variant(rec) if variant else ("" if k["variant"] == "default" else k["variant"])
        for ours, name in metrics.items():
            v = rec["metrics"].get(ours, np.nan)
            rows.append({
                "paper": paper, "table": table, "dataset": k["dataset"],
                "category": k["category"], "method": method, "variant": var, "metric": name,
                "value": v * 100 if percent and v is not None else v,
                "unit": "percent" if percent else "", "note": "",
                "profile": k["profile"], "data": _data_text(rec["data"]),
                "weights": _weights_text(rec["weights"]), "device": rec["device"],
                "run": k["variant"],  # seeds of one run are averaged, not runs that share a row
            })
    df = pd.DataFrame(rows, columns=[*COLUMNS, *META, "run"])
    if df.empty:
        return df.reindex(columns=[*COLUMNS, *SEED_COLUMNS, *META])
    keys = ["paper", "table", *KEY, "run"]
    agg = df.groupby(keys, sort=False, dropna=False).agg(
        value=("value", "mean"), sd=("value", "std"), seeds=("value", "count"),
        **{c: (c, "first") for c in COLUMNS + META if c not in keys + ["value"]})
    agg["seeds"] = agg["seeds"].astype(int)
    return agg.reset_index()[[*COLUMNS, *SEED_COLUMNS, *META]]


def add_means(df: pd.DataFrame, category: str = "mean") -> pd.DataFrame:
    """Append one mean row per (dataset, method, variant, metric) over the categories present,
    noting how many categories it averages (a mean of a subset is not the paper's mean)."""
    if df.empty:
        return df
    body = df[df["category"] != category]
    means = []
    for _, g in body.groupby(["dataset", "method", "variant", "metric"], sort=False):
        row = g.iloc[0].copy()
        row["category"] = category
        row["value"] = g["value"].mean()
        row["sd"] = np.nan  # over categories, not seeds: no seed spread
        row["seeds"] = int(g["seeds"].min()) if "seeds" in g else 1
        n, names = g["category"].nunique(), ", ".join(g["category"])
        row["note"] = f"{MEAN_NOTE}{n} categor{'y' if n == 1 else 'ies'}: {names}"
        row["data"] = "; ".join(sorted(set(g["data"])))  # e.g. "real mpdd/a; real mpdd/b"
        means.append(row)
    return pd.concat([df, pd.DataFrame(means)], ignore_index=True)


def join_with_paper(paper: str, table: str, ours: pd.DataFrame,
                    methods: Iterable[str] | None = None) -> pd.DataFrame:
    """Our rows next to the paper's rows of the same cells.

    Paper rows are those of ``methods`` (default: the methods in ``ours``); a paper cell without
    ours keeps an empty value, and a cell of ours the paper does not print keeps an empty
    ``paper_value``.
    """
    printed = paper_table(paper, table)
    methods = set(methods) if methods is not None else set(ours["method"])
    printed = printed[printed["method"].isin(methods)]
    ours = ours.copy()
    ours["variant"] = ours["variant"].fillna("")
    merged = printed[[*KEY, "value", "unit"]].rename(columns={"value": "paper_value"}).merge(
        ours.drop(columns=["unit"]), on=KEY, how="outer")
    merged["unit"] = merged["unit"].fillna("percent")
    merged["paper"], merged["table"] = paper, table
    merged["diff"] = merged["value"] - merged["paper_value"]
    _like_for_like_means(merged, printed)
    for col in META:
        known = ours[col].dropna().unique() if col in ours else []
        merged[col] = merged[col].fillna(known[0] if len(known) == 1 else "")
    merged["note"] = merged["note"].fillna("")
    return merged[OUT_COLUMNS].reset_index(drop=True)


def _like_for_like_means(merged: pd.DataFrame, printed: pd.DataFrame) -> None:
    """Our mean rows (``add_means``) against the paper's mean over the *same* categories where
    the paper prints them; else the paper's own mean stays, the difference is blanked and the
    note says over how many categories each side is (issue 13: no diff of unlike means)."""
    per_cat = printed[~printed["category"].str.startswith(("mean", "all"))]
    for i, row in merged.iterrows():
        note = row.get("note")
        if not isinstance(note, str) or not note.startswith(MEAN_NOTE) or pd.isna(row["value"]):
            continue
        cats = note.split(": ", 1)[1].split(", ")
        same = per_cat[(per_cat[["dataset", "method", "variant", "metric"]]
                        == row[["dataset", "method", "variant", "metric"]].values).all(axis=1)]
        values = same.set_index("category")["value"]
        if all(c in values.index for c in cats):
            merged.at[i, "paper_value"] = float(values[cats].mean())
            merged.at[i, "diff"] = row["value"] - merged.at[i, "paper_value"]
            merged.at[i, "note"] = f"{note}; paper: its values of the same categories"
        elif not pd.isna(row["paper_value"]):
            from .data import categories as official

            # a mean-only table (POUTA's Table V) averages the dataset's official categories
            n_paper = len(values) or len(official(row["dataset"])) or "its (unlisted)"
            merged.at[i, "diff"] = np.nan
            merged.at[i, "note"] = (f"{note}; paper mean over {n_paper} categories, ours over "
                                    f"{len(cats)}: no difference")


def output_dir(profile: str) -> Path:
    """Where rendered tables and figures go: ``results/<profile>``, or the staging folder that
    ``make reproduce`` sets (``REPRO_STAGE_DIR``) so a failing notebook replaces nothing."""
    stage = os.environ.get("REPRO_STAGE_DIR")
    return Path(stage) if stage else results_dir() / profile


def header(df: pd.DataFrame) -> str:
    """The provenance line printed above every table. The data part lists, per dataset, the
    categories with a value and how many of the dataset's categories are missing."""
    parts, known = [], False
    for col in META:
        values = sorted({str(v) for v in df[col].dropna() if str(v)}) if col in df else []
        known |= bool(values)
        if col == "data":
            values = _summarise_data(values)
        parts.append(f"**{col}**: {'; '.join(values) or 'n/a'}")
    if not known:  # no row has a record: say so instead of four n/a
        return ("**no run of ours in this table** (none of its categories has a record under "
                "this profile): the paper's values only")
    return " · ".join(parts)


def _summarise_data(values: list[str]) -> list[str]:
    """``["real mvtec_ad/grid", "real mvtec_ad/toothbrush"]`` ->
    ``["real mvtec_ad: grid, toothbrush (13 of 15 categories missing)"]``."""
    from .data import DATASETS

    groups: dict[tuple[str, str], set[str]] = {}
    for v in values:
        for item in v.split("; "):
            kind, _, rest = item.partition(" ")
            dataset, _, cats = rest.partition("/")
            groups.setdefault((kind, dataset), set()).update(c for c in cats.split(",") if c)
    out = []
    for (kind, dataset), cats in sorted(groups.items()):
        text = f"{kind} {dataset}: {', '.join(sorted(cats))}"
        if dataset in DATASETS:
            n_all = len(DATASETS[dataset].categories)
            missing = n_all - len(cats & set(DATASETS[dataset].categories))
            text += f" ({missing} of {n_all} categories missing)" if missing else " (all)"
        out.append(text)
    return out


def to_markdown(df: pd.DataFrame, title: str = "") -> str:
    """Header line plus a compact table: cell, ours, paper, difference (2 decimals)."""
    view = df[["dataset", "category", "method", "variant", "metric", "value", "sd", "seeds",
               "paper_value", "diff", "note"]].rename(columns={"value": "ours",
                                                               "paper_value": "paper"})
    view = view.assign(seeds=[None if pd.isna(v) else str(int(v)) for v in view["seeds"]])
    rows = [[None if pd.isna(v) else v for v in row] for row in view.itertuples(index=False)]
    body = tabulate(rows, headers=list(view.columns), tablefmt="pipe", floatfmt=".2f",
                    missingval="-")  # "-": a cell not computed (ours) or not printed (paper)
    return (f"### {title}\n\n" if title else "") + header(df) + "\n\n" + body + "\n"


def write_table(df: pd.DataFrame, paper: str, table: str, profile: str) -> Path:
    """Write ``<paper>_<table>.csv`` and ``.md`` atomically; returns the CSV path."""
    out = output_dir(profile) / "tables"
    csv_path = out / f"{paper}_{table}.csv"
    atomic_write_text(csv_path, df[OUT_COLUMNS].to_csv(index=False, float_format="%.4f"))
    atomic_write_text(csv_path.with_suffix(".md"), to_markdown(df, f"{paper} {table}"))
    return csv_path


def finish_table(ours: pd.DataFrame, paper: str, table: str, profile: str, *,
                 methods: Iterable[str] | None = None, only_mean: bool = False,
                 means: bool = True) -> pd.DataFrame:
    """The last steps of every notebook table: our category means (``means``; only the mean
    rows with ``only_mean``, for a table the paper prints as a mean), joined with the paper's
    rows of ``methods`` (``join_with_paper``) and written under ``results/<profile>/tables``."""
    if means:
        ours = add_means(ours)
    if only_mean:
        ours = ours[ours["category"] == "mean"]
    joined = join_with_paper(paper, table, ours, methods=methods)
    write_table(joined, paper, table, profile)
    return joined


def own_cells(df: pd.DataFrame, paper: str) -> pd.Series:
    """Rows that are the paper's own results (its method, its ablation variants, and the
    EfficientAD / vanilla baselines it re-implements), as opposed to baselines quoted from
    other papers. Quoted baselines may carry variants too (Table IV of POUTA: ``k=2``), so only
    the method decides."""
    return df["method"].isin([OWN_METHOD.get(paper, paper), "efficientad", "vanilla"])


def coverage(root: Path, profile: str, paper: str, table: str) -> str:
    """``12/42`` (the paper's own printed cells that have our value) or ``not run``."""
    path = root / profile / "tables" / f"{paper}_{table}.csv"
    if not path.is_file():
        return "not run"
    df = pd.read_csv(path, keep_default_na=True)
    own = df[df["paper_value"].notna() & own_cells(df, paper)]
    return f"{int(own['value'].notna().sum())}/{len(own)}"


def wide_view(joined: pd.DataFrame, paper: str, metric: str, by: str = "method") -> pd.DataFrame:
    """One row per category: the printed baseline columns, then the paper's own value, ours and
    the difference (for rendering; the long CSV stays the source of truth)."""
    df = joined[joined["metric"] == metric]
    own = own_cells(df, paper)
    cats = [c for c in dict.fromkeys(df["category"]) if c != "mean"]
    cats += ["mean"] if "mean" in set(df["category"]) else []
    base = df[~own].pivot_table(index="category", columns=by, values="paper_value",
                                sort=False)
    mine = df[own].set_index("category")[["paper_value", "value", "diff"]].rename(
        columns={"paper_value": "paper", "value": "ours"})
    return base.join(mine, how="outer").reindex(cats)


PROFILE_NOTE = {
    "real_subset": "real images (the partial datasets in `../shared/data`), CPU budgets",
    "smoke": "synthetic data and a few steps: checks the code path, **no evidence about the "
             "papers** (verdicts only, no numbers)",
    "paper": "the full datasets and every printed hyperparameter",
}


def write_results_readme(root: Path | None = None,
                         claims_by_profile: dict[str, pd.DataFrame] | None = None) -> Path:
    """``results/README.md``, a page read in a minute: the papers' claims with our verdicts per
    profile (``repro.claims``; computed from the records unless given), then per paper the
    coverage of its tables with links to them, the notebooks and the benchmarks."""
    from . import claims as C

    root = Path(root) if root is not None else results_dir()
    profiles = sorted(p.name for p in root.iterdir() if (p / "tables").is_dir()) \
        if root.is_dir() else []
    order = [p for p in ("real_subset", "smoke", "paper") if p in profiles] + \
        [p for p in profiles if p not in ("real_subset", "smoke", "paper")]
    if claims_by_profile is None:
        claims_by_profile = {p: C.all_claims(p) for p in order}
    lines = [
        "# Results",
        "",
        "Generated by `python -m repro readme` (the last step of `make reproduce`) from the run",
        "records; do not edit by hand. Each claim links to the notebook section that shows it.",
        "",
        "## The papers' claims",
        "",
        C.RULE,
        "The paper's difference is over the same categories where it prints them; otherwise the",
        "cell says over how many categories each side is.",
        "",
    ]
    for prof in order:
        table = claims_by_profile.get(prof)
        lines += [f"### `{prof}`: {PROFILE_NOTE.get(prof, '')}", ""]
        if table is None or table.empty:
            lines += ["No claim cell has a current record under this profile (`python -m repro "
                      f"plan --profile {prof}`).", ""]
            continue
        link = f"{prof}/"
        if prof == "smoke":
            lines += ["| claim | metric | verdict |", "|---|---|---|"]
            lines += [f"| [{r.claim}]({link}{r.notebook}) | {r.metric} | {r.verdict} |"
                      for r in table.itertuples()]
            lines.append("")
        else:
            lines += [C.to_markdown(table, link)]
        n_run = int((table["verdict"] != "not run").sum())
        lines += [f"{n_run} of {len(table)} claims have current records.", ""]
    lines += ["## Coverage of the papers' tables", "",
              "Printed cells of the paper's own rows that have our value, per profile, and the "
              "rendered tables (our value next to the paper's, with the profile, data, weights "
              "and device that produced it; `-`: not computed yet).", ""]
    rows = []
    for p, t in paper_tables():
        links = [f"[{prof}]({prof}/tables/{p}_{t}.md)" for prof in order
                 if (root / prof / "tables" / f"{p}_{t}.md").is_file()]
        rows.append([p, t, *(coverage(root, prof, p, t) for prof in order),
                     " · ".join(links) or "-"])
    lines += [tabulate(rows, headers=["paper", "table", *order, "tables"], tablefmt="pipe"), ""]
    matrices = [f"[{prof}]({prof}/tables/matrix.md)" for prof in order
                if (root / prof / "tables" / "matrix.md").is_file()]
    if matrices:
        lines += ["## The four methods across every dataset", "",
                  "Each method at its paper configuration on every category present "
                  "(notebook 05): " + " · ".join(matrices), ""]
    lines += ["## Notebooks", ""]
    for prof in order:
        notebooks = sorted((root / prof).glob("*.ipynb"))
        if notebooks:
            lines += [f"- `{prof}`: " + ", ".join(f"[{n.name}]({prof}/{n.name})"
                                                   for n in notebooks)]
    bench = root / "benchmarks"
    if bench.is_dir() and any(bench.glob("*.md")):
        lines += ["", "## Benchmarks", ""]
        lines += [f"- [{md.stem}](benchmarks/{md.name})" for md in sorted(bench.glob("*.md"))]
    path = root / "README.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def _data_text(data: dict) -> str:
    """``real mvtec_ad/grid``: kind, dataset and the categories the run read."""
    if not data:
        return ""
    return f"{data['kind']} {data['dataset']}/{','.join(data['present'])}"


def _weights_text(weights: dict) -> str:
    if not weights:
        return ""
    return weights.get("note") or weights.get("kind", "")


def ours_vs_paper_view(df: pd.DataFrame, method: str | None = None,
                       metrics: Iterable[str] | None = None, index: str = "category",
                       columns: str = "metric", last: Iterable[str] = ("mean",),
                       digits: int = 2) -> str:
    """The notebooks' wide view of a joined table as Markdown: one row per ``index`` value,
    for each ``columns`` value our mean over seeds (``± sd`` where there are several seeds) and
    the paper's printed value, and the number of seeds behind the row (the fewest); rows in
    ``last`` go to the end. ``-``: not computed (ours) or not printed (paper)."""
    sel = df if method is None else df[df["method"] == method]
    if metrics is not None:
        metrics = list(metrics)
        sel = sel[sel["metric"].isin(metrics)]
    keys = list(dict.fromkeys(sel[columns])) if metrics is None or columns != "metric" \
        else [m for m in metrics if m in set(sel[columns])]
    rows = list(dict.fromkeys(sel[index]))
    rows = [r for r in rows if r not in last] + [r for r in last if r in rows]

    def ours(g: pd.DataFrame) -> str:
        if g.empty or pd.isna(g["value"].iloc[0]):
            return "-"
        v, sd = g["value"].iloc[0], g["sd"].iloc[0] if "sd" in g else np.nan
        return f"{v:.{digits}f}" + ("" if pd.isna(sd) else f" ± {sd:.{digits}f}")

    table = []
    for r in rows:
        here = sel[sel[index] == r]
        line = [r]
        for k in keys:
            g = here[here[columns] == k]
            paper = g["paper_value"].iloc[0] if len(g) else np.nan
            line += [ours(g), "-" if pd.isna(paper) else f"{paper:.{digits}f}"]
        seeds = here["seeds"].dropna() if "seeds" in here else pd.Series(dtype=float)
        line.append(str(int(seeds.min())) if len(seeds) else "-")
        table.append(line)
    headers = [index, *[f"{k} {w}" for k in keys for w in ("ours", "paper")], "seeds"]
    return tabulate(table, headers=headers, tablefmt="pipe", stralign="right",
                    disable_numparse=True)
