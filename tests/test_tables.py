"""Paper tables shipped in the package, the join with our records, and the written outputs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repro import tables

PAPERS = Path(__file__).resolve().parents[2] / "shared" / "papers"
PAPER_FILE = {"n2n": "noise_to_norm.md", "tsdn": "tsdn.md", "pouta": "pouta.md",
              "puad": "puad.md"}


def test_all_eighteen_paper_tables_ship_with_the_package():
    listed = tables.paper_tables()
    assert len(listed) == 18
    total = sum(len(tables.paper_table(p, t)) for p, t in listed)
    assert total == 874  # the transcription's row count (paper_tables/README.md)
    for p, t in listed:
        df = tables.paper_table(p, t)
        assert list(df.columns[:10]) == tables.COLUMNS
        assert not df.duplicated(subset=tables.KEY).any(), (p, t)


def test_every_printed_value_occurs_in_the_paper_text():
    """Check the transcription against the paper text: each printed value string of a table is
    found among the numbers of its paper (catches digit slips and invented cells)."""
    if not PAPERS.is_dir():
        pytest.skip(f"paper texts not found at {PAPERS}")
    for paper, fname in PAPER_FILE.items():
        numbers = set(re.findall(r"\d+(?:\.\d+)?", (PAPERS / fname).read_text()))
        for p, t in tables.paper_tables():
            if p != paper:
                continue
            missing = set(tables.paper_table(p, t)["printed"]) - numbers
            assert not missing, f"{p}_{t}: values not in the paper text: {sorted(missing)}"


def _record(category, value, variant="lambda=0.3"):
    return {"key": {"paper": "n2n", "experiment": "table4", "dataset": "mpdd",
                    "category": category, "variant": variant, "seed": 0, "profile": "smoke"},
            "metrics": {"image_auroc": value},
            "data": {"kind": "synthetic", "dataset": "mpdd", "present": [category],
                     "missing": []},
            "weights": {"kind": "none", "note": "trained from scratch"},
            "device": "cpu (2 threads)"}


def test_seeds_of_a_cell_give_their_mean_sd_and_count():
    recs = [_record("metal_plate", v) for v in (0.8, 0.9, 1.0)]
    for seed, r in enumerate(recs):
        r["key"]["seed"] = seed
    ours = tables.cells_from_records(recs + [_record("tubes", 0.5)], paper="n2n",
                                     table="table4", method="noise_to_norm",
                                     metrics={"image_auroc": "image_auroc"})
    plate = ours[ours.category == "metal_plate"].iloc[0]
    assert len(ours) == 2 and plate.seeds == 3
    assert plate.value == pytest.approx(90.0) and plate.sd == pytest.approx(10.0)
    tubes = ours[ours.category == "tubes"].iloc[0]
    assert tubes.seeds == 1 and np.isnan(tubes.sd)
    mean = tables.add_means(ours).query("category == 'mean'").iloc[0]
    assert mean.value == pytest.approx(70.0) and mean.seeds == 1  # the fewest seeds behind it


def test_join_puts_our_value_next_to_the_printed_one():
    ours = tables.cells_from_records(
        [_record("metal_plate", 0.9), _record("tubes", 0.5)], paper="n2n", table="table4",
        method="noise_to_norm", metrics={"image_auroc": "image_auroc"})
    ours = tables.add_means(ours)
    joined = tables.join_with_paper("n2n", "table4", ours)
    row = joined[(joined.category == "metal_plate") & (joined.variant == "lambda=0.3")
                 & (joined.metric == "image_auroc")].iloc[0]
    printed = tables.paper_table("n2n", "table4")
    expect = printed[(printed.category == "metal_plate") & (printed.variant == "lambda=0.3")
                     & (printed.metric == "image_auroc")].value.iloc[0]
    assert row.value == pytest.approx(90.0) and row.paper_value == expect
    assert row["diff"] == pytest.approx(90.0 - expect)
    assert row.profile == "smoke" and row.data.startswith("synthetic mpdd")
    mean = joined[(joined.category == "mean") & (joined.variant == "lambda=0.3")
                  & (joined.metric == "image_auroc")].iloc[0]
    assert mean.value == pytest.approx(70.0) and "mean of 2 categories" in mean.note
    # like for like: the paper's mean over the same two categories, not its 6-category mean
    def printed_of(cat):
        return printed[(printed.category == cat) & (printed.variant == "lambda=0.3")
                       & (printed.metric == "image_auroc")].value.iloc[0]

    same = (printed_of("metal_plate") + printed_of("tubes")) / 2
    assert mean.paper_value == pytest.approx(same) and mean["diff"] == pytest.approx(70 - same)
    assert "paper: its values of the same categories" in mean.note
    # paper cells we did not compute stay visible with an empty value
    lam0 = joined[(joined.variant == "lambda=0") & (joined.category == "tubes")]
    assert len(lam0) == 2 and lam0.value.isna().all() and lam0.paper_value.notna().all()
    assert set(joined.method) == {"noise_to_norm"}  # other methods' rows are not pulled in
    assert list(joined.columns) == tables.OUT_COLUMNS


def test_write_table_and_results_readme(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS", str(tmp_path))
    monkeypatch.delenv("REPRO_STAGE_DIR", raising=False)
    ours = tables.cells_from_records([_record("metal_plate", 0.9)], paper="n2n",
                                     table="table4", method="noise_to_norm",
                                     metrics={"image_auroc": "image_auroc"})
    joined = tables.join_with_paper("n2n", "table4", ours)
    csv_path = tables.write_table(joined, "n2n", "table4", "smoke")
    assert csv_path == tmp_path / "smoke" / "tables" / "n2n_table4.csv"
    back = pd.read_csv(csv_path, keep_default_na=True)
    assert list(back.columns) == tables.OUT_COLUMNS and len(back) == len(joined)
    md = csv_path.with_suffix(".md").read_text()
    assert "**profile**: smoke" in md and "**device**: cpu (2 threads)" in md
    # one seed: no standard deviation
    assert re.search(r"lambda=0.3 \| image_auroc \|\s+90.00 \|\s+-\s+\|\s+1 \|\s+99.57 \|"
                     r"\s+-9.57 \|", md)
    from repro import claims

    fake = pd.DataFrame([{"paper": "n2n", "profile": "smoke", "claim": "lambda helps",
                          "metric": "image_auroc", "notebook": "01_noise_to_norm.ipynb",
                          "ours": 3.0, "lo": 1.0, "hi": 5.0, "paper_diff": 2.0,
                          "paper_note": "same category", "categories": "metal_plate",
                          "seeds": 3, "not_converged": "", "verdict": "supported"}])
    readme = tables.write_results_readme(claims_by_profile={"smoke": fake}).read_text()
    assert readme.index("## The papers' claims") < readme.index("## Coverage")
    assert claims.RULE in readme
    # smoke: verdicts only, no numbers on the front page
    assert "| [lambda helps](smoke/01_noise_to_norm.ipynb) | image_auroc | supported |" in readme
    assert "+3.00" not in readme
    assert "[smoke](smoke/tables/n2n_table4.md)" in readme
    md_real = claims.to_markdown(fake.assign(profile="real_subset"), "real_subset/")
    assert "+3.00 [+1.00, +5.00]" in md_real and "+2.00 (same category)" in md_real
    assert tables.coverage(tmp_path, "smoke", "n2n", "table4") == "1/56"
    assert tables.coverage(tmp_path, "smoke", "n2n", "table5") == "not run"
    assert re.search(r"\| n2n\s+\| table4\s+\| 1/56", readme)


def test_staging_dir_redirects_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_STAGE_DIR", str(tmp_path / "stage"))
    assert tables.output_dir("smoke") == tmp_path / "stage"


def test_unknown_table_is_a_clear_error():
    with pytest.raises(ValueError, match="no paper table n2n_table9; known: n2n_table1"):
        tables.paper_table("n2n", "table9")
    assert math.isnan(tables.cells_from_records(
        [_record("tubes", float("nan"))], paper="n2n", table="table4", method="noise_to_norm",
        metrics={"image_auroc": "image_auroc"}).value.iloc[0])


def test_own_cells_are_decided_by_the_method_not_by_a_variant():
    """Table IV of POUTA quotes TDG, DifferNet and RegAD with k=2/4/8 variants: those are quoted
    baselines; only POUTA's three cells (and the re-implemented baselines elsewhere) are ours."""
    t4 = tables.paper_table("pouta", "tableIV")
    own = t4[tables.own_cells(t4, "pouta")]
    assert sorted(own["variant"]) == ["k=2", "k=4", "k=8"] and set(own["method"]) == {"pouta"}
    t2 = tables.paper_table("puad", "table2")
    assert set(t2[tables.own_cells(t2, "puad")]["method"]) == {"puad", "efficientad"}


