"""POUTA protocol pieces: the losses against hand computations and pytorch-msssim, DRAEM's image
score rule, few-shot support lists, and a tiny end-to-end run per kind of table cell."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pytorch_msssim import ssim as reference_ssim
from torch.nn import functional as F

from repro.methods.pouta import focal_loss, image_scores, reconstruction_loss, segmentation_loss


def test_focal_loss_by_hand():
    probs = torch.tensor([[0.9, 0.2], [0.1, 0.8]]).view(1, 2, 1, 2)  # p(normal), p(anomaly)
    mask = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2)
    pt = torch.tensor([0.9, 0.8]) * (1 - 1e-5) + torch.tensor([0.1, 0.2]) * 1e-5 + 1e-5
    expected = (-(1 - pt) ** 2 * pt.log()).mean()
    assert torch.isclose(focal_loss(probs, mask, 2.0), expected, rtol=1e-5)
    # gamma 0 is the cross-entropy of the (smoothed) probabilities
    assert torch.isclose(focal_loss(probs, mask, 0.0), -pt.log().mean(), rtol=1e-5)


def test_segmentation_loss_adds_l1_of_the_anomaly_probability():
    logits = torch.randn(2, 2, 4, 4)
    mask = (torch.rand(2, 1, 4, 4) > 0.5).float()
    p = logits.softmax(1)
    expected = focal_loss(p, mask, 2.0) + (p[:, 1:] - mask).abs().mean()
    assert torch.isclose(segmentation_loss(logits, mask, 2.0), expected)


def test_reconstruction_loss_is_mse_plus_one_minus_ssim():
    """SSIM with an 11x11 Gaussian window (sigma 1.5) equals pytorch-msssim's ``ssim``."""
    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    expected = F.mse_loss(a, b) + 1 - reference_ssim(a, b, data_range=1.0, size_average=True)
    assert torch.isclose(reconstruction_loss(a, b, 1.5), expected, atol=1e-5)
    assert reconstruction_loss(a, a, 1.5).abs() < 1e-6


def test_image_score_is_max_of_21x21_average_pool():
    maps = torch.zeros(1, 64, 64)
    maps[0, 10:13, 20:23] = 1.0  # a 3x3 blob: its 21x21 average is 9/441 at best
    assert torch.isclose(image_scores(maps, 21), torch.tensor([9 / 441]))
    ref = F.avg_pool2d(maps[:, None], 21, stride=1, padding=10).amax()
    assert torch.isclose(image_scores(maps, 21)[0], ref)


@pytest.mark.slow
def test_tiny_runs_write_records_and_support_lists(synthetic_root, scratch_store, tmp_path):
    from repro.experiments import run_cell

    kw = dict(profile="smoke", data_root=str(synthetic_root), device="cpu")
    full = run_cell("pouta", "main", "mvtec_ad", "toothbrush", variant="epochs=2", **kw)
    assert set(full["metrics"]) == {"image_auroc", "pixel_auroc", "pixel_ap", "aupro"}
    assert all(0 <= v <= 1 for v in full["metrics"].values())
    assert len(full["extra"]["history"]) == 2 and "mss" in full["extra"]["history"][0]
    assert full["extra"]["cost"]["macs"] > 0 and full["extra"]["cost"]["latency_ms"] > 0

    vanilla = run_cell("pouta", "main", "mvtec_ad", "toothbrush", variant="epochs=2,"
                       "model=vanilla", **kw)
    assert "mss" not in vanilla["extra"]["history"][0]
    assert vanilla["extra"]["cost"]["params"] > full["extra"]["cost"]["params"]

    shots = run_cell("pouta", "main", "mvtec_ad", "toothbrush", variant="epochs=2,shots=2", **kw)
    assert shots["extra"]["n_train"] == 2
    support = tmp_path / "results" / "smoke" / "support" / "mvtec_ad__toothbrush__k2__seed0.json"
    listed = json.loads(support.read_text())["files"]
    assert len(listed) == 2 and all(f.startswith("toothbrush/train/good/") for f in listed)
    # a committed list is reused as is: edit it (three images now), and the run follows the file
    payload = json.loads(support.read_text())
    extra = sorted(p.name for p in (synthetic_root / "mvtec_ad" / "toothbrush" / "train" / "good")
                   .iterdir() if f"toothbrush/train/good/{p.name}" not in listed)[0]
    payload["files"] = [*listed, f"toothbrush/train/good/{extra}"]
    support.write_text(json.dumps(payload))
    again = run_cell("pouta", "main", "mvtec_ad", "toothbrush", variant="epochs=1,shots=2", **kw)
    assert again["extra"]["train_images"] == f"support set {support.name}"
    assert again["extra"]["n_train"] == 3
    assert np.isfinite(again["metrics"]["image_auroc"])


