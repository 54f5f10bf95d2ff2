"""The run grid as data (repro.grid) and ``python -m repro plan``."""

from __future__ import annotations

import json

import pytest

from repro import grid
from repro.__main__ import main

DRAWS = {"smoke": 2, "real_subset": 3}


def test_cells_cover_every_paper_and_filter(synthetic_root):
    every = grid.cells("smoke", synthetic_root)
    assert {c.paper for c in every} == set(grid.PAPERS)
    assert len(set(every)) == len(every)  # no cell twice
    table4 = grid.cells("smoke", synthetic_root, paper="pouta", table="tableIV")
    mvtec = grid.cells("smoke", synthetic_root, paper="pouta", dataset="mvtec_ad",
                       category="grid")
    assert {c.variant for c in table4 if c.category == "grid"} == \
        {c.variant for c in mvtec if "shots" in c.variant}
    assert len({c.variant for c in mvtec if "shots" in c.variant}) == 3 * DRAWS["smoke"]
    seeds = grid.cells("smoke", synthetic_root, paper="puad", seeds=[0, 1, 2])
    assert len(seeds) == 3 * len(grid.cells("smoke", synthetic_root, paper="puad", seeds=[0]))
    with pytest.raises(ValueError, match="unknown paper"):
        grid.cells("smoke", synthetic_root, paper="patchcore")


def test_tables_tag_the_cells_that_feed_them(synthetic_root):
    tsdn = grid.cells("smoke", synthetic_root, paper="tsdn", dataset="mvtec_ad",
                      category="toothbrush")  # toothbrush is in the paper's Table 3, not 4
    tags = {c.variant: set(c.tables) for c in tsdn}
    assert set(tags) == set(grid.TSDN_ROWS)
    assert tags["default"] == {"table1", "table2", "table3", "matrix"}
    assert tags["model=t3_C"] == {"table3"} and tags["model=t4_C"] == {"table3"}
    assert tags["model=t4_B"] == {"diagnostic"}  # the notebook's every-row checks (issue 11)
    n2n = {c.variant: c.tables for c in grid.cells("smoke", synthetic_root, paper="n2n",
                                                    dataset="mpdd", category="metal_plate")}
    assert n2n["reconstruction=blur"] == ("diagnostic",) and "table5" in n2n["ram=false"]


def test_matrix_has_each_method_on_every_category_once(synthetic_root):
    """Notebook 05: the four methods' default cells on every category of every dataset
    present (the folder dataset too), reusing a paper's own default cell where it has one."""
    matrix = grid.cells("smoke", synthetic_root, table="matrix", seeds=(0,))
    pairs = [(c.paper, c.dataset, c.category) for c in matrix]
    assert len(pairs) == len(set(pairs)) and {c.variant for c in matrix} == {"default"}
    from repro import data as D

    every = {(ds, cat) for ds in grid.MATRIX_DATASETS
             for cat in D.present_categories(synthetic_root, ds)}
    assert ("folder", "parts") in every
    for paper in grid.MATRIX_PAPERS:
        assert {(d, c) for p, d, c in pairs if p == paper} == every
    own = [c for c in matrix if c.paper == "tsdn" and c.dataset == "mvtec_ad"]
    assert all("table1" in c.tables for c in own)  # the paper's own cell, tagged twice
    # a paper's own notebook leaves out the cells only the matrix renders
    n2n = grid.cells("smoke", synthetic_root, paper="n2n", matrix=False)
    assert {c.dataset for c in n2n} == {"mpdd", "visa"}