def test_a_mean_of_unlike_category_sets_has_no_difference():
    """POUTA's Table V prints only means over 15 categories: ours over 1 gets no diff."""
    rec = _record("grid", 0.9, variant="pouta")
    rec["key"].update(paper="pouta", dataset="mvtec_ad")
    ours = tables.cells_from_records([rec], paper="pouta", table="tableV", method="pouta",
                                     metrics={"image_auroc": "image_auroc"})
    joined = tables.join_with_paper("pouta", "tableV", tables.add_means(ours))
    mean = joined[(joined.category == "mean") & (joined.variant == "pouta")
                  & (joined.metric == "image_auroc")].iloc[0]
    assert mean.paper_value == pytest.approx(99.5) and np.isnan(mean["diff"])
    assert "mean of 1 category: grid" in mean.note
    assert "paper mean over 15 categories, ours over 1: no difference" in mean.note
    assert "no difference" in tables.to_markdown(joined)


def test_the_wide_view_shows_mean_sd_seeds_and_the_paper():
    recs = [_record("metal_plate", v) for v in (0.8, 0.9, 1.0)] + [_record("tubes", 0.5)]
    for seed, r in enumerate(recs[:3]):
        r["key"]["seed"] = seed
    ours = tables.cells_from_records(recs, paper="n2n", table="table4", method="noise_to_norm",
                                     metrics={"image_auroc": "image_auroc"})
    joined = tables.join_with_paper("n2n", "table4", tables.add_means(ours))
    view = tables.ours_vs_paper_view(joined[joined.variant == "lambda=0.3"],
                                     metrics=["image_auroc"])
    rows = {cells[0]: cells[1:] for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in view.splitlines()[2:])}
    assert rows["metal_plate"][0] == "90.00 ± 10.00" and rows["metal_plate"][-1] == "3"
    assert rows["tubes"][0] == "50.00" and rows["tubes"][-1] == "1"  # one seed: no sd
    assert rows["bracket_black"][0] == "-" and rows["bracket_black"][1] != "-"  # paper only
    assert list(rows)[-1] == "mean"  # the mean row last


