"""The update with each distinct prompt computed once (trapo.trainer.shared_prompts) gives the logits, the loss
and the gradient of the full sequences."""

from __future__ import annotations

import pytest
import torch

from trapo.config import TRAPOConfig
from trapo.trainer import TRAPOTrainer
from trapo.trainer.batch import build_token_batch, row_length
from trapo.trainer.metrics import Metrics
from trapo.trainer.rollouts import Trajectory
from trapo.trainer.shared_prompts import PromptCache, distinct_prompts, supports_shared_prompts

PAD = 0


def _trajectory(prompt, prefix, completion, trains_prefix=False) -> Trajectory:
    return Trajectory(
        level=int(bool(prefix)),
        prompt_ids=prompt,
        prefix_ids=prefix,
        completion_ids=completion,
        trains_prefix=trains_prefix,
    )


def test_a_shared_prompt_row_starts_at_the_prompts_last_token():
    t = _trajectory([5, 6, 7], [8], [9, 10], trains_prefix=True)
    assert row_length(t) == 6 and row_length(t, shared_prompt=True) == 4
    plain = build_token_batch([t], PAD, torch.device("cpu"))
    shared = build_token_batch([t], PAD, torch.device("cpu"), shared_prompt=True)
    assert shared.input_ids.tolist() == [[7, 8, 9, 10]]
    assert shared.prefix_mask.tolist() == [[True, False, False]]  # position 0 (token 7) predicts the prefix
    assert shared.model_mask.tolist() == [[False, True, True]]
    assert shared.response_mask.tolist() == [[True, True, True]]
    # the same labels under the same masks as the plain row's last positions
    assert plain.labels[:, 2:].tolist() == shared.labels.tolist()
    assert plain.model_mask[:, 2:].tolist() == shared.model_mask.tolist()


def test_distinct_prompts_in_first_seen_order():
    trajs = [_trajectory(p, [], [1]) for p in ([3, 4], [5], [3, 4], [5], [6, 7, 8])]
    assert distinct_prompts(trajs) == ([[3, 4], [5], [6, 7, 8]], [0, 1, 0, 1, 2])


