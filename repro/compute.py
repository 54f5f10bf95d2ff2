"""Compute the cells of the grid that have no current record, outside the notebooks.

``python -m repro compute`` (``make compute``) takes the cells :func:`repro.grid.plan` reports
as missing, stale or failed, longest first, and runs each through :func:`repro.experiments.run_cell`
(which writes its record atomically under a lease, so a killed compute loses only the cell in
flight and a rerun does only what is left). Executors:

* ``local``: one cell after another in this process (the default);
* ``ray``: one Ray task per cell (``gpus_per_cell`` GPUs, fractional allowed so that two small
  runs share a GPU, and ``cpus_per_cell`` CPUs), on ``ray.init()`` locally or on the cluster at
  ``RAY_ADDRESS``; submitted longest first. The workers must see this repository installed
  (``pip install -e ".[ray]"``) and the same ``results/`` and ``DATA_ROOT`` (a shared file system
  on a cluster);
* ``slurm``: one Slurm job-array task per cell through submitit (``pip install -e ".[slurm]"``),
  with the partition, CPUs, memory and GPUs given, and a time limit of twice the longest cell's
  estimate (at least 10 minutes) unless one is given; ``slurm_cluster="local"`` runs the array
  as local processes (submitit's local executor, used by the tests).

A failed cell is retried ``retries`` times, then left failed (``plan`` shows its error) without
stopping the others. One line per finished cell: the cell, its time, its headline metric, how
many cells are left and the estimated time left.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from .grid import Cell, PlanRow, plan

EXECUTORS = ("local", "ray", "slurm")
ENV_KEYS = ("REPRO_RESULTS", "REPRO_CACHE", "TORCH_HOME", "OMP_NUM_THREADS", "PYTHONHASHSEED",
            "TQDM_DISABLE")  # what a remote worker must share with this process
HEADLINE = ("image_auroc", "puad/auroc_pooled", "auroc_pooled", "pixel_auroc")


@dataclass(frozen=True)
class Outcome:
    cell: Cell
    ok: bool
    seconds: float
    metric: str = ""
    error: str = ""


def headline(metrics: dict) -> str:
    """The first of the usual headline metrics that a record has, as ``name value``."""
    for name in HEADLINE:
        if isinstance(metrics.get(name), (int, float)):
            return f"{name} {metrics[name]:.3f}"
    return ""


def run_one(cell: Cell, profile: str, data_root: str | None, device: str,
            retries: int = 1, threads: int | None = None) -> Outcome:
    """Compute one cell (``retries`` more attempts after a failure) with ``threads`` torch CPU
    threads (None: as this process has them); never raises for a failed cell, only for an
    interrupt. The thread count changes CPU float sums in the last digits, so the executors
    all pin it: a cell gives the same record under each (the record's device label names it)."""
    import torch

    from .experiments import run_cell

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    error = ""
    try:
        for _ in range(retries + 1):
            try:
                rec = run_cell(cell.paper, cell.experiment, cell.dataset, cell.category,
                               variant=cell.variant, seed=cell.seed, profile=profile,
                               data_root=data_root, device=device)
                return Outcome(cell, True, time.perf_counter() - t0, headline(rec["metrics"]))
            except Exception as exc:  # recorded by the run store as <slug>.failed
                error = f"{type(exc).__name__}: {exc}"
        return Outcome(cell, False, time.perf_counter() - t0, error=error)
    finally:
        torch.set_num_threads(before)


def shared_resource(cell: Cell) -> str | None:
    """What a cell shares with other cells and builds on first use: PUAD's teacher (one per PDN
    size for every category and seed); None for the others."""
    if cell.paper == "puad" and cell.experiment == "main":
        return f"puad-teacher-{'M' if 'size=M' in cell.variant else 'S'}"
    return None


def todo(rows: Sequence[PlanRow], recompute_stale: bool = True) -> list[PlanRow]:
    """The rows to compute, longest first, except that of the cells sharing a resource only the
    first keeps its place and the others go last: a second worker would otherwise wait on the
    first one's lease while it builds the resource (a PUAD teacher: over an hour on a CPU)."""
    wanted = {"missing", "failed"} | ({"stale"} if recompute_stale else set())
    ordered = sorted((r for r in rows if r.status in wanted), key=lambda r: -r.estimate_s)
    first, later, seen = [], [], set()
    for r in ordered:
        key = shared_resource(r.cell)
        (later if key is not None and key in seen else first).append(r)
        seen.add(key)
    return first + later


def _worker_env() -> dict[str, str]:
    return {k: os.environ[k] for k in ENV_KEYS if k in os.environ}


def _local(rows, profile, data_root, device, retries, opts) -> Iterator[Outcome]:
    for row in rows:
        yield run_one(row.cell, profile, data_root, device, retries, opts["threads"])


def _ray(rows, profile, data_root, device, retries, opts) -> Iterator[Outcome]:
    try:
        import ray
    except ImportError:
        raise ValueError("EXECUTOR=ray needs Ray: pip install -e '.[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False,
                 runtime_env={"env_vars": _worker_env()}, log_to_driver=False,
                 **({"num_cpus": opts["ray_num_cpus"]} if opts.get("ray_num_cpus") and
                    not os.environ.get("RAY_ADDRESS") else {}))
    task = ray.remote(num_gpus=opts["gpus_per_cell"], num_cpus=opts["cpus_per_cell"],
                      max_retries=0)(run_one)
    pending = [task.remote(row.cell, profile, data_root, device, retries,
                           opts["cpus_per_cell"]) for row in rows]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])