def test_finish_table_adds_means_joins_and_writes(tmp_path, monkeypatch):
    """The notebooks' common tail: means (or only the mean rows), the paper's rows, the files."""
    monkeypatch.setenv("REPRO_RESULTS", str(tmp_path))
    monkeypatch.delenv("REPRO_STAGE_DIR", raising=False)
    ours = tables.cells_from_records(
        [_record("metal_plate", 0.9), _record("tubes", 0.5)], paper="n2n", table="table4",
        method="noise_to_norm", metrics={"image_auroc": "image_auroc"})
    joined = tables.finish_table(ours, "n2n", "table4", "smoke")
    pd.testing.assert_frame_equal(joined, tables.join_with_paper("n2n", "table4",
                                                                 tables.add_means(ours)))
    back = pd.read_csv(tmp_path / "smoke" / "tables" / "n2n_table4.csv")
    assert len(back) == len(joined)
    only = tables.finish_table(ours, "n2n", "table4", "smoke", only_mean=True)
    assert set(only.dropna(subset=["value"]).category) == {"mean"}
    raw = tables.finish_table(ours, "n2n", "table4", "smoke", means=False)
    assert "mean" not in set(raw.dropna(subset=["value"]).category)


def test_standin_notice_names_each_stand_in(capsys):
    from repro.report import standin_notice

    b5 = {"weights": {"standin": True, "note": "Lite0 for b5"}}
    puad = {"weights": {"standin": True, "standins": ["DTD instead of ImageNet", "Lite0 teacher"]}}
    printed = {"weights": {"standin": False, "standins": []}}
    standin_notice([b5, puad, printed], "smoke", "Table 1")
    out = capsys.readouterr().out
    assert "2 of 3 runs behind Table 1" in out
    assert "DTD instead of ImageNet; Lite0 for b5; Lite0 teacher" in out
    standin_notice([printed], "smoke")
    assert capsys.readouterr().out == ""


