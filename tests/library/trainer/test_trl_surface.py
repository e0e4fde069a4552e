"""TRL's metric names and its trainer surface, on hand-worked values."""

from __future__ import annotations

import math

import pytest
import torch

from trapo.trainer.trl_surface import Callbacks, clip_fractions, console_line, group_reward_stats, with_trl_names


def test_group_reward_stats_are_trls_reward_std_and_frac_reward_zero_std():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 2.0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    total, n, zero = group_reward_stats(rewards, groups)
    # stds (unbiased): sqrt(0.5), 0, sqrt(2)
    assert n == 3 and zero == 1 and total == pytest.approx(math.sqrt(0.5) + math.sqrt(2))


def test_clip_fractions_count_tokens_where_the_clipped_objective_has_no_gradient():
    old = torch.zeros(2, 3)
    new = torch.log(torch.tensor([[0.5, 1.0, 1.5], [0.5, 1.0, 1.5]]))  # ratios 0.5, 1, 1.5
    adv = torch.tensor([-1.0, 1.0])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    got = clip_fractions(new, old, adv, mask, 0.2, 0.2)
    # row 0 (adv < 0): 0.5 clipped low; row 1 (adv > 0): 1.5 would be high but is masked out
    assert got["clip_ratio/low_mean"] == (1.0, 5.0) and got["clip_ratio/high_mean"] == (0.0, 5.0)
    assert got["clip_ratio/region_mean"] == (1.0, 5.0)
    assert clip_fractions(new, None, adv, mask, 0.2, 0.2)["clip_ratio/region_mean"] == (0.0, 5.0)


def test_trl_names_beside_ours():
    metrics = {"reward/mean": 0.5, "loss/total": -0.1, "lr": 1e-6, "rewards/f": 2.0, "rewards/f/sq": 5.0}
    out = with_trl_names(metrics, ["f"])
    assert out["reward"] == 0.5 and out["loss"] == -0.1 and out["learning_rate"] == 1e-6
    assert out["rewards/f/mean"] == 2.0 and out["rewards/f/std"] == 1.0 and "rewards/f/sq" not in out
    assert out["rewards/f"] == 2.0  # ours stays
    line = console_line(3, 10, out)
    assert line.startswith("step 3/10: loss -0.1 | reward 0.5") and "rewards/f/mean 2" in line


def test_callbacks_get_transformers_arguments_and_can_stop_the_run():
    from transformers import TrainerCallback

    seen = []

    class Stopper(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.append((state.global_step, logs["reward"], "model" in kwargs))

        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step >= 2
            return control

    class Args:
        max_steps, logging_steps, save_steps, num_train_epochs = 5, 1, 0, None

    callbacks = Callbacks([Stopper], Args(), model="m")
    assert isinstance(callbacks.callbacks[0], Stopper)  # a class is instantiated
    for step in (1, 2):
        callbacks.state.global_step = step
        callbacks.log(step, {"reward": float(step)})
        callbacks.fire("on_step_end")
    assert seen == [(1, 1.0, True), (2, 2.0, True)] and callbacks.should_stop
    assert callbacks.state.log_history == [{"reward": 1.0, "step": 1}, {"reward": 2.0, "step": 2}]