def _slurm(rows, profile, data_root, device, retries, opts) -> Iterator[Outcome]:
    try:
        import submitit
    except ImportError:
        raise ValueError("EXECUTOR=slurm needs submitit: pip install -e '.[slurm]'") from None
    from .env import cache_dir

    cluster = opts.get("slurm_cluster")  # None: Slurm; "local": local processes (tests)
    ex = submitit.AutoExecutor(folder=cache_dir() / "submitit" / "%j", cluster=cluster)
    longest = max(r.estimate_s for r in rows)
    params = {"timeout_min": int(opts.get("time_limit_min") or max(10, 2 * longest / 60)),
              "cpus_per_task": opts["cpus_per_cell"], "name": f"repro-{profile}"}
    if cluster != "local":
        params |= {"slurm_partition": opts.get("partition"), "slurm_mem": opts.get("mem"),
                   "gpus_per_node": int(opts["gpus_per_cell"]) or None}
        params = {k: v for k, v in params.items() if v is not None}
    ex.update_parameters(**params)
    env = _worker_env()
    jobs = ex.map_array(_with_env, [env] * len(rows), [r.cell for r in rows],
                        [profile] * len(rows), [data_root] * len(rows), [device] * len(rows),
                        [retries] * len(rows), [opts["cpus_per_cell"]] * len(rows))
    pending = list(jobs)
    while pending:
        done = [j for j in pending if j.done()]
        if not done:
            time.sleep(1.0)
            continue
        for job in done:
            pending.remove(job)
            try:
                yield job.result()
            except Exception as exc:  # the job itself died (killed, out of time)
                cell = rows[jobs.index(job)].cell
                yield Outcome(cell, False, 0.0, error=f"slurm job {job.job_id}: {exc}")


def _with_env(env: dict, *args) -> Outcome:
    os.environ.update(env)
    return run_one(*args)


_EXECUTORS = {"local": _local, "ray": _ray, "slurm": _slurm}


def compute(profile: str, data_root: str | None = None, *, executor: str = "local",
            device: str = "auto", retries: int = 1, recompute_stale: bool = True,
            gpus_per_cell: float = 0.0, cpus_per_cell: int | None = None,
            partition: str | None = None,
            mem: str | None = None, time_limit_min: int | None = None,
            slurm_cluster: str | None = None, ray_num_cpus: int | None = None,
            echo: Callable[[str], None] = print, **filters) -> list[Outcome]:
    """Compute every missing, failed (and stale) cell of the filtered grid; see the module doc.

    ``cpus_per_cell`` is also each cell's torch thread count: None keeps this process's for
    ``local`` and means 1 for ``ray`` and ``slurm``."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    threads = cpus_per_cell
    cpus_per_cell = cpus_per_cell or 1
    if gpus_per_cell < 0 or cpus_per_cell < 1:
        raise ValueError("gpus_per_cell must be >= 0 and cpus_per_cell >= 1")
    from .env import resolve_device

    resolve_device(device)  # DEVICE=cuda without a GPU: one error now, not one per cell
    rows = todo(plan(profile, data_root, **filters), recompute_stale)
    left_s = sum(r.estimate_s for r in rows)
    echo(f"compute ({executor}): {len(rows)} cells of profile {profile}, about "
         f"{left_s / 3600:.1f} h by the records' times")
    if not rows:
        return []
    opts = {"gpus_per_cell": gpus_per_cell, "cpus_per_cell": cpus_per_cell, "threads": threads,
            "partition": partition, "mem": mem, "time_limit_min": time_limit_min,
            "slurm_cluster": slurm_cluster, "ray_num_cpus": ray_num_cpus}
    estimate = {r.cell: r.estimate_s for r in rows}
    outcomes = []
    for out in _EXECUTORS[executor](rows, profile, data_root, device, retries, opts):
        outcomes.append(out)
        left_s -= estimate[out.cell]
        what = out.metric if out.ok else f"FAILED {out.error}"
        echo(f"[{len(outcomes)}/{len(rows)}] {out.cell.label()}: {out.seconds:.0f} s, {what}; "
             f"{len(rows) - len(outcomes)} left, ~{max(left_s, 0) / 60:.0f} min")
    return outcomes
