"""Group-relative advantages by hand (TRAPO.md §3)."""

from __future__ import annotations

import math

import pytest
import torch

from trapo.advantages import group_advantages, scale_by_batch_std, step_advantages


def _t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


def test_mean_baseline_two_groups():
    rewards = _t([1, 0, 1, 1, 0, 0, 0, 1])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    # group 0 mean 3/4, group 1 mean 1/4
    expected = _t([0.25, -0.75, 0.25, 0.25, -0.25, -0.25, -0.25, 0.75])
    assert torch.allclose(group_advantages(rewards, groups), expected)


def test_non_contiguous_unsorted_labels():
    rewards = _t([1, 2, 3, 6])
    groups = torch.tensor([7, -3, 7, -3])
    # group 7: {1, 3} mean 2 -> [-1, 1]; group -3: {2, 6} mean 4 -> [-2, 2]
    assert torch.allclose(group_advantages(rewards, groups), _t([-1, -2, 1, 2]))


def test_scale_by_std():
    rewards = _t([1, 0, 1, 1])
    groups = torch.zeros(4, dtype=torch.long)
    # mean 0.75, population std sqrt(0.75 * 0.25) = 0.4330127
    std = math.sqrt(0.75 * 0.25)
    out = group_advantages(rewards, groups, scale_by_std=True, eps=0.0)
    assert torch.allclose(out, _t([0.25, -0.75, 0.25, 0.25]) / std)
    out_eps = group_advantages(rewards, groups, scale_by_std=True, eps=0.1)
    assert torch.allclose(out_eps, _t([0.25, -0.75, 0.25, 0.25]) / (std + 0.1))


@pytest.mark.parametrize("scale_by_std", [False, True])
def test_zero_variance_and_single_member_groups_are_zero(scale_by_std):
    rewards = _t([1, 1, 1, 0, 0, 0.1, 0.7])
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 3])  # equal rewards in 0 and 1; groups 2, 3 have one member
    out = group_advantages(rewards, groups, scale_by_std=scale_by_std)
    assert torch.equal(out, torch.zeros(7, dtype=torch.float64))
    # equal float rewards whose float mean is inexact still give exactly 0 when scaled
    out = group_advantages(_t([0.1, 0.1, 0.1]), torch.zeros(3, dtype=torch.long), scale_by_std=True)
    assert torch.all(torch.isfinite(out)) and torch.all(out.abs() < 1e-9)


def test_baseline_mask_unguided_only():
    # 8 trajectories of one prompt: 4 unguided (baseline) all fail, the guided ones partly succeed
    rewards = _t([0, 0, 0, 0, 1, 1, 0, 1])
    groups = torch.zeros(8, dtype=torch.long)
    base = torch.tensor([True] * 4 + [False] * 4)
    # baseline mean 0 -> A = r
    assert torch.allclose(group_advantages(rewards, groups, baseline_mask=base), rewards)
    # the baseline's std is 0 -> advantages 0 (documented rule; never inf)
    scaled = group_advantages(rewards, groups, baseline_mask=base, scale_by_std=True)
    assert torch.equal(scaled, torch.zeros(8, dtype=torch.float64))
    # baseline {1, 0}: mean 0.5, std 0.5 -> [1, 1, -1, ...] for rewards [1, 1, 0, 1]
    r2 = _t([1, 1, 0, 1])
    b2 = torch.tensor([1, 0, 1, 0])  # 0/1 ints accepted
    one_group = torch.zeros(4, dtype=torch.long)
    assert torch.allclose(group_advantages(r2, one_group, baseline_mask=b2), _t([0.5, 0.5, -0.5, 0.5]))
    out = group_advantages(r2, one_group, baseline_mask=b2, scale_by_std=True, eps=0.0)
    assert torch.allclose(out, _t([1, 1, -1, 1]))


def test_group_without_baseline_member_uses_whole_group():
    rewards = _t([1, 0, 1, 0])
    groups = torch.tensor([0, 0, 1, 1])
    base = torch.tensor([True, False, False, False])
    # group 0: baseline {1} -> [0, -1]; group 1 has no baseline member -> mean 0.5 -> [0.5, -0.5]
    assert torch.allclose(group_advantages(rewards, groups, baseline_mask=base), _t([0, -1, 0.5, -0.5]))


def test_matches_a_per_group_loop_on_random_input():
    torch.manual_seed(0)
    n = 200
    rewards = torch.rand(n, dtype=torch.float64)
    groups = torch.randint(-5, 40, (n,))
    base = torch.rand(n) > 0.4
    out = group_advantages(rewards, groups, baseline_mask=base, scale_by_std=True, eps=1e-6)
    for g in groups.unique():
        members = groups == g
        b = members & base
        if not b.any():
            b = members
        mean = rewards[b].mean()
        std = rewards[b].std(unbiased=False)
        expected = (rewards[members] - mean) / (std + 1e-6) if b.sum() > 1 else torch.zeros(int(members.sum()))
        assert torch.allclose(out[members], expected.to(out.dtype)), int(g)


def test_dtypes():
    out = group_advantages(torch.tensor([1, 0]), torch.tensor([0, 0]))  # integer rewards -> float32
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.tensor([0.5, -0.5]))
    assert group_advantages(torch.zeros(0), torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_bad_inputs():
    two = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="rewards"):
        group_advantages(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="group_ids"):
        group_advantages(torch.zeros(3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="group_ids"):
        group_advantages(torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="baseline_mask"):
        group_advantages(torch.zeros(2), two, baseline_mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="baseline_mask"):
        group_advantages(torch.zeros(2), two, baseline_mask=torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="rewards"):
        group_advantages(torch.tensor([float("nan"), 1.0]), torch.zeros(2, dtype=torch.long))


def test_batch_std_scaling_uses_every_reward_of_the_step():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])  # mean 0.75, population std sqrt(0.1875)
    advantages = torch.tensor([0.5, -0.5, 0.0, 0.0])
    std = math.sqrt(0.1875)
    assert scale_by_batch_std(advantages, rewards).tolist() == pytest.approx(
        [0.5 / (std + 1e-6), -0.5 / (std + 1e-6), 0, 0]
    )
    assert scale_by_batch_std(advantages, torch.ones(4)).tolist() == [0.0] * 4  # equal rewards: no signal

    # another process holds rewards [0, 0]: the moments are summed, so the std is that of all six rewards
    def two_processes(moments):
        return moments + torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)

    std6 = math.sqrt(3 / 6 - (3 / 6) ** 2)
    scaled = scale_by_batch_std(advantages, rewards, two_processes)
    assert scaled.tolist() == pytest.approx([0.5 / (std6 + 1e-6), -0.5 / (std6 + 1e-6), 0, 0])


def test_step_advantages_follow_the_config_switches():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0])
    guided = torch.tensor([False, False, False, True])
    assert step_advantages(rewards, groups, guided).tolist() == [0.5, -0.5, -0.5, 0.5]
    unguided = step_advantages(rewards, groups, guided, baseline="unguided")  # mean of the first three: 1/3
    assert unguided.tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, 2 / 3])
    by_group = step_advantages(rewards, groups, guided, scale_rewards="group")
    assert by_group.tolist() == pytest.approx([x * 0.5 / (0.5 + 1e-6) for x in (1, -1, -1, 1)])
    by_batch = step_advantages(rewards, groups, guided, scale_rewards="batch")
    assert by_batch.tolist() == pytest.approx(by_group.tolist())  # one group: the batch std is the group's
