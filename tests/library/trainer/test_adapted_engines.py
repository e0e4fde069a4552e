"""Engines written against an older or bare interface are adapted in one place (trapo.rollout.base.as_engine):
the trainer runs with them in every rollout mode."""

from __future__ import annotations

import pytest
import torch

from trapo.config import TRAPOConfig
from trapo.rollout import HFEngine, RolloutEngine
from trapo.rollout.base import AdaptedEngine, as_engine
from trapo.trainer import TRAPOTrainer


class _Bare:
    """Not a RolloutEngine: only ``generate`` without seeds, and a weight-sync hook."""

    def __init__(self, inner: HFEngine):
        self.inner, self.calls, self.synced = inner, 0, 0

    def generate(self, prompts, max_new_tokens, sampling=None, generator=None):
        self.calls += 1
        return self.inner.generate(prompts, max_new_tokens, sampling, generator)

    def sync_weights(self, model):
        self.synced += 1


class _Unseeded(RolloutEngine):
    """A RolloutEngine subclass written before per-row seeds."""

    def __init__(self, inner: HFEngine):
        self.inner = inner

    def generate(self, prompts, max_new_tokens, sampling=None, generator=None):
        return self.inner.generate(prompts, max_new_tokens, sampling, generator)


def test_as_engine_keeps_a_full_engine_and_wraps_the_rest(model, tokenizer):
    engine = HFEngine(model, tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert as_engine(engine) is engine
    assert isinstance(as_engine(_Unseeded(engine)), AdaptedEngine)
    bare = as_engine(_Bare(engine))
    assert isinstance(bare, AdaptedEngine) and bare.decodes_on_training_model
    with pytest.raises(TypeError, match="generate"):
        as_engine(object())


def test_an_adapted_engine_drops_seeds_and_uses_the_generator(model, tokenizer):
    bare = _Bare(HFEngine(model, tokenizer.eos_token_id, tokenizer.pad_token_id))
    engine = as_engine(bare)
    prompts = [[5, 6, 7], [8, 9]]
    out_a, logprobs = engine.generate_with_logprobs(prompts, 4, None, torch.Generator().manual_seed(3), seeds=[1, 2])
    out_b = engine.generate(prompts, 4, None, torch.Generator().manual_seed(3), seeds=[9, 9])
    assert out_a == out_b and logprobs is None and bare.calls == 2  # the generator decides, not the seeds


@pytest.mark.parametrize("mode", ["sequential", "pipelined"])
@pytest.mark.parametrize("kind", [_Bare, _Unseeded])
def test_training_runs_on_an_adapted_engine(kind, mode, model, tokenizer, rows, tmp_path):
    engine = kind(HFEngine(model, tokenizer.eos_token_id, tokenizer.pad_token_id))
    cfg = TRAPOConfig(
        output_dir=str(tmp_path),
        method="trapo",
        max_steps=2,
        prompts_per_step=2,
        max_completion_length=8,
        sample_log_steps=0,
        save_minutes=0,
        rollout_mode=mode,
    )
    trainer = TRAPOTrainer(model, processing_class=tokenizer, train_dataset=rows, args=cfg, engine=engine)
    result = trainer.train()
    assert result.steps == 2
    if kind is _Bare:
        assert engine.calls > 0 and engine.synced == 2  # sampled through it, weights synced after each step
