"""Tests of the synthetic dataset writers: official layouts, determinism, atomic caching and
that the defects are genuinely learnable by a simple detector trained on the normal images."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from repro.data import synthetic
from repro.data.synthetic import (
    GENERATOR_VERSION,
    SyntheticSpec,
    ensure_synthetic,
    is_texture,
    write_all,
    write_dagm,
    write_dtd,
    write_loco,
    write_mvtec,
    write_visa,
)

# Small but complete: every writer and defect path runs, in well under a second each.
SMALL = SyntheticSpec(image_size=48, loco_size=(36, 48), n_train=3, n_test_good=2,
                      n_test_defect_per_type=2, n_validation=2, dtd=("banded", "bubbly"))
COUNTS = {"n_train": SMALL.n_train, "n_test_good": SMALL.n_test_good,
          "n_test_defect_per_type": SMALL.n_test_defect_per_type}


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _hashes(root: Path) -> dict[str, str]:
    return {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in _files(root)}


def _numbered(n: int, fmt: str) -> list[str]:
    return [fmt.format(i) for i in range(n)]


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_all(tmp_path_factory.mktemp("small") / "data", SMALL)


# --------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------


def test_style_is_chosen_from_the_name() -> None:
    for name in ("carpet", "grid", "leather", "tile", "wood", "Class1", "Class10"):
        assert is_texture(name)
    for name in ("toothbrush", "metal_plate", "candle", "juice_bottle", "class1", "gridiron"):
        assert not is_texture(name)


def test_write_all_top_level(small_tree: Path) -> None:
    assert {p.name for p in small_tree.iterdir()} == {
        "mvtec_ad", "mpdd", "visa", "mvtec_loco", "dagm", "dtd", "folder", "SYNTHETIC.json"}
    info = json.loads((small_tree / "SYNTHETIC.json").read_text())
    assert info["generator_version"] == GENERATOR_VERSION
    assert info["fingerprint"] == SMALL.fingerprint()
    assert info["spec"]["image_size"] == SMALL.image_size


@pytest.mark.parametrize("dataset", ["mvtec_ad", "mpdd"])
def test_mvtec_layout(small_tree: Path, dataset: str) -> None:
    root = small_tree / dataset
    cats = getattr(SMALL, dataset)
    assert sorted(p.name for p in root.iterdir()) == sorted(cats)
    size = (SMALL.image_size, SMALL.image_size)
    for cat in cats:
        base = root / cat
        expected = {f"train/good/{n}" for n in _numbered(SMALL.n_train, "{:03d}.png")}
        expected |= {f"test/good/{n}" for n in _numbered(SMALL.n_test_good, "{:03d}.png")}
        defects = sorted(p.name for p in (base / "test").iterdir() if p.name != "good")
        assert len(defects) == 2 and set(defects) <= set(synthetic.DEFECT_KINDS)
        assert sorted(p.name for p in (base / "ground_truth").iterdir()) == defects
        for d in defects:
            for i in range(SMALL.n_test_defect_per_type):
                expected |= {f"test/{d}/{i:03d}.png", f"ground_truth/{d}/{i:03d}_mask.png"}
        assert _files(base) == expected  # exact: nothing missing, nothing extra
        mode = "L" if cat == "grid" else "RGB"
        for rel in expected:
            with Image.open(base / rel) as im:
                assert im.format == "PNG" and im.size == size
                if "ground_truth" in rel:
                    m = np.asarray(im)
                    assert im.mode == "L" and set(np.unique(m)) == {0, 255}
                else:
                    assert im.mode == mode


def test_grid_is_grayscale_and_objects_rgb(tmp_path: Path) -> None:
    root = write_mvtec(tmp_path, ["grid", "carpet", "screw"], image_size=32, **COUNTS)
    modes = {c: Image.open(root / c / "train/good/000.png").mode
             for c in ("grid", "carpet", "screw")}
    assert modes == {"grid": "L", "carpet": "RGB", "screw": "RGB"}


def test_visa_layout(small_tree: Path) -> None:
    root = small_tree / "visa"
    with open(root / "split_csv" / "1cls.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["object", "split", "label", "image", "mask"]
    rows = rows[1:]
    referenced = {"split_csv/1cls.csv"}
    for obj in SMALL.visa:
        mine = [r for r in rows if r[0] == obj]
        train = [r for r in mine if r[1] == "train"]
        test_normal = [r for r in mine if r[1] == "test" and r[2] == "normal"]
        anomalies = [r for r in mine if r[2] == "anomaly"]
        assert len(train) == SMALL.n_train and all(r[2] == "normal" for r in train)
        assert len(test_normal) == SMALL.n_test_good
        assert len(anomalies) == 2 * SMALL.n_test_defect_per_type
        assert len(mine) == len(train) + len(test_normal) + len(anomalies)
        for _, split, label, image, mask in mine:
            assert split in ("train", "test") and label in ("normal", "anomaly")
            assert image.startswith(f"{obj}/Data/Images/{label.capitalize()}/")
            assert image.endswith(".JPG")
            with Image.open(root / image) as im:
                assert im.format == "JPEG" and im.mode == "RGB"
                assert im.size == (SMALL.image_size, SMALL.image_size)
            referenced.add(image)
            if label == "normal":
                assert mask == "" and len(Path(image).stem) == 4
                continue
            assert split == "test" and len(Path(image).stem) == 3
            assert mask == f"{obj}/Data/Masks/Anomaly/{Path(image).stem}.png"
            m = np.asarray(Image.open(root / mask))
            assert Image.open(root / mask).mode == "L" and m.shape == (SMALL.image_size,) * 2
            assert set(np.unique(m)) == {0, 1}  # like real VisA: not 255
            referenced.add(mask)
    assert _files(root) == referenced


def test_loco_layout(small_tree: Path) -> None:
    root = small_tree / "mvtec_loco"
    h, w = SMALL.loco_size
    assert h != w
    for cat in SMALL.mvtec_loco:
        base = root / cat
        config = json.loads((base / "defects_config.json").read_text())
        assert isinstance(config, list) and config
        for entry in config:
            assert set(entry) == {"defect_name", "pixel_value", "saturation_threshold",
                                  "relative_saturation"}
            assert isinstance(entry["relative_saturation"], bool)
            assert 0 < entry["pixel_value"] <= 255
            if entry["relative_saturation"]:
                assert entry["saturation_threshold"] == 1.0
            else:
                assert entry["saturation_threshold"] > 1
        values = {e["pixel_value"] for e in config}
        assert len(values) == len(config)
        assert any(not e["relative_saturation"] for e in config)
        for split, n in (("train", SMALL.n_train), ("validation", SMALL.n_validation),
                         ("test", SMALL.n_test_good)):
            assert sorted(p.name for p in (base / split / "good").iterdir()) == _numbered(
                n, "{:03d}.png")
        assert sorted(p.name for p in (base / "test").iterdir()) == [
            "good", "logical_anomalies", "structural_anomalies"]
        n_channels = []
        for folder in ("logical_anomalies", "structural_anomalies"):
            images = sorted((base / "test" / folder).iterdir())
            assert images and [p.name for p in images] == _numbered(len(images), "{:03d}.png")
            gt_dirs = sorted((base / "ground_truth" / folder).iterdir())
            assert [p.name for p in gt_dirs] == [p.stem for p in images]
            for img_path, gt_dir in zip(images, gt_dirs, strict=True):
                with Image.open(img_path) as im:
                    assert im.mode == "RGB" and im.size == (w, h)
                pngs = sorted(gt_dir.iterdir())
                assert pngs and [p.name for p in pngs] == _numbered(len(pngs), "{:03d}.png")
                n_channels.append(len(pngs))
                for p in pngs:
                    m = np.asarray(Image.open(p))
                    assert Image.open(p).mode == "L" and m.shape == (h, w)
                    vals = set(np.unique(m).tolist())
                    assert len(vals) == 2 and 0 in vals and (vals - {0}) <= values
        assert max(n_channels) >= 2  # multi-channel ground truth is exercised
        assert _files(base) == {"defects_config.json"} | {
            p.relative_to(base).as_posix() for p in base.rglob("*.png")}


def test_dagm_layout(small_tree: Path) -> None:
    root = small_tree / "dagm"
    assert sorted(p.name for p in root.iterdir()) == sorted(SMALL.dagm)
    for cls in SMALL.dagm:
        for split, n_good, n_bad in (("Train", SMALL.n_train, SMALL.n_test_defect_per_type),
                                     ("Test", SMALL.n_test_good,
                                      2 * SMALL.n_test_defect_per_type)):
            folder = root / cls / split
            images = sorted(p.name for p in folder.glob("*.PNG"))
            assert images == [f"{i:04d}.PNG" for i in range(1, n_good + n_bad + 1)]
            lines = (folder / "Label" / "Labels.txt").read_text().splitlines()
            assert lines[0] == "1" and len(lines) == 1 + len(images)
            labels = set()
            for line, name in zip(lines[1:], images, strict=True):
                idx, flag, filename, zero, label = line.split("\t")
                assert (int(idx), filename, zero) == (int(Path(name).stem), name, "0")
                if flag == "1":
                    assert label == f"{Path(name).stem}_label.PNG"
                    labels.add(label)
                else:
                    assert (flag, label) == ("0", "0")
            assert len(labels) == n_bad
            assert {p.name for p in (folder / "Label").glob("*.PNG")} == labels
            assert _files(folder) == set(images) | {f"Label/{x}" for x in labels | {"Labels.txt"}}
            for name in images:
                with Image.open(folder / name) as im:
                    assert im.mode == "L" and im.size == (SMALL.image_size,) * 2
            for label in labels:
                m = np.asarray(Image.open(folder / "Label" / label))
                assert set(np.unique(m)) == {0, 255} and (m > 0).mean() < 0.3


def test_dtd_layout(small_tree: Path) -> None:
    root = small_tree / "dtd"
    assert _files(root) == {f"images/{c}/{c}_{i:04d}.jpg" for c in SMALL.dtd for i in range(1, 13)}
    for p in (root / "images").rglob("*.jpg"):
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert im.size == (SMALL.image_size,) * 2


def test_writers_take_their_own_arguments(tmp_path: Path) -> None:
    assert write_dtd(tmp_path / "dtd", ["veined"], image_size=32, n_per_class=3) == tmp_path / "dtd"
    assert _files(tmp_path / "dtd") == {f"images/veined/veined_{i:04d}.jpg" for i in (1, 2, 3)}
    write_visa(tmp_path / "visa", ["pcb4"], image_size=32, n_train=2, n_test_good=1,
               n_test_defect_per_type=1)
    assert len((tmp_path / "visa/split_csv/1cls.csv").read_text().splitlines()) == 1 + 2 + 1 + 2
    write_dagm(tmp_path / "dagm", ["Class7"], image_size=32, n_train=2, n_test_good=1,
               n_test_defect_per_type=1)
    assert len(list((tmp_path / "dagm/Class7/Train").glob("*.PNG"))) == 3
    write_loco(tmp_path / "loco", ["breakfast_box"], size=(30, 40), n_train=1, n_validation=1,
               n_test_good=1, n_test_defect_per_type=1)
    with Image.open(tmp_path / "loco/breakfast_box/train/good/000.png") as im:
        assert im.size == (40, 30)


@pytest.mark.parametrize("category", ["toothbrush", "metal_plate", "pcb1", "tile", "grid",
                                      "Class2"])
def test_defect_masks_are_the_changed_pixels(category: str) -> None:
    """Mask = the pixels the defect changed (dilated at most a pixel), 0.4% to 5% of the image."""
    gray = True if category.startswith("Class") else None
    st = synthetic._style(0, category, gray=gray)
    kinds = synthetic.GRAY_DEFECT_KINDS if st.gray else synthetic.DEFECT_KINDS
    for kind in kinds:
        for i in range(3):
            clean, damaged, mask = synthetic._draw_sample(st, (64, 64), kind,
                                                         synthetic._rng("t", category, kind, i))
            assert mask is not None and mask.dtype == bool
            diff = np.abs(synthetic._to_uint8(damaged).astype(int)
                          - synthetic._to_uint8(clean).astype(int)).max(axis=2)
            assert not (diff > 1)[~mask].any(), (kind, i)  # every visible change is masked
            assert not (mask & ~ndimage.binary_dilation(diff > 0)).any(), (kind, i)
            assert 0.004 <= mask.mean() <= 0.05, (kind, i, mask.mean())


# --------------------------------------------------------------------------------------------
# Determinism and caching
# --------------------------------------------------------------------------------------------


def test_same_spec_is_byte_identical_and_seed_matters(small_tree: Path, tmp_path: Path) -> None:
    again = _hashes(write_all(tmp_path / "again", SMALL))
    assert again == _hashes(small_tree)
    other = _hashes(write_all(tmp_path / "other", replace(SMALL, seed=1)))
    def layout(hashes: dict[str, str]) -> set[str]:  # DAGM shuffles its defective indices
        return {k for k in hashes if not k.endswith("_label.PNG")}

    assert layout(other) == layout(again) and len(other) == len(again)  # same layout...
    images = [k for k in again if k.endswith((".png", ".PNG", ".jpg", ".JPG"))
              and "ground_truth" not in k and "Masks" not in k and "Label/" not in k]
    differ = sum(other[k] != again[k] for k in images)
    assert differ == len(images)  # ...but every image is different


def test_fingerprint_is_stable_and_sensitive() -> None:
    assert SyntheticSpec().fingerprint() == SyntheticSpec().fingerprint()
    fp = SyntheticSpec().fingerprint()
    assert len(fp) == 12 and int(fp, 16) >= 0
    assert SyntheticSpec(seed=1).fingerprint() != fp
    assert SyntheticSpec(dtd=("banded",)).fingerprint() != fp


def _snapshot(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*")}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_ensure_synthetic_is_cached_and_atomic(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    final = cache / f"synthetic-{SMALL.fingerprint()}"

    # An interrupted generation leaves neither the final folder nor its temporary sibling.
    def boom(*args: object, **kwargs: object) -> Path:
        raise RuntimeError("killed halfway")

    monkeypatch.setattr(synthetic, "write_dagm", boom)
    with pytest.raises(RuntimeError, match="halfway"):
        ensure_synthetic(cache, SMALL)
    assert list(cache.iterdir()) == []
    monkeypatch.undo()

    # A temp folder left by a killed process (SIGKILL: no cleanup ran) is removed.
    stale = cache / f".{final.name}.tmp-{socket.gethostname()}-{_dead_pid()}-deadbeef"
    (stale / "mvtec_ad").mkdir(parents=True)
    path = ensure_synthetic(cache, SMALL)
    assert path == final and not stale.exists()
    assert sorted(p.name for p in cache.iterdir()) == [final.name]
    info = json.loads((path / "SYNTHETIC.json").read_text())
    assert info["spec"] == json.loads(json.dumps(SMALL.__dict__))
    assert info["generator_version"] == GENERATOR_VERSION

    # A second call returns the same folder without touching anything.
    before = _snapshot(path)
    assert ensure_synthetic(cache, SMALL) == path
    assert _snapshot(path) == before
    assert ensure_synthetic(str(cache), SMALL) == path


def test_ensure_synthetic_ignores_live_temp_folders(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    spec = replace(SMALL, seed=3)
    live = cache / f".synthetic-{spec.fingerprint()}.tmp-{socket.gethostname()}-{os.getpid()}-x"
    live.mkdir(parents=True)
    path = ensure_synthetic(cache, spec)
    assert live.exists() and (path / "SYNTHETIC.json").is_file()


# --------------------------------------------------------------------------------------------
# Learnability: a trained nearest-neighbour patch detector must beat chance clearly
# --------------------------------------------------------------------------------------------

PATCH, STRIDE = 8, 4


def _load(path: Path) -> torch.Tensor:
    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)


def _patches(img: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.unfold(img[None], PATCH, stride=STRIDE)[0].T  # (L, 3*P*P)


def _score(bank: torch.Tensor, img: torch.Tensor) -> tuple[float, np.ndarray]:
    """Image score = max patch NN distance; pixel map = patch distances averaged back."""
    dist = torch.cdist(_patches(img), bank).min(1).values
    h, w = img.shape[1:]
    cols = dist[None, None, :].expand(1, PATCH * PATCH, -1)
    summed = torch.nn.functional.fold(cols, (h, w), PATCH, stride=STRIDE)
    count = torch.nn.functional.fold(torch.ones_like(cols), (h, w), PATCH, stride=STRIDE)
    return float(dist.max()), (summed / count.clamp(min=1))[0, 0].numpy()


def _evaluate(train: list[Path], tests: list[tuple[Path, np.ndarray | None]]) -> tuple[float,
                                                                                      float]:
    bank = torch.cat([_patches(_load(p)) for p in train])
    labels, scores, pix_gt, pix_score = [], [], [], []
    for path, mask in tests:
        img = _load(path)
        score, amap = _score(bank, img)
        labels.append(int(mask is not None))
        scores.append(score)
        pix_gt.append((np.zeros(amap.shape, bool) if mask is None else mask).ravel())
        pix_score.append(amap.ravel())
    return (roc_auc_score(labels, scores),
            roc_auc_score(np.concatenate(pix_gt), np.concatenate(pix_score)))


@pytest.fixture(scope="module")
def learn_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("learn")
    write_mvtec(root / "mvtec_ad", ["grid", "toothbrush"], image_size=64)
    write_loco(root / "mvtec_loco", ["juice_bottle"])
    return root


def _mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)) > 0


@pytest.mark.parametrize("category", ["grid", "toothbrush"])
def test_mvtec_defects_are_learnable(learn_tree: Path, category: str) -> None:
    base = learn_tree / "mvtec_ad" / category
    train = sorted((base / "train/good").glob("*.png"))
    tests: list[tuple[Path, np.ndarray | None]] = [
        (p, None) for p in sorted((base / "test/good").glob("*.png"))]
    for d in sorted(p for p in (base / "test").iterdir() if p.name != "good"):
        tests += [(p, _mask(base / "ground_truth" / d.name / f"{p.stem}_mask.png"))
                  for p in sorted(d.glob("*.png"))]
    image_auroc, pixel_auroc = _evaluate(train, tests)
    print(f"{category}: image AUROC {image_auroc:.3f}, pixel AUROC {pixel_auroc:.3f}")
    assert image_auroc >= 0.9 and pixel_auroc >= 0.9


def test_loco_structural_anomalies_are_learnable(learn_tree: Path) -> None:
    base = learn_tree / "mvtec_loco" / "juice_bottle"
    train = sorted((base / "train/good").glob("*.png"))
    tests: list[tuple[Path, np.ndarray | None]] = [
        (p, None) for p in sorted((base / "test/good").glob("*.png"))]
    for p in sorted((base / "test/structural_anomalies").glob("*.png")):
        gts = sorted((base / "ground_truth/structural_anomalies" / p.stem).glob("*.png"))
        tests.append((p, np.logical_or.reduce([_mask(g) for g in gts])))
    image_auroc, pixel_auroc = _evaluate(train, tests)
    print(f"loco structural: image AUROC {image_auroc:.3f}, pixel AUROC {pixel_auroc:.3f}")
    assert image_auroc >= 0.9 and pixel_auroc >= 0.9


@pytest.mark.parametrize("category", ["grid", "toothbrush"])
def test_normal_images_vary(learn_tree: Path, category: str) -> None:
    """Memorising one training image must not be enough: test normals are new images."""
    base = learn_tree / "mvtec_ad" / category
    train = [_load(p) for p in sorted((base / "train/good").glob("*.png"))]
    for p in sorted((base / "test/good").glob("*.png")):
        img = _load(p)
        assert min(float((img - t).abs().mean()) for t in train) > 0.005
    assert float((train[0] - train[1]).abs().mean()) > 0.005
