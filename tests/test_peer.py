"""anomalib 2.7 beside ours (issue 14): the same weights give the same outputs, and every
convention that differs is shown, with the side that follows nelson1425's / PUAD's code named.
Skipped without the ``peer`` extra (``pip install -e ".[peer]"``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

pytestmark = pytest.mark.peer
anomalib = pytest.importorskip("anomalib", reason="anomalib is not installed: pip install -e "
                               "'.[peer]' runs the peer tests")

from anomalib.models.image.draem.torch_model import DraemModel  # noqa: E402
from anomalib.models.image.efficient_ad.torch_model import (  # noqa: E402
    EfficientAdModel,
    EfficientAdModelSize,
)

from repro import metrics, peers  # noqa: E402
from repro.networks import count_parameters  # noqa: E402

SIZES = {"S": EfficientAdModelSize.S, "M": EfficientAdModelSize.M}


def _efficientad(size: str, seed: int = 0, pad_maps: bool = False):
    """anomalib's EfficientAD with random weights and a set teacher mean/std, and ours made from
    its state dict by the package's key mapping."""
    torch.manual_seed(seed)
    theirs = EfficientAdModel(model_size=SIZES[size], pad_maps=pad_maps).eval()
    with torch.no_grad():
        theirs.mean_std["mean"].copy_(torch.randn(1, 384, 1, 1) * 0.1)
        theirs.mean_std["std"].copy_(torch.rand(1, 384, 1, 1) + 0.5)
    ours, found = peers.efficientad_from_state(theirs.state_dict(), 256)
    assert found == size
    return theirs, ours.eval()


@pytest.mark.parametrize("size", ["S", "M"])
def test_efficientad_same_weights_same_outputs(size):
    theirs, ours = _efficientad(size)
    for part in ("teacher", "student", "ae"):
        assert count_parameters(getattr(ours, part)) == count_parameters(getattr(theirs, part))
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        t, s, a = ours.outputs(x)
        t_ref = theirs._normalize_teacher(theirs.teacher(x))
        s_ref = theirs.student(x)
        a_ref = theirs.ae(x, x.shape[-2:])
    assert torch.equal(s, s_ref) and torch.equal(a, a_ref)  # bit-identical
    # the teacher: anomalib normalises the output, we fold mean/std into the last convolution
    assert (t - t_ref).abs().max() < 1e-4 * t_ref.abs().max()


@pytest.mark.parametrize("size", ["S", "M"])
def test_efficientad_same_quantiles_same_map_and_score(size):
    """With the same quantiles and anomalib's ``pad_maps=False``, anomalib's map equals ours
    upsampled to the input, and its image score (max of that map) equals ours under PUAD's rule
    (``score_maps="input"``, the default)."""
    theirs, ours = _efficientad(size)
    q = {"qa_st": 0.01, "qb_st": 0.05, "qa_ae": 0.02, "qb_ae": 0.07}
    with torch.no_grad():
        for k, v in q.items():
            theirs.quantiles[k].fill_(v)
        a_st, a_ae = 0.05 / (q["qb_st"] - q["qa_st"]), 0.05 / (q["qb_ae"] - q["qa_ae"])
        ours.map_affine.copy_(torch.tensor([a_st, a_ae, -a_st * q["qa_st"] - a_ae * q["qa_ae"]]))
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        ref = theirs(x)
        t, s, a = ours.outputs(x)
        m = ours.score_resolution(ours.combined_map(t, s, a))
        score = ours.image_max(ours.combined_map(t, s, a))
    assert torch.allclose(m, ref.anomaly_map[:, 0], atol=1e-5)
    assert torch.allclose(score, ref.pred_score.flatten(), atol=1e-5)


def test_image_score_grid_rule_is_higher_than_puads():
    """Convention 3: our earlier rule (``score_maps="grid"``: the maximum of the 56x56 grid) is
    at least the maximum after upsampling, which PUAD's code, nelson1425 and anomalib take."""
    _, ours = _efficientad("S")
    x = torch.rand(4, 3, 256, 256)
    with torch.no_grad():
        m = ours.combined_map(*ours.outputs(x))
        upsampled = ours.image_max(m)
        ours.score_size = None  # the named variant score_maps="grid"
        grid = ours.image_max(m)
    assert torch.all(grid >= upsampled) and torch.any(grid > upsampled)