def test_few_shot_step_budget_equals_the_full_runs_steps_by_hand():
    """grid in real_subset: 25 images, batch 8 -> 4 steps per epoch, 120 epochs = 480 steps; a
    k-shot run (k <= 8: one step per pass) gets 480 passes; k = 12 (2 steps a pass) 240 passes."""
    from repro.methods.pouta import step_budget

    cfg = {"epochs": 120, "batch_size": 8, "shots": 0, "shot_steps": "full"}
    assert step_budget(cfg, 25, 25) == (120, 480)
    for k in (2, 4, 8):
        assert step_budget({**cfg, "shots": k}, k, 25) == (480, 480)
    assert step_budget({**cfg, "shots": 12}, 12, 25) == (240, 480)
    assert step_budget({**cfg, "shots": 9}, 9, 27) == (240, 480)  # 2 steps a pass, 4 x 120 steps
    assert step_budget({**cfg, "shots": 3}, 3, 25) == (480, 480)
    # the old reading: 120 passes over the k images, 120 steps
    assert step_budget({**cfg, "shots": 2, "shot_steps": "epochs"}, 2, 25) == (120, 120)
    with pytest.raises(ValueError):
        step_budget({**cfg, "shots": 2, "shot_steps": "steps"}, 2, 25)


def test_epoch_order_is_the_per_epoch_shuffled_loaders_order():
    """One sampler for all epochs (persistent workers) gives the order of the fresh shuffled
    DataLoader per epoch that earlier records were trained on."""
    from torch.utils.data import DataLoader

    from repro.methods.pouta import EpochOrder

    order = EpochOrder(11, seed=3)
    for epoch in (0, 1, 7):
        old = DataLoader(list(range(11)), batch_size=4, shuffle=True,
                         generator=torch.Generator().manual_seed(3 * 7919 + epoch))
        order.epoch = epoch
        assert [(epoch, i) for b in old for i in b.tolist()] == list(order)
    assert len({tuple(i for _, i in order)}) == 1  # the same epoch twice: the same order


def test_warmup_step_budget_by_hand():
    """rec_warmup_epochs counts full-data epochs, like ``epochs``: the few-shot warm-up takes the
    full run's warm-up steps."""
    from repro.methods.pouta import step_budget
    from repro.profiles import paper_config

    cfg = {**paper_config("pouta", "real_subset"), "rec_warmup_epochs": 300}
    assert step_budget(cfg, 25, 25, cfg["rec_warmup_epochs"]) == (300, 1200)
    assert step_budget({**cfg, "shots": 2}, 2, 25, cfg["rec_warmup_epochs"]) == (1200, 1200)
    assert step_budget(cfg, 25, 25, 0) == (0, 0)


