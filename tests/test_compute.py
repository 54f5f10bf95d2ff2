"""``python -m repro compute``: the missing cells of the grid, outside the notebooks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repro import grid
from repro.__main__ import main
from repro.compute import compute, headline

REPO = Path(__file__).resolve().parents[1]


def test_headline_metric():
    assert headline({"pixel_auroc": 0.9, "image_auroc": 0.812}) == "image_auroc 0.812"
    assert headline({"puad/auroc_pooled": 0.5}) == "puad/auroc_pooled 0.500"
    assert headline({"other": "x"}) == ""


def test_compute_runs_what_is_missing_once(synthetic_root, scratch_store, capsys):
    lines = []
    out = compute("smoke", str(synthetic_root), paper="baseline", dataset="mvtec_ad",
                  device="cpu", echo=lines.append)
    cells = grid.cells("smoke", synthetic_root, paper="baseline", dataset="mvtec_ad")
    assert len(out) == len(cells) == 2 and all(o.ok for o in out)
    assert lines[0].startswith("compute (local): 2 cells of profile smoke")
    assert lines[1].startswith("[1/2] baseline/ae mvtec_ad/") and "image_auroc" in lines[1]
    assert "1 left" in lines[1] and "0 left" in lines[2]
    rows = grid.plan("smoke", str(synthetic_root), paper="baseline", dataset="mvtec_ad")
    assert [r.status for r in rows] == ["done", "done"]
    assert compute("smoke", str(synthetic_root), paper="baseline", dataset="mvtec_ad",
                   device="cpu", echo=lines.append) == []  # nothing left
    assert main(["compute", "--profile", "smoke", "--executor", "nope"]) == 2


def test_a_failing_cell_does_not_stop_the_others(synthetic_root, scratch_store, monkeypatch):
    from repro import experiments

    real = experiments.EXPERIMENTS[("baseline", "ae")]

    def flaky(ctx, root):
        if ctx.key.category == "grid":
            raise RuntimeError("out of memory (made up)")
        return real.fn(ctx, root)

    monkeypatch.setitem(experiments.EXPERIMENTS, ("baseline", "ae"),
                        experiments.Experiment("baseline", "ae", flaky))
    out = compute("smoke", str(synthetic_root), paper="baseline", dataset="mvtec_ad",
                  device="cpu", retries=1, echo=lambda s: None)
    assert sorted((o.cell.category, o.ok) for o in out) == [("grid", False), ("toothbrush", True)]
    rows = {r.cell.category: r for r in grid.plan("smoke", str(synthetic_root),
                                                  paper="baseline", dataset="mvtec_ad")}
    assert rows["grid"].status == "failed" and "out of memory" in rows["grid"].error
    assert rows["toothbrush"].status == "done"


def test_a_killed_compute_keeps_its_records_and_the_rerun_does_the_rest(synthetic_root,
                                                                          tmp_path):
    env = {**os.environ, "REPRO_RESULTS": str(tmp_path / "results"),
           "REPRO_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("REPRO_READONLY", None)
    cmd = [sys.executable, "-m", "repro", "compute", "--profile", "smoke", "--data-root",
           str(synthetic_root), "--paper", "baseline", "--dataset", "mvtec_ad", "--device", "cpu"]
    runs = tmp_path / "results" / "smoke" / "runs"
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600
    while not list(runs.glob("*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {p.name: p.read_bytes() for p in runs.glob("*.json")}
    assert first and all(json.loads(b)["metrics"] for b in first.values())
    total = len(grid.cells("smoke", synthetic_root, paper="baseline", dataset="mvtec_ad"))
    if len(first) == total:  # the machine was fast enough to finish first: nothing to resume
        return
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[0].startswith(
        f"compute (local): {total - len(first)} cells")
    after = {p.name: p.read_bytes() for p in runs.glob("*.json")}
    assert len(after) == total and all(after[n] == b for n, b in first.items())


def _metrics_of(runs: Path) -> dict:
    return {p.name: (json.loads(p.read_text())["metrics"], json.loads(p.read_text())["config_hash"])
            for p in sorted(runs.glob("*.json"))}


def test_ray_and_slurm_executors_give_the_local_records(synthetic_root, tmp_path, monkeypatch):
    """The same tiny grid under the three executors, one thread a cell: identical metrics and
    identities (torch's thread count alone moves CPU sums in the last digits)."""
    pytest = __import__("pytest")
    pytest.importorskip("ray")
    pytest.importorskip("submitit")
    monkeypatch.delenv("REPRO_READONLY", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    got = {}
    for executor, extra in (("local", {}), ("ray", {"ray_num_cpus": 2}),
                            ("slurm", {"slurm_cluster": "local"})):
        monkeypatch.setenv("REPRO_RESULTS", str(tmp_path / executor / "results"))
        monkeypatch.setenv("REPRO_CACHE", str(tmp_path / executor / "cache"))
        lines = []
        out = compute("smoke", str(synthetic_root), executor=executor, device="cpu",
                      paper="baseline", dataset="mvtec_ad", echo=lines.append,
                      cpus_per_cell=1, **extra)
        assert len(out) == 2 and all(o.ok for o in out), [o.error for o in out]
        assert lines[0].startswith(f"compute ({executor}): 2 cells")
        got[executor] = _metrics_of(tmp_path / executor / "results" / "smoke" / "runs")
    assert got["ray"] == got["local"] and got["slurm"] == got["local"] and len(got["local"]) == 2
    import ray

    ray.shutdown()


def test_cuda_without_a_gpu_is_one_error_before_any_cell(synthetic_root, scratch_store, capsys):
    import torch

    if torch.cuda.is_available():
        return
    assert main(["compute", "--profile", "smoke", "--data-root", str(synthetic_root),
                 "--paper", "baseline", "--device", "cuda"]) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err
    assert not (scratch_store / "results" / "smoke" / "runs").exists()


@pytest.mark.parametrize("flags,recompute", [([], True), (["--recompute-stale"], True),
                                             (["--keep-stale"], False)])
def test_compute_recomputes_stale_cells_unless_told_not_to(flags, recompute, monkeypatch):
    import repro.compute

    seen = {}
    monkeypatch.setattr(repro.compute, "compute", lambda *a, **kw: seen.update(kw) or [])
    assert main(["compute", "--profile", "smoke", *flags]) == 0
    assert seen["recompute_stale"] is recompute


def test_cells_sharing_a_teacher_do_not_start_together():
    """Longest first, but a second PUAD-S cell would only wait on the first one's teacher
    lease: it goes after every cell that can run meanwhile."""
    from repro.compute import todo

    def row(paper, variant, seed, s):
        return grid.PlanRow(grid.Cell(paper, "main", "mvtec_loco" if paper == "puad" else
                                      "mvtec_ad", "c", variant, seed, ()), "missing", s)

    rows = [row("puad", "default", 0, 100), row("puad", "default", 1, 99),
            row("puad", "size=M", 0, 98), row("pouta", "default", 0, 50),
            row("tsdn", "default", 0, 10), row("puad", "default", 2, 97)]
    order = [(r.cell.paper, r.cell.variant, r.cell.seed) for r in todo(rows)]
    assert order == [("puad", "default", 0), ("puad", "size=M", 0), ("pouta", "default", 0),
                     ("tsdn", "default", 0), ("puad", "default", 1), ("puad", "default", 2)]