def test_estimate_prefers_the_cells_own_current_record():
    cell = grid.Cell("pouta", "main", "mvtec_ad", "grid", "shots=2,support_draw=1", 0, ())

    def rec(cat, variant, s):
        return {"key": {"paper": "pouta", "experiment": "main", "dataset": "mvtec_ad",
                        "category": cat, "variant": variant, "seed": 0},
                "timings": {"total_s": s}}

    assert grid.estimate_s(cell, [rec("grid", "shots=2,support_draw=1", 7.0)]) == 7.0
    # the other draws of the same k in this category, then this category's other runs, then
    # the same k in other categories, then any of the paper's runs, then an older own record
    assert grid.estimate_s(cell, [rec("toothbrush", "shots=2", 10.0),
                                  rec("grid", "shots=2,support_draw=2", 20.0),
                                  rec("grid", "shots=2", 30.0),
                                  rec("grid", "default", 99.0)]) == 25.0
    assert grid.estimate_s(cell, [rec("toothbrush", "shots=2", 10.0),
                                  rec("grid", "default", 99.0)]) == 99.0
    assert grid.estimate_s(cell, [rec("toothbrush", "shots=2", 10.0),
                                  rec("toothbrush", "default", 40.0)]) == 10.0
    assert grid.estimate_s(cell, [rec("toothbrush", "default", 40.0)]) == 40.0
    assert grid.estimate_s(cell, [], [rec("grid", "shots=2,support_draw=1", 3.0)]) == 3.0
    # an older record of the cell itself beats the current records of other cells
    assert grid.estimate_s(cell, [rec("grid", "default", 40.0)],
                           [rec("grid", "shots=2,support_draw=1", 3.0)]) == 3.0
    assert grid.estimate_s(cell, []) == grid.DEFAULT_COST_S["pouta"]


def test_committed_smoke_results_cover_the_grid(monkeypatch):
    """Every cell the smoke grid lists has a current committed record (what nbval renders)."""
    monkeypatch.setenv("REPRO_READONLY", "1")
    rows = grid.plan("smoke")
    assert rows and all(r.status == "done" for r in rows), \
        [r.cell.label() + " " + r.status for r in rows if r.status != "done"][:10]


