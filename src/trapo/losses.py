"""Per-token losses of TRAPO and its baselines, as pure functions over ``(batch, tokens)`` tensors.

Every loss takes per-token tensors of shape ``(B, T)`` and a ``mask`` of the same shape (bool, or a
float/integer tensor holding only 0 and 1) that marks the tokens the loss applies to, and reduces them
with one shared :func:`aggregate`:

- ``"token_mean"``: sum over all masked tokens / number of masked tokens (DAPO-style token mean).
- ``"seq_mean_token_mean"``: masked mean per sequence, then mean over sequences with >= 1 token
  (the original GRPO reduction).
- ``"constant"``: sum over all masked tokens / a constant, e.g. the maximum response length
  (Dr. GRPO; the TRAPO authors' choice, TRAPO.md §3).

Shapes are checked, never silently broadcast; an empty mask gives a loss of exactly 0 with a zero
gradient. Masked-out positions never contribute to the value or the gradient, even if they hold
``-inf``/``nan`` log-probabilities (padding).

Each rule has a per-token form (``*_token_loss``, shape ``(B, T)``, used by :mod:`trapo.objective` to
assemble the batch loss) and a reduced form (``*_loss``: the per-token form through :func:`aggregate`).
Sections refer to the method's summary in the paper (Su et al., "Trust-Region Adaptive Policy
Optimization", ICLR 2026):

- :func:`sft_loss`: plain NLL on expert tokens (forward KL to the expert).
- :func:`trsft_loss`: Trust-Region SFT (§1), ``-p / max(sg(p), alpha)`` per token.
- :func:`policy_gradient_loss`: the GRPO/PPO clipped surrogate on the model's own tokens (§3).
- :func:`luffy_loss`: LUFFY's off-policy loss on expert tokens with policy shaping ``f(p) = p/(p+gamma)``.
- :func:`k3_kl_token_loss`: the k3 estimator of KL(pi || ref) per token (optional penalty, beta > 0).
- :func:`importance_sampling_weights`: truncated / masked importance weights between the trainer's and the
  rollout engine's log-probs of the same tokens (TRL's ``vllm_importance_sampling_correction``).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

Normalization = Literal["token_mean", "seq_mean_token_mean", "constant"]
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)
ImportanceSamplingMode = Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]
IMPORTANCE_SAMPLING_MODES: tuple[str, ...] = get_args(ImportanceSamplingMode)


# --------------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------------


def _check_2d(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"`{name}` must have shape (batch, tokens), got shape {tuple(x.shape)}")


def _check_same_shape(ref_name: str, ref: Tensor, name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
    if x.shape != ref.shape:
        raise ValueError(
            f"shape mismatch: `{name}` has shape {tuple(x.shape)} but `{ref_name}` has shape "
            f"{tuple(ref.shape)}; they must be equal (no broadcasting)"
        )


def _bool_mask(mask: Tensor, ref: Tensor, ref_name: str) -> Tensor:
    """Validate ``mask`` against ``ref`` and return it as a bool tensor."""
    if not isinstance(mask, Tensor):
        raise ValueError(f"`mask` must be a torch.Tensor, got {type(mask).__name__}")
    _check_same_shape(ref_name, ref, "mask", mask)
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex():
        raise ValueError(f"`mask` must be bool or hold only 0/1, got dtype {mask.dtype}")
    if not bool(((mask == 0) | (mask == 1)).all()):
        bad = mask[(mask != 0) & (mask != 1)]
        raise ValueError(f"`mask` must be bool or hold only 0 and 1, found e.g. {bad.flatten()[0].item()!r}")
    return mask != 0


def _per_sequence_advantages(advantages: Tensor, ref: Tensor) -> Tensor:
    """Advantages of shape (B,) are repeated over tokens explicitly; (B, T) must match ``ref``."""
    if not isinstance(advantages, Tensor):
        raise ValueError(f"`advantages` must be a torch.Tensor, got {type(advantages).__name__}")
    if advantages.dim() == 1:
        if advantages.shape[0] != ref.shape[0]:
            raise ValueError(
                f"shape mismatch: `advantages` has shape {tuple(advantages.shape)} but `logprobs` has "
                f"shape {tuple(ref.shape)}; per-sequence advantages need shape ({ref.shape[0]},)"
            )
        advantages = advantages[:, None].expand(ref.shape)
    else:
        _check_same_shape("logprobs", ref, "advantages", advantages)
    return advantages.detach().to(ref.dtype)


# --------------------------------------------------------------------------------------------------
# reduction
# --------------------------------------------------------------------------------------------------


def aggregate(
    per_token: Tensor,
    mask: Tensor,
    normalization: Normalization = "token_mean",
    constant: float | None = None,
) -> Tensor:
    """Reduce a per-token loss ``(B, T)`` over the tokens selected by ``mask`` to a scalar.

    - ``token_mean``: ``sum(mask * x) / sum(mask)``.
    - ``seq_mean_token_mean``: per-sequence masked mean, then the mean over sequences with >= 1 token.
    - ``constant``: ``sum(mask * x) / constant`` (Dr. GRPO; TRAPO.md §3 divides by the maximum
      response length). ``constant`` is required and must be > 0; it is ignored by the other modes.

    Masked-out entries are replaced by 0 (``torch.where``), so they contribute neither value nor
    gradient, even if they are ``inf``/``nan``. With no selected token the result is 0.0 and the
    gradient is zero.
    """
    _check_2d("per_token", per_token)
    m = _bool_mask(mask, per_token, "per_token")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"`normalization` must be one of {NORMALIZATIONS}, got {normalization!r}")
    x = torch.where(m, per_token, torch.zeros((), dtype=per_token.dtype, device=per_token.device))
    if normalization == "token_mean":
        count = m.sum().clamp(min=1).to(x.dtype)
        return x.sum() / count
    if normalization == "seq_mean_token_mean":
        counts = m.sum(dim=1)
        seq_means = x.sum(dim=1) / counts.clamp(min=1).to(x.dtype)  # 0 for empty sequences
        num_seqs = (counts > 0).sum().clamp(min=1).to(x.dtype)
        return seq_means.sum() / num_seqs
    # constant
    if constant is None or isinstance(constant, bool) or not constant > 0:
        raise ValueError(f"`constant` must be a number > 0 when normalization='constant', got {constant!r}")
    return x.sum() / float(constant)


# --------------------------------------------------------------------------------------------------
# log-probabilities and entropy from logits
# --------------------------------------------------------------------------------------------------


def token_logprobs(logits: Tensor, labels: Tensor) -> Tensor:
    """``log p(labels[b, t])`` under ``softmax(logits[b, t])``: ``(B, T, V), (B, T) -> (B, T)``.

    Memory-lean: for float32/float64 it uses ``logits.gather(label) - logsumexp(logits)``, which never
    materialises a ``(B, T, V)`` log-softmax; lower precisions (bf16/fp16) are converted to float32 one
    sequence at a time, since logsumexp in half precision is too lossy. Labels must lie in ``[0, V)``
    (replace ignore-index positions such as -100 with any valid id and mask them in the loss).
    """
    if not isinstance(logits, Tensor) or logits.dim() != 3:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"`logits` must have shape (batch, tokens, vocab), got {shape}")
    if not isinstance(labels, Tensor) or labels.shape != logits.shape[:2]:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(
            f"shape mismatch: `labels` has shape {shape} but `logits` has shape {tuple(logits.shape)}; "
            f"labels must have shape {tuple(logits.shape[:2])}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"`labels` must be an integer tensor, got dtype {labels.dtype}")
    vocab = logits.shape[-1]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= vocab):
        raise ValueError(f"`labels` must lie in [0, {vocab}), got values in [{int(labels.min())}, {int(labels.max())}]")
    index = labels.long().unsqueeze(-1)
    if logits.dtype in (torch.float32, torch.float64):
        picked = logits.gather(-1, index).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)
    rows = [
        torch.log_softmax(row.float(), dim=-1).gather(-1, idx).squeeze(-1)
        for row, idx in zip(logits, index, strict=True)
    ]
    return torch.stack(rows) if rows else logits.new_zeros(labels.shape, dtype=torch.float32)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Token entropy ``H = logsumexp(l) - sum(softmax(l) * l)``: ``(B, T, V) -> (B, T)``.

    Computed in float32 (or float64 if given), a few sequences at a time to bound the temporary memory (at most
    ``_ENTROPY_CHUNK_ELEMENTS`` logits, and at least one sequence, per chunk).
    """
    if not isinstance(logits, Tensor) or logits.dim() != 3:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"`logits` must have shape (batch, tokens, vocab), got {shape}")
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    per_row = max(logits.shape[1] * logits.shape[2], 1)
    step = max(1, _ENTROPY_CHUNK_ELEMENTS // per_row)
    rows = []
    for chunk in torch.split(logits, step):
        chunk = chunk.to(dtype)
        probs = torch.softmax(chunk, dim=-1)
        rows.append(torch.logsumexp(chunk, dim=-1) - (probs * chunk).sum(dim=-1))
    return torch.cat(rows) if rows else logits.new_zeros(logits.shape[:2], dtype=dtype)


# Logits per chunk of :func:`entropy_from_logits` (16M: 64 MiB of float32 temporaries per intermediate).
_ENTROPY_CHUNK_ELEMENTS = 2**24


# --------------------------------------------------------------------------------------------------
# losses: per token, then reduced
# --------------------------------------------------------------------------------------------------


def _masked(logprobs: Tensor, mask: Tensor) -> Tensor:
    """``logprobs`` with masked-out positions set to 0, so padding (even ``-inf``/``nan``) never reaches
    an ``exp`` whose gradient would turn ``0 * inf`` into ``nan``."""
    m = _bool_mask(mask, logprobs, "logprobs")
    return torch.where(m, logprobs, torch.zeros((), dtype=logprobs.dtype, device=logprobs.device))


def sft_token_loss(logprobs: Tensor) -> Tensor:
    """Plain SFT per token: ``-log p_t`` (forward KL to the expert, §1)."""
    _check_2d("logprobs", logprobs)
    return -logprobs


def sft_loss(
    logprobs: Tensor,
    mask: Tensor,
    *,
    normalization: Normalization = "token_mean",
    constant: float | None = None,
) -> Tensor:
    """Plain SFT: negative log-likelihood ``-log p_t`` of the expert tokens, reduced by :func:`aggregate`."""
    return aggregate(sft_token_loss(logprobs), mask, normalization, constant)


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha <= 1.0:
        raise ValueError(f"`alpha` must be a number in (0, 1], got {alpha!r}")


def trsft_token_loss(logprobs: Tensor, mask: Tensor, *, alpha: float = 0.1) -> Tensor:
    """Trust-Region SFT per token (§1): ``-p_t / max(sg(p_t), alpha)`` with ``p_t = exp(logprob)``.

    The gradient is ``-min(1, p_t/alpha) ∇log p_t``: exactly SFT's gradient inside the trust region
    ``p_t >= alpha``, attenuated by ``p_t/alpha`` outside it (so it never exceeds ``∇p_t / alpha``).
    ``alpha -> 0`` recovers SFT (forward KL); larger ``alpha`` is more mode-seeking (Proposition 1).
    The *value* is ``-min(1, p_t/alpha)`` per token, in ``[-1, 0]``; log :func:`sft_loss` for an NLL.
    Positions outside ``mask`` are 0.
    """
    _check_alpha(alpha)
    _check_2d("logprobs", logprobs)
    p = _masked(logprobs, mask).exp()
    return -p / p.detach().clamp(min=alpha)


def trsft_loss(
    logprobs: Tensor,
    mask: Tensor,
    *,
    alpha: float = 0.1,
    normalization: Normalization = "token_mean",
    constant: float | None = None,
) -> Tensor:
    """Trust-Region SFT (§1), :func:`trsft_token_loss` reduced over ``mask`` by :func:`aggregate`."""
    return aggregate(trsft_token_loss(logprobs, mask, alpha=alpha), mask, normalization, constant)


def _check_clip(clip_eps_low: float | None, clip_eps_high: float | None) -> None:
    for name, eps in (("clip_eps_low", clip_eps_low), ("clip_eps_high", clip_eps_high)):
        if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0):
            raise ValueError(f"`{name}` must be None or a number >= 0, got {eps!r}")
    if clip_eps_low is not None and clip_eps_low > 1:
        raise ValueError(f"`clip_eps_low` must be <= 1 (the ratio is never negative), got {clip_eps_low!r}")