def test_support_brightness_reads_the_support_list_and_the_good_test_images(tmp_path, monkeypatch):
    """Hand-made grey levels: a support set drawn from a darker acquisition mode than every
    good test image is reported as outside their range, one holding a matching image inside."""
    from PIL import Image

    from repro.report import mean_grey, support_brightness

    cat = tmp_path / "data" / "mvtec_ad" / "toothbrush"

    def put(rel, grey):
        (cat / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), grey, np.uint8)).save(cat / rel)

    for i, g in enumerate([40, 44, 52]):
        put(f"train/good/{i:03d}.png", g)
    put("test/good/000.png", 51)
    put("test/good/001.png", 54)
    put("test/defective/000.png", 44)
    (cat / "ground_truth" / "defective").mkdir(parents=True)
    mask = np.full((8, 8), 255, np.uint8)
    Image.fromarray(mask).save(cat / "ground_truth/defective/000_mask.png")
    assert mean_grey(cat / "train/good/002.png") == 52.0
    monkeypatch.setenv("REPRO_RESULTS", str(tmp_path / "results"))
    support = tmp_path / "results" / "p" / "support"
    support.mkdir(parents=True)
    for name, files in (("dark.json", ["000", "001"]), ("mixed.json", ["000", "002"])):
        listed = [f"toothbrush/train/good/{f}.png" for f in files]
        (support / name).write_text(json.dumps({"dataset": "mvtec_ad", "category": "toothbrush",
                                                "files": listed}))
    metrics = {"image_auroc": 0.2, "pixel_auroc": 0.9}
    records = {("mvtec_ad", "toothbrush", v): {"extra": {"train_images": f"support set {v}.json"},
                                               "metrics": metrics} for v in ("dark", "mixed")}
    records["mvtec_ad", "toothbrush", "default"] = {"extra": {"train_images": "all 3"},
                                                    "metrics": metrics}
    out = support_brightness(records, tmp_path / "data", "p").set_index("run")
    assert list(out.index) == ["dark", "mixed"]  # the full-data run has no support set
    assert out.loc["dark", "support mean grey"] == "40.0 44.0"
    assert out.loc["dark", "good test mean grey"] == "51.0-54.0"
    assert not out.loc["dark", "support in the good test range"]
    assert out.loc["mixed", "support in the good test range"]
    assert out.loc["mixed", "image AUROC"] == pytest.approx(20.0)


def test_header_of_a_table_without_any_run_says_so():
    empty = pd.DataFrame({"category": ["hazelnut"], "paper_value": [97.6],
                          "profile": [np.nan], "data": [np.nan], "weights": [np.nan],
                          "device": [np.nan]})
    assert tables.header(empty).startswith("**no run of ours in this table**")
    one = empty.assign(profile=["real_subset"], data=["real mvtec_ad/hazelnut"])
    h = tables.header(one)
    assert "**profile**: real_subset" in h and "**weights**: n/a" in h
