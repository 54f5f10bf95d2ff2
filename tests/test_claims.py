"""repro.claims and repro.pixelstats: hand-worked cases of the paired difference, its interval
and the verdict; the fast AUROCs against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from repro import claims
from repro.claims import Difference, Unit, converged, paired_difference, verdict
from repro.pixelstats import binned_auroc, pixel_histograms

LABELS = np.array([0, 0, 0, 1, 1, 1])
PERFECT = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])  # AUROC 1 on every resample
FLAT = np.full(6, 0.5)  # AUROC 0.5 on every resample (all ties)
REVERSED = PERFECT[::-1].copy()  # AUROC 0


def test_auroc_rows_match_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    scores = rng.normal(size=(4, 50)).round(1)  # with ties
    expected = [roc_auc_score(labels, s) for s in scores]
    assert claims.auroc_rows(labels, scores) == pytest.approx(expected)


def test_binned_pixel_auroc_is_close_to_the_exact_one():
    rng = np.random.default_rng(1)
    masks = np.zeros((6, 32, 32), dtype=np.uint8)
    masks[3:, 8:16, 8:16] = 1
    maps = rng.normal(size=masks.shape) + 1.5 * masks
    hist, _ = pixel_histograms(maps, masks)
    exact = roc_auc_score(masks.ravel(), maps.ravel())
    assert hist.sum() == masks.size and hist[:, 1].sum() == masks.sum()
    assert binned_auroc(hist.sum(0)) == pytest.approx(exact, abs=2e-3)
    # any subset of the images: the sums of their histograms
    assert binned_auroc(hist[[0, 3, 4]].sum(0)) == pytest.approx(
        roc_auc_score(masks[[0, 3, 4]].ravel(), maps[[0, 3, 4]].ravel()), abs=3e-3)


def test_a_known_difference_has_an_exact_interval_and_is_supported():
    """PERFECT against FLAT: 1 - 0.5 on every resample, so the interval is [50, 50] points."""
    units = [Unit("c", s, LABELS, PERFECT, FLAT) for s in range(3)]
    d = paired_difference(units, n_boot=200)
    assert (d.mean, d.lo, d.hi) == pytest.approx((50.0, 50.0, 50.0))
    assert d.categories == ("c",) and d.seeds == {"c": 3}
    assert verdict(d) == "supported"
    back = paired_difference([Unit("c", s, LABELS, REVERSED, FLAT) for s in range(3)], 200)
    assert (back.mean, back.lo, back.hi) == pytest.approx((-50.0, -50.0, -50.0))
    assert verdict(back) == "contradicted"
    same = paired_difference([Unit("c", s, LABELS, FLAT, FLAT) for s in range(3)], 200)
    assert verdict(same) == "inconclusive"  # [0, 0] contains 0


def test_seeds_are_resampled_too():
    """Seed 0 differs by 50 points, seeds 1 and 2 by 0: the mean is 16.7; resampling three seeds
    with replacement gives 0 when no draw is seed 0 (probability (2/3)^3 = 0.30 > 2.5 %), so
    the interval starts at 0 and the verdict is inconclusive; it ends at 50 (all three draws
    seed 0, probability 1/27 = 3.7 % > 2.5 %)."""
    units = [Unit("c", 0, LABELS, PERFECT, FLAT), Unit("c", 1, LABELS, FLAT, FLAT),
             Unit("c", 2, LABELS, FLAT, FLAT)]
    d = paired_difference(units, n_boot=4000)
    assert d.mean == pytest.approx(50 / 3)
    assert d.lo == pytest.approx(0.0) and d.hi == pytest.approx(50.0)
    assert verdict(d) == "inconclusive"


def test_categories_are_averaged_with_equal_weight():
    units = [Unit("a", s, LABELS, PERFECT, FLAT) for s in range(3)] + \
        [Unit("b", s, LABELS, FLAT, FLAT) for s in range(3)]
    d = paired_difference(units, n_boot=200)
    assert (d.mean, d.lo, d.hi) == pytest.approx((25.0, 25.0, 25.0))
    assert d.categories == ("a", "b")


def test_pixel_units_resample_images():
    masks = np.zeros((4, 8, 8), dtype=np.uint8)
    masks[2:, :4] = 1
    good = masks * 1.0 + 0.01 * np.arange(64).reshape(8, 8)  # perfect separation
    hist_a, _ = pixel_histograms(good, masks)
    hist_b, _ = pixel_histograms(np.zeros_like(good), masks)  # all ties: 0.5
    units = [Unit("c", s, np.array([0, 0, 1, 1]), hist_a, hist_b, "pixel_auroc")
             for s in range(3)]
    d = paired_difference(units, n_boot=100)
    assert (d.mean, d.lo, d.hi) == pytest.approx((50.0, 50.0, 50.0))


def test_too_few_seeds_or_no_convergence_is_inconclusive():
    d = Difference(5.0, 1.0, 9.0, ("c",), {"c": 2})
    assert verdict(d).startswith("inconclusive (2 seeds")
    d3 = Difference(5.0, 1.0, 9.0, ("c",), {"c": 3})
    assert verdict(d3) == "supported"
    assert verdict(d3, converged=False) == "inconclusive (not converged)"


def test_convergence_reads_the_last_tenth():
    flat = [{"loss": 1.0 + 0.001 * (i % 2)} for i in range(40)]
    assert converged(flat, ["loss"]) == (True, [])
    falling = [{"loss": 100.0 - i} for i in range(40)]  # last tenth: 62.5 -> 60.5, 3 %
    assert converged(falling, ["loss"])[0]
    steep = [{"loss": 2.0 ** -i} for i in range(40)]
    ok, why = converged(steep, ["loss"])
    assert not ok and why[0].startswith("loss ")
    # noise without a trend is not a fall; the end fraction cuts off a scheduled lr drop
    rng = np.random.default_rng(0)
    noisy = [{"loss": 1.0 + rng.normal(0, 0.3)} for _ in range(200)]
    assert converged(noisy, ["loss"])[0]
    dropped = [{"loss": 1.0 if i < 190 else 0.1} for i in range(200)]
    assert not converged(dropped, ["loss"])[0] and converged(dropped, ["loss"], end=0.95)[0]
    # entries without the term (a warm-up phase) are skipped
    assert converged([{"rec": 1.0}] * 20 + [{"rec": 1.0, "pre": 1.0}] * 20, ["pre", "rec"])[0]


def test_paper_difference_is_like_for_like_or_says_so():
    by_cat = claims.CLAIMS["n2n"][0]  # lambda 0.3 vs 0, per-category in Table 4
    p, note = claims.paper_difference(by_cat, ["metal_plate"])
    from repro.tables import paper_table

    t = paper_table("n2n", "table4").query("category == 'metal_plate' and metric == 'image_auroc'")
    v = t.set_index("variant")["value"]
    assert p == pytest.approx(v["lambda=0.3"] - v["lambda=0"]) and note == "same category"
    mean_only = claims.CLAIMS["pouta"][0]  # Table V prints means only
    p, note = claims.paper_difference(mean_only, ["grid", "toothbrush"])
    # the mean over MVTec AD's 15 categories, not "?"
    assert note == "paper mean over 15 categories, ours over 2"
    assert p == pytest.approx(1.1)