def policy_gradient_token_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps_low: float | None = 0.2,
    clip_eps_high: float | None = 0.2,
) -> Tensor:
    """GRPO/PPO clipped surrogate per token on the model's own tokens (§3).

    Per token, with ``ratio = exp(logprobs - old_logprobs)``::

        -min(ratio * A, clip(ratio, 1 - clip_eps_low, 1 + clip_eps_high) * A)

    ``advantages`` has shape ``(B,)`` (one value per sequence, repeated over its tokens) or ``(B, T)``;
    it and ``old_logprobs`` are treated as constants (detached). ``None`` for an epsilon disables that
    side of the clip. With one update per batch (``old_logprobs = logprobs.detach()``) the ratio is 1,
    the clip is inert and the gradient is REINFORCE's ``-A ∇log p``. Positions outside ``mask`` have
    ratio 1 and are dropped by the reduction.
    """
    _check_2d("logprobs", logprobs)
    _check_same_shape("logprobs", logprobs, "old_logprobs", old_logprobs)
    adv = _per_sequence_advantages(advantages, logprobs)
    m = _bool_mask(mask, logprobs, "logprobs")
    _check_clip(clip_eps_low, clip_eps_high)
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    log_ratio = torch.where(m, logprobs - old_logprobs.detach(), zero)
    ratio = log_ratio.exp()
    surrogate = ratio * adv
    if clip_eps_low is not None or clip_eps_high is not None:
        lo = None if clip_eps_low is None else 1.0 - clip_eps_low
        hi = None if clip_eps_high is None else 1.0 + clip_eps_high
        surrogate = torch.minimum(surrogate, ratio.clamp(min=lo, max=hi) * adv)
    return -surrogate


