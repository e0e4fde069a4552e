"""The statistics behind the verdicts: outcome strings, pass@k areas, the paired bootstrap, the interval rule."""

from __future__ import annotations

import numpy as np
import pytest

from trapo_lab.compare.stats import (
    ABOVE,
    FAILS,
    HOLDS,
    MISSING,
    NEAR,
    NOISE,
    combine,
    decode_counts,
    encode_counts,
    interval_margin,
    interval_verdict,
    paired_bootstrap,
    passk_area,
)


def test_counts_round_trip():
    assert encode_counts([0, 1, 12]) == "0 1 12"
    assert decode_counts("0 1 12").tolist() == [0.0, 1.0, 12.0]
    assert decode_counts("").size == 0


def test_passk_area_by_hand():
    # n = 2: c = 1 gives pass@1 = 1/2, pass@2 = 1, area (1/2 + 1) / 2 = 0.75
    assert passk_area([0, 1, 2], 2).tolist() == [0.0, 0.75, 1.0]
    # n = 3, c = 1: pass@1 = 1/3, pass@2 = 1 - C(2,2)/C(3,2) = 2/3, pass@3 = 1 -> area 2/3
    assert passk_area([1], 3)[0] == pytest.approx(2 / 3)


def test_bootstrap_over_problems_by_hand():
    # one seed, one source, per-problem differences [0, 1]: a replicate's mean is 0, 1/2 or 1 with chances
    # 1/4, 1/2, 1/4, so the 2.5th and 97.5th percentiles are 0 and 1
    a = {1: {"t": np.array([1.0, 1.0])}}
    b = {1: {"t": np.array([1.0, 0.0])}}
    out = paired_bootstrap(a, b)
    assert out["d"] == 0.5 and out["ci95"] == [0.0, 1.0]
    assert out["per_seed"] == {"1": 0.5} and out["seeds"] == [1] and out["problems"] == {"t": 2}


def test_bootstrap_resamples_seeds():
    # identical problems within each seed, seed differences 0 and 1: the interval spans both
    a = {1: {"t": np.ones(4)}, 2: {"t": np.ones(4)}}
    b = {1: {"t": np.ones(4)}, 2: {"t": np.zeros(4)}}
    out = paired_bootstrap(a, b)
    assert out["d"] == 0.5 and out["ci95"] == [0.0, 1.0] and out["per_seed"] == {"1": 0.0, "2": 1.0}


def test_bootstrap_weighs_sources_equally_is_seeded_and_pairs_problems():
    rng = np.random.default_rng(3)
    a = {s: {"x": rng.random(50), "y": rng.random(10)} for s in (1, 2, 3)}
    b = {s: {g: v - 0.1 for g, v in per.items()} for s, per in a.items()}  # a constant paired shift
    out = paired_bootstrap(a, b)
    assert out["d"] == pytest.approx(0.1) and out["ci95"] == pytest.approx([0.1, 0.1])
    noisy = {s: {g: rng.random(v.size) for g, v in per.items()} for s, per in a.items()}
    assert paired_bootstrap(a, noisy) == paired_bootstrap(a, noisy)  # reproducible
    assert paired_bootstrap(a, noisy, seed=1)["ci95"] != paired_bootstrap(a, noisy)["ci95"]


def test_bootstrap_without_common_seeds_and_with_mismatched_problems():
    assert paired_bootstrap({1: {"t": [1]}}, {2: {"t": [1]}})["ci95"] is None
    with pytest.raises(ValueError, match="same, non-empty problems"):
        paired_bootstrap({1: {"t": [1, 0]}, 2: {"t": [1]}}, {1: {"t": [1, 0]}, 2: {"t": [1]}})


@pytest.mark.parametrize(
    ("ci", "shape", "bound", "expected"),
    [
        ([0.01, 0.04], ABOVE, 0.0, HOLDS),
        ([-0.03, 0.02], ABOVE, 0.0, NOISE),
        ([-0.05, -0.01], ABOVE, 0.0, FAILS),
        ([0.0, 0.0], ABOVE, 0.0, NOISE),  # an exact tie touches the boundary: never "better"
        ([0.0, 0.03], ABOVE, 0.0, NOISE),
        ([0.02, 0.09], ABOVE, 0.05, NOISE),  # above, but not "well above" (+5 points)
        ([0.06, 0.09], ABOVE, 0.05, HOLDS),
        ([0.01, 0.04], ABOVE, 0.05, FAILS),  # surely below +5: "well above" fails
        ([-0.015, 0.01], NEAR, 0.02, HOLDS),
        ([-0.03, 0.01], NEAR, 0.02, NOISE),
        ([-0.06, -0.03], NEAR, 0.02, FAILS),
        ([0.03, 0.06], NEAR, 0.02, FAILS),  # far above is not "near" either
        (None, ABOVE, 0.0, MISSING),
    ],
)
def test_interval_rule_by_hand(ci, shape, bound, expected):
    assert interval_verdict(ci, shape, bound) == expected


def test_interval_margin_and_combine():
    assert interval_margin([0.03, 0.08], ABOVE, 0.05) == pytest.approx(-0.02)
    assert interval_margin([-0.01, 0.015], NEAR, 0.02) == pytest.approx(0.005)
    assert combine([HOLDS, HOLDS]) == HOLDS
    assert combine([HOLDS, NOISE]) == NOISE
    assert combine([HOLDS, FAILS, NOISE]) == FAILS
    assert combine([HOLDS, MISSING]) == MISSING
    with pytest.raises(ValueError, match="shape"):
        interval_verdict([0, 1], "below")