def test_reconstruction_warmup_trains_the_reconstruction_alone(synthetic_root, scratch_store,
                                                              monkeypatch):
    """Smoke toothbrush, 2 steps an epoch: 2 warm-up epochs of L_rec only (the discriminative
    network is never run, so Adam leaves it as it was; the lr schedule waits), then 3 joint
    epochs. The switched-off warm-up (0) keeps the identity the records had before it."""
    from repro.experiments import cell_identity, run_cell
    from repro.methods import pouta
    from repro.runs import config_hash

    calls = {"reconstructive": 0, "discriminative": 0}
    real_build = pouta.build

    def counting_build(*args):
        model = real_build(*args)
        for name in calls:
            def count(m, i, o, name=name):
                calls[name] += m.training and torch.is_grad_enabled()
            getattr(model, name).register_forward_hook(count)
        return model

    monkeypatch.setattr(pouta, "build", counting_build)
    kw = dict(profile="smoke", data_root=str(synthetic_root), device="cpu")
    rec = run_cell("pouta", "main", "mvtec_ad", "toothbrush",
                   variant="epochs=3,rec_warmup_epochs=2", **kw)
    hist = rec["extra"]["history"]
    assert [h.get("phase") for h in hist] == ["warmup", "warmup", None, None, None]
    assert set(hist[0]) == {"epoch", "lr", "phase", "rec"} and "pre" in hist[2]
    assert (rec["extra"]["warmup_steps"], rec["extra"]["steps"]) == (4, 10)
    assert calls == {"reconstructive": 10, "discriminative": 6}  # trained: every step / joint
    assert hist[0]["lr"] == hist[1]["lr"] == hist[2]["lr"]

    _, off, did = cell_identity("pouta", "main", "mvtec_ad", "toothbrush", variant="epochs=3",
                                **{k: kw[k] for k in ("profile", "data_root")})
    assert off["rec_warmup_epochs"] == 0
    without = {k: v for k, v in off.items() if k != "rec_warmup_epochs"}
    assert config_hash(off, did) == config_hash(without, did)
    assert config_hash({**off, "rec_warmup_epochs": 2}, did) != config_hash(off, did)


def test_support_draws_differ_and_are_reproducible(tmp_path):
    from repro.data import Record, select_support
    from repro.methods.pouta import support_seed

    pool = [Record(tmp_path / f"{i:03d}.png", 0, "good", "mvtec_ad", "grid") for i in range(25)]
    for k in (2, 4, 8):
        draws = [tuple(r.path.name for r in select_support(pool, k, support_seed(0, d)))
                 for d in range(3)]
        assert len(set(draws)) == 3  # three different support sets
        assert draws == [tuple(r.path.name for r in select_support(pool[::-1], k,
                                                                    support_seed(0, d)))
                         for d in range(3)]  # the same again, whatever the listing order
    assert support_seed(0, 0) == 0  # draw 0 keeps the lists committed before draws existed


@pytest.mark.slow
def test_few_shot_run_takes_the_full_runs_step_count(synthetic_root, scratch_store):
    """Synthetic toothbrush: 8 training images, smoke batch 4 -> 2 steps per epoch; 3 epochs
    = 6 steps for the full run and for the 2-shot run (6 passes of one step)."""
    from repro.experiments import run_cell

    kw = dict(profile="smoke", data_root=str(synthetic_root), device="cpu")
    full = run_cell("pouta", "main", "mvtec_ad", "toothbrush", variant="epochs=3", **kw)
    assert (full["extra"]["n_train"], full["extra"]["steps"]) == (8, 6)
    assert len(full["extra"]["history"]) == 3
    for draw in (0, 1):
        shots = run_cell("pouta", "main", "mvtec_ad", "toothbrush",
                         variant=f"epochs=3,shots=2,support_draw={draw}", **kw)
        assert (shots["extra"]["n_train"], shots["extra"]["n_full_train"]) == (2, 8)
        assert shots["extra"]["steps"] == 6 and len(shots["extra"]["history"]) == 6
    old = run_cell("pouta", "main", "mvtec_ad", "toothbrush",
                   variant="epochs=3,shots=2,shot_steps=epochs", **kw)
    assert old["extra"]["steps"] == 3
    support = scratch_store / "results" / "smoke" / "support"
    first = json.loads((support / "mvtec_ad__toothbrush__k2__seed0.json").read_text())
    second = json.loads((support / "mvtec_ad__toothbrush__k2__draw1__seed0.json").read_text())
    assert first["files"] != second["files"] and second["seed"] == 1000