def policy_gradient_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps_low: float | None = 0.2,
    clip_eps_high: float | None = 0.2,
    normalization: Normalization = "token_mean",
    constant: float | None = None,
) -> Tensor:
    """GRPO/PPO clipped surrogate (§3), :func:`policy_gradient_token_loss` reduced by :func:`aggregate`."""
    per_token = policy_gradient_token_loss(
        logprobs, old_logprobs, advantages, mask, clip_eps_low=clip_eps_low, clip_eps_high=clip_eps_high
    )
    return aggregate(per_token, mask, normalization, constant)


def luffy_token_loss(logprobs: Tensor, advantages: Tensor, mask: Tensor, *, gamma: float = 0.1) -> Tensor:
    """LUFFY's off-policy loss per expert token with policy shaping (Yan et al., 2025, "LUFFY").

    Per token ``-A * f(p_t)`` with ``f(p) = p / (p + gamma)`` and ``p_t = exp(logprob)``; the behaviour
    probability of the expert is taken as 1 and there is no clipping. The gradient is
    ``-A * gamma / (p + gamma)^2 * p ∇log p``, which boosts low-probability expert tokens relative to
    the plain importance-weighted ``-A p ∇log p``.
    """
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0:
        raise ValueError(f"`gamma` must be a number > 0, got {gamma!r}")
    _check_2d("logprobs", logprobs)
    adv = _per_sequence_advantages(advantages, logprobs)
    p = _masked(logprobs, mask).exp()
    return -adv * (p / (p + gamma))


