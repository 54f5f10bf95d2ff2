"""repro.weights: published torchvision files are found under TORCH_HOME, "auto" resolves before
a run's identity is computed, and a stand-in run is not returned once the file is present."""

from __future__ import annotations

import torch

from repro import weights


def test_standard_file_names_come_from_torchvision():
    assert weights.standard_file_name("efficientnet_b5") == "efficientnet_b5_lukemelas-1a07897c.pth"
    assert weights.standard_file_name("wide_resnet101_2") == "wide_resnet101_2-32ee1156.pth"


def test_auto_resolves_to_torch_home_file_or_none(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = {"b5_weights": "auto", "backbone_weights": "auto", "other": "auto"}
    assert weights.resolve_auto(cfg) == {"b5_weights": None, "backbone_weights": None,
                                         "other": "auto"}
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / "efficientnet_b5_lukemelas-1a07897c.pth").write_bytes(b"x")
    out = weights.resolve_auto(cfg)
    assert out["b5_weights"] == "torch_home:efficientnet_b5_lukemelas-1a07897c.pth"
    assert out["backbone_weights"] is None
    assert weights.weight_path(out["b5_weights"]) == ckpt / "efficientnet_b5_lukemelas-1a07897c.pth"
    assert cfg["b5_weights"] == "auto"  # the input is not modified


def test_b5_encoder_loads_from_torch_home(tmp_path, monkeypatch):
    import torchvision

    from repro.networks.tsdn import encoder

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.manual_seed(0)
    ref = torchvision.models.efficientnet_b5(weights=None)
    torch.save(ref.state_dict(), ckpt / weights.standard_file_name("efficientnet_b5"))
    resolved = weights.resolve_auto({"b5_weights": "auto"})["b5_weights"]
    enc = encoder("efficientnet_b5", resolved)
    first = next(iter(enc.body.parameters()))
    assert torch.equal(first, next(iter(ref.features.parameters())))


def test_run_identity_changes_when_published_file_appears(tmp_path, monkeypatch, scratch_store):
    from repro.experiments import get_experiment, variant_overrides
    from repro.profiles import paper_config
    from repro.runs import config_hash

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    cfg = paper_config("tsdn", "smoke")
    cfg.update(variant_overrides(get_experiment("tsdn", "main"), "", cfg))
    before = config_hash(weights.resolve_auto(cfg))
    ckpt = tmp_path / "th" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / weights.standard_file_name("efficientnet_b5")).write_bytes(b"x")
    assert config_hash(weights.resolve_auto(cfg)) != before
