"""The run store: one run = one (paper, experiment, dataset, category, variant, seed, profile) cell.

A finished run is a JSON record under ``results/<profile>/runs/``, written atomically (temp file
in the same folder, then ``os.replace``), and is never rewritten: a rerun with the same
configuration returns it untouched. A run that dies midway leaves only its checkpoints (in the
cache, outside git); the next attempt resumes from the last one. Tables are built from records
only, so a table can always be traced back to the runs that produced it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
import traceback
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .env import display_path, versions

RECORD_FORMAT = 1


class RunMissingError(RuntimeError):
    """A record was needed but the store is read-only (tests re-rendering committed results)."""


@dataclass(frozen=True)
class RunKey:
    paper: str
    experiment: str
    dataset: str
    category: str
    variant: str
    seed: int
    profile: str

    def slug(self) -> str:
        """File-name form, e.g. ``n2n__table4__mpdd__metal_plate__lambda=0.3__seed0``."""
        parts = [self.paper, self.experiment, self.dataset, self.category,
                 self.variant or "default", f"seed{self.seed}"]
        return "__".join(re.sub(r"[^A-Za-z0-9=.,+_-]", "-", p) for p in parts)


# Settings added after records existed, with the value that computes exactly what the code did
# before them: at that value a setting is left out of the hash, so adding a switched-off option
# does not make every earlier record stale; any other value is hashed as usual.
INERT_SETTINGS: dict[str, object] = {
    "rec_warmup_epochs": 0,  # POUTA: no reconstruction warm-up (the paper's joint training)
}


def config_hash(config: dict, data_id: str = "") -> str:
    """Identity of what a run computes: its config and the data it read (``data_id``: e.g. the
    synthetic generator's fingerprint, so regenerated synthetic data invalidates old records).
    A setting of ``INERT_SETTINGS`` at its inert value is not part of it."""
    config = {k: v for k, v in config.items()
              if not (k in INERT_SETTINGS and v == INERT_SETTINGS[k]
                      and type(v) is type(INERT_SETTINGS[k]))}
    blob = json.dumps([config, data_id], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` so that ``path`` holds either its old content or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique temp name: two processes saving the same checkpoint never share a temp file
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files; other workers must read it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` so that ``path`` holds either its old content or the new one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files; results are meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_npz(path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` that ``np.load`` reads, its members LZMA-compressed: about 60 % of
    ``np.savez_compressed``'s deflate on the qualitative images and maps (a POUTA grid record at
    512 px: 2.7 MB instead of 4.3), so committed records stay small."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_LZMA) as z:
        for name, value in arrays.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)


def atomic_write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """:func:`write_npz` to a temp file in the same folder, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(fd)
    try:
        write_npz(tmp, arrays)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files; results are meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n"


@dataclass
class RunContext:
    """What a run function gets: its key and config, and a place for resumable checkpoints."""

    key: RunKey
    config: dict
    device: torch.device
    checkpoint_dir: Path
    timings: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None
    last_saved: float = field(default_factory=time.monotonic)  # or the start of the run

    @property
    def checkpoint_path(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    def load_checkpoint(self) -> dict | None:
        """The last saved state, or None. Records the step it resumed from (``state['step']``)."""
        if not self.checkpoint_path.is_file():
            return None
        try:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        except Exception as exc:  # truncated or corrupt: say so once, start afresh
            warnings.warn(f"checkpoint {self.checkpoint_path} is unreadable ({type(exc).__name__}: "
                          f"{exc}); it is discarded and the run starts from the beginning",
                          stacklevel=2)
            self.checkpoint_path.unlink(missing_ok=True)
            return None
        self.resumed_from = int(state.get("step", 0))
        return state

    def resume(self, **parts) -> dict:
        """Load the last checkpoint into every ``name=part`` (anything with ``load_state_dict``:
        modules, optimizers, schedulers) and return the rest of the saved state, with
        ``"step"``; ``{}`` without a checkpoint (a fresh start)."""
        state = self.load_checkpoint()
        if state is None:
            return {}
        for name, part in parts.items():
            part.load_state_dict(state.pop(name))
        return state

    def checkpoint(self, step: int, parts: dict, *, force: bool = False, **extra) -> bool:
        """Save the ``state_dict()`` of every part under its name, the step and ``extra`` if
        :func:`checkpoint_interval_s` has passed since the last save (or the start), or if
        ``force``. The methods offer a checkpoint every ``checkpoint_every`` epochs or steps; by
        wall time a run writes one about every 10 minutes, not dozens. Returns whether it saved."""
        now = time.monotonic()
        if not force and now - self.last_saved < checkpoint_interval_s():
            return False
        self.save_checkpoint({**{n: p.state_dict() for n, p in parts.items()}, "step": step,
                              **extra})
        self.last_saved = now
        return True

    def save_checkpoint(self, state: dict) -> None:
        """Atomically replace the checkpoint (an interrupt mid-save keeps the previous one)."""
        atomic_torch_save(state, self.checkpoint_path)

    @contextmanager
    def timer(self, name: str) -> Iterator[None]:
        """Accumulate wall-clock seconds under ``timings[name]`` (synchronising CUDA)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0


RunFn = Callable[[RunContext], dict]


def checkpoint_interval_s() -> float:
    """Seconds between checkpoints: ``REPRO_CHECKPOINT_S`` (default 600; 0: at every offer)."""
    value = os.environ.get("REPRO_CHECKPOINT_S", "600")
    try:
        return max(0.0, float(value))
    except ValueError:
        raise ValueError(f"REPRO_CHECKPOINT_S must be a number of seconds, got {value!r}") from None


class Lease:
    """Exclusive claim on one cell while it computes: a lock file created with ``O_EXCL``,
    its mtime refreshed every ``heartbeat_s`` by a thread; a lease whose mtime is older than
    ``stale_s`` belongs to a dead worker and is broken, as is one whose process on this host no
    longer exists (a killed run). Two workers on one cell: the second waits until the first
    releases, then finds the record."""

    def __init__(self, path: Path, *, heartbeat_s: float = 30.0, stale_s: float = 300.0,
                 poll_s: float = 2.0):
        self.path, self.heartbeat_s, self.stale_s, self.poll_s = Path(path), heartbeat_s, \
            stale_s, poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return self.try_acquire()  # released between the two calls
            if age > self.stale_s or self._holder_is_dead():  # break it, then try again
                self.path.unlink(missing_ok=True)
                return self.try_acquire()
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                                "since": datetime.now(UTC).isoformat(timespec="seconds")}))
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return True

    def _holder_is_dead(self) -> bool:
        """The lease was taken by a process of this host that no longer exists (killed)."""
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return False  # being written right now, or gone: the next poll sees
        if holder.get("host") != os.uname().nodename:
            return False  # another machine's worker: only its heartbeat can tell
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError, TypeError):
            return False
        return False

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.path.unlink(missing_ok=True)


class RunStore:
    """Records of one profile in ``runs_dir``; checkpoints in ``cache_dir``.

    ``readonly=True`` never computes: a missing or stale record raises :class:`RunMissingError`
    (used when tests re-render the committed notebooks).
    """

    def __init__(self, runs_dir: Path, cache_dir: Path, *, readonly: bool = False):
        self.runs_dir = Path(runs_dir)
        self.cache_dir = Path(cache_dir)
        self.readonly = readonly

    def path(self, key: RunKey) -> Path:
        return self.runs_dir / f"{key.slug()}.json"

    def arrays_path(self, key: RunKey) -> Path:
        return self.runs_dir / f"{key.slug()}.npz"

    def arrays(self, key: RunKey) -> dict[str, np.ndarray]:
        """Small arrays a run saved beside its record (e.g. examples for a figure)."""
        path = self.arrays_path(key)
        if not path.is_file():
            return {}
        with np.load(path) as f:
            return {k: f[k] for k in f.files}

    def get(self, key: RunKey) -> dict | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError as exc:
            raise RuntimeError(f"run record {path} is not valid JSON ({exc}); it was edited by "
                               "hand or copied partially. Delete it to recompute the run.") from exc

    def records(self, **match: Any) -> list[dict]:
        """All records whose key fields equal ``match`` (e.g. ``paper="n2n"``)."""
        out = []
        for p in sorted(self.runs_dir.glob("*.json")):
            rec = json.loads(p.read_text())
            if all(rec["key"].get(k) == v for k, v in match.items()):
                out.append(rec)
        return out

    def model_path(self, key: RunKey, chash: str) -> Path:
        """The trained model of a finished run (its parts' state dicts, for ``predict``): in the
        cache, not in ``results/`` (weights are not committed); the record names it."""
        return self.cache_dir / "models" / key.profile / f"{key.slug()}-{chash}.pt"

    def failure_path(self, key: RunKey) -> Path:
        """Where a failed attempt leaves its error (removed by the next successful one)."""
        return self.runs_dir / f"{key.slug()}.failed"

    def failure(self, key: RunKey) -> dict | None:
        """The error of the last failed attempt at ``key`` since its last success, or None."""
        path = self.failure_path(key)
        try:
            return json.loads(path.read_text()) if path.is_file() else None
        except ValueError:
            return {"error": f"unreadable failure file {path}"}

    def status(self, key: RunKey, config: dict, data_id: str = "") -> str:
        """``done`` (a record for exactly this config and data), ``stale`` (a record of another
        config or data), ``failed`` (the last attempt raised) or ``missing``."""
        existing = self.get(key)
        if matches(existing, key, config_hash(config, data_id)):
            return "done"
        if self.failure_path(key).is_file():
            return "failed"
        return "stale" if existing is not None else "missing"

    def fetch(self, key: RunKey, config: dict, data_id: str = "") -> dict:
        """The finished record of ``key`` for exactly ``config`` and data; never computes."""
        existing = self.get(key)
        if matches(existing, key, config_hash(config, data_id)):
            return existing
        why = "does not exist"
        if existing:
            why = (f"was computed with another config, data or code "
                   f"({stale_reason(existing, key, config, data_id)} changed)")
        raise RunMissingError(
            f"run record {self.path(key)} {why}; the committed results are stale. "
            f"Run `make reproduce PROFILE={key.profile}` and commit results/.")

    def run(self, key: RunKey, fn: RunFn, *, config: dict, device: torch.device,
            data: dict, weights: dict, data_id: str = "") -> dict:
        """Return the finished record of ``key``, computing it with ``fn(ctx)`` if needed.

        ``fn`` returns ``{"metrics": {...}}`` plus optional ``"extra"`` (small per-image data)
        and ``"arrays"`` (small numpy arrays saved beside the record as ``<slug>.npz``).
        An existing record is reused only when its config and ``data_id`` match; a record with
        another config is replaced, but only after the new run has finished.
        """
        chash = config_hash(config, data_id)
        existing = self.get(key)
        if matches(existing, key, chash):
            return existing
        if self.readonly:
            self.fetch(key, config, data_id)  # raises with the reason
        lease = Lease(self.cache_dir / "leases" / key.profile / f"{key.slug()}.lease")
        while not lease.try_acquire():  # another worker computes this cell: wait for it
            time.sleep(lease.poll_s)
        try:
            existing = self.get(key)
            if matches(existing, key, chash):  # it finished while we waited
                return existing
            return self._compute(key, fn, config=config, chash=chash, device=device, data=data,
                                 weights=weights, data_id=data_id)
        finally:
            lease.release()

    def _compute(self, key: RunKey, fn: RunFn, *, config: dict, chash: str,
                 device: torch.device, data: dict, weights: dict, data_id: str) -> dict:
        ctx = RunContext(key, config, device, self.cache_dir / "checkpoints" / key.profile /
                         f"{key.slug()}-{chash}")
        started = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            with ctx.timer("total_s"):
                out = fn(ctx)
        except Exception as exc:  # a failed cell says why in `plan`; an interrupt leaves nothing
            atomic_write_text(self.failure_path(key), dump_json({
                "key": asdict(key), "config_hash": chash, "started": started,
                "failed": datetime.now(UTC).isoformat(timespec="seconds"),
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=-8)}))
            raise
        record = {
            "format": RECORD_FORMAT,
            "key": asdict(key),
            "config": config,
            "config_hash": chash,
            "data_id": data_id,
            "metrics": out["metrics"],
            "extra": out.get("extra", {}),
            "timings": {k: round(v, 3) for k, v in ctx.timings.items()},
            "resumed_from_step": ctx.resumed_from,
            "data": data,
            "weights": weights,
            "device": device_label(device),
            "versions": versions(),
            "started": started,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if out.get("model"):  # the final weights, for `predict`
            model_path = self.model_path(key, chash)
            atomic_torch_save({name: {k: v.detach().cpu() for k, v in part.state_dict().items()}
                               for name, part in out["model"].items()}, model_path)
            record["model"] = {"path": display_path(model_path),
                               "parts": sorted(out["model"])}
        if out.get("arrays"):  # written first: a record on disk implies its arrays exist
            atomic_write_npz(self.arrays_path(key), out["arrays"])
        atomic_write_text(self.path(key), dump_json(record))
        self.failure_path(key).unlink(missing_ok=True)
        shutil.rmtree(ctx.checkpoint_dir, ignore_errors=True)
        return record


def matches(record: dict | None, key: RunKey, chash: str) -> bool:
    """Whether ``record`` is the record of ``key`` at config hash ``chash``: a record copied to
    another cell's file name keeps its own key and is not that cell's record."""
    return record is not None and record.get("config_hash") == chash and \
        record.get("key") == asdict(key)


def stale_reason(record: dict, key: RunKey, config: dict, data_id: str) -> str:
    """Why ``record`` is not the record of ``key`` at ``config`` and ``data_id``: ``other cell``
    (its key differs: copied from another cell's file), ``data``, ``code`` and/or ``config``
    (joined with ``+``), or ``""`` when it matches."""
    if record.get("key") != asdict(key):
        return "other cell"
    if matches(record, key, config_hash(config, data_id)):
        return ""
    old, new = record.get("data_id", "").split(), data_id.split()
    old_data = next((t for t in old if not t.startswith("code-")), "")
    new_data = next((t for t in new if not t.startswith("code-")), "")
    old_code = next((t for t in old if t.startswith("code-")), "")
    new_code = next((t for t in new if t.startswith("code-")), "")
    why = [w for w, differs in (("data", old_data != new_data), ("code", old_code != new_code),
                                ("config", config_hash(record.get("config", {})) !=
                                 config_hash(config))) if differs]
    return "+".join(why) or "config"


def device_label(device: torch.device) -> str:
    """E.g. ``cpu (2 threads)`` or ``cuda: NVIDIA H100 80GB HBM3``."""
    if device.type == "cuda":  # the CPU threads matter too (data synthesis, metrics)
        return f"cuda: {torch.cuda.get_device_name(device)} ({torch.get_num_threads()} CPU threads)"
    return f"{device.type} ({torch.get_num_threads()} threads)"