def luffy_loss(
    logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    gamma: float = 0.1,
    normalization: Normalization = "token_mean",
    constant: float | None = None,
) -> Tensor:
    """LUFFY's shaped off-policy loss, :func:`luffy_token_loss` reduced by :func:`aggregate`."""
    return aggregate(luffy_token_loss(logprobs, advantages, mask, gamma=gamma), mask, normalization, constant)


def k3_kl_token_loss(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """The k3 estimator of ``KL(pi || ref)`` per token: ``exp(d) - d - 1`` with ``d = ref - logprobs``
    (always >= 0; its expectation under pi is the KL)."""
    _check_2d("logprobs", logprobs)
    _check_same_shape("logprobs", logprobs, "ref_logprobs", ref_logprobs)
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1


def importance_sampling_weights(
    logprobs: Tensor,
    sampling_logprobs: Tensor,
    mask: Tensor,
    *,
    cap: float = 3.0,
    mode: ImportanceSamplingMode = "sequence_mask",
) -> Tensor:
    """Importance weights correcting for a rollout engine whose numerics differ from the trainer's (truncated
    importance sampling, Yao et al. 2025; TRL ``GRPOTrainer``'s ``vllm_importance_sampling_correction``, whose
    modes, names and default this follows).

    The tokens were sampled by the engine with log-probs ``sampling_logprobs``; the trainer's own log-probs of
    them are ``logprobs`` (the policy the surrogate's ratio is taken to). With ``d_t = logprobs_t -
    sampling_logprobs_t`` on the ``mask`` tokens::

        token_*:     rho_t = exp(d_t)                        (one weight per token)
        sequence_*:  rho_t = exp(sum over the row's tokens of d)  (one weight per sequence, on all its tokens)
        *_truncate:  w = min(rho, cap)
        *_mask:      w = rho if rho <= cap else 0

    The per-token policy loss is multiplied by ``w``. Both inputs are treated as constants (the result is
    detached); positions outside ``mask`` get weight 1.
    """
    _check_2d("logprobs", logprobs)
    _check_same_shape("logprobs", logprobs, "sampling_logprobs", sampling_logprobs)
    if mode not in IMPORTANCE_SAMPLING_MODES:
        raise ValueError(f"`mode` must be one of {', '.join(IMPORTANCE_SAMPLING_MODES)}, got {mode!r}")
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not cap > 0:
        raise ValueError(f"`cap` must be a number > 0, got {cap!r}")
    m = _bool_mask(mask, logprobs, "logprobs")
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    diff = torch.where(m, logprobs.detach() - sampling_logprobs.detach(), zero)
    if mode.startswith("sequence"):
        diff = diff.sum(dim=1, keepdim=True).expand_as(diff)
    rho = diff.exp()
    weights = rho.clamp(max=cap) if mode.endswith("truncate") else torch.where(rho <= cap, rho, zero)
    return torch.where(m, weights, torch.ones_like(weights))
