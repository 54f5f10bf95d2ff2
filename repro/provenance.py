"""What a record's identity holds besides its key and config: the data it read and the code that
computed it (issue 12). ``repro.experiments.cell_identity`` joins both into the ``data_id`` that
the run store hashes with the config, e.g. ``real-1a2b3c4d5e6f code-9f8e7d6c5b4a``.

* **Data fingerprint.** Synthetic data: the generator's fingerprint (the profile's generator, or
  the ``SYNTHETIC.json`` of a generated folder passed as ``DATA_ROOT``). Real data: a hash of the
  relative path and size of every file under the category's folder, of the dataset's split files
  (VisA's ``split_csv``) and, for the papers that read it, of ``dtd/`` (POUTA's anomaly
  textures, PUAD's natural images): a fixed, extended or different dataset is a different
  fingerprint, while the folder's location is not part of it.
* **Code version.** A hash of the modules that compute the paper's records: its method module and
  every ``repro`` module it imports, directly or not, except the orchestration around a run
  (``ORCHESTRATION``: the run store, the grid, the CLI, the profiles, whose values are hashed as
  the config). Each module is hashed as its syntax tree without docstrings, so comments,
  docstrings and formatting do not make records stale, and editing one paper's network leaves
  the other papers' records current.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from functools import cache, lru_cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ORCHESTRATION = frozenset({
    "repro", "repro.__main__", "repro.runs", "repro.experiments", "repro.env", "repro.grid",
    "repro.compute", "repro.report", "repro.tables", "repro.pipeline", "repro.profiles",
    "repro.provenance", "repro.weights", "repro.paper_tables",
})
DATASET_FILES = {"visa": ("split_csv",)}  # dataset-level files a category's split depends on
READS_DTD = frozenset({"pouta", "puad"})
# the module that reads each dataset's layout: a cell's code version holds its own dataset's
# reader only, so a fix in one reader (e.g. the folder format) leaves the others' records current
READERS = {"mvtec_ad": "repro.data.mvtec", "mpdd": "repro.data.mvtec", "visa": "repro.data.visa",
           "mvtec_loco": "repro.data.loco", "dagm": "repro.data.dagm",
           "folder": "repro.data.folder"}


def _module_file(name: str) -> Path | None:
    parts = name.split(".")[1:]
    if not parts:
        return PACKAGE / "__init__.py"
    rel = Path(*parts)
    for path in (PACKAGE / rel.with_suffix(".py"), PACKAGE / rel / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(name: str, tree: ast.Module, is_package: bool) -> set[str]:
    """The ``repro`` modules that ``name`` imports (relative imports resolved)."""
    out = set()
    base = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "repro"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[:len(base) - node.level + 1]
                mod = ".".join(parent + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "repro":
                continue
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names if _module_file(f"{mod}.{a.name}")}
    return {m for m in out if _module_file(m)}


def _normalised(tree: ast.Module) -> str:
    """The syntax tree without docstrings: what the code does, not how it is described."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(getattr(body[0], "value", None), ast.Constant) and \
                isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def code_modules(paper: str, dataset: str | None = None) -> list[str]:
    """The modules whose code computes ``paper``'s records (on ``dataset``: without the other
    datasets' readers), sorted."""
    seen, todo = set(), [f"repro.methods.{paper}"]
    while todo:
        name = todo.pop()
        if name in seen or name in ORCHESTRATION:
            continue
        path = _module_file(name)
        if path is None:
            raise ValueError(f"no module {name} under {PACKAGE}")
        seen.add(name)
        tree = ast.parse(path.read_text(), filename=str(path))
        todo.extend(_imports(name, tree, path.name == "__init__.py"))
    if dataset is not None:
        seen -= set(READERS.values()) - {READERS.get(dataset)}
    return sorted(seen)


@cache
def code_version(paper: str, dataset: str | None = None) -> str:
    """12 hex digits over the normalised syntax trees of :func:`code_modules`, as this process
    first saw them (the code it runs: see :func:`check_code_unchanged`)."""
    return code_version_on_disk(paper, dataset)


def code_version_on_disk(paper: str, dataset: str | None = None) -> str:
    """:func:`code_version` of the files as they are now."""
    h = hashlib.sha256()
    for name in code_modules(paper, dataset):
        path = _module_file(name)
        h.update(name.encode() + b"\0" + _normalised(ast.parse(path.read_text())).encode() + b"\0")
    return h.hexdigest()[:12]


def prime_code_versions(papers) -> None:
    """Record the code version of every paper when the process loads the package, so that a
    later edit of ``repro/`` cannot be stamped on records computed by the code loaded before."""
    for paper in papers:
        for dataset in (None, *READERS):
            code_version(paper, dataset)


def check_code_unchanged(paper: str, dataset: str | None = None) -> None:
    """Refuse to compute with code that no longer matches its files: a long-lived worker (Ray,
    a notebook kernel) that loaded ``repro/`` before an edit would run the old code under the
    new version, or the other way round."""
    now = code_version_on_disk(paper, dataset)
    if now != code_version(paper, dataset):
        raise ValueError(f"{paper}: repro/ changed on disk since this process loaded it (code "
                         f"{code_version(paper, dataset)} -> {now}); restart the compute (or the "
                         f"notebook kernel) so the records carry the code that made them")


def _listing(folder: Path) -> list[tuple[str, int]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for f in sorted(filenames):
            p = Path(dirpath) / f
            out.append((p.relative_to(folder).as_posix(), p.stat().st_size))
    return out


@lru_cache(maxsize=256)
def _real_fingerprint(root: str, dataset: str, category: str, dtd: bool) -> str:
    base = Path(root)
    parts = {"category": _listing(base / dataset / category)}
    for name in DATASET_FILES.get(dataset, ()):
        parts[name] = _listing(base / dataset / name)
    if dtd:
        parts["dtd"] = _listing(base / "dtd")
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def synthetic_folder_fingerprint(root: Path) -> str | None:
    """The generator fingerprint of a generated synthetic folder, else None."""
    from .data.synthetic import PROVENANCE_FILE

    path = Path(root) / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text())["fingerprint"])
    except (ValueError, KeyError):
        return None


def data_fingerprint(root: Path, dataset: str, category: str, paper: str) -> str:
    """``synthetic-<generator fingerprint>`` or ``real-<hash of the listing>``."""
    synthetic = synthetic_folder_fingerprint(root)
    if synthetic:
        return f"synthetic-{synthetic}"
    return "real-" + _real_fingerprint(str(Path(root).resolve()), dataset, category,
                                       paper in READS_DTD)
