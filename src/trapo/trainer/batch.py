"""Trajectories to tensors: the right-padded :class:`~trapo.objective.TokenBatch` the loss is computed on."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trapo.objective import TokenBatch
from trapo.trainer.rollouts import Trajectory


def build_token_batch(trajectories: Sequence[Trajectory], pad_id: int, device: torch.device) -> TokenBatch:
    """``prompt + prefix + completion`` of each trajectory, right-padded, with the prefix mask (expert tokens
    of trajectories flagged ``prefix_loss``), the model mask (generated tokens) and the response mask (both
    kinds, every trajectory) on next-token positions."""
    n = len(trajectories)
    width = max(len(t.prompt_ids) + len(t.response_ids) for t in trajectories)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    prefix = torch.zeros((n, width - 1), dtype=torch.bool)
    model = torch.zeros((n, width - 1), dtype=torch.bool)
    response = torch.zeros((n, width - 1), dtype=torch.bool)
    for row, t in enumerate(trajectories):
        seq = t.prompt_ids + t.response_ids
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attn[row, : len(seq)] = 1
        start = len(t.prompt_ids) - 1  # position whose logits predict the first response token
        if t.prefix_loss:
            prefix[row, start : start + len(t.prefix_ids)] = True
        model[row, start + len(t.prefix_ids) : start + len(t.response_ids)] = True
        response[row, start : start + len(t.response_ids)] = True
    ids, attn = ids.to(device), attn.to(device)
    return TokenBatch(ids, attn, ids[:, 1:], prefix.to(device), model.to(device), response.to(device))