def test_plan_cli_on_an_empty_store(synthetic_root, scratch_store, capsys):
    assert main(["plan", "--profile", "smoke", "--data-root", str(synthetic_root),
                 "--paper", "puad", "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out.splitlines()
    n = 2 * len(grid.cells("smoke", synthetic_root, paper="puad", seeds=[0]))
    assert len(out) == n + 2 and all(line.startswith("missing ") for line in out[:n])
    assert all(line.endswith("?") for line in out[:n])  # no record to time them by
    assert out[n].startswith(f"profile smoke: {n} cells, 0 done, {n} missing")
    assert out[n + 1].startswith(f"{n} of them (marked ?) have no record")
    assert main(["plan", "--profile", "smoke", "--paper", "nope"]) == 2
    assert main(["plan", "--profile", "smoke", "--seeds", "a,b"]) == 2


@pytest.mark.parametrize("variant,why", [
    ("epochs=abc", "not an integer"), ("epochs=2.5", "not an integer"),
    ("epochs=-5", "count >= 1"), ("shots=-1", "count >= 0"), ("lr=fast", "not a number"),
    ("foreground=1", "true or false"), ("model=3", "not a string")])
def test_bad_overrides_fail_before_anything_runs(variant, why, scratch_store, capsys):
    assert main(["run", "--paper", "pouta", "--experiment", "main", "--dataset", "mvtec_ad",
                 "--category", "grid", "--variant", variant]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: pouta/main: override") and why in err
    assert not (scratch_store / "cache" / "data").exists()  # nothing was computed, not even data


def test_every_grid_variant_is_a_valid_override(synthetic_root):
    from repro.experiments import cell_identity

    for profile in ("smoke", "real_subset", "paper"):
        for c in grid.cells(profile, synthetic_root):
            cell_identity(c.paper, c.experiment, c.dataset, c.category, variant=c.variant,
                          seed=c.seed, profile=profile)


def test_data_errors_come_before_training(synthetic_root, tmp_path, scratch_store, capsys):
    """A mask of the wrong size, a missing mask and a one-image training split each stop the
    run in its first second with the file named, and leave no record."""
    import shutil

    from PIL import Image

    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "mvtec_ad" / "grid", root / "mvtec_ad" / "grid")
    masks = sorted((root / "mvtec_ad" / "grid" / "ground_truth").rglob("*.png"))
    Image.new("L", (10, 10)).save(masks[0])
    args = ["run", "--paper", "baseline", "--experiment", "ae", "--dataset", "mvtec_ad",
            "--category", "grid", "--data-root", str(root), "--device", "cpu"]
    assert main(args) == 2
    assert f"mask {masks[0]} is 10x10 but its image" in capsys.readouterr().err
    masks[0].unlink()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: missing mask for defect image") and str(masks[0]) in err
    assert not (scratch_store / "results" / "smoke" / "runs").exists()


def test_one_training_image_cannot_give_a_validation_split(tmp_path):
    from repro.data import DatasetError
    from repro.data.common import Record, holdout_split

    one = [Record(tmp_path / "good" / "000.png", 0, "good", "mpdd", "tubes")]
    with pytest.raises(DatasetError, match="1 training image.*leaves none to train on"):
        holdout_split(one, 0.2, seed=0)
    assert [len(p) for p in holdout_split(one * 2, 0.2, seed=0)] == [1, 1]


def test_paper_work_by_hand(synthetic_root):
    """The work of a paper-profile cell from the printed budgets: POUTA 600 epochs x ceil(264/8)
    steps x batch 8 on MVTec grid's 264 images; TSDN 200 epochs x n; N2N at most 500 epochs x
    the 80 % training split; PUAD 70,000 student steps."""
    from repro.experiments import cell_identity

    def cfg(paper, variant="", experiment="main", dataset="mvtec_ad", category="grid"):
        cell = grid.Cell(paper, experiment, dataset, category, variant, 0, ())
        return cell, cell_identity(paper, experiment, dataset, category, variant=variant,
                                   profile="paper", data_root=str(synthetic_root))[1]

    assert grid.work(*cfg("pouta"), 264) == {"images": 600 * 33 * 8}
    assert grid.work(*cfg("pouta", "shots=2"), 264) == {"images": 600 * 33 * 8}
    assert grid.work(*cfg("tsdn"), 264) == {"images": 200 * 264}
    assert grid.work(*cfg("n2n", dataset="mpdd", category="metal_plate"), 54) == \
        {"images": 500 * 43}
    assert grid.work(*cfg("puad", dataset="mvtec_loco", category="juice_bottle"), 335) == \
        {"steps": 70000}
    assert grid.bench_case(*cfg("pouta", "model=vanilla")) == "pouta/vanilla"
    assert grid.bench_case(*cfg("puad", "size=M", dataset="mvtec_loco",
                                category="juice_bottle")) == "puad/M"


def test_paper_plan_estimates_from_the_measured_throughput(synthetic_root, scratch_store):
    bench = {"device": "cuda: made up", "cases": {
        "pouta": {"train_images_per_s": 80.0, "test_s_per_image": 0.5},
        "puad/S": {"train_steps_per_s": 10.0, "distil_steps_per_s": 20.0,
                   "test_s_per_image": 0.1}}}
    rows = {(r.cell.paper, r.cell.experiment, r.cell.dataset, r.cell.category, r.cell.variant): r
            for r in grid.plan("paper", str(synthetic_root), bench=bench)}
    n_train, n_test = grid._counts(synthetic_root, "mvtec_ad", "grid")
    assert n_train == 8  # synthetic grid: one step of 8 an epoch
    pouta = rows[("pouta", "main", "mvtec_ad", "grid", "default")]
    assert pouta.source == "benchmark"
    assert pouta.estimate_s == pytest.approx(600 * 8 / 80.0 + n_test * 0.5)
    # PUAD size S: 70,000 student steps, and the teacher's 60,000 distillation steps (one
    # teacher per size, carried by the first cell of that size)
    _, loco_test = grid._counts(synthetic_root, "mvtec_loco", "juice_bottle")
    puad = rows[("puad", "main", "mvtec_loco", "juice_bottle", "default")]
    assert puad.estimate_s == pytest.approx(70000 / 10.0 + loco_test * 0.1 + 60000 / 20.0)
    assert rows[("puad", "main", "mvtec_loco", "juice_bottle", "size=M")].source == "constant"
    assert rows[("tsdn", "main", "mvtec_ad", "grid", "default")].source == "constant"
    text = grid.format_plan(list(rows.values()), "paper", "train_cuda.json (cuda: made up)")
    assert "or of the throughput measured in train_cuda.json (cuda: made up)" in text
    line = next(t for t in text.splitlines() if "pouta/main mvtec_ad/grid default" in t)
    assert line.rstrip().endswith("min" + "b")


def test_bench_train_reads_throughput_from_a_record():
    from repro.bench_train import measure, tag

    rec = {"extra": {"train_images_per_s": 12.5, "n_test": 10, "encoder": "lite0 (stand-in)"},
           "timings": {"test_s": 2.0}}
    assert measure(rec) == {"test_s_per_image": 0.2, "train_images_per_s": 12.5,
                            "encoder": "lite0 (stand-in)"}
    puad = {"extra": {"train_steps_per_s": 3.0, "n_test": 4, "teacher": {
        "source": "distilled", "cached": False, "steps": 10, "backbone": "efficientnet_lite0"}},
        "timings": {"test_s": 1.0, "teacher_s": 5.0}}
    assert measure(puad) == {"test_s_per_image": 0.25, "train_steps_per_s": 3.0,
                             "distil_steps_per_s": 2.0, "teacher": "efficientnet_lite0"}
    assert tag("cuda: NVIDIA H200", 16) == "cuda" and tag("cpu (2 threads)", 2) == "cpu-2threads"


def test_bench_train_keeps_the_cases_it_did_not_remeasure(tmp_path):
    from repro import bench_train

    first = {"device": "cpu (2 threads)", "threads": 2, "versions": {"repro_commit": "aaa"},
             "cases": {"pouta": {"train_images_per_s": 1.0}}}
    second = {"device": "cpu (2 threads)", "threads": 2, "versions": {"repro_commit": "bbb"},
              "note": "later", "cases": {"tsdn": {"train_images_per_s": 2.0}}}
    bench_train.save(first, tmp_path)
    path = bench_train.save(second, tmp_path)
    cases = bench_train.load("cpu", tmp_path)[0]["cases"]
    assert path.name == "train_cpu-2threads.json"
    assert cases == {"pouta": {"train_images_per_s": 1.0, "commit": "aaa", "note": ""},
                     "tsdn": {"train_images_per_s": 2.0, "commit": "bbb", "note": "later"}}


def test_a_converted_gpu_file_scales_by_the_latency_ratio(tmp_path):
    """Hand case: POUTA 300 ms on the CPU and 3 ms on the GPU (x100), vanilla 100 / 2 ms (x50),
    PUAD-S 200 / 4 ms (x50); N2N has no latency file and takes their geometric mean, 63.0."""
    from repro import bench_train

    def write(name, device, value):
        (tmp_path / name).write_text(json.dumps({"device": device, **value}))

    write("pouta_cost_cpu-2threads.json", "cpu (2 threads)",
          {"models": {"pouta": {"latency_ms": 300.0}, "vanilla": {"latency_ms": 100.0}}})
    write("pouta_cost_cuda.json", "cuda: X", {"models": {"pouta": {"latency_ms": 3.0},
                                                          "vanilla": {"latency_ms": 2.0}}})
    write("puad_latency_cpu-2threads.json", "cpu (2 threads)",
          {"sizes": {"S": {"efficientad": 200.0}}})
    write("puad_latency_cuda.json", "cuda: X", {"sizes": {"S": {"efficientad": 4.0}}})
    cpu = {"device": "cpu (2 threads)", "threads": 2, "cases": {
        "pouta": {"train_images_per_s": 0.1, "test_s_per_image": 2.0},
        "puad/S": {"train_steps_per_s": 0.4, "distil_steps_per_s": 0.02},
        "n2n": {"train_images_per_s": 1.0}}}
    out = bench_train.convert(cpu, tmp_path)
    assert out["cases"]["pouta"]["train_images_per_s"] == pytest.approx(10.0)
    assert out["cases"]["pouta"]["test_s_per_image"] == pytest.approx(0.02)
    assert out["cases"]["puad/S"]["distil_steps_per_s"] == pytest.approx(1.0)
    mean = (100 * 50 * 50) ** (1 / 3)  # vanilla's ratio counts although no case uses it
    assert out["cases"]["n2n"]["train_images_per_s"] == pytest.approx(mean, rel=1e-5)
    assert "converted from cpu (2 threads)" in out["device"]
    # a measured GPU file is preferred; "cuda" never returns a converted one
    (tmp_path / "train_cuda-converted.json").write_text(json.dumps(out))
    assert bench_train.load("cuda", tmp_path) is None
    assert bench_train.load("cuda-converted", tmp_path)[1].name == "train_cuda-converted.json"


def test_claim_cells_get_three_seeds_and_the_others_one(synthetic_root):
    cells = grid.cells("smoke", synthetic_root)
    seeds: dict[tuple, set] = {}
    for c in cells:
        seeds.setdefault((c.paper, c.experiment, c.dataset, c.category, c.variant),
                         set()).add(c.seed)
    assert seeds[("n2n", "main", "mpdd", "metal_plate", "lam=0")] == {0, 1, 2}
    assert seeds[("n2n", "main", "mpdd", "metal_plate", "lam=0.2")] == {0}  # no claim on it
    assert seeds[("pouta", "main", "mvtec_ad", "grid", "model=vanilla")] == {0, 1, 2}
    assert seeds[("pouta", "main", "mvtec_ad", "grid", "shots=2")] == {0}
    assert seeds[("puad", "main", "mvtec_loco", "juice_bottle", "default")] == {0, 1, 2}
    assert seeds[("puad", "controls", "mvtec_loco", "juice_bottle", "default")] == {0}
    assert all(s == {0} for k, s in seeds.items() if k[0] == "baseline")
    # explicit seeds: every cell exactly those; the paper profile: seed 0 unless asked
    assert {c.seed for c in grid.cells("smoke", synthetic_root, seeds=[4])} == {4}
    assert grid.claim_seeds("paper") == (0,)


def test_claim_categories_restrict_the_claim_seeds_and_rows(synthetic_root, monkeypatch):
    """A profile that names a paper's claim categories (real_subset TSDN: toothbrush) runs 3
    seeds there only; its other printed categories run the rows of their own tables, once."""
    monkeypatch.setitem(grid.CLAIM_CATEGORIES, ("smoke", "tsdn"), ("toothbrush",))
    seeds: dict[tuple, set] = {}
    for c in grid.cells("smoke", synthetic_root, paper="tsdn", dataset="mvtec_ad",
                        matrix=False):
        seeds.setdefault((c.category, c.variant), set()).add(c.seed)
    assert {v for (cat, v) in seeds if cat == "toothbrush"} == set(grid.TSDN_ROWS)
    assert all(seeds[("toothbrush", v)] == {0, 1, 2} for v in grid.TSDN_ROWS)
    # grid is printed in Table 3 only: its four rows, seed 0
    assert {v for (cat, v) in seeds if cat == "grid"} == set(grid.TSDN_T3.values())
    assert all(s == {0} for (cat, _), s in seeds.items() if cat == "grid")
    assert grid.claim_categories("tsdn", "real_subset") == ("toothbrush",)
    assert grid.claim_categories("tsdn", "paper") is None


def test_an_estimate_from_other_work_is_scaled_by_the_training_work():
    """A record of another category or config prices a cell by the ratio of what they train:
    training images x epochs x pixels per image (POUTA: its training window)."""
    from repro.profiles import paper_config

    config = paper_config("tsdn", "real_subset")
    cell = grid.Cell("tsdn", "main", "mvtec_loco", "juice_bottle", "default", 0, ())
    rec = {"key": {"paper": "tsdn", "experiment": "main", "dataset": "mpdd",
                   "category": "metal_plate", "variant": "default", "seed": 0},
           "config": config, "timings": {"total_s": 100.0}}
    assert grid.work_ratio(cell, config, 300, rec, 50) == pytest.approx(6.0)
    assert grid.estimate_s(cell, [rec], scale=lambda r: 6.0) == pytest.approx(600.0)
    assert grid.estimate_s(cell, [rec]) == pytest.approx(100.0)  # no scale: as measured
    bigger = {**config, "category_overrides": {
        "mvtec_loco/juice_bottle": {"image_size": 2 * config["image_size"]}}}
    assert grid.work_ratio(cell, bigger, 50, rec, 50) == pytest.approx(4.0)
    # an older record keyed its override by the bare category name: still read
    old = {**rec, "key": {**rec["key"], "dataset": "mvtec_loco", "category": "juice_bottle"},
           "config": {**config, "category_overrides": {
               "juice_bottle": {"image_size": 2 * config["image_size"]}}}}
    assert grid.work_ratio(cell, config, 50, old, 50) == pytest.approx(0.25)
    # POUTA trains on windows: a 128 px window of a 256 px image costs 128 px
    pconf = paper_config("pouta", "real_subset")
    pcell = grid.Cell("pouta", "main", "mvtec_ad", "grid", "default", 0, ())

    def pouta(**over):
        return {**pconf, "category_overrides": {"mvtec_ad/grid": over}}

    prec = {**rec, "key": {**rec["key"], "paper": "pouta", "dataset": "mvtec_ad",
                           "category": "grid"}, "config": pouta(image_size=128)}
    assert grid.work_ratio(pcell, pouta(image_size=256, train_crop=128), 25, prec, 25) == 1.0
    assert grid.work_ratio(pcell, pouta(image_size=256), 25, prec, 25) == pytest.approx(4.0)
    assert grid.work_ratio(cell, config, 50, {**rec, "config": {}}, 50) == 1.0  # unreadable
