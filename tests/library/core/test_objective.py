"""The batch loss (trapo.objective) against hand-worked values, and mini-batches adding up to the batch."""

from __future__ import annotations

import math

import pytest
import torch

from trapo.objective import ObjectiveWeights, TokenBatch, batch_normaliser, sft_batch_loss, trapo_loss


def _one_trajectory(p_prefix: float, p_model: float) -> tuple[torch.Tensor, TokenBatch]:
    """Prompt token, one expert-prefix token (prob ``p_prefix``), one model token (prob ``p_model``); vocab 2,
    every label is token 0."""
    ids = torch.tensor([[0, 0, 0]])
    logits = torch.zeros(1, 3, 2, dtype=torch.float64)
    for pos, p in ((0, p_prefix), (1, p_model)):
        logits[0, pos] = torch.tensor([math.log(p), math.log(1 - p)])
    batch = TokenBatch(
        ids,
        torch.ones_like(ids),
        ids[:, 1:],
        prefix_mask=torch.tensor([[True, False]]),
        model_mask=torch.tensor([[False, True]]),
    )
    return logits.requires_grad_(), batch


def test_trapo_loss_hand_values():
    # Z = max_completion_length (4) x trajectories (1) = 4; A = 1; ratio = 1.
    logits, batch = _one_trajectory(p_prefix=0.05, p_model=0.5)
    z_model = batch_normaliser("constant", [batch.model_mask], max_completion_length=4)
    z_prefix = batch_normaliser("constant", [batch.prefix_mask], max_completion_length=4)
    assert z_model.denominator == z_prefix.denominator == 4
    terms = trapo_loss(
        logits,
        batch,
        torch.tensor([1.0], dtype=torch.float64),
        ObjectiveWeights(prefix_loss="trsft", trsft_alpha=0.1, entropy_coef=0.0),
        model_norm=z_model,
        prefix_norm=z_prefix,
    )
    assert terms.policy.item() == pytest.approx(-1 / 4)  # -(r A) / Z
    assert terms.prefix.item() == pytest.approx(-(0.05 / 0.1) / 4)  # -p / max(p, alpha) / Z
    assert terms.total.item() == pytest.approx(-0.25 - 0.125)
    terms.total.backward()
    # d/dz of -w log p = -w (onehot - softmax): TrSFT weight w = p/alpha = 0.5 outside the trust region
    expected = torch.tensor([[[-0.5 * 0.95 / 4, 0.5 * 0.95 / 4], [-0.5 / 4, 0.5 / 4], [0.0, 0.0]]], dtype=torch.float64)
    assert torch.allclose(logits.grad, expected)


def test_entropy_bonus_and_plain_sft_prefix_hand_values():
    logits, batch = _one_trajectory(p_prefix=0.25, p_model=0.5)
    z_model = batch_normaliser("constant", [batch.model_mask], max_completion_length=2)
    z_prefix = batch_normaliser("constant", [batch.prefix_mask], max_completion_length=2)
    terms = trapo_loss(
        logits,
        batch,
        torch.tensor([0.0], dtype=torch.float64),
        ObjectiveWeights(prefix_loss="sft", entropy_coef=0.5),
        model_norm=z_model,
        prefix_norm=z_prefix,
    )
    assert terms.policy.item() == 0.0  # zero advantage
    assert terms.prefix.item() == pytest.approx(-math.log(0.25) / 2)
    assert terms.entropy.item() == pytest.approx(math.log(2) / 2)  # H of a fair coin, over Z = 2
    assert terms.total.item() == pytest.approx(-math.log(0.25) / 2 - 0.5 * math.log(2) / 2)
    assert sft_batch_loss(logits, batch, z_prefix).item() == pytest.approx(-math.log(0.25) / 2)


@pytest.mark.parametrize("kind", ["constant", "token_mean", "seq_mean_token_mean"])
def test_mini_batches_add_up_to_the_whole_batch(kind):
    gen = torch.Generator().manual_seed(0)
    n, t, v = 6, 7, 5
    ids = torch.randint(0, v, (n, t), generator=gen)
    prefix = torch.zeros(n, t - 1, dtype=torch.bool)
    model = torch.zeros(n, t - 1, dtype=torch.bool)
    for row in range(n):  # varied prefix / continuation lengths, one row with no model token
        prefix[row, 1 : 1 + row % 3] = True
        model[row, 1 + row % 3 : 6 - (row == 4) * 5] = True
    batch = TokenBatch(ids, torch.ones_like(ids), ids[:, 1:], prefix, model)
    logits = torch.randn(n, t, v, generator=gen, dtype=torch.float64)
    adv = torch.randn(n, generator=gen, dtype=torch.float64)
    weights = ObjectiveWeights(prefix_loss="trsft", entropy_coef=0.01)

    def total(rows: list[list[int]]) -> torch.Tensor:
        parts = [TokenBatch(*(x[r] for x in (ids, torch.ones_like(ids), ids[:, 1:], prefix, model))) for r in rows]
        z_model = batch_normaliser(kind, [b.model_mask for b in parts], max_completion_length=8)
        z_prefix = batch_normaliser(kind, [b.prefix_mask for b in parts], max_completion_length=8)
        return sum(
            trapo_loss(logits[r], b, adv[r], weights, model_norm=z_model, prefix_norm=z_prefix).total
            for r, b in zip(rows, parts, strict=True)
        )

    whole = total([list(range(n))])
    split = total([[0, 1, 2, 3], [4, 5]])
    assert split.item() == pytest.approx(whole.item(), rel=1e-6)  # the loss is computed in float32
    assert batch.model_mask.any()


def test_an_empty_mask_gives_zero_with_zero_gradient():
    logits, batch = _one_trajectory(p_prefix=0.3, p_model=0.6)
    empty = TokenBatch(
        batch.input_ids, batch.attention_mask, batch.labels, torch.zeros_like(batch.prefix_mask), batch.model_mask
    )
    z = batch_normaliser("token_mean", [empty.prefix_mask], max_completion_length=4)
    assert z.denominator == 0
    terms = trapo_loss(
        logits,
        empty,
        torch.tensor([0.0], dtype=torch.float64),
        ObjectiveWeights(entropy_coef=0.0),
        model_norm=z,
        prefix_norm=z,
    )
    assert terms.total.item() == 0.0
    terms.total.backward()
    assert torch.all(logits.grad == 0)


def test_the_normaliser_sums_counts_over_processes():
    masks = [torch.tensor([[True, True, False], [False, False, False]]), torch.tensor([[True, False, False]])]
    assert batch_normaliser("token_mean", masks, 3).denominator == 3  # tokens
    assert batch_normaliser("seq_mean_token_mean", masks, 3).denominator == 2  # non-empty sequences
    assert batch_normaliser("constant", masks, 3).denominator == 9  # max_completion_length x rows

    def other_process_has_5_tokens_in_1_sequence(counts):
        return counts + torch.tensor([5.0, 1.0], dtype=torch.float64)

    two = {"world_size": 2, "reduce_sum": other_process_has_5_tokens_in_1_sequence}
    assert batch_normaliser("token_mean", masks, 3, **two).denominator == (3 + 5) / 2
    assert batch_normaliser("seq_mean_token_mean", masks, 3, **two).denominator == (2 + 1) / 2
    assert batch_normaliser("constant", masks, 3, **two).denominator == 9  # this process's own divisor