def test_category_overrides_apply_to_their_category_only():
    from repro.methods.pouta import category_config
    from repro.profiles import paper_config

    cfg = {**paper_config("pouta", "smoke"), "category_overrides": {"mvtec_ad/grid": {"epochs": 7}}}
    assert category_config(cfg, "mvtec_ad", "grid")["epochs"] == 7
    assert category_config(cfg, "folder", "grid")["epochs"] == cfg["epochs"]  # not by name
    assert category_config(cfg, "mvtec_ad", "toothbrush")["epochs"] == cfg["epochs"] != 7
    with pytest.raises(ValueError, match="unknown keys"):
        category_config({**cfg, "category_overrides": {"mvtec_ad/grid": {"epoch": 7}}}, "mvtec_ad",
                        "grid")


def test_training_crops_are_windows_of_the_clean_image_and_reproducible():
    from repro.kernels.synthesis import SynthesisConfig
    from repro.methods.pouta import SyntheticAnomalies

    torch.manual_seed(0)
    images = torch.rand(3, 3, 32, 32)
    whole = SyntheticAnomalies(images, [], SynthesisConfig(), [None] * 3, seed=0)
    img, mask, clean = whole[0, 1]
    assert img.shape == (3, 32, 32) and torch.equal(clean, images[1])
    cropped = SyntheticAnomalies(images, [], SynthesisConfig(), [None] * 3, seed=0, crop=16)
    corners = set()
    for epoch in range(6):
        img, mask, clean = cropped[epoch, 1]
        assert img.shape == (3, 16, 16) and mask.shape == (1, 16, 16)
        # the clean target is a 16x16 window of the image, and the input equals it off the mask
        hits = [(t, u) for t in range(17) for u in range(17)
                if torch.equal(images[1][:, t:t + 16, u:u + 16], clean)]
        assert len(hits) == 1
        corners.add(hits[0])
        assert torch.equal(img[:, mask[0] == 0], clean[:, mask[0] == 0])
        again = cropped[epoch, 1]
        assert all(torch.equal(a, b) for a, b in zip(again, (img, mask, clean), strict=True))
    assert len(corners) > 1  # windows move between epochs


def test_dataloader_workers_do_not_change_the_result(synthetic_root, scratch_store):
    """Each synthetic sample's randomness comes from (seed, epoch, index), so the paper
    profile's DataLoader workers train the same model as the main process does."""
    from repro.experiments import run_cell

    kw = dict(profile="smoke", data_root=str(synthetic_root), device="cpu")
    main = run_cell("pouta", "main", "mvtec_ad", "grid", variant="epochs=2", **kw)
    workers = run_cell("pouta", "main", "mvtec_ad", "grid", variant="epochs=2,workers=2", **kw)
    assert workers["config"]["workers"] == 2 and main["config"]["workers"] == 0
    assert workers["metrics"] == main["metrics"]
    assert workers["extra"]["history"] == main["extra"]["history"]


def test_reconstruction_probe_reports_every_window_of_steps(synthetic_root):
    """repro.probe_pouta_rec (issue 11, point 10): L_rec and the mean-colour plateau per window
    of steps; the plateau is the L_rec of each training window's mean colour, so it is positive,
    and the same seeds give the same rows."""
    from repro.probe_pouta_rec import probe

    kw = {"profile": "smoke", "size": 32, "crop": 16, "steps": 5, "every": 2}
    rows = probe(synthetic_root, "mvtec_ad", "grid", **kw)
    assert [r["step"] for r in rows] == [2, 4, 5]
    assert all(np.isfinite(r["rec"]) and r["mean_colour"] > 0 for r in rows)
    assert rows == probe(synthetic_root, "mvtec_ad", "grid", **kw)
    assert rows != probe(synthetic_root, "mvtec_ad", "grid", **kw, seed=1)
