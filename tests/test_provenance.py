"""A record is returned only for its own data and code (repro.provenance, issue 12)."""

from __future__ import annotations

import ast
import shutil

import pytest

from repro import grid, provenance
from repro.data.synthetic import PROVENANCE_FILE
from repro.experiments import cell_identity, run_cell
from repro.runs import RunMissingError, config_hash


def test_code_version_ignores_docstrings_and_comments_but_not_code():
    a = ast.parse('def f(x):\n    """Doc."""\n    return x + 1  # a comment\n')
    b = ast.parse("def f(x):\n\n    return x + 1\n")
    c = ast.parse('def f(x):\n    """Doc."""\n    return x + 2\n')
    assert provenance._normalised(a) == provenance._normalised(b) != provenance._normalised(c)


def test_code_modules_follow_the_imports_of_one_paper():
    pouta = provenance.code_modules("pouta")
    assert {"repro.methods.pouta", "repro.networks.pouta", "repro.kernels.synthesis",
            "repro.metrics", "repro.evaluate"} <= set(pouta)
    assert not {"repro.runs", "repro.experiments", "repro.grid",
                "repro.networks.tsdn"} & set(pouta)
    assert "repro.methods.teacher" in provenance.code_modules("puad")
    versions = {p: provenance.code_version(p) for p in grid.PAPERS}
    assert len(set(versions.values())) == len(versions)  # one per paper
    # a cell holds its own dataset's reader only: the folder format is not in an MVTec cell's
    assert "repro.data.folder" not in provenance.code_modules("tsdn", "mvtec_ad")
    assert "repro.data.folder" in provenance.code_modules("tsdn", "folder")
    assert "repro.data.mvtec" in provenance.code_modules("tsdn", "mpdd")


def test_data_id_names_the_data_and_the_code(synthetic_root):
    from repro.profiles import get_profile

    smoke = get_profile("smoke")
    key, config, did = cell_identity("baseline", "ae", "mvtec_ad", "grid", profile="smoke")
    assert did == f"synthetic-{smoke.synthetic.fingerprint()} " \
                  f"code-{provenance.code_version('baseline', 'mvtec_ad')}"
    # a generated folder passed as DATA_ROOT is named by its generator fingerprint
    _, _, passed = cell_identity("baseline", "ae", "mvtec_ad", "grid", profile="smoke",
                                 data_root=str(synthetic_root))
    assert passed.split()[0].startswith("synthetic-") and passed != did


@pytest.fixture
def real_looking_root(synthetic_root, tmp_path):
    """A copy of the synthetic tree without its generator file: read as real data."""
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    (root / PROVENANCE_FILE).unlink()
    return root


def test_real_data_fingerprint_is_its_listing_not_its_path(real_looking_root, tmp_path):
    fp = provenance.data_fingerprint(real_looking_root, "mvtec_ad", "grid", "baseline")
    assert fp.startswith("real-")
    moved = tmp_path / "elsewhere"
    shutil.copytree(real_looking_root, moved)
    assert provenance.data_fingerprint(moved, "mvtec_ad", "grid", "baseline") == fp
    assert provenance.data_fingerprint(moved, "mvtec_ad", "toothbrush", "baseline") != fp
    # POUTA reads dtd/ too: a changed texture folder is other data for POUTA only
    before = provenance.data_fingerprint(moved, "mvtec_ad", "grid", "pouta")
    next((moved / "dtd").rglob("*.jpg")).unlink()
    provenance._real_fingerprint.cache_clear()
    assert provenance.data_fingerprint(moved, "mvtec_ad", "grid", "pouta") != before
    assert provenance.data_fingerprint(moved, "mvtec_ad", "grid", "baseline") == fp


@pytest.mark.slow
def test_a_record_of_other_data_or_older_code_is_not_returned(real_looking_root, scratch_store,
                                                              monkeypatch):
    kw = dict(profile="smoke", data_root=str(real_looking_root), device="cpu")
    first = run_cell("baseline", "ae", "mvtec_ad", "grid", **kw)
    assert first["data_id"].startswith("real-")
    rows = {r.cell.category: r for r in grid.plan("smoke", str(real_looking_root),
                                                  paper="baseline", dataset="mvtec_ad")}
    assert rows["grid"].status == "done"

    # the same folder with one test image fewer: another dataset
    victim = sorted((real_looking_root / "mvtec_ad" / "grid" / "test" / "good").iterdir())[0]
    victim.rename(real_looking_root / "moved-away.png")
    provenance._real_fingerprint.cache_clear()
    row = {r.cell.category: r for r in grid.plan("smoke", str(real_looking_root),
                                                 paper="baseline", dataset="mvtec_ad")}["grid"]
    assert (row.status, row.error) == ("stale", "data changed")
    monkeypatch.setenv("REPRO_READONLY", "1")
    with pytest.raises(RunMissingError, match="another config, data or code"):
        run_cell("baseline", "ae", "mvtec_ad", "grid", **kw)
    monkeypatch.delenv("REPRO_READONLY")
    (real_looking_root / "moved-away.png").rename(victim)
    provenance._real_fingerprint.cache_clear()

    # older code: the same data and config, another code version of the paper
    monkeypatch.setattr("repro.experiments.code_version",
                        lambda paper, dataset=None: "0123456789ab")
    row = {r.cell.category: r for r in grid.plan("smoke", str(real_looking_root),
                                                 paper="baseline", dataset="mvtec_ad")}["grid"]
    assert (row.status, row.error) == ("stale", "code changed")
    again = run_cell("baseline", "ae", "mvtec_ad", "grid", **kw)  # recomputed, not reused
    assert again["data_id"].endswith("code-0123456789ab") and again["started"] >= first["started"]
    assert again["config_hash"] != first["config_hash"]
    assert again["config_hash"] == config_hash(again["config"], again["data_id"])


def test_a_worker_refuses_code_edited_after_it_loaded_it(synthetic_root, scratch_store,
                                                         monkeypatch):
    """A long-lived process (a Ray worker, a notebook kernel) that loaded repro/ before an edit
    would stamp the new code version on records of the old code: it refuses, naming the fix."""
    from repro import experiments, provenance

    monkeypatch.setattr(experiments, "check_code_unchanged", provenance.check_code_unchanged)
    monkeypatch.setattr(provenance, "code_version_on_disk",
                        lambda paper, dataset=None: "edited000000")
    with pytest.raises(ValueError, match="changed on disk.*restart"):
        experiments.run_cell("baseline", "ae", "mvtec_ad", "grid", variant="steps=2",
                             profile="smoke", data_root=str(synthetic_root), device="cpu")
    assert not list((scratch_store / "results").rglob("*.json"))  # nothing was recorded
