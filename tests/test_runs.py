"""Run store: atomic records, skip on rerun, resume after a kill, read-only mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
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


def test_a_record_copied_to_another_cells_name_is_not_that_cells_record(tmp_path):
    store = _store(tmp_path)
    store.run(KEY, lambda ctx: {"metrics": {"m": 1.0}}, config={"a": 1}, device=CPU, data={},
              weights={})
    other = RunKey("baseline", "ae", "mvtec_ad", "carpet", "default", 0, "smoke")
    store.path(other).write_bytes(store.path(KEY).read_bytes())  # same config, other category
    assert store.status(other, {"a": 1}) == "stale"
    with pytest.raises(RunMissingError):
        store.fetch(other, {"a": 1})
    rec = store.run(other, lambda ctx: {"metrics": {"m": 2.0}}, config={"a": 1}, device=CPU,
                    data={}, weights={})
    assert rec["key"]["category"] == "carpet" and rec["metrics"] == {"m": 2.0}


def test_a_failed_run_leaves_its_error_until_it_succeeds(tmp_path):
    store = _store(tmp_path)

    def broken(ctx):
        raise ValueError("masks missing for 3 images")

    with pytest.raises(ValueError):
        store.run(KEY, broken, config={"a": 1}, device=CPU, data={}, weights={})
    assert store.status(KEY, {"a": 1}) == "failed" and store.get(KEY) is None
    assert store.failure(KEY)["error"] == "ValueError: masks missing for 3 images"
    assert store.records() == []  # a failure is not a record
    store.run(KEY, lambda ctx: {"metrics": {"m": 1.0}}, config={"a": 1}, device=CPU, data={},
              weights={})
    assert store.status(KEY, {"a": 1}) == "done" and store.failure(KEY) is None
    assert store.status(KEY, {"a": 2}) == "stale"


def test_an_interrupt_is_not_a_failure(tmp_path):
    store = _store(tmp_path)

    def interrupted(ctx):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.run(KEY, interrupted, config={"a": 1}, device=CPU, data={}, weights={})
    assert store.status(KEY, {"a": 1}) == "missing"


def test_saved_files_are_readable_by_others_and_temp_names_unique(tmp_path, monkeypatch):
    from repro.runs import atomic_torch_save, atomic_write_npz

    atomic_write_npz(tmp_path / "a.npz", {"x": np.zeros(3)})
    atomic_write_text(tmp_path / "a.json", "{}")
    assert (tmp_path / "a.npz").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    temps, save = [], torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: (temps.append(f), save(obj, f)))
    atomic_torch_save({"step": 1}, tmp_path / "last.pt")
    atomic_torch_save({"step": 2}, tmp_path / "last.pt")
    assert len(set(temps)) == 2 and all(Path(t).parent == tmp_path for t in temps)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.npz", "last.pt"]
    assert torch.load(tmp_path / "last.pt")["step"] == 2
    assert (tmp_path / "last.pt").stat().st_mode & 0o777 == 0o644


WORKER = """
import sys, time, torch
from pathlib import Path
from repro.runs import RunKey, RunStore
tmp = Path(sys.argv[1])
store = RunStore(tmp / "runs", tmp / "cache")
key = RunKey("baseline", "ae", "mvtec_ad", "grid", "default", 0, "smoke")
def fn(ctx):
    with open(tmp / "computed.txt", "a") as f:
        f.write(sys.argv[2] + "\\n")
    time.sleep(3)
    return {"metrics": {"m": float(sys.argv[2])}}
