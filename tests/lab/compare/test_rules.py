"""The comparison's arithmetic and rules, against values worked by hand."""

from __future__ import annotations

import pytest

from trapo_lab.compare import (
    CompareSpec,
    cumulative_seconds,
    format_lr,
    group_average,
    mean_std,
    paired_differences,
    select_lr,
    wallclock_step,
)


def test_mean_std_is_sample_std():
    # mean 0.6; deviations -0.1, 0, 0.1; sum of squares 0.02 / (3 - 1) = 0.01 -> std 0.1
    stats = mean_std([0.5, 0.6, 0.7])
    assert stats["mean"] == pytest.approx(0.6)
    assert stats["std"] == pytest.approx(0.1)
    assert stats["n"] == 3
    assert mean_std([0.4]) == {"mean": 0.4, "std": None, "n": 1}
    assert mean_std([None, float("nan")]) == {"mean": None, "std": None, "n": 0}


def test_paired_differences_by_hand():
    trapo = {0: 0.50, 1: 0.60, 2: 0.70}
    grpo = {0: 0.40, 1: 0.65, 2: 0.50, 3: 0.99}  # seed 3 has no partner: left out
    p = paired_differences(trapo, grpo)
    # d = 0.10, -0.05, 0.20; mean 0.25/3 = 0.083333; deviations 0.016667, -0.133333, 0.116667;
    # squares 0.000278 + 0.017778 + 0.013611 = 0.031667; / 2 = 0.015833; sqrt = 0.125831
    assert [p["diffs"][s] for s in ("0", "1", "2")] == pytest.approx([0.10, -0.05, 0.20])
    assert p["mean"] == pytest.approx(0.083333, abs=1e-6)
    assert p["std"] == pytest.approx(0.125831, abs=1e-6)
    assert (p["n"], p["wins"], p["losses"], p["ties"]) == (3, 2, 1, 0)


def test_select_lr_takes_the_best_validation_score_and_the_smaller_rate_on_ties():
    assert select_lr({1e-5: 0.30, 3e-5: 0.42, 1e-4: 0.40}) == 3e-5
    assert select_lr({1e-4: 0.5, 1e-5: 0.5}) == 1e-5
    assert select_lr({1e-5: None, 1e-4: 0.0}) == 1e-4
    with pytest.raises(ValueError, match="empty"):
        select_lr({})


def test_equal_wallclock_rule_on_synthetic_step_times():
    checkpoints = [0, 2, 4]
    # per-step training seconds as the trainer logs them (perf/step_s)
    grpo = cumulative_seconds({1: 1.0, 2: 1.0, 3: 1.0, 4: 1.1}, checkpoints)
    trapo = cumulative_seconds({1: 1.5, 2: 1.5, 3: 1.5, 4: 1.5}, checkpoints)
    sft = cumulative_seconds({1: 0.1, 2: 0.1, 3: 0.1, 4: 0.1}, checkpoints)
    slow = cumulative_seconds({1: 3.0, 2: 3.0, 3: 3.0, 4: 3.0}, checkpoints)
    assert grpo == pytest.approx({0: 0.0, 2: 2.0, 4: 4.1})
    assert trapo == pytest.approx({0: 0.0, 2: 3.0, 4: 6.0})
    budget = 4.1  # the longest full GRPO run
    assert wallclock_step(grpo, budget) == 4
    assert wallclock_step(trapo, budget) == 2  # 6.0 s at step 4 is over budget, 3.0 s at step 2 is not
    assert wallclock_step(sft, budget) == 4  # cheaper methods keep their final model (never extended)
    assert wallclock_step(slow, budget) == 0  # not even the first checkpoint fits: the base model


def test_group_average_weighs_each_group_equally_and_needs_all():
    groups = {"arith-t1": {"acc": 1.0}, "arith-t2": {"acc": 0.5}, "reverse": {"acc": 0.0}}
    assert group_average(groups, ["arith-t1", "arith-t2"]) == pytest.approx(0.75)
    assert group_average(groups, ["arith-t1", "arith-t3"]) is None


def test_format_lr():
    assert [format_lr(x) for x in (1e-5, 3e-5, 1e-4, 1.5e-4)] == ["1e-5", "3e-5", "1e-4", "1.5e-4"]


def test_spec_defaults_follow_the_protocol_and_quick_is_small():
    spec = CompareSpec()
    assert len(spec.seeds) >= 3 and spec.n_test_per_tier >= 300 and spec.n_test_ood >= 300 and spec.passk_max == 16
    assert spec.checkpoint_steps == list(range(20, 201, 20))  # a checkpoint every 20 steps
    # the learning rate is chosen at a seed that no test seed repeats; pass@k on every in-domain test problem
    assert spec.selection_seed not in spec.seeds and spec.n_passk_per_tier == spec.n_test_per_tier
    assert spec.lr_extensions >= 1
    quick = CompareSpec.quick()
    assert quick.max_steps <= 10 and len(quick.seeds) <= 2 and quick.checkpoint_steps == [3, 6]
    assert set(quick.methods) == set(spec.methods)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": ("trapo", "ppo")}, "unknown method 'ppo'"),
        ({"seeds": (0, 0)}, "seeds must be distinct"),
        ({"lr_grid": {"trapo": (0.0,)}, "methods": ("trapo",)}, r"lr_grid\['trapo'\]"),
        ({"max_steps": 0}, "max_steps"),
        ({"curve_points": 500, "max_steps": 10}, "curve_points"),
        ({"config_overrides": {"learning_rate": 1.0}}, "config_overrides cannot set"),
        ({"config_overrides": {"no_such_field": 1}}, "unknown config key"),
    ],
)
def test_spec_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CompareSpec(**kwargs)


def test_dynamics_plot_of_a_comparison_without_rollouts(tmp_path):
    # sft logs a loss but none of the rollout panels' metrics: the figure is written with empty panels
    # (it used to fail on a zero-column legend).
    from trapo_lab.compare.plots import plot_dynamics

    condensed = {"sft": {"steps": [1, 2, 3], "metrics": {"loss/total": {"mean": [1.0, 0.8, 0.7], "std": [0, 0, 0]}}}}
    path = plot_dynamics(condensed, tmp_path / "dynamics.png")
    assert path.exists() and path.stat().st_size > 0


def test_evaluation_cache_keys_are_stable():
    # Pinned: a change here invalidates every cached evaluation (bump EVAL_VERSION on purpose instead).
    from trapo.data import Example
    from trapo_lab.compare.cache import eval_settings, examples_identity, json_digest

    problems = [
        Example(
            prompt=[{"role": "user", "content": "1+1="}],
            answer="2",
            data_source="arith-t1",
            expert_solutions=("1+1=2\n\n\\boxed{2}",),
        )
    ]
    assert examples_identity(problems) == "b2f26f4b9a2dcc5c"
    assert json_digest(eval_settings(CompareSpec(), "test", 1, problems))[:16] == "1b5d836f31ef0e7f"
