"""--bf16: bfloat16 compute for rollouts and updates; weights, gradients and optimizer state stay float32."""

from __future__ import annotations

import copy

import pytest
import torch
from test_trainer import small_config

from trapo.rollout import HFEngine, SamplingParams
from trapo.rollout.kv_cache import new_cache
from trapo.rollout.qwen2_decode import qwen2_decoder
from trapo.trainer import TRAPOTrainer
from trapo.trainer.metrics import Metrics


def _half(completions, examples):  # a real reward that varies with the text, so advantages are not all 0
    return [float(len(c) % 2) for c in completions]


def _gradients(trainer: TRAPOTrainer, batch) -> torch.Tensor:
    trainer.optimizer.zero_grad()
    trainer.update(batch, trainer.advantages(batch), Metrics())
    return torch.cat([p.grad.flatten() for p in trainer.unwrapped.parameters() if p.grad is not None])


def test_the_bf16_update_has_fp32_gradients_close_to_fp32s(tmp_path, tokenizer, model, rows):
    def trainer(name: str, **kw) -> TRAPOTrainer:
        config = small_config(tmp_path / name, **kw)
        return TRAPOTrainer(copy.deepcopy(model), _half, config, rows, processing_class=tokenizer)

    fp32, bf16 = trainer("a"), trainer("b", bf16=True)
    batch = fp32.rollout(0)
    assert any(t.reward for t in batch.trajectories) and not all(t.reward for t in batch.trajectories)
    want, got = _gradients(fp32, batch), _gradients(bf16, batch)
    assert got.dtype == torch.float32 and all(p.dtype == torch.float32 for p in bf16.unwrapped.parameters())
    assert not torch.equal(got, want)  # bf16 did compute in bf16
    assert torch.nn.functional.cosine_similarity(got, want, dim=0) > 0.99
    assert (got.norm() / want.norm() - 1).abs() < 0.05
    bf16.optimizer.step()
    state = [s for group in bf16.optimizer.state.values() for s in group.values() if torch.is_tensor(s)]
    assert state and all(s.dtype == torch.float32 for s in state)


def test_a_bf16_training_run_and_its_rollouts(tmp_path, tokenizer, model, rows):
    config = small_config(tmp_path, bf16=True, rollout_mode="pipelined")
    trainer = TRAPOTrainer(model, processing_class=tokenizer, train_dataset=rows, args=config)
    assert trainer.engine.dtype == torch.bfloat16
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.train()
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("patched", [False, True])
def test_the_bf16_decode_step_gives_the_autocast_models_logits(tokenizer, model, patched):
    """The decoder with bf16 weight copies, under autocast, computes what the model does under autocast
    (accelerate's autocast patch of forward included)."""
    model = model.eval()
    if patched:  # what Accelerator(mixed_precision="bf16").prepare does to the model
        model._original_forward = model.forward
        model.forward = torch.autocast("cpu", dtype=torch.bfloat16)(model.forward)
    assert qwen2_decoder(model, 16) is None if patched else qwen2_decoder(model, 16) is not None
    decoder = qwen2_decoder(model, 16, torch.bfloat16)
    assert decoder is not None and decoder.layers[0][1].dtype == torch.bfloat16
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    mask = torch.ones_like(ids)
    caches = [new_cache(model, 8), new_cache(model, 8)]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for cache in caches:
            model(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True)
        step, pos, full = torch.tensor([[3], [4]]), torch.tensor([[3], [3]]), torch.ones(2, 1, 1, 4, dtype=torch.bool)
        theirs = model(input_ids=step, attention_mask=full, position_ids=pos, cache=caches[0], use_cache=True)
        ours = decoder.step(step, pos, full, caches[1])
    assert torch.allclose(ours.float(), theirs.logits[:, -1].float(), atol=0.05, rtol=0.05)


def test_bf16_generation_runs_and_leaves_the_weights_alone(tokenizer, model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine = HFEngine.from_tokenizer(model, tokenizer, dtype=torch.bfloat16)
    out = engine.generate([[5, 6, 7]] * 4 + [[8]], 12, SamplingParams(), seeds=[1, 2, 3, 4, 5])
    assert [len(x) for x in out] and all(0 < len(x) <= 12 for x in out)
    assert all(0 <= t < len(tokenizer) for x in out for t in x)
    greedy32 = HFEngine.from_tokenizer(model, tokenizer).generate([[5, 6, 7]], 8, SamplingParams(temperature=0))
    greedy16 = engine.generate([[5, 6, 7]], 8, SamplingParams(temperature=0))
    assert greedy16[0][:2] == greedy32[0][:2]  # the first tokens agree; rounding may part them later
    assert all(torch.equal(before[k], v) and v.dtype == torch.float32 for k, v in model.state_dict().items())