def test_anomalib_pads_the_raw_maps_before_normalising():
    """Convention 1: anomalib (``pad_maps=True``) pads the raw maps with zeros and normalises
    afterwards, so its border is 0.1 (0 - q_a) / (q_b - q_a) < 0; nelson1425 pads the normalised
    map with zeros, as we do for the full-size pixel maps (``puad.full_size_maps``)."""
    from repro.methods.puad import full_size_maps

    theirs, ours = _efficientad("S", pad_maps=True)
    q = {"qa_st": 0.01, "qb_st": 0.05, "qa_ae": 0.02, "qb_ae": 0.07}
    with torch.no_grad():
        for k, v in q.items():
            theirs.quantiles[k].fill_(v)
        ref = theirs(torch.rand(1, 3, 256, 256)).anomaly_map[0, 0]
    border = 0.5 * 0.1 * (0 - q["qa_st"]) / (q["qb_st"] - q["qa_st"]) + \
        0.5 * 0.1 * (0 - q["qa_ae"]) / (q["qb_ae"] - q["qa_ae"])
    assert float(ref[0, 0]) == pytest.approx(border, rel=1e-5)
    ours_full = full_size_maps(torch.rand(1, 56, 56), (256, 256), 4)
    assert float(ours_full[0, 0, 0]) == 0.0


def test_anomalib_quantiles_over_padded_maps_are_lower():
    """Convention 2: anomalib takes the map quantiles over padded, upsampled maps (the zero
    border pulls them down); PUAD's code (our default) over unpadded upsampled maps."""
    theirs, ours = _efficientad("S", pad_maps=True)
    x = torch.rand(3, 3, 256, 256)
    with torch.no_grad():
        st_padded, _ = theirs.get_maps(x, normalize=False)
        t, s, a = ours.outputs(x)
        st_ours = ours.score_resolution(ours.raw_maps(t, s, a)[0])
    q_theirs = torch.quantile(st_padded.flatten(), 0.9)
    q_ours = torch.quantile(st_ours.flatten(), 0.9)
    assert q_theirs < q_ours


def test_teacher_files_in_both_layouts_load(tmp_path):
    """``teacher_weights``: anomalib's layout (``conv1..``) is converted once into the cache;
    nelson1425's (a pickled nn.Sequential or its state dict) loads as it is; another model's
    file is refused by name."""
    from repro.data import DatasetError
    from repro.methods.teacher import load_teacher_file

    theirs, _ = _efficientad("S")
    anomalib_file = tmp_path / "anomalib_teacher.pth"
    torch.save(theirs.teacher.state_dict(), anomalib_file)
    path, layout = peers.import_teacher(anomalib_file, "S", tmp_path / "cache")
    assert layout == "anomalib" and path.parent == tmp_path / "cache" / "teachers"
    loaded, _ = load_teacher_file(path, "S")
    from repro.networks import IMAGENET_MEAN, IMAGENET_STD
    from repro.networks.efficientad import pdn

    unpadded = pdn("S", 384, padding=False)  # as Algorithm 1 uses it, and anomalib's default
    unpadded.load_state_dict(loaded.state_dict())
    x = torch.rand(1, 3, 64, 64)
    xn = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / \
        torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():  # anomalib's PDN normalises inside; ours takes normalised input
        assert torch.allclose(unpadded(xn), theirs.teacher(x), atol=1e-5)
    nelson = tmp_path / "teacher_small.pth"
    torch.save(loaded, nelson)  # nelson1425 publishes the whole module
    assert peers.import_teacher(nelson, "S", tmp_path / "cache") == (nelson, "nelson1425")
    with pytest.raises(DatasetError, match="EfficientAD-S teacher, not M"):
        peers.import_teacher(anomalib_file, "M", tmp_path / "cache")
    other = tmp_path / "draem.pth"
    torch.save({"weight": torch.zeros(3, 3)}, other)
    with pytest.raises(DatasetError, match="draem.pth"):
        peers.import_teacher(other, "S", tmp_path / "cache")


