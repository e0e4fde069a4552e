"""Group-relative advantages (GRPO; TRAPO.md §3).

Each prompt's trajectories form a group; a trajectory's advantage is its reward minus the mean reward of
its group, optionally divided by the group's standard deviation (GRPO; the TRAPO authors do not divide,
following Dr. GRPO). A ``baseline_mask`` restricts the set the mean (and std) are computed over, e.g. to
the unguided trajectories only (a TRAPO variant).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def _check_1d(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"`{name}` must be a 1-D torch.Tensor, got {type(x).__name__}")
    if x.dim() != 1:
        raise ValueError(f"`{name}` must be 1-D, got shape {tuple(x.shape)}")


def group_advantages(
    rewards: Tensor,
    group_ids: Tensor,
    *,
    scale_by_std: bool = False,
    baseline_mask: Tensor | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """``A_i = r_i - mean{r_j : j in group(i), baseline_mask_j}`` (GRPO / Dr. GRPO, TRAPO.md §3).

    Args:
        rewards: ``(N,)`` rewards, one per trajectory.
        group_ids: ``(N,)`` integer group labels (any values, need not be contiguous or sorted).
        scale_by_std: divide by ``std + eps`` of the same baseline set (population std,
            ``unbiased=False``). A group whose baseline rewards are all equal gets advantage 0
            for every member (never ``nan``/``inf``).
        baseline_mask: ``(N,)`` bool (or 0/1): which trajectories form the baseline. A group with no
            baseline member falls back to all of its members. ``None``: every trajectory.
        eps: added to the std before dividing.

    Returns:
        ``(N,)`` float advantages (the dtype of ``rewards`` if floating, else float32). A group of one
        trajectory gets advantage 0.
    """
    r, in_base = _checked(rewards, group_ids, baseline_mask, eps)
    if r.numel() == 0:
        return r.clone()
    _, inverse = torch.unique(group_ids, return_inverse=True)
    inverse = inverse.to(r.device)
    num_groups = int(inverse.max()) + 1

    def group_sum(values: Tensor) -> Tensor:
        return torch.zeros(num_groups, dtype=values.dtype, device=values.device).index_add_(0, inverse, values)

    # A group with no baseline member uses all of its members.
    base_count = group_sum(in_base.to(r.dtype))
    in_base = in_base | (base_count[inverse] == 0)
    w = in_base.to(r.dtype)

    count = group_sum(w)  # >= 1 for every group
    mean = group_sum(w * r) / count
    adv = r - mean[inverse]
    if not scale_by_std:
        return adv
    std = (group_sum(w * (r - mean[inverse]) ** 2) / count).sqrt()
    scaled = adv / (std[inverse] + eps)
    return torch.where(_constant_groups(r, in_base, inverse, num_groups), torch.zeros_like(scaled), scaled)


def _checked(rewards: Tensor, group_ids: Tensor, baseline_mask: Tensor | None, eps: float) -> tuple[Tensor, Tensor]:
    """(float rewards, bool baseline membership) after checking the arguments of :func:`group_advantages`."""
    _check_1d("rewards", rewards)
    _check_1d("group_ids", group_ids)
    if group_ids.shape != rewards.shape:
        raise ValueError(
            f"shape mismatch: `group_ids` has shape {tuple(group_ids.shape)} but `rewards` has shape "
            f"{tuple(rewards.shape)}"
        )
    if group_ids.dtype.is_floating_point or group_ids.is_complex() or group_ids.dtype == torch.bool:
        raise ValueError(f"`group_ids` must be an integer tensor, got dtype {group_ids.dtype}")
    if eps < 0:
        raise ValueError(f"`eps` must be >= 0, got {eps!r}")
    r = rewards if rewards.dtype.is_floating_point else rewards.to(torch.float32)
    if not bool(torch.isfinite(r).all()):
        raise ValueError("`rewards` must be finite (found nan or inf)")
    if baseline_mask is None:
        return r, torch.ones_like(r, dtype=torch.bool)
    _check_1d("baseline_mask", baseline_mask)
    if baseline_mask.shape != r.shape:
        raise ValueError(
            f"shape mismatch: `baseline_mask` has shape {tuple(baseline_mask.shape)} but `rewards` has "
            f"shape {tuple(r.shape)}"
        )
    if baseline_mask.dtype != torch.bool:
        if not bool(((baseline_mask == 0) | (baseline_mask == 1)).all()):
            raise ValueError("`baseline_mask` must be bool or hold only 0 and 1")
        baseline_mask = baseline_mask != 0
    return r, baseline_mask.to(r.device)


def _constant_groups(r: Tensor, in_base: Tensor, inverse: Tensor, num_groups: int) -> Tensor:
    """Per trajectory: whether its group's baseline rewards are all equal (an exact test: a float std can be
    1e-17 instead of 0)."""
    inf = float("inf")
    r_max = torch.full((num_groups,), -inf, dtype=r.dtype, device=r.device).scatter_reduce(
        0, inverse, torch.where(in_base, r, -inf), reduce="amax"
    )
    r_min = torch.full((num_groups,), inf, dtype=r.dtype, device=r.device).scatter_reduce(
        0, inverse, torch.where(in_base, r, inf), reduce="amin"
    )
    constant: Tensor = (r_max == r_min)[inverse]
    return constant


def scale_by_batch_std(
    advantages: Tensor, rewards: Tensor, reduce_sum: Callable[[Tensor], Tensor] | None = None, eps: float = 1e-6
) -> Tensor:
    """``A_i / (std + eps)`` with the population std of every reward of the step (TRL's
    ``scale_rewards="batch"``); all advantages 0 when every reward is equal.

    ``reduce_sum`` sums (count, sum, sum of squares) over processes, so each divides by the whole step's std.
    """
    moments = torch.tensor(
        [len(rewards), float(rewards.sum()), float((rewards.double() ** 2).sum())], dtype=torch.float64
    )
    if reduce_sum is not None:
        moments = reduce_sum(moments)
    n, total, squares = (float(x) for x in moments.cpu())
    std = math.sqrt(max(squares / n - (total / n) ** 2, 0.0)) if n else 0.0
    return advantages / (std + eps) if std > 0 else torch.zeros_like(advantages)


def step_advantages(
    rewards: Tensor,
    group_ids: Tensor,
    guided: Tensor,
    *,
    scale_rewards: str = "none",
    baseline: str = "all",
    reduce_sum: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """A step's advantages as the config asks: group-relative (:func:`group_advantages`) over every member of
    the group (``baseline="all"``) or its unguided ones (``"unguided"``), divided by the group's std
    (``scale_rewards="group"``), the whole step's (``"batch"``, :func:`scale_by_batch_std`) or not (``"none"``)."""
    advantages = group_advantages(
        rewards,
        group_ids,
        scale_by_std=scale_rewards == "group",
        baseline_mask=~guided if baseline == "unguided" else None,
    )
    if scale_rewards == "batch":
        advantages = scale_by_batch_std(advantages, rewards, reduce_sum)
    return advantages