rec = store.run(key, fn, config={"a": 1}, device=torch.device("cpu"), data={}, weights={})
print(rec["metrics"]["m"])
"""


def test_two_workers_on_one_cell_compute_it_once(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=REPO) for i in (1, 2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    computed = (tmp_path / "computed.txt").read_text().split()
    assert len(computed) == 1  # one trained, the other waited and read its record
    assert {o[0].strip() for o in outs} == {f"{float(computed[0])}"}
    assert not list((tmp_path / "cache" / "leases").rglob("*.lease"))


def test_a_stale_lease_is_broken_and_a_live_one_waited_for(tmp_path):
    from repro.runs import Lease

    path = tmp_path / "x.lease"
    first = Lease(path, heartbeat_s=0.05, stale_s=60)
    assert first.try_acquire()
    time.sleep(0.2)
    assert time.time() - path.stat().st_mtime < 0.2  # the heartbeat keeps it fresh
    assert not Lease(path, stale_s=60).try_acquire()
    first.release()
    assert not path.exists()
    path.write_text("{}")  # a lease whose worker died long ago
    os.utime(path, (time.time() - 3600, time.time() - 3600))
    second = Lease(path, stale_s=60)
    assert second.try_acquire()
    second.release()


def test_the_lease_of_a_killed_process_is_broken_at_once(tmp_path):
    from repro.runs import Lease

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    path = tmp_path / "x.lease"
    path.write_text(json.dumps({"pid": int(dead), "host": os.uname().nodename}))
    lease = Lease(path, stale_s=3600)
    assert lease.try_acquire()  # fresh mtime, but its process is gone
    lease.release()


def test_a_truncated_checkpoint_is_reported_and_discarded(tmp_path):
    from repro.runs import RunContext

    ctx = RunContext(KEY, {}, CPU, tmp_path / "ckpt")
    ctx.checkpoint(5, {"m": torch.nn.Linear(2, 2)})
    blob = ctx.checkpoint_path.read_bytes()
    ctx.checkpoint_path.write_bytes(blob[: len(blob) // 2])  # a copy cut short
    with pytest.warns(UserWarning, match=r"last\.pt is unreadable.*starts from the beginning"):
        assert ctx.resume(m=torch.nn.Linear(2, 2)) == {}
    assert not ctx.checkpoint_path.exists() and ctx.resumed_from is None


def test_checkpoints_are_written_by_wall_time(tmp_path, monkeypatch):
    from repro.runs import RunContext

    monkeypatch.setenv("REPRO_CHECKPOINT_S", "3600")
    ctx = RunContext(KEY, {}, CPU, tmp_path / "ckpt")
    net = torch.nn.Linear(2, 2)
    assert not ctx.checkpoint(1, {"m": net}) and not ctx.checkpoint_path.exists()
    assert ctx.checkpoint(2, {"m": net}, force=True)
    assert torch.load(ctx.checkpoint_path, weights_only=False)["step"] == 2
    monkeypatch.setenv("REPRO_CHECKPOINT_S", "0")
    assert ctx.checkpoint(3, {"m": net})
    monkeypatch.setenv("REPRO_CHECKPOINT_S", "soon")
    with pytest.raises(ValueError, match="REPRO_CHECKPOINT_S"):
        ctx.checkpoint(4, {"m": net})



CRASH_CELLS = [("baseline", "ae", "mvtec_ad", "grid", "", 150),
               ("tsdn", "main", "mvtec_ad", "grid", "epochs=2", 2),
               ("pouta", "main", "mvtec_ad", "grid", "epochs=2", 2),
               ("n2n", "main", "mpdd", "metal_plate", "max_epochs=2", 2),
               ("puad", "main", "mvtec_loco", "juice_bottle", "steps=6", 6)]


@pytest.mark.slow
@pytest.mark.parametrize("paper,exp,dataset,category,variant,last", CRASH_CELLS,
                         ids=[c[0] for c in CRASH_CELLS])
def test_a_crash_after_training_reruns_only_the_evaluation(synthetic_root, scratch_store,
                                                          monkeypatch, paper, exp, dataset,
                                                          category, variant, last):
    """The end of training is always checkpointed (even inside the wall-time interval), so a
    run that dies in its evaluation resumes at its last step, trains nothing again and gives
    the metrics of an uninterrupted run."""
    import importlib

    from repro.experiments import run_cell

    module = importlib.import_module(f"repro.methods.{paper}")
    monkeypatch.setenv("REPRO_CHECKPOINT_S", "3600")
    kw = dict(variant=variant, profile="smoke", data_root=str(synthetic_root), device="cpu")
    whole = run_cell(paper, exp, dataset, category, **kw)
    runs = scratch_store / "results" / "smoke" / "runs"
    for f in runs.glob(f"{paper}__*"):
        f.unlink()
    real = module.evaluate

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation died (made up)")

    monkeypatch.setattr(module, "evaluate", broken)
    with pytest.raises(RuntimeError, match="evaluation died"):
        run_cell(paper, exp, dataset, category, **kw)
    monkeypatch.setattr(module, "evaluate", real)
    rec = run_cell(paper, exp, dataset, category, **kw)
    assert rec["resumed_from_step"] == last
    assert rec["metrics"] == whole["metrics"]
    assert not any((scratch_store / "results" / "smoke").rglob("last.pt"))  # cleared after


def test_npz_members_are_lzma_and_np_load_reads_them_back_exactly(tmp_path):
    import zipfile

    from repro.runs import atomic_write_npz

    rng = np.random.default_rng(0)
    smooth = np.repeat(np.repeat(rng.integers(0, 255, (2, 3, 32, 32), dtype=np.uint8), 8, 2), 8, 3)
    arrays = {"image": smooth, "map": rng.random((2, 64, 64)).astype(np.float16),
              "mask": rng.random((2, 64, 64)) > 0.9, "index": np.arange(3),
              "hist": rng.integers(0, 9, (4, 2, 256)).astype(np.uint32)}
    atomic_write_npz(tmp_path / "a.npz", arrays)
    with zipfile.ZipFile(tmp_path / "a.npz") as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_LZMA}
    back = np.load(tmp_path / "a.npz")
    assert sorted(back.files) == sorted(arrays)
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k
    np.savez_compressed(tmp_path / "deflate.npz", **arrays)
    assert (tmp_path / "a.npz").stat().st_size < (tmp_path / "deflate.npz").stat().st_size
