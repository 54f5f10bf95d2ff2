"""`make reproduce` pipeline: results move into place only when a notebook succeeds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from repro.pipeline import NotebookFailed, execute

REPO = Path(__file__).resolve().parents[1]


def _notebook(path: Path, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('PROFILE = "smoke"\nDATA_ROOT = ""\nDEVICE = "auto"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


WRITE_TABLE = """
from repro.tables import output_dir
out = output_dir(PROFILE) / "tables"
out.mkdir(parents=True, exist_ok=True)
(out / "t.csv").write_text("new")
"""


@pytest.mark.slow
def test_failing_notebook_leaves_results_untouched(tmp_path):
    results = tmp_path / "results" / "smoke"
    (results / "tables").mkdir(parents=True)
    (results / "tables" / "t.csv").write_text("committed")
    (results / "nb.ipynb").write_text("committed notebook")
    good = _notebook(tmp_path / "nb.ipynb", WRITE_TABLE)
    bad = _notebook(tmp_path / "nb_bad.ipynb",
                    WRITE_TABLE + "\nraise RuntimeError('boom')")
    params = {"PROFILE": "smoke", "DATA_ROOT": "", "DEVICE": "cpu"}

    with pytest.raises(NotebookFailed, match="nb_bad.ipynb failed; results/smoke/ was left"):
        execute(bad, results, params)
    assert (results / "tables" / "t.csv").read_text() == "committed"
    assert not (results / "nb_bad.ipynb").exists()
    assert not list((tmp_path / "results").glob(".stage-*"))  # staging removed

    final = execute(good, results, params)
    assert (results / "tables" / "t.csv").read_text() == "new"
    executed = nbformat.read(final, as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert [c.id for c in injected] == ["injected-parameters"]  # stable between executions


def test_cli_help_and_clear_errors(tmp_path):
    out = subprocess.run([sys.executable, "-m", "repro", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "run" in out and "reproduce" in out
    run_help = subprocess.run([sys.executable, "-m", "repro", "run", "--help"],
                              capture_output=True, text=True, check=True).stdout
    for flag in ("--paper", "--experiment", "--dataset", "--category", "--variant", "--seed",
                 "--profile", "--data-root", "--device"):
        assert flag in run_help
    bad = subprocess.run(
        [sys.executable, "-m", "repro", "run", "--paper", "baseline", "--experiment", "ae",
         "--dataset", "mvtec_ad", "--category", "grid", "--data-root", str(tmp_path / "none")],
        capture_output=True, text=True, env={"REPRO_RESULTS": str(tmp_path),
                                             "PATH": "/usr/bin:/bin"})
    assert bad.returncode == 2
    assert re.search(r"error: DATA_ROOT not found: .*none", bad.stderr)


@pytest.mark.slow
def test_a_computing_notebook_streams_its_progress(tmp_path, synthetic_root, scratch_store,
                                                    capfd):
    """A cell that computes prints one line per cell before and after it, and papermill streams
    the kernel's output to this process while the notebook runs."""
    body = f"""
from repro import grid
cells = grid.cells(PROFILE, {str(synthetic_root)!r}, paper="baseline", dataset="mvtec_ad",
                   category="grid")
records = grid.fetch(cells, profile=PROFILE, data_root={str(synthetic_root)!r}, device="cpu")
"""
    nb = _notebook(tmp_path / "compute.ipynb", body)
    execute(nb, tmp_path / "out" / "smoke", {"PROFILE": "smoke", "DATA_ROOT": "",
                                             "DEVICE": "cpu"})
    out = capfd.readouterr().out
    assert "computing baseline/ae mvtec_ad/grid default seed0 ..." in out
    assert re.search(r"done in \d+ s: image_auroc \d\.\d{3}", out)
    assert "1 of 1 cells have a record" in out
