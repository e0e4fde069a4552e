"""The loss on one batch of trajectories (TRAPO.md §3), as one forward pass per mini-batch.

Every response token is an expert-prefix token or a model token:

- model tokens: policy-gradient loss with the trajectory's group-relative advantage, an entropy bonus,
  and (``beta > 0``) a k3 KL penalty to a frozen reference model;
- prefix tokens of trajectories flagged ``prefix_loss``: TrSFT (``trsft``), plain SFT (``sft``, the
  ablation) or LUFFY's shaped off-policy policy gradient (``luffy``), independent of reward except for LUFFY.

Normalisers are computed for the whole batch up front (:class:`Normalizer`), so splitting the batch into
mini-batches or across processes gives the same gradient as one big pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from trapo import losses
from trapo.trainer.rollouts import Trajectory


@dataclass
class TokenBatch:
    """Right-padded ``prompt + response`` ids with masks over the shifted (next-token) positions."""

    input_ids: torch.Tensor  # (N, T)
    attention_mask: torch.Tensor  # (N, T)
    labels: torch.Tensor  # (N, T-1): input_ids[:, 1:]
    prefix_mask: torch.Tensor  # (N, T-1) bool: expert tokens that get the prefix loss
    context_prefix_mask: torch.Tensor  # (N, T-1) bool: every expert token (for metrics)
    model_mask: torch.Tensor  # (N, T-1) bool: generated tokens


def build_token_batch(trajectories: Sequence[Trajectory], pad_id: int, device: torch.device) -> TokenBatch:
    n = len(trajectories)
    width = max(len(t.prompt_ids) + len(t.response_ids) for t in trajectories)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    prefix = torch.zeros((n, width - 1), dtype=torch.bool)
    model = torch.zeros((n, width - 1), dtype=torch.bool)
    for row, t in enumerate(trajectories):
        seq = t.prompt_ids + t.response_ids
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attn[row, : len(seq)] = 1
        start = len(t.prompt_ids) - 1  # position whose logits predict the first response token
        prefix[row, start : start + len(t.prefix_ids)] = True
        model[row, start + len(t.prefix_ids) : start + len(t.response_ids)] = True
    flags = torch.tensor([t.prefix_loss for t in trajectories], dtype=torch.bool).unsqueeze(1)
    ids, attn = ids.to(device), attn.to(device)
    return TokenBatch(ids, attn, ids[:, 1:], (prefix & flags).to(device), prefix.to(device), model.to(device))


class Normalizer:
    """A loss kind's normalisation over the whole batch, applied one mini-batch at a time.

    ``constant``: token sum / (max_completion_length x trajectories in the batch), the authors' and
    Dr. GRPO's choice. ``token_mean``: sum / tokens in the batch. ``seq_mean_token_mean``: mean over the
    batch's sequences of each sequence's token mean. Mini-batch losses computed with :meth:`apply` add up
    to the batch's loss. ``world_size`` and ``global_counts`` (tokens, non-empty sequences, summed over
    processes) account for the gradient average over processes.
    """

    def __init__(self, kind: losses.Normalization, masks: Sequence[torch.Tensor], max_completion_length: int,
                 world_size: int = 1, global_counts: tuple[float, float] | None = None):
        self.kind = kind
        tokens = float(sum(m.sum().item() for m in masks))
        seqs = float(sum((m.sum(dim=1) > 0).sum().item() for m in masks))
        rows = float(sum(m.shape[0] for m in masks))
        if global_counts is not None:
            tokens, seqs = global_counts
        self.denominator = {
            "constant": max_completion_length * rows,
            "token_mean": tokens / world_size,
            "seq_mean_token_mean": seqs / world_size,
        }[kind]

    def apply(self, loss_fn, *args, mask: torch.Tensor, **kwargs) -> torch.Tensor:
        """``loss_fn(*args, mask, **kwargs, normalization=..., constant=...)`` scaled to the batch."""
        if self.denominator <= 0 or not bool(mask.any()):
            return loss_fn(*args, mask, **kwargs, normalization="token_mean")  # 0 with zero gradient
        if self.kind == "seq_mean_token_mean":
            local_seqs = float((mask.sum(dim=1) > 0).sum())
            value = loss_fn(*args, mask, **kwargs, normalization="seq_mean_token_mean")
            return value * (local_seqs / self.denominator)
        return loss_fn(*args, mask, **kwargs, normalization="constant", constant=self.denominator)


@dataclass
class LossTerms:
    total: torch.Tensor
    policy: torch.Tensor
    prefix: torch.Tensor
    entropy: torch.Tensor
    kl: torch.Tensor


def rl_loss(
    logits: torch.Tensor,
    batch: TokenBatch,
    advantages: torch.Tensor,
    *,
    norm_model: Normalizer,
    norm_prefix: Normalizer,
    prefix_loss: str,
    trsft_alpha: float,
    prefix_loss_coef: float,
    luffy_gamma: float,
    entropy_coef: float,
    epsilon: float,
    epsilon_high: float,
    old_logprobs: torch.Tensor | None = None,
    ref_logprobs: torch.Tensor | None = None,
    beta: float = 0.0,
) -> tuple[LossTerms, torch.Tensor, torch.Tensor | None]:
    """The TRAPO objective on one mini-batch.

    Returns the loss terms, the detached token log-probs and the detached per-token entropy (``None``
    when ``entropy_coef`` is 0), which the trainer reuses for its metrics.
    """
    logits = logits[:, :-1].float()
    logprobs = losses.token_logprobs(logits, batch.labels)
    old = logprobs.detach() if old_logprobs is None else old_logprobs
    policy = norm_model.apply(losses.policy_gradient_loss, logprobs, old, advantages, mask=batch.model_mask,
                              clip_eps_low=epsilon, clip_eps_high=epsilon_high)
    zero = logprobs.sum() * 0
    if prefix_loss == "trsft":
        prefix = norm_prefix.apply(losses.trsft_loss, logprobs, mask=batch.prefix_mask, alpha=trsft_alpha)
    elif prefix_loss == "sft":
        prefix = norm_prefix.apply(losses.sft_loss, logprobs, mask=batch.prefix_mask)
    elif prefix_loss == "luffy":
        prefix = norm_prefix.apply(losses.luffy_loss, logprobs, advantages, mask=batch.prefix_mask,
                                   gamma=luffy_gamma)
    else:
        prefix = zero
    entropy, token_entropy = zero, None
    if entropy_coef:
        token_entropy = losses.entropy_from_logits(logits)
        entropy = norm_model.apply(losses.aggregate, token_entropy, mask=batch.model_mask)
        token_entropy = token_entropy.detach()
    kl = zero
    if beta and ref_logprobs is not None:  # k3 estimator of KL(pi || ref), per token
        delta = ref_logprobs - logprobs
        kl = norm_model.apply(losses.aggregate, torch.exp(delta) - delta - 1, mask=batch.model_mask)
    total = policy + prefix_loss_coef * prefix - entropy_coef * entropy + beta * kl
    terms = LossTerms(total, policy.detach(), prefix.detach(), entropy.detach(), kl.detach())
    return terms, logprobs.detach(), token_entropy


def sft_step_loss(logits: torch.Tensor, batch: TokenBatch, norm: Normalizer) -> torch.Tensor:
    """Plain SFT (token NLL) on expert tokens: the SFT baseline and the first stage of SFT-then-GRPO."""
    logprobs = losses.token_logprobs(logits[:, :-1].float(), batch.labels)
    return norm.apply(losses.sft_loss, logprobs, mask=batch.prefix_mask)
