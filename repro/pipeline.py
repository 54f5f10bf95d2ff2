"""``make reproduce``: execute every notebook with papermill into ``results/<profile>/``.

Each notebook runs on a temporary copy with ``REPRO_STAGE_DIR`` pointing at a staging folder, so
the tables and figures it writes land there; only when it finishes without error are the
executed notebook and its staged outputs moved into ``results/<profile>/``. A failing notebook
replaces nothing (papermill writes error cells into its output, which is why it never writes in
place). Finished run records are kept either way: they are valid, and let the rerun skip them.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from .env import repo_root, results_dir
from .tables import write_results_readme


class NotebookFailed(RuntimeError):
    pass


def notebook_list(notebooks: list[str] | None = None) -> list[Path]:
    if notebooks:  # paths, or short names such as 05_matrix
        def find(n: str) -> Path:
            p = Path(n) if Path(n).is_absolute() else repo_root() / n
            short = repo_root() / "notebooks" / (n if n.endswith(".ipynb") else f"{n}.ipynb")
            return p if p.is_file() or not short.is_file() else short
        paths = [find(n) for n in notebooks]
    else:
        paths = sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"notebook not found: {', '.join(missing)}")
    return paths


VOLATILE = ("start_time", "end_time", "duration", "exception", "input_path", "output_path")


def strip_volatile_metadata(path: Path) -> None:
    """Drop papermill's per-cell timestamps so a rerun that reproduces the same outputs leaves
    the committed notebook's diff readable (the parameters stay)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for meta in [nb.metadata.get("papermill", {})] + [c.metadata.get("papermill", {})
                                                      for c in nb.cells]:
        for k in VOLATILE:
            meta.pop(k, None)
    for c in nb.cells:
        c.metadata.pop("execution", None)
        if "injected-parameters" in c.metadata.get("tags", []):
            c.id = "injected-parameters"  # papermill draws a random id per execution
    nb.metadata["papermill"].pop("environment_variables", None)
    nbformat.write(nb, path)


def execute(notebook: Path, out_dir: Path, parameters: dict, timeout: int | None = None) -> Path:
    """Execute one notebook; on success move it and its staged outputs into ``out_dir``."""
    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".stage-", dir=out_dir.parent) as stage:
        stage = Path(stage)
        tmp_nb = stage / notebook.name
        env_before = os.environ.get("REPRO_STAGE_DIR")
        os.environ["REPRO_STAGE_DIR"] = str(stage / "outputs")
        os.environ.setdefault("TQDM_DISABLE", "1")
        try:
            papermill.execute_notebook(
                str(notebook), str(tmp_nb), parameters=parameters, kernel_name="python3",
                cwd=str(notebook.parent), progress_bar=False, execution_timeout=timeout,
                # each cell's printed lines (e.g. "computing <cell> ...") stream to this
                # terminal while the notebook runs, not only into the executed notebook
                stdout_file=sys.stdout, stderr_file=sys.stderr)
        except Exception as exc:  # papermill raises PapermillExecutionError and others
            raise NotebookFailed(f"{notebook.name} failed; results/{out_dir.name}/ was left "
                                 f"untouched. {type(exc).__name__}: {exc}") from exc
        finally:
            if env_before is None:
                os.environ.pop("REPRO_STAGE_DIR", None)
            else:
                os.environ["REPRO_STAGE_DIR"] = env_before
        staged = stage / "outputs"
        if staged.is_dir():
            for src in sorted(p for p in staged.rglob("*") if p.is_file()):
                dst = out_dir / src.relative_to(staged)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
        strip_volatile_metadata(tmp_nb)
        final = out_dir / notebook.name
        os.replace(tmp_nb, final)
    return final


def reproduce(profile: str, *, data_root: str = "", device: str = "auto",
              notebooks: list[str] | None = None) -> list[Path]:
    """Run the notebooks in order; stop at the first failure (exit non-zero). A ``data_root``
    other than the profile's own renders into ``results/own-<name>/<profile>/``."""
    if data_root:
        from .experiments import resolve_data_root
        from .profiles import get_profile

        resolve_data_root(data_root, get_profile(profile))  # sets REPRO_RESULTS for other data
    out_dir = results_dir() / profile
    params = {"PROFILE": profile, "DATA_ROOT": data_root, "DEVICE": device}
    done = []
    for nb in notebook_list(notebooks):
        t0 = time.perf_counter()
        print(f"[reproduce] {nb.name} (profile={profile}) ...", flush=True)
        done.append(execute(nb, out_dir, params))
        print(f"[reproduce] {nb.name} done in {time.perf_counter() - t0:.0f} s -> "
              f"{out_dir / nb.name}", flush=True)
    print(f"[reproduce] wrote {write_results_readme()}", flush=True)
    return done

