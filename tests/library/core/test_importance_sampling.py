"""The rollout engine's importance weights (trapo.losses.importance_sampling_weights, TRL's
vllm_importance_sampling_correction) against hand-worked values, and their place in the batch loss."""

from __future__ import annotations

import math

import pytest
import torch

from trapo.losses import importance_sampling_weights
from trapo.objective import ObjectiveWeights, TokenBatch, batch_normaliser, trapo_loss

# One row, three positions; the third is padding (outside the mask, holding junk the weights must ignore).
TRAINER = torch.tensor([[-1.0, -2.0, float("nan")]], dtype=torch.float64)
ENGINE = torch.tensor([[-1.5, -1.0, 0.0]], dtype=torch.float64)  # d = trainer - engine = (+0.5, -1.0)
MASK = torch.tensor([[True, True, False]])
E = math.exp


@pytest.mark.parametrize(
    ("mode", "cap", "expected"),
    [
        ("token_truncate", 1.5, [1.5, E(-1.0), 1.0]),  # exp(0.5) = 1.649 > 1.5 is cut to 1.5
        ("token_truncate", 3.0, [E(0.5), E(-1.0), 1.0]),  # under the cap: the plain ratios
        ("token_mask", 1.5, [0.0, E(-1.0), 1.0]),  # over the cap: dropped
        ("sequence_truncate", 3.0, [E(-0.5), E(-0.5), 1.0]),  # exp(0.5 - 1.0) on every token of the row
        ("sequence_truncate", 0.5, [0.5, 0.5, 1.0]),  # exp(-0.5) = 0.607 > 0.5
        ("sequence_mask", 0.5, [0.0, 0.0, 1.0]),
        ("sequence_mask", 3.0, [E(-0.5), E(-0.5), 1.0]),
    ],
)
def test_importance_weights_hand_values(mode, cap, expected):
    weights = importance_sampling_weights(TRAINER, ENGINE, MASK, cap=cap, mode=mode)
    assert torch.allclose(weights, torch.tensor([expected], dtype=torch.float64))


def test_importance_weights_are_constants_and_checked():
    trainer = TRAINER.nan_to_num().clone().requires_grad_()
    assert not importance_sampling_weights(trainer, ENGINE, MASK).requires_grad
    with pytest.raises(ValueError, match="mode"):
        importance_sampling_weights(TRAINER, ENGINE, MASK, mode="token")
    with pytest.raises(ValueError, match="cap"):
        importance_sampling_weights(TRAINER, ENGINE, MASK, cap=0)
    with pytest.raises(ValueError, match="shape mismatch"):
        importance_sampling_weights(TRAINER, ENGINE[:, :2], MASK)


def _batch(sampling_logprob: float | None) -> tuple[torch.Tensor, TokenBatch]:
    """Prompt token, one expert-prefix token, one generated token of probability 0.5 under the trainer."""
    ids = torch.tensor([[0, 0, 0]])
    logits = torch.zeros(1, 3, 2, dtype=torch.float64, requires_grad=True)  # every label: p = 0.5
    sampling = None if sampling_logprob is None else torch.tensor([[0.0, sampling_logprob]], dtype=torch.float64)
    batch = TokenBatch(
        ids,
        torch.ones_like(ids),
        ids[:, 1:],
        prefix_mask=torch.tensor([[True, False]]),
        model_mask=torch.tensor([[False, True]]),
        sampling_logprobs=sampling,
    )
    return logits, batch


@pytest.mark.parametrize(
    ("sampling_logprob", "cap", "weight"),
    [
        (math.log(0.25), 3.0, 2.0),  # the engine gave the token 0.25, the trainer 0.5: w = 2
        (math.log(0.1), 3.0, 0.0),  # ratio 5 > cap: the sequence is masked (TRL's default sequence_mask)
        (math.log(0.5), 3.0, 1.0),  # the engines agree
        (None, 3.0, 1.0),  # an engine without log-probs (HFEngine): no weight
        (math.log(0.25), None, 1.0),  # correction off
    ],
)
def test_the_policy_term_is_weighted_and_the_prefix_term_is_not(sampling_logprob, cap, weight):
    logits, batch = _batch(sampling_logprob)
    z = batch_normaliser("constant", [batch.model_mask], max_completion_length=1)
    terms = trapo_loss(
        logits,
        batch,
        torch.tensor([1.0], dtype=torch.float64),
        ObjectiveWeights(prefix_loss="sft", entropy_coef=0.0, importance_sampling_cap=cap),
        model_norm=z,
        prefix_norm=z,
    )
    assert terms.policy.item() == pytest.approx(-weight)  # -(w r A) / Z with r = 1, A = 1, Z = 1
    assert terms.prefix.item() == pytest.approx(-math.log(0.5))  # the expert token: plain NLL, unweighted
    assert (terms.importance_weights is None) == (sampling_logprob is None or cap is None)
    terms.total.backward()
    # d/dz of -w log p at p = 0.5 on the model token: -w (onehot - softmax) = (-w/2, +w/2)
    assert torch.allclose(logits.grad[0, 1], torch.tensor([-weight / 2, weight / 2], dtype=torch.float64))
