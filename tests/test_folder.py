"""The folder dataset (your own images): layout, split rule, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from repro import data as D
from repro.data import DatasetError
from repro.data.folder import split_listing
from repro.data.synthetic import write_folder


@pytest.fixture
def folder_root(tmp_path) -> Path:
    write_folder(tmp_path / "folder", ["parts"], image_size=48, n_train=6, n_test_good=3,
                 n_test_defect_per_type=2)
    return tmp_path


def _spec(root: Path) -> Path:
    return root / "folder" / "parts" / "dataset.yaml"


def test_written_folder_lists_both_splits_with_masks(folder_root):
    assert D.present_categories(folder_root, "folder") == ["parts"]
    train = D.list_records(folder_root, "folder", "parts", "train")
    test = D.list_records(folder_root, "folder", "parts", "test")
    assert len(train) == 6 and all(r.label == 0 for r in train)
    good = [r for r in test if r.label == 0]
    bad = [r for r in test if r.label == 1]
    assert len(good) == 3 and len(bad) == 4  # two defect types x 2
    assert all(len(r.mask_paths) == 1 and r.mask_paths[0].stem == f"{r.path.stem}_mask"
               for r in bad)
    assert not {r.path for r in train} & {r.path for r in good}  # disjoint
    # any suffix case, PNG and JPEG
    assert {p.path.suffix for p in train + good} == {".png", ".PNG", ".jpg"}
    assert D.check_category(folder_root, "folder", "parts") == {"train": 6, "test": 7, "masks": 4}


def test_split_is_seeded_and_reproducible(folder_root):
    first = split_listing(folder_root / "folder", "parts")
    assert first == split_listing(folder_root / "folder", "parts")
    spec = _spec(folder_root)
    spec.write_text(spec.read_text().replace("split_seed: 0", "split_seed: 7"))
    other = split_listing(folder_root / "folder", "parts")
    assert sorted(other["train"] + other["test"]) == sorted(first["train"] + first["test"])
    assert other["train"] != first["train"]
    # the hand-worked rule: round(fraction * n) good images to test, the permutation's first
    good = sorted(p.name for p in (folder_root / "folder" / "parts" / "good").iterdir())
    order = np.random.default_rng(7).permutation(len(good))
    n_test = round(3 / 9 * len(good))
    assert sorted(f"good/{good[i]}" for i in order[:n_test]) == \
        [p for p in other["test"] if p.startswith("good/")]


def test_max_train_images_caps_the_training_split(folder_root):
    spec = _spec(folder_root)
    spec.write_text(spec.read_text() + "max_train_images: 4\n")
    assert len(D.list_records(folder_root, "folder", "parts", "train")) == 4


def test_no_masks_means_image_metrics_only(folder_root):
    spec = _spec(folder_root)
    spec.write_text(spec.read_text().replace("masks: masks/{defect}\n", ""))
    test = D.list_records(folder_root, "folder", "parts", "test")
    assert all(not r.mask_paths for r in test)
    D.check_category(folder_root, "folder", "parts")  # allowed: image AUROC only
    from repro.evaluate import evaluate

    scores = np.array([r.label for r in test], float)
    out = evaluate(test, scores, np.zeros((len(test), 8, 8)), dataset="folder")
    assert out == {"image_auroc": 1.0}


@pytest.mark.parametrize("edit, message", [
    (lambda root: (root / "masks" / "crack" / "crack_00_mask.png").rename(
        root / "masks" / "crack" / "nothing_mask.png"), "matches no image"),
    (lambda root: (root / "masks" / "crack" / "crack_01_mask.png").unlink(), "has no mask"),
    (lambda root: (root / "masks" / "crack" / "crack_01_mask.png").rename(
        root / "masks" / "crack" / "crack_01.png"), "does not end in '_mask'"),
    (lambda root: [p.unlink() for p in sorted((root / "good").iterdir())[2:]], "at least 3"),
    (lambda root: shutil.rmtree(root / "crack"), "folder of defective images 'crack'"),
    (lambda root: (root / "dataset.yaml").write_text("good: good\n"), "'defective' is required"),
    (lambda root: (root / "dataset.yaml").write_text("good: good\ndefective: crack\nbad: 1\n"),
     "unknown key"),
    (lambda root: (root / "dataset.yaml").write_text("good: [unclosed\n"), "not valid YAML"),
    (lambda root: (root / "dataset.yaml").write_text(
        "good: good\ndefective: crack\ntest_good_fraction: 1.5\n"), "test_good_fraction"),
    (lambda root: (root / "dataset.yaml").write_text(
        "good: good\ndefective: crack\nforeground: 30\n"), "foreground must be"),
])
def test_malformed_folders_name_the_file_and_the_expectation(folder_root, edit, message):
    root = folder_root / "folder" / "parts"
    spec = root / "dataset.yaml"
    spec.write_text(spec.read_text().replace("defective: [scratch, crack]",
                                             "defective: [crack, scratch]"))
    assert "crack" in spec.read_text()  # the writer's style for "parts" has crack and scratch
    edit(root)
    with pytest.raises(DatasetError, match=message):
        D.check_category(folder_root, "folder", "parts")


def test_a_category_name_does_not_choose_a_method_setting(folder_root):
    """POUTA's foreground rule and the profiles' per-category overrides are keyed by the
    dataset too: a folder dataset named like an MVTec category gets neither by its name."""
    from repro.methods.common import category_config
    from repro.methods.pouta import foreground_rule
    from repro.profiles import paper_config

    shutil.copytree(folder_root / "folder" / "parts", folder_root / "folder" / "toothbrush")
    assert foreground_rule(True, folder_root, "mvtec_ad", "toothbrush") == (30, False)
    assert foreground_rule(True, folder_root, "folder", "toothbrush") is None
    spec = _spec(folder_root).parent.parent / "toothbrush" / "dataset.yaml"
    spec.write_text(spec.read_text() + "foreground: [80, true]\n")
    assert foreground_rule(True, folder_root, "folder", "toothbrush") == (80, True)
    assert foreground_rule(False, folder_root, "folder", "toothbrush") is None
    cfg = paper_config("tsdn", "real_subset")
    assert category_config(cfg, "mvtec_ad", "grid")["image_size"] == 256
    assert category_config(cfg, "folder", "grid")["image_size"] == cfg["image_size"]


def test_grey_and_odd_sized_images_are_read(folder_root):
    root = folder_root / "folder" / "parts" / "good"
    Image.fromarray(np.full((37, 53), 90, np.uint8), "L").save(root / "odd.TIF")
    recs = D.list_records(folder_root, "folder", "parts", "train") + \
        D.list_records(folder_root, "folder", "parts", "test")
    odd = [r for r in recs if r.path.name == "odd.TIF"]
    assert len(odd) == 1
    x = D.stack_images(odd, 32)
    assert x.shape == (1, 3, 32, 32)
