"""Your own images end to end: a folder dataset written by the synthetic writer through all four
methods, then ``predict`` with each run's kept weights."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from repro import data as D

TINY = {
    "n2n": "max_epochs=2,patience=2",
    "tsdn": "epochs=1",
    "pouta": "epochs=1",
    "puad": "steps=4,distil_steps=2,latency_repeats=2,lite0_weights=null",
}


@pytest.mark.slow
@pytest.mark.parametrize("paper", list(TINY))
def test_each_method_runs_on_a_folder_dataset_and_predicts(paper, synthetic_root, scratch_store,
                                                          tmp_path):
    from repro.experiments import run_cell
    from repro.predict import predict

    rec = run_cell(paper, "main", "folder", "parts", profile="smoke",
                   data_root=str(synthetic_root), device="cpu", variant=TINY[paper])
    m = rec["metrics"]
    image_auroc = m["puad/auroc_pooled"] if paper == "puad" else m["image_auroc"]
    assert 0.0 <= image_auroc <= 1.0
    pixel = m["efficientad/pixel_auroc"] if paper == "puad" else m["pixel_auroc"]
    assert 0.0 <= pixel <= 1.0  # the folder's masks are read
    # the split is written beside the records
    split = json.loads((scratch_store / "results" / "smoke" / "runs" /
                        "folder__parts__split.json").read_text())
    held_out = rec["extra"]["n_val"] if paper in ("n2n", "puad") else 0
    assert len(split["train"]) == rec["extra"]["n_train"] + held_out
    assert len(split["test"]) == rec["extra"]["n_test"]
    model_file = scratch_store / "cache" / "models" / "smoke" / \
        f"{rec['key']['paper']}__main__folder__parts__{rec['key']['variant']}__seed0-" \
        f"{rec['config_hash']}.pt"
    assert model_file.is_file()
    assert set(torch.load(model_file, weights_only=True)) == set(rec["model"]["parts"])

    test = D.list_records(synthetic_root, "folder", "parts", "test")
    images = [str(r.path) for r in test]
    out = tmp_path / "pred"
    csv_path = predict(scratch_store / "results" / "smoke" / "runs" /
                       f"{paper}__main__folder__parts__{rec['key']['variant']}__seed0.json",
                       images, out, profile="smoke", device="cpu")
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == len(images)
    assert all((out / r["map"]).is_file() for r in rows)
    assert len({r["threshold"] for r in rows}) == 1
    scores = np.array([float(r["score"]) for r in rows])
    assert np.isfinite(scores).all()
    # the rebuilt model scores the test images as the run did (N2N draws its test noise by
    # batch position, TSDN's record holds min-max-normalised scores: both rank-compared)
    if paper == "pouta":
        np.testing.assert_allclose(scores, rec["extra"]["scores"], rtol=1e-4, atol=1e-6)
    elif paper == "puad":
        np.testing.assert_allclose(scores, rec["extra"]["scores"]["puad"], rtol=1e-4,
                                   atol=1e-5)
    # the stated rule: the largest score of the run's held-out (or training) good images
    values = rec["extra"]["threshold_scores"]
    values = values["puad"] if paper == "puad" else values
    threshold = float(rows[0]["threshold"])
    assert threshold == pytest.approx(max(values), rel=1e-5)
    assert [int(r["anomalous"]) for r in rows] == [int(v > threshold) for v in scores]


def test_predict_without_a_model_names_the_retrain_command(tmp_path):
    from repro.data import DatasetError
    from repro.predict import predict

    record = {"key": {"paper": "pouta", "experiment": "main", "dataset": "mvtec_ad",
                      "category": "grid", "variant": "default", "seed": 0, "profile": "smoke"},
              "config": {"image_size": 32}, "extra": {},
              "model": {"path": ".cache/models/smoke/gone.pt", "parts": ["model"]}}
    path = tmp_path / "rec.json"
    path.write_text(json.dumps(record))
    img = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    with pytest.raises(DatasetError, match="not on disk any more.*python -m repro run --paper "
                       "pouta"):
        predict(path, [img], tmp_path / "out")
    with pytest.raises(DatasetError, match="image not found"):
        predict(path, [tmp_path / "missing.png"], tmp_path / "out")