def test_draem_same_weights_same_outputs_and_the_score_rule():
    torch.manual_seed(0)
    theirs = DraemModel()
    assert count_parameters(theirs.reconstructive_subnetwork) == 69_048_579
    assert count_parameters(theirs.discriminative_subnetwork) == 28_374_146
    ours = peers.draem_to_ours(theirs.state_dict())
    assert count_parameters(ours.reconstructive) == 69_048_579
    assert count_parameters(ours.discriminative) == 28_374_146
    assert len(ours.state_dict()) == len(theirs.state_dict()) == 347
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        theirs.train()
        ours.train()
        rec, pred = theirs(x)
        out = ours(x)
        assert torch.equal(out["reconstruction"], rec) and torch.equal(out["logits"], pred)
        theirs.eval()
        ours.eval()
        ref = theirs(x)
        out = ours(x)
    from repro.methods.pouta import anomaly_map, image_scores

    m = anomaly_map(out["logits"])
    assert torch.equal(m, ref.anomaly_map.reshape(m.shape))
    # image score: anomalib the plain maximum, ours DRAEM's 21x21 average-pooled maximum
    assert torch.equal(m.flatten(1).amax(1), ref.pred_score.flatten())
    assert torch.all(image_scores(m, 21) <= ref.pred_score.flatten() + 1e-7)


def test_pixel_metrics_agree_with_anomalibs():
    from anomalib.metrics.aupr import _AUPR
    from anomalib.metrics.aupro import _AUPRO
    from anomalib.metrics.auroc import _AUROC

    rng = np.random.default_rng(0)
    masks = np.zeros((4, 32, 32), bool)
    masks[0, 4:10, 4:12] = masks[1, 20:28, 2:9] = masks[2, 12:16, 12:30] = True
    maps = rng.random((4, 32, 32)).astype(np.float32) + 0.6 * masks
    ours = metrics.pixel_metrics(masks, maps)
    p, t = torch.from_numpy(maps), torch.from_numpy(masks.astype(np.int64))
    auroc, aupr, aupro = _AUROC(), _AUPR(), _AUPRO(fpr_limit=0.3)
    for m in (auroc, aupr, aupro):
        m.update(p, t)
    assert ours["pixel_auroc"] == pytest.approx(float(auroc.compute()), abs=1e-6)
    assert ours["pixel_ap"] == pytest.approx(float(aupr.compute()), abs=1e-6)
    assert ours["aupro"] == pytest.approx(float(aupro.compute()), abs=1e-6)  # 7e-9 measured


def test_synthesis_follows_draems_formula_and_anomalib_departs(monkeypatch, tmp_path):
    """Ours (DRAEM's code): inside the mask (1 - beta) * source + beta * image with beta ~
    U(0, 0.8), so with a black image and a white source the pixel is 1 - beta, uniform on
    [0.2, 1]; an empty mask gives a normal sample. anomalib's DRAEM draws the source's weight
    from U(0.1, 1.0) and redraws an empty mask up to 10 times."""
    from repro.kernels import synthesis

    monkeypatch.setattr(synthesis, "_anomaly_source", lambda image, rng, cfg, textures:
                        torch.ones_like(image))
    rng = np.random.default_rng(0)
    cfg = synthesis.SynthesisConfig(p_anomaly=1.0)
    weights, empty = [], 0
    for _ in range(300):
        out, mask, label = synthesis.synthesize(torch.zeros(3, 32, 32), rng, cfg)
        if label == 0:
            empty += 1
            assert mask.sum() == 0 and out.sum() == 0
            continue
        inside = out[0][mask[0] > 0]
        assert torch.allclose(inside, inside[0].expand_as(inside))
        weights.append(float(inside[0]))
    w = np.array(weights)
    assert w.min() >= 0.2 - 1e-6 and w.max() <= 1.0 + 1e-6
    assert abs(w.mean() - 0.6) < 0.04  # uniform on [0.2, 1]
    from anomalib.models.image.draem.lightning_model import Draem

    # an existing (empty) DTD folder: Draem() would otherwise download DTD into ./datasets
    assert Draem(dtd_dir=tmp_path).augmenter.blend_factor == (0.1, 1.0)  # weight U(0.1, 1)


