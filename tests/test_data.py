"""Data layer: the real pieces read with their exact counts, and one test per bad-input case."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from repro import data as D
from repro.data import DatasetError, loco, samples
from repro.data.common import read_image, read_mask
from repro.data.dtd import list_textures

# ---------------------------------------------------------------- the real pieces (README counts)


def _counts(records):
    out: dict[str, int] = {}
    for r in records:
        out[r.defect_type] = out.get(r.defect_type, 0) + 1
    return out


@pytest.mark.real
def test_real_mvtec_ad_counts(shared_data):
    grid_train = D.list_records(shared_data, "mvtec_ad", "grid", "train")
    grid_test = D.list_records(shared_data, "mvtec_ad", "grid", "test")
    assert len(grid_train) == 25
    assert _counts(grid_test) == {"good": 3, "bent": 3, "broken": 2, "glue": 2,
                                  "metal_contamination": 2, "thread": 2}
    tb = D.list_records(shared_data, "mvtec_ad", "toothbrush", "test")
    assert len(D.list_records(shared_data, "mvtec_ad", "toothbrush", "train")) == 48
    assert _counts(tb) == {"good": 12, "defective": 30}
    assert all(len(r.mask_paths) == 1 for r in tb if r.label == 1)


@pytest.mark.real
def test_real_mpdd_and_loco_counts(shared_data):
    assert len(D.list_records(shared_data, "mpdd", "metal_plate", "train")) == 54
    assert _counts(D.list_records(shared_data, "mpdd", "metal_plate", "test")) == {
        "good": 26, "defect": 81}
    L = "juice_bottle"
    assert len(D.list_records(shared_data, "mvtec_loco", L, "train")) == 335
    assert len(D.list_records(shared_data, "mvtec_loco", L, "validation")) == 27
    test = D.list_records(shared_data, "mvtec_loco", L, "test")
    assert _counts(test) == {"good": 27, "logical_anomalies": 142}
    assert all(r.mask_paths and r.mask_paths[0].name == "000.png" for r in test if r.label)
    assert len(loco.read_defects_config(shared_data / "mvtec_loco", L)) >= 1


@pytest.mark.real
def test_real_visa_split_csv_counts(shared_data):
    rows = D.visa.read_split_csv(shared_data / "visa")
    assert len(rows) == 10821
    by = {}
    for r in rows:
        by[(r["split"], r["label"])] = by.get((r["split"], r["label"]), 0) + 1
    assert by == {("train", "normal"): 8659, ("test", "normal"): 962, ("test", "anomaly"): 1200}
    per_class = {c: sum(1 for r in rows if r["object"] == c and r["split"] == "train")
                 for c in D.categories("visa")}
    assert per_class["candle"] == 900 and per_class["pcb4"] == 904
    assert all(r["mask"] for r in rows if r["label"] == "anomaly")


@pytest.mark.real
def test_real_loose_samples_and_dtd(shared_data):
    dagm = samples.dagm_samples(shared_data / "dagm_samples")
    assert len(dagm) == 15 and sum(r.label for r in dagm) == 8
    visa = samples.visa_samples(shared_data / "visa")
    assert [r.category for r in visa] == ["pcb1", "pcb2", "pcb3"]
    m = read_mask(visa[0].mask_paths[0])  # lossy JPEG mask, binarised at 128
    assert 0 < m.mean() < 0.5
    textures = list_textures(shared_data / "dtd")
    assert len(textures) == 10 * 120
    assert len({p.parent.name for p in textures}) == 10


@pytest.mark.real
def test_real_images_load_as_rgb_with_binary_masks(shared_data):
    ds = D.load_split(shared_data, "mvtec_ad", "grid", "test", 128)  # grid is 1024 grayscale
    s = next(s for s in ds if s.label == 1)
    assert s.image.shape == (3, 128, 128) and s.image.dtype == torch.float32
    assert torch.equal(s.image[0], s.image[1])  # grayscale replicated
    assert set(torch.unique(s.mask).tolist()) == {0.0, 1.0}
    regions = loco.defect_regions(
        D.list_records(shared_data, "mvtec_loco", "juice_bottle", "test")[-1],
        loco.read_defects_config(shared_data / "mvtec_loco", "juice_bottle"), (128, 64))
    assert regions and regions[0].mask.shape == (128, 64) and regions[0].saturation_area > 0


# ---------------------------------------------------------------- synthetic data through loaders


def test_every_format_reads_the_synthetic_layouts(synthetic_root):
    for ds in ("mvtec_ad", "mpdd", "visa", "mvtec_loco", "dagm"):
        cats = D.present_categories(synthetic_root, ds)
        assert cats, ds
        for split in D.DATASETS[ds].splits:
            recs = D.list_records(synthetic_root, ds, cats[0], split)
            assert recs
            if split == "test":
                assert {0, 1} <= {r.label for r in recs}
                sample = D.ImageDataset(recs, 32)[[r.label for r in recs].index(1)]
                assert sample.mask.sum() > 0
    assert D.is_synthetic(synthetic_root)  # write_all leaves SYNTHETIC.json (provenance)


def test_visa_masks_with_small_values_are_binarised(tmp_path):
    Image.fromarray(np.array([[0, 1], [2, 0]], dtype=np.uint8)).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").tolist() == [[False, True], [True, False]]


def test_masks_resized_nearest_then_binarised(tmp_path):
    m = np.zeros((4, 4), np.uint8)
    m[0:2, 0:2] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    # nearest neighbour 4x4 -> 2x2 keeps one pixel of each 2x2 block: no blurred half-values
    assert read_mask(tmp_path / "m.png", 2).tolist() == [[True, False], [False, False]]
    assert read_mask(tmp_path / "m.png", 8).sum() == 16


def test_grayscale_and_rgba_become_rgb(tmp_path):
    Image.fromarray(np.full((5, 6), 200, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.full((5, 6, 4), 100, np.uint8), "RGBA").save(tmp_path / "a.png")
    g, a = read_image(tmp_path / "g.png"), read_image(tmp_path / "a.png")
    assert g.shape == a.shape == (3, 5, 6)
    assert torch.allclose(g, torch.full_like(g, 200 / 255))
    assert torch.allclose(a, torch.full_like(a, 100 / 255))


def test_fewshot_support_is_seeded_and_roundtrips(synthetic_root, tmp_path):
    recs = D.list_records(synthetic_root, "mvtec_ad", "grid", "train")
    a = D.select_support(recs, 4, seed=1)
    assert a == D.select_support(list(reversed(recs)), 4, seed=1)  # order-independent
    assert a != D.select_support(recs, 4, seed=2)
    D.save_support(tmp_path / "s.json", a, synthetic_root / "mvtec_ad", seed=1)
    assert [r.path for r in D.load_support(tmp_path / "s.json", synthetic_root / "mvtec_ad")] \
        == [r.path for r in a]
    with pytest.raises(DatasetError, match="cannot draw a 99-shot"):
        D.select_support(recs, 99, seed=0)


def test_holdout_split_is_seeded_and_disjoint(synthetic_root):
    recs = D.list_records(synthetic_root, "mvtec_ad", "grid", "train")
    keep, out = D.holdout_split(recs, 0.2, seed=0)
    assert len(out) == round(0.2 * len(recs)) and not set(keep) & set(out)
    assert D.holdout_split(recs, 0.2, seed=0) == (keep, out)


# ---------------------------------------------------------------- bad input: one error type


@pytest.fixture
def mvtec_copy(synthetic_root, tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "mvtec_ad", root / "mvtec_ad")
    return root


def _defect(root: Path, split="test"):
    return next(r for r in D.list_records(root, "mvtec_ad", "grid", split) if r.label == 1)


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=r"mvtec_ad root not found: .*nowhere"):
        D.list_records(tmp_path / "nowhere", "mvtec_ad", "grid", "train")


def test_missing_category(mvtec_copy):
    with pytest.raises(DatasetError, match=r"category folder not found: .*mvtec_ad/carpet"):
        D.list_records(mvtec_copy, "mvtec_ad", "carpet", "train")


def test_unknown_category_and_dataset(mvtec_copy):
    with pytest.raises(DatasetError, match="unknown mvtec_ad category 'gird'; expected one of"):
        D.list_records(mvtec_copy, "mvtec_ad", "gird", "train")
    with pytest.raises(DatasetError, match="unknown dataset 'mvtec'"):
        D.list_records(mvtec_copy, "mvtec", "grid", "train")


def test_empty_split(mvtec_copy):
    for p in (mvtec_copy / "mvtec_ad/grid/train/good").iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match=r"split 'train' is empty: no images found under"):
        D.list_records(mvtec_copy, "mvtec_ad", "grid", "train")


def test_missing_split_folder(mvtec_copy):
    shutil.rmtree(mvtec_copy / "mvtec_ad/grid/test")
    with pytest.raises(DatasetError, match=r"split folder not found: .*grid/test"):
        D.list_records(mvtec_copy, "mvtec_ad", "grid", "test")


def test_missing_mask_for_defect_image(mvtec_copy):
    rec = _defect(mvtec_copy)
    rec.mask_paths[0].unlink()
    with pytest.raises(DatasetError, match=rf"missing mask for defect image .*{rec.path.name}: "
                       rf"expected .*{rec.mask_paths[0].name}"):
        D.list_records(mvtec_copy, "mvtec_ad", "grid", "test")


def test_unreadable_image(mvtec_copy):
    rec = D.list_records(mvtec_copy, "mvtec_ad", "grid", "train")[0]
    rec.path.write_bytes(b"this is not an image")
    with pytest.raises(DatasetError, match=rf"cannot read image .*{rec.path.name}"):
        D.ImageDataset([rec], 32)[0]


def test_truncated_image(mvtec_copy):
    rec = D.list_records(mvtec_copy, "mvtec_ad", "grid", "train")[0]
    blob = rec.path.read_bytes()
    rec.path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetError, match=rf"cannot read image .*{rec.path.name}.*truncated"):
        D.ImageDataset([rec], 32)[0]


def test_mask_size_differs_from_image(mvtec_copy):
    rec = _defect(mvtec_copy)
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(rec.mask_paths[0])
    with pytest.raises(DatasetError, match=r"mask .* is 12x10 \(WxH\) but its image is"):
        D.ImageDataset([rec], 32)[0]


def test_missing_image_file(mvtec_copy):
    rec = D.list_records(mvtec_copy, "mvtec_ad", "grid", "train")[0]
    rec.path.unlink()
    with pytest.raises(DatasetError, match=rf"image not found: .*{rec.path.name}"):
        D.ImageDataset([rec], 32)[0]


def test_visa_missing_csv_and_missing_listed_image(synthetic_root, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(synthetic_root / "visa", root / "visa")
    cat = D.present_categories(root, "visa")[0]
    rows = list(csv.DictReader(open(root / "visa/split_csv/1cls.csv")))
    (root / "visa" / rows[0]["image"]).unlink()
    with pytest.raises(DatasetError, match=r"image listed in .*1cls.csv not found"):
        D.list_records(root, "visa", rows[0]["object"], rows[0]["split"])
    (root / "visa/split_csv/1cls.csv").unlink()
    with pytest.raises(DatasetError, match=r"VisA split file not found: .*1cls.csv"):
        D.list_records(root, "visa", cat, "train")


def test_loco_missing_gt_folder_and_bad_config(synthetic_root, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(synthetic_root / "mvtec_loco", root / "mvtec_loco")
    cat = D.present_categories(root, "mvtec_loco")[0]
    rec = next(r for r in D.list_records(root, "mvtec_loco", cat, "test") if r.label == 1)
    (root / "mvtec_loco" / cat / "defects_config.json").write_text(json.dumps([{"oops": 1}]))
    with pytest.raises(DatasetError, match="defects_config.json is not a list of"):
        loco.read_defects_config(root / "mvtec_loco", cat)
    shutil.rmtree(rec.mask_paths[0].parent)
    with pytest.raises(DatasetError, match=r"missing mask for defect image .*one PNG per defect"):
        D.list_records(root, "mvtec_loco", cat, "test")


def test_defect_examples_pick_one_anomaly_per_defect_type(synthetic_root):
    from repro.evaluate import defect_examples

    test = D.list_records(synthetic_root, "mvtec_ad", "grid", "test")
    n = len(test)
    images = torch.linspace(-1, 1, n).view(n, 1, 1, 1).expand(n, 3, 8, 8)
    maps = torch.rand(n, 8, 8)
    out = defect_examples(test, images, images, maps, 8, n=2, value_range=(-1.0, 1.0))
    idx = out["index"]
    kinds = [test[i].defect_type for i in idx]
    assert len(idx) == 2 and "good" not in kinds and len(set(kinds)) == 2
    assert idx[0] == next(i for i, r in enumerate(test) if r.label == 1)
    expected = np.round((images[idx, 0, 0, 0].numpy() + 1) * 127.5)
    np.testing.assert_array_equal(out["image"][:, 0, 0, 0], expected)
    assert out["mask"].shape == (2, 8, 8) and out["map"].dtype == np.float16
    good = [r for r in test if r.label == 0]
    assert defect_examples(good, images[:len(good)], images[:len(good)], maps, 8) == {}
