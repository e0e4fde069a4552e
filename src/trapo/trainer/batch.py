"""Trajectories to tensors: the right-padded :class:`~trapo.objective.TokenBatch` the loss is computed on, and
the grouping of a batch's trajectories into mini-batches of similar length."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trapo.objective import TokenBatch
from trapo.trainer.rollouts import Trajectory

# What one more forward/backward call costs, in padded token slots (rows x width): fewer, wider mini-batches
# pay for padding, more, narrower ones for per-call overhead. 64 is about a small model's per-call overhead
# on CPU, where it was the fastest setting tried.
MINI_BATCH_CALL_COST = 64


def sequence_length(trajectory: Trajectory) -> int:
    """Tokens of ``prompt + prefix + completion``: the row width the trajectory needs in a :class:`TokenBatch`."""
    return len(trajectory.prompt_ids) + len(trajectory.response_ids)


def length_sorted_mini_batches(
    lengths: Sequence[int], max_size: int, call_cost: float = MINI_BATCH_CALL_COST
) -> list[list[int]]:
    """Group the indices of sequences with ``lengths`` into mini-batches of at most ``max_size``, each of
    sequences of similar length, so that right padding to a mini-batch's longest row wastes few token slots.

    Sorted by length, the batch is cut into consecutive runs minimising ``sum(rows x longest) + call_cost x
    mini-batches`` (exact, by dynamic programming): the padded token slots every forward/backward pays for,
    plus what each extra call costs. The loss is unchanged: normalisers are fixed for the whole batch
    (:func:`trapo.objective.batch_normaliser`), so mini-batches add up to the batch however it is split; only
    the floating-point summation order differs. Mini-batches come out shortest first; within one, indices
    keep their batch order.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    n = len(lengths)
    if n == 0:
        return []
    order = sorted(range(n), key=lambda i: (lengths[i], i))
    sorted_len = [lengths[i] for i in order]
    best = [0.0] + [float("inf")] * n  # best[j]: cost of the first j sorted sequences
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(max(0, j - max_size), j):
            cost = best[i] + (j - i) * sorted_len[j - 1] + call_cost
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        groups.append(sorted(order[cut[j] : j]))
        j = cut[j]
    return groups[::-1]


def padded_token_share(lengths: Sequence[int], groups: Sequence[Sequence[int]]) -> float:
    """The share of real tokens among the token slots of ``groups`` right-padded to their longest row."""
    slots = sum(len(g) * max(lengths[i] for i in g) for g in groups if g)
    return sum(lengths[i] for g in groups for i in g) / slots if slots else 1.0


def row_length(trajectory: Trajectory, shared_prompt: bool = False) -> int:
    """The row width ``trajectory`` needs in a :class:`TokenBatch`: :func:`sequence_length`, or with
    ``shared_prompt`` (the prompt's head held in a :class:`~trapo.trainer.shared_prompts.PromptCache`) the
    response and the prompt's last token."""
    return len(trajectory.response_ids) + 1 if shared_prompt else sequence_length(trajectory)


def build_token_batch(
    trajectories: Sequence[Trajectory], pad_id: int, device: torch.device, shared_prompt: bool = False
) -> TokenBatch:
    """``prompt + prefix + completion`` of each trajectory, right-padded, with the prefix mask (expert tokens
    of trajectories flagged ``prefix_loss``), the model mask (generated tokens) and the response mask (both
    kinds, every trajectory) on next-token positions, and the engine's log-probs of the generated tokens where
    the trajectories carry them (``sampling_logprobs``). With ``shared_prompt`` a row starts at the prompt's
    last token (its head comes from a :class:`~trapo.trainer.shared_prompts.PromptCache`)."""
    n = len(trajectories)
    width = max(row_length(t, shared_prompt) for t in trajectories)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    prefix = torch.zeros((n, width - 1), dtype=torch.bool)
    model = torch.zeros((n, width - 1), dtype=torch.bool)
    response = torch.zeros((n, width - 1), dtype=torch.bool)
    engine_logprobs = any(t.sampling_logprobs is not None for t in trajectories)
    sampling = torch.zeros((n, width - 1), dtype=torch.float32) if engine_logprobs else None
    for row, t in enumerate(trajectories):
        prompt = t.prompt_ids[-1:] if shared_prompt else t.prompt_ids
        seq = prompt + t.response_ids
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attn[row, : len(seq)] = 1
        start = len(prompt) - 1  # position whose logits predict the first response token
        if t.trains_prefix:
            prefix[row, start : start + len(t.prefix_ids)] = True
        model[row, start + len(t.prefix_ids) : start + len(t.response_ids)] = True
        response[row, start : start + len(t.response_ids)] = True
        if sampling is not None and t.completion_ids:
            if t.sampling_logprobs is None or len(t.sampling_logprobs) != len(t.completion_ids):
                raise ValueError("the rollout engine gave log-probs for some generated tokens but not for all")
            sampling[row, start + len(t.prefix_ids) : start + len(t.response_ids)] = torch.tensor(t.sampling_logprobs)
    ids, attn = ids.to(device), attn.to(device)
    return TokenBatch(
        ids,
        attn,
        ids[:, 1:],
        prefix.to(device),
        model.to(device),
        response.to(device),
        None if sampling is None else sampling.to(device),
    )