def _lightning_ckpt(model: torch.nn.Module, path):
    """What anomalib's Lightning checkpoint holds for us: the torch model under ``model.``."""
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "pytorch-lightning_version": "2.6.6"}, path)
    return path


@pytest.mark.slow
def test_puad_from_an_anomalib_efficientad_checkpoint(synthetic_root, tmp_path):
    from sklearn.metrics import roc_auc_score

    from repro.data import DatasetError, list_records, stack_images

    theirs, _ = _efficientad("S")
    ckpt = _lightning_ckpt(theirs, tmp_path / "efficientad.ckpt")
    out = peers.puad_from_anomalib(ckpt, synthetic_root, "mvtec_loco", "juice_bottle",
                                   device="cpu")
    assert out["size"] == "S" and out["n_val"] > 0
    for k in ("efficientad", "puad"):
        assert 0.0 <= out["auroc"][k]["auroc_pooled"] <= 1.0
    # EfficientAD's AUROC is anomalib's own score with the quantiles refitted here
    f = out["fitted"]
    with torch.no_grad():
        for name, v in zip(("qa_st", "qb_st"), f["quantiles_st"], strict=True):
            theirs.quantiles[name].fill_(v)
        for name, v in zip(("qa_ae", "qb_ae"), f["quantiles_ae"], strict=True):
            theirs.quantiles[name].fill_(v)
        test = list_records(synthetic_root, "mvtec_loco", "juice_bottle", "test")
        ref = theirs(stack_images(test, 256)).pred_score.flatten().numpy()
    labels = [r.label for r in test]
    assert out["auroc"]["efficientad"]["auroc_pooled"] == pytest.approx(
        roc_auc_score(labels, ref), abs=1e-9)
    draem = _lightning_ckpt(DraemModel(), tmp_path / "draem.ckpt")
    with pytest.raises(DatasetError, match="not an anomalib EfficientAD checkpoint.*DRAEM"):
        peers.puad_from_anomalib(draem, synthetic_root, "mvtec_loco", "juice_bottle")
    with pytest.raises(DatasetError, match="not an anomalib DRAEM checkpoint.*EfficientAD"):
        peers.pouta_vanilla_from_anomalib(ckpt, synthetic_root, "mvtec_ad", "grid")


@pytest.mark.slow
def test_pouta_vanilla_from_an_anomalib_draem_checkpoint(synthetic_root, tmp_path):
    from sklearn.metrics import roc_auc_score

    from repro.data import list_records, stack_images

    torch.manual_seed(1)
    theirs = DraemModel().eval()
    ckpt = _lightning_ckpt(theirs, tmp_path / "draem.ckpt")
    out = peers.pouta_vanilla_from_anomalib(ckpt, synthetic_root, "mvtec_ad", "grid",
                                            device="cpu", image_size=64, score_pool=5)
    assert set(out["metrics"]) == {"image_auroc", "pixel_auroc", "pixel_ap", "aupro"}
    test = list_records(synthetic_root, "mvtec_ad", "grid", "test")
    with torch.no_grad():
        m = theirs(stack_images(test, 64)).anomaly_map.reshape(len(test), 64, 64)
    pooled = F.avg_pool2d(m[:, None], 5, stride=1, padding=2).flatten(1).amax(1).numpy()
    assert out["metrics"]["image_auroc"] == pytest.approx(
        roc_auc_score([r.label for r in test], pooled), abs=1e-9)


@pytest.mark.slow
def test_latency_side_by_side_writes_the_ratio():
    from repro.bench_puad import bench_peer

    out = bench_peer(torch.device("cpu"), 256, repeats=1, warmup=0)
    for size in ("S", "M"):
        v = out["sizes"][size]
        assert v["anomalib"] > 0 and v["ours_puad"] > 0
        assert v["ours_over_anomalib"] == pytest.approx(v["ours_efficientad"] / v["anomalib"])
