"""Run store: atomic records, skip on rerun, resume after a kill, read-only mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from repro.runs import RunKey, RunMissingError, RunStore, atomic_write_text, config_hash

REPO = Path(__file__).resolve().parents[1]
KEY = RunKey("baseline", "ae", "mvtec_ad", "grid", "default", 0, "smoke")
CPU = torch.device("cpu")


def _store(tmp_path, **kw) -> RunStore:
    return RunStore(tmp_path / "runs", tmp_path / "cache", **kw)


def test_finished_run_is_skipped_and_left_byte_identical(tmp_path):
    store, calls = _store(tmp_path), []

    def fn(ctx):
        calls.append(1)
        return {"metrics": {"image_auroc": 0.75}}

    rec = store.run(KEY, fn, config={"a": 1}, device=CPU, data={}, weights={})
    blob = store.path(KEY).read_bytes()
    again = store.run(KEY, fn, config={"a": 1}, device=CPU, data={}, weights={})
    assert calls == [1] and again == rec and store.path(KEY).read_bytes() == blob
    assert rec["metrics"] == {"image_auroc": 0.75} and rec["config_hash"] == config_hash({"a": 1})
    assert {"total_s"} <= set(rec["timings"]) and rec["versions"]["torch"] == torch.__version__
    assert store.records(paper="baseline") == [rec] and store.records(paper="n2n") == []


def test_changed_config_recomputes_but_keeps_the_old_record_until_done(tmp_path):
    store = _store(tmp_path)
    store.run(KEY, lambda ctx: {"metrics": {"m": 1.0}}, config={"a": 1}, device=CPU, data={},
              weights={})
    old = store.path(KEY).read_bytes()

    def crash(ctx):
        raise KeyboardInterrupt  # an interrupt mid-run

    with pytest.raises(KeyboardInterrupt):
        store.run(KEY, crash, config={"a": 2}, device=CPU, data={}, weights={})
    assert store.path(KEY).read_bytes() == old  # the finished record survives
    new = store.run(KEY, lambda ctx: {"metrics": {"m": 2.0}}, config={"a": 2}, device=CPU,
                    data={}, weights={})
    assert new["metrics"] == {"m": 2.0}


def test_readonly_store_never_computes(tmp_path):
    store = _store(tmp_path, readonly=True)
    with pytest.raises(RunMissingError, match="does not exist.*make reproduce PROFILE=smoke"):
        store.run(KEY, lambda ctx: {"metrics": {}}, config={}, device=CPU, data={}, weights={})
    _store(tmp_path).run(KEY, lambda ctx: {"metrics": {}}, config={"a": 1}, device=CPU,
                         data={}, weights={})
    assert store.fetch(KEY, {"a": 1})["metrics"] == {}
    with pytest.raises(RunMissingError, match="another config"):
        store.fetch(KEY, {"a": 2})


def test_atomic_write_keeps_old_content_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    atomic_write_text(path, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def test_checkpoint_roundtrip_records_resume_step(tmp_path):
    store = _store(tmp_path)
    seen = []

    def fn(ctx):
        if ctx.load_checkpoint() is None:
            ctx.save_checkpoint({"step": 7})
            raise KeyboardInterrupt
        seen.append(ctx.resumed_from)
        return {"metrics": {}}

    with pytest.raises(KeyboardInterrupt):
        store.run(KEY, fn, config={}, device=CPU, data={}, weights={})
    rec = store.run(KEY, fn, config={}, device=CPU, data={}, weights={})
    assert seen == [7] and rec["resumed_from_step"] == 7
    assert not any((tmp_path / "cache").rglob("*.pt"))  # checkpoints removed once finished


def test_resume_restores_every_part_and_returns_the_rest(tmp_path):
    """``checkpoint`` saves each part's state dict by name; ``resume`` loads them back into fresh
    objects and returns the step and the extra entries ({} on a fresh start)."""
    store = _store(tmp_path)

    def parts(seed):
        torch.manual_seed(seed)
        model = torch.nn.Linear(3, 2)
        return {"model": model, "optimizer": torch.optim.Adam(model.parameters(), lr=0.1)}

    def fn(ctx):
        fresh = parts(1)
        saved = ctx.resume(**fresh)
        if not saved:
            first = parts(0)
            first["model"](torch.ones(1, 3)).sum().backward()
            first["optimizer"].step()
            ctx.checkpoint(3, first, history=[0.5])
            raise KeyboardInterrupt
        assert saved == {"step": 3, "history": [0.5]}
        return {"metrics": {}, "extra": {
            "weight": fresh["model"].weight.tolist(),
            "adam_steps": fresh["optimizer"].state_dict()["state"][0]["step"].item()}}

    with pytest.raises(KeyboardInterrupt):
        store.run(KEY, fn, config={}, device=CPU, data={}, weights={})
    rec = store.run(KEY, fn, config={}, device=CPU, data={}, weights={})
    expected = parts(0)
    expected["model"](torch.ones(1, 3)).sum().backward()
    expected["optimizer"].step()
    assert rec["extra"]["weight"] == expected["model"].weight.tolist()
    assert rec["extra"]["adam_steps"] == 1 and rec["resumed_from_step"] == 3


def _cli(env, *extra):
    return [sys.executable, "-m", "repro", "run", "--paper", "baseline", "--experiment", "ae",
            "--dataset", "mvtec_ad", "--category", "grid", "--profile", "smoke",
            "--device", "cpu", *extra]


@pytest.mark.slow
def test_killed_run_resumes_and_matches_an_uninterrupted_run(tmp_path):
    """Kill a real training run (SIGKILL) after its first checkpoints; the rerun resumes from the
    last one, gives exactly the metrics of an uninterrupted run, and leaves other finished
    records byte-identical."""
    variant = ["--variant", "steps=120,checkpoint_every=10"]
    base_env = {**os.environ, "REPRO_CACHE": str(tmp_path / "cache"), "TQDM_DISABLE": "1"}
    env = {**base_env, "REPRO_RESULTS": str(tmp_path / "a")}
    # a finished neighbour record that must survive untouched
    subprocess.run(_cli(env, "--variant", "steps=20,checkpoint_every=10"), env=env, check=True,
                   capture_output=True, timeout=300)
    neighbour = next((tmp_path / "a/smoke/runs").glob("*steps=20*"))
    before = neighbour.read_bytes()

    proc = subprocess.Popen(_cli(env, *variant), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    ckpt_root = tmp_path / "cache" / "checkpoints" / "smoke"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        ckpts = list(ckpt_root.glob("*steps=120*/last.pt"))
        if ckpts and torch.load(ckpts[0], weights_only=False)["step"] >= 30:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list((tmp_path / "a/smoke/runs").glob("*steps=120*"))  # no partial record

    subprocess.run(_cli(env, *variant), env=env, check=True, capture_output=True, timeout=300)
    resumed = json.loads(next((tmp_path / "a/smoke/runs").glob("*steps=120*")).read_text())
    assert resumed["resumed_from_step"] >= 30

    env_b = {**base_env, "REPRO_RESULTS": str(tmp_path / "b")}
    subprocess.run(_cli(env_b, *variant), env=env_b, check=True, capture_output=True,
                   timeout=300)
    clean = json.loads(next((tmp_path / "b/smoke/runs").glob("*steps=120*")).read_text())
    assert clean["resumed_from_step"] is None
    assert resumed["metrics"] == clean["metrics"]
    assert resumed["extra"]["final_loss"] == clean["extra"]["final_loss"]
    assert neighbour.read_bytes() == before


def test_paper_profile_refuses_synthetic_data():
    from repro.data import DatasetError
    from repro.experiments import resolve_data_root
    from repro.profiles import get_profile

    with pytest.raises(DatasetError, match="PROFILE=paper needs the real datasets"):
        resolve_data_root("", get_profile("paper"))