def test_logits_and_gradients_equal_the_full_sequences(tokenizer, make_model):
    """Prompts of different lengths (one of a single token: an empty head), two rows each, right-padded
    responses of different lengths: the response logits, and the gradient of a loss on them, are those of the
    full right-padded sequences."""
    model = make_model(tokenizer)
    prompts = [[11, 12, 13, 14, 15], [16], [17, 18, 19]]
    responses = [[20, 21, 22], [23], [24, 25, 26, 27, 28], [29, 30], [31], [32, 33, 34]]
    trajs = [_trajectory(prompts[i // 2], [], r) for i, r in enumerate(responses)]
    plain = build_token_batch(trajs, PAD, torch.device("cpu"))
    shared = build_token_batch(trajs, PAD, torch.device("cpu"), shared_prompt=True)
    unique, index = distinct_prompts(trajs)
    weights = torch.randn(len(trajs), plain.labels.shape[1], generator=torch.Generator().manual_seed(0))

    def rows_and_loss(logits_fn, batch):
        model.zero_grad(set_to_none=True)
        logits = logits_fn()
        logprobs = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch.labels[..., None])[..., 0]
        per_row = [logprobs[r][batch.response_mask[r]] for r in range(len(trajs))]
        loss = sum((lp * weights[r, : len(lp)]).sum() for r, lp in enumerate(per_row))
        return per_row, loss

    full_rows, full_loss = rows_and_loss(
        lambda: model(input_ids=plain.input_ids, attention_mask=plain.attention_mask).logits, plain
    )
    full_loss.backward()
    full_grads = {n: p.grad.clone() for n, p in model.named_parameters()}

    cache = PromptCache.encode(model, unique, PAD, torch.device("cpu"))
    detached = cache.detached()
    rows, loss = rows_and_loss(
        lambda: detached.logits(model, shared.input_ids, shared.attention_mask, torch.tensor(index)), shared
    )
    loss.backward()
    cache.backward(detached)
    for a, b in zip(full_rows, rows, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    assert float(loss) == pytest.approx(float(full_loss), rel=1e-5)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, full_grads[name], rtol=1e-4, atol=1e-6), name


def _update(trainer, batch, advantages, share: bool):
    trainer.share_prompts = share
    trainer.optimizer.zero_grad(set_to_none=True)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    metrics = Metrics()
    trainer.update(batch, advantages, metrics)
    grads = [p.grad.detach().clone() for p in trainer.model.parameters()]
    with torch.no_grad():  # the update may have stepped (num_iterations > 1): start the other path alike
        for p, b in zip(trainer.model.parameters(), before, strict=True):
            p.copy_(b)
    return dict(metrics.sums), grads


@pytest.mark.parametrize(
    "method,extra",
    [
        ("grpo", {}),
        ("trapo", {}),
        ("luffy", {"entropy_tokens": "all"}),
        ("trapo", {"num_iterations": 2, "beta": 0.05}),  # the no-grad passes: old and reference log-probs
    ],
)
def test_update_with_shared_prompts_equals_the_full_sequences(method, extra, tmp_path, tokenizer, model, rows):
    cfg = TRAPOConfig(
        output_dir=str(tmp_path),
        method=method,
        max_steps=1,
        prompts_per_step=4,
        max_completion_length=24,
        mini_batch_size=5,
        sample_log_steps=0,
        entropy_coef=0.01,
        **extra,
    )
    trainer = TRAPOTrainer(model, processing_class=tokenizer, train_dataset=rows, args=cfg)
    batch = trainer.rollout(0)
    assert trainer._shares_prompts(batch.trajectories)
    advantages = trainer.advantages(batch)
    if cfg.num_iterations > 1:  # a first optimizer step inside update() must not depend on the path
        trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=0.0)
    plain_metrics, plain_grads = _update(trainer, batch, advantages, share=False)
    shared_metrics, shared_grads = _update(trainer, batch, advantages, share=True)
    assert plain_metrics.keys() == shared_metrics.keys()
    for name, value in plain_metrics.items():
        assert shared_metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    for a, b in zip(plain_grads, shared_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_update_with_shared_prompts_under_lora(tmp_path, tokenizer, model, rows):
    """LoRA on q_proj and v_proj only: the first layer's keys come from frozen weights and need no gradient."""
    pytest.importorskip("peft")
    cfg = TRAPOConfig(
        output_dir=str(tmp_path),
        method="grpo",
        max_steps=1,
        prompts_per_step=4,
        max_completion_length=24,
        mini_batch_size=5,
        sample_log_steps=0,
        lora_r=4,
        lora_target_modules=["q_proj", "v_proj"],
    )
    trainer = TRAPOTrainer(model, processing_class=tokenizer, train_dataset=rows, args=cfg)
    batch = trainer.rollout(0)
    advantages = trainer.advantages(batch)
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]

    def grads(share: bool) -> list[torch.Tensor]:
        trainer.share_prompts = share
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.update(batch, advantages, Metrics())
        return [p.grad.detach().clone() for p in trainable]

    for a, b in zip(grads(False), grads(True), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_no_sharing_where_it_cannot_pay_or_work(tmp_path, tokenizer, model, rows):
    cfg = TRAPOConfig(
        output_dir=str(tmp_path),
        method="grpo",
        max_steps=1,
        prompts_per_step=4,
        max_completion_length=8,
        sample_log_steps=0,
    )
    trainer = TRAPOTrainer(model, processing_class=tokenizer, train_dataset=rows, args=cfg)
    one_each = [_trajectory([3, 4], [], [5]), _trajectory([6], [], [7])]
    assert not trainer._shares_prompts(one_each)  # every prompt distinct: the prompt pass would be extra work
    both = [_trajectory([3, 4], [], [5]), _trajectory([3, 4], [], [7])]
    assert trainer._shares_prompts(both)
    model.gradient_checkpointing_enable()  # turns the cache off in training
    assert not supports_shared_prompts(model) and not trainer._shares_prompts(both)
