"""Length-sorted mini-batches: a partition of the batch that pads less, with the same loss and gradient."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from trapo.config import TRAPOConfig
from trapo.trainer import TRAPOTrainer
from trapo.trainer.batch import length_sorted_mini_batches, padded_token_share, sequence_length
from trapo.trainer.metrics import Metrics


@pytest.mark.parametrize("max_size", [1, 3, 8, 64])
@pytest.mark.parametrize("call_cost", [0, 64, 1e9])
def test_groups_partition_the_batch_by_length(max_size, call_cost):
    rng = random.Random(max_size)
    lengths = [rng.randint(5, 120) for _ in range(40)]
    groups = length_sorted_mini_batches(lengths, max_size, call_cost)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(1 <= len(g) <= max_size and g == sorted(g) for g in groups)
    for shorter, longer in itertools.pairwise(groups):  # consecutive runs of the sorted lengths
        assert max(lengths[i] for i in shorter) <= min(lengths[i] for i in longer)
    in_order = [list(range(i, min(i + max_size, len(lengths)))) for i in range(0, len(lengths), max_size)]
    assert padded_token_share(lengths, groups) >= padded_token_share(lengths, in_order)
    if call_cost == 0:  # padding only: no mini-batch mixes lengths
        assert padded_token_share(lengths, groups) == 1.0
    if call_cost == 1e9:  # calls dominate: as few mini-batches as the size cap allows
        assert len(groups) == -(-len(lengths) // max_size)


def test_groups_edge_cases():
    assert length_sorted_mini_batches([], 4) == []
    assert length_sorted_mini_batches([7], 4) == [[0]]
    assert length_sorted_mini_batches([5, 5, 5, 5], 4) == [[0, 1, 2, 3]]
    with pytest.raises(ValueError, match="max_size"):
        length_sorted_mini_batches([1], 0)


def test_a_padded_batch_of_short_and_long_rows_is_split():
    lengths = [10] * 32 + [100] * 32
    groups = length_sorted_mini_batches(lengths, 64, call_cost=64)
    assert [sorted({lengths[i] for i in g}) for g in groups] == [[10], [100]]
    assert padded_token_share(lengths, groups) == 1.0
    assert padded_token_share(lengths, [list(range(64))]) == pytest.approx(0.55)


@pytest.mark.parametrize("method", ["trapo", "grpo", "luffy"])
def test_sorted_mini_batches_give_the_loss_and_gradient_of_one_batch(method, tmp_path, tokenizer, model, rows):
    """update() over the length-sorted grouping equals update() over the whole batch in one mini-batch (the
    loss is the same math; only the float summation order differs)."""
    cfg = TRAPOConfig(
        output_dir=str(tmp_path),
        method=method,
        max_steps=1,
        prompts_per_step=4,
        max_completion_length=24,
        mini_batch_size=3,
        sample_log_steps=0,
        entropy_coef=0.01,
    )
    trainer = TRAPOTrainer(model, processing_class=tokenizer, train_dataset=rows, args=cfg)
    batch = trainer.rollout(0)
    lengths = [sequence_length(t) for t in batch.trajectories]
    assert len(set(lengths)) > 1
    advantages = trainer.advantages(batch)

    def run(groups) -> tuple[float, list[torch.Tensor]]:
        trainer._mini_batches = lambda trajs, *_: groups
        trainer.optimizer.zero_grad(set_to_none=True)
        metrics = Metrics()
        trainer.update(batch, advantages, metrics)
        grads = [p.grad.detach().clone() for p in trainer.model.parameters() if p.grad is not None]
        return metrics.sums["loss/total"], grads

    sorted_groups = length_sorted_mini_batches(lengths, cfg.mini_batch_size)
    assert len(sorted_groups) > 1
    loss_sorted, grads_sorted = run(sorted_groups)
    loss_whole, grads_whole = run([list(range(len(lengths)))])
    assert loss_sorted == pytest.approx(loss_whole, rel=1e-5, abs=1e-7)
    assert len(grads_sorted) == len(grads_whole)
    for a, b in zip(grads_sorted, grads_whole, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
