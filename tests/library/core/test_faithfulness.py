"""The knobs where the authors' code departs from ours (docs/FAITHFULNESS.md): each gives the authors' rule
when switched, and ours by default."""

from __future__ import annotations

import math
from typing import ClassVar

import pytest
import torch

from trapo.config import TRAPOConfig
from trapo.data import boundary_token_ids
from trapo.guidance import cut_prefix
from trapo.objective import ObjectiveWeights, TokenBatch, batch_normaliser, trapo_loss

B = 9  # a boundary token id


def test_cut_rule_ends_on_a_boundary_at_the_cut_unless_strict():
    ids = [1] * 10
    ids[5] = B  # exactly at t = int(10 * 0.5)
    ids[7] = B
    assert cut_prefix(ids, 0.5, {B}) == 6  # ours: '>=', the boundary at the cut
    assert cut_prefix(ids, 0.5, {B}, strict=True) == 8  # the authors': '>', the next one
    assert cut_prefix(ids, 0.5, {B}, slack=0.2, strict=True) == 5  # none before 0.7 n: exactly t


class _Vocab:
    """A tokenizer stand-in: token texts by id."""

    texts: ClassVar[list[str]] = ["a", "\n\n", ".\n\n", "\n\nThe", "b\n"]
    all_special_ids: ClassVar[list[int]] = []

    def __len__(self) -> int:
        return len(self.texts)

    def decode(self, ids):
        return "".join(self.texts[i] for i in ids)


def test_boundary_tokens_end_with_or_contain_the_marker():
    assert boundary_token_ids(_Vocab()) == {1, 2}  # ours
    assert boundary_token_ids(_Vocab(), match="contains") == {1, 2, 3}  # the authors' ("ĊĊ" in the token)


def test_loss_constant_divides_each_process_sum_by_a_fixed_number():
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert batch_normaliser("constant", [mask], max_completion_length=8).denominator == 16  # ours: L x rows
    assert batch_normaliser("constant", [mask], max_completion_length=8, constant=8192).denominator == 8192
    per_token = torch.ones(2, 3)
    assert batch_normaliser("constant", [mask], 8, constant=4).reduce(per_token, mask).item() == pytest.approx(3 / 4)


def _coin_batch() -> tuple[torch.Tensor, TokenBatch]:
    """One trajectory: prompt, a prefix token without the prefix loss, a model token; every position a fair
    coin (entropy log 2)."""
    ids = torch.tensor([[0, 0, 0]])
    batch = TokenBatch(
        ids,
        torch.ones_like(ids),
        ids[:, 1:],
        prefix_mask=torch.tensor([[False, False]]),
        model_mask=torch.tensor([[False, True]]),
        response_mask=torch.tensor([[True, True]]),
    )
    return torch.zeros(1, 3, 2, dtype=torch.float64, requires_grad=True), batch


@pytest.mark.parametrize(("tokens", "expected"), [("continuation", math.log(2) / 4), ("all", 2 * math.log(2) / 4)])
def test_entropy_over_the_continuation_or_every_response_token(tokens, expected):
    logits, batch = _coin_batch()
    z = batch_normaliser("constant", [batch.model_mask], max_completion_length=4)
    terms = trapo_loss(
        logits,
        batch,
        torch.zeros(1, dtype=torch.float64),
        ObjectiveWeights(entropy_coef=1.0, entropy_tokens=tokens),
        model_norm=z,
        prefix_norm=z,
    )
    assert terms.entropy.item() == pytest.approx(expected)


def test_trl_names_map_onto_ours():
    assert TRAPOConfig(loss_type="dr_grpo").loss_normalization == "constant"
    assert TRAPOConfig(loss_type="grpo").loss_normalization == "seq_mean_token_mean"
    assert TRAPOConfig(loss_type="dapo").loss_normalization == "token_mean"
    assert TRAPOConfig(loss_type="bnpo").loss_normalization == "token_mean"
    assert TRAPOConfig().loss_normalization == "constant" and TRAPOConfig().scale_rewards == "none"
    assert TRAPOConfig(scale_rewards=True).scale_rewards == "group"
    assert TRAPOConfig(scale_rewards=False).scale_rewards == "none"
    assert TRAPOConfig(scale_rewards="batch").scale_rewards == "batch"
    with pytest.raises(ValueError, match="loss_type must be one of grpo, bnpo, dapo, dr_grpo"):
        TRAPOConfig(loss_type="sapo")
    with pytest.raises(ValueError, match="scale_rewards must be one of group, batch, none"):
        TRAPOConfig(scale_rewards="prompt")
    # TRL's batch arithmetic: completions per step = per device x accumulation x processes
    cfg = TRAPOConfig(per_device_train_batch_size=8, gradient_accumulation_steps=2)
    assert (cfg.for_processes(1).prompts_per_step, cfg.for_processes(1).mini_batch_size) == (2, 8)
    assert cfg.for_processes(4).prompts_per_step == 8
    assert (
        TRAPOConfig(method="grpo", num_generations=4, gradient_accumulation_steps=1).for_processes(1).prompts_per_step
        == 2
    )  # TRL's default per_device_train_batch_size, 8
    with pytest.raises(ValueError, match="not a multiple of num_generations"):
        TRAPOConfig(per_device_train_batch_size=6).for_processes(1)
    assert TRAPOConfig().for_processes(8).prompts_per_step == 8  # our fields rule when TRL's are unset
