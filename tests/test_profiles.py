"""Profiles and variants: one source of truth for hyperparameters, typos are errors."""

from __future__ import annotations

import pytest

from repro import profiles
from repro.data import DatasetError
from repro.experiments import data_id, get_experiment, variant_overrides


def test_profile_overrides_apply_on_top_of_the_paper_config():
    paper = profiles.paper_config("baseline", "paper")
    smoke = profiles.paper_config("baseline", "smoke")
    assert paper["image_size"] == 256 and smoke["image_size"] == 64
    assert paper["lr"] == smoke["lr"]  # not overridden: the printed value
    smoke["lr"] = 0.5  # a copy: mutating it leaves the source of truth alone
    assert profiles.paper_config("baseline", "smoke")["lr"] == paper["lr"]


def test_override_of_an_unknown_key_is_an_error(monkeypatch):
    bad = profiles.Profile("bad", "typo", None, overrides={"baseline": {"stepz": 3}})
    monkeypatch.setitem(profiles.PROFILES, "bad", bad)
    with pytest.raises(ValueError, match=r"overrides unknown baseline keys: \['stepz'\]"):
        profiles.paper_config("baseline", "bad")
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        profiles.get_profile("nope")


def test_variants_parse_typed_values_and_reject_unknown_keys():
    exp = get_experiment("baseline", "ae")
    config = profiles.paper_config("baseline", "smoke")
    assert variant_overrides(exp, "steps=10,lr=0.01", config) == {"steps": 10, "lr": 0.01}
    assert variant_overrides(exp, "default", config) == {}
    with pytest.raises(ValueError, match="variant 'epochs=3'.*key=value pairs on config keys"):
        variant_overrides(exp, "epochs=3", config)


def test_data_id_names_the_synthetic_generator_or_real_data(tmp_path):
    smoke = profiles.get_profile("smoke")
    assert data_id("", smoke) == f"synthetic-{smoke.synthetic.fingerprint()}"
    (tmp_path / "mvtec_ad" / "grid").mkdir(parents=True)
    assert data_id(tmp_path, smoke, "baseline", "mvtec_ad", "grid").startswith("real-")
    with pytest.raises(DatasetError, match="DATA_ROOT not found"):
        data_id(tmp_path / "absent", smoke)
