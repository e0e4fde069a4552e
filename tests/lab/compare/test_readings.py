"""Second readings: late gains, equal time from benchmark ratios, leakage, trade-off curves, grid extension."""

from __future__ import annotations

import itertools

import pytest

from trapo_lab.compare import CompareData
from trapo_lab.compare.aggregate import grid_extension, ladder_rate
from trapo_lab.compare.readings import (
    at_matched_level,
    benchmark_ratio,
    benchmark_step,
    chain_prefix_indices,
    late_gain,
    leakage_rows,
    tradeoff_points,
)


def test_late_gain_over_the_last_fifth():
    steps = [0, 40, 80, 120, 160, 200]
    out = late_gain(steps, [0.3, 0.4, 0.5, 0.6, 0.62, 0.70])
    assert out["from_step"] == 160 and out["to_step"] == 200 and out["gain"] == pytest.approx(0.08)
    assert late_gain([0, 30, 60], [0.1, 0.2, 0.4])["from_step"] == 30  # latest step <= 80% of 60 = 48
    assert late_gain([], []) is None and late_gain([0, 10], [0.1, None]) is None


def test_equal_time_from_benchmark_ratios():
    ratios = {"grpo": 1.0, "trapo (sequential rollouts)": 1.26, "trapo (speculative rollouts)": 1.38, "sft": 0.09}
    assert benchmark_ratio(ratios, "trapo") == 1.26
    assert benchmark_ratio(ratios, "trapo", "speculative") == 1.38
    assert benchmark_ratio(ratios, "luffy") is None
    checkpoints = list(range(20, 201, 20))
    # 200 / 1.26 = 158.7 steps of TRAPO: its checkpoint 140; sft is cheaper but never trained past 200
    assert benchmark_step(1.26, 200, checkpoints) == 140
    assert benchmark_step(0.09, 200, checkpoints) == 200 and benchmark_step(1.0, 200, checkpoints) == 200
    assert benchmark_step(25.0, 200, checkpoints) == 0 and benchmark_step(None, 200, checkpoints) is None


def test_chain_prefixes_and_leakage_rows():
    train = ["12+3*2", "5-1", "40+2+7-1"]
    # "12+3" starts "12+3*2"; "40+2+7" starts the third; "5-1" is a whole training prompt, not a prefix of one
    assert chain_prefix_indices(["12+3", "12+4", "40+2+7", "5-1", "40+2"], train) == [0, 2, 4]
    outcomes = {"t1": {"correct": "1 1"}, "t2": {"correct": "1 0 0 1"}, "t3": {"correct": "0 1"}}
    rows = leakage_rows(outcomes, ["t1", "t2", "t3"], 1, tier2_prefixes=[0, 3])
    # tiers 2-3: (0.5 + 0.5) / 2; tier 2 without problems 0 and 3: 0.0 -> (0 + 0.5) / 2
    assert rows == {"no_t1": 0.5, "no_t1_clean_t2": 0.25, "t2_clean": 0.0}
    assert leakage_rows({"t1": {"correct": "1"}}, ["t1", "t2"], 1, [])["no_t1"] is None


def test_tradeoff_points_and_matched_level():
    sweep = {"trapo": {"scores": {"1e-5": 0.4, "1e-4": 0.7}, "retained": {"1e-5": 0.9, "1e-4": 0.6}, "chosen": "1e-4"}}
    curve = {
        "steps": [0, 100],
        "val_in_domain": [{"mean": 0.3}, {"mean": 0.7}],
        "val_retained": [{"mean": 0.92}, {"mean": 0.6}],
    }
    points = tradeoff_points(sweep, {"trapo": curve}, 0)["trapo"]
    assert len(points) == 4 and points[0] == {
        "lr": "1e-5",
        "step": "final",
        "seed": 0,
        "in_domain": 0.4,
        "retained": 0.9,
    }
    assert points[2]["step"] == 0 and points[3]["lr"] == "1e-4"
    # the upper frontier at 0.3, 0.4, 0.7 is 0.92, 0.9, 0.6: at 0.55 halfway between 0.9 and 0.6
    assert at_matched_level(points, 0.55) == pytest.approx(0.75)
    assert at_matched_level(points, 0.8) is None and at_matched_level([], 0.5) is None


def test_ladder_and_grid_extension():
    assert [ladder_rate(1e-4, 1), ladder_rate(1e-4, -1), ladder_rate(3e-4, 1), ladder_rate(5e-5, 1)] == [
        3e-4,
        3e-5,
        1e-3,
        1e-4,
    ]
    assert grid_extension({1e-5: 0.1, 3e-5: 0.2, 1e-4: 0.3}) == 3e-4  # best at the top
    assert grid_extension({1e-5: 0.3, 3e-5: 0.2, 1e-4: 0.1}) == 3e-6  # best at the bottom
    assert grid_extension({1e-5: 0.1, 3e-5: 0.3, 1e-4: 0.2}) is None  # interior
    assert grid_extension({3e-5: 0.2, 1e-4: 0.5, 3e-4: 0.5}) is None  # a tie goes to the smaller, interior rate


def test_no_test_prompt_is_a_training_or_pre_training_prompt(data_dir, tiny_spec):
    from trapo_lab.tasks import PretrainMix, pretraining_stream

    data = CompareData.load(data_dir, tiny_spec(n_test_per_tier=3, n_test_skill=2))
    test = {(ex.data_source, ex.prompt_text) for ex in data.test}
    assert len(test) == len(data.test)
    assert not test & {(ex.data_source, ex.prompt_text) for ex in data.train}
    stream = itertools.islice(pretraining_stream(0, PretrainMix()), 20_000)
    assert not test & {(source, prompt) for prompt, _, source in stream}
