"""The HF rollout engine: budgets, EOS, reproducibility, and agreement with model.generate."""

from __future__ import annotations

import pytest
import torch
from tiny_factory import tiny_qwen2_config
from transformers import Qwen2ForCausalLM

from trapo.rollout import HFEngine, HFGenerateEngine, SamplingParams

EOS, PAD = 1, 0


PROMPTS = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [14, 15], [2, 3, 4, 5, 6, 7, 8]] * 3
BUDGETS = [12, 0, 7, 20, 3] * 3


def test_greedy_matches_model_generate(model):
    ours = HFEngine(model, EOS, PAD).generate(PROMPTS, BUDGETS, SamplingParams(temperature=0))
    theirs = HFGenerateEngine(model, EOS, PAD).generate(PROMPTS, BUDGETS, SamplingParams(temperature=0))
    assert ours == theirs


def test_budgets_and_eos(model):
    out = HFEngine(model, EOS, PAD, max_batch_size=4).generate(
        PROMPTS, BUDGETS, SamplingParams(), torch.Generator().manual_seed(0)
    )
    for ids, budget in zip(out, BUDGETS, strict=True):
        assert len(ids) <= budget
        if EOS in ids:
            assert ids.index(EOS) == len(ids) - 1  # stops at the first EOS, which is kept
        else:
            assert len(ids) == budget  # no EOS: ran to its budget
    assert out[1] == []


def test_same_generator_state_same_samples_and_samples_differ(model):
    engine = HFEngine(model, EOS, PAD)
    a = engine.generate([[5, 6]] * 8, 10, SamplingParams(), torch.Generator().manual_seed(3))
    b = engine.generate([[5, 6]] * 8, 10, SamplingParams(), torch.Generator().manual_seed(3))
    assert a == b
    assert len({tuple(x) for x in a}) > 1  # 8 samples of one prompt are not all the same


def test_bad_input(model):
    engine = HFEngine(model, EOS, PAD)
    with pytest.raises(ValueError, match="max_new_tokens has 1 entries but there are 2 prompts"):
        engine.generate([[1], [2]], [3])
    with pytest.raises(ValueError, match="every prompt needs at least one token"):
        engine.generate([[]], 3)
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        SamplingParams(temperature=-1)


def test_progress_reports_every_finished_row_and_token(model):
    calls = []
    engine = HFEngine(model, EOS, PAD, max_batch_size=4)
    out = engine.generate(
        PROMPTS,
        BUDGETS,
        SamplingParams(),
        torch.Generator().manual_seed(3),
        progress=lambda finished, tokens: calls.append((finished, tokens)),
    )
    assert sum(f for f, _ in calls) == len(PROMPTS)  # budget-0 rows count as finished at once
    assert sum(t for _, t in calls) == sum(map(len, out))
    assert len(calls) > len(PROMPTS) // 4  # per decode step, not per batch
    again = engine.generate(PROMPTS, BUDGETS, SamplingParams(), torch.Generator().manual_seed(3))
    assert again == out  # the callback changes nothing


def test_a_model_without_a_preallocatable_cache_still_generates(model, monkeypatch):
    import trapo.rollout.hf as hf

    reference = HFEngine(model, EOS, PAD).generate(PROMPTS, BUDGETS, SamplingParams(temperature=0))
    monkeypatch.setattr(hf, "_new_cache", lambda model, capacity: None)  # the model builds a DynamicCache
    assert HFEngine(model, EOS, PAD).generate(PROMPTS, BUDGETS, SamplingParams(temperature=0)) == reference


def test_sample_next_follows_the_distribution_and_never_draws_excluded_tokens():
    from trapo.rollout.hf import sample_next

    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    logits = probs.log().expand(20000, -1)
    draws = sample_next(logits, SamplingParams(), torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=5).float() / len(draws)
    assert torch.allclose(freq, probs, atol=0.015) and freq[4] == 0
    top2 = sample_next(logits, SamplingParams(top_k=2), torch.Generator().manual_seed(1))
    assert set(top2.tolist()) == {0, 1}
    nucleus = sample_next(logits, SamplingParams(top_p=0.7), torch.Generator().manual_seed(2))
    assert set(nucleus.tolist()) == {0, 1}


def test_the_prebuilt_decode_mask_samples_what_the_model_built_mask_does(model, monkeypatch):
    """Decode steps hand an sdpa full-attention model its (rows, 1, 1, keys) padding mask; the model building
    the mask from the 2D one gives the same samples."""
    from trapo.rollout import hf

    assert hf._full_attention_sdpa(model)
    prebuilt = HFEngine(model, EOS, PAD).generate(PROMPTS, BUDGETS, SamplingParams(), torch.Generator().manual_seed(5))
    monkeypatch.setattr(hf, "_full_attention_sdpa", lambda m: False)
    built = HFEngine(model, EOS, PAD).generate(PROMPTS, BUDGETS, SamplingParams(), torch.Generator().manual_seed(5))
    assert prebuilt == built


def test_the_prebuilt_decode_mask_is_only_for_full_attention_sdpa():
    from trapo.rollout import hf

    def config(**kw):
        return tiny_qwen2_config(8, hidden_size=8, intermediate_size=8, **kw)

    assert hf._full_attention_sdpa(Qwen2ForCausalLM(config(attn_implementation="sdpa")))
    assert not hf._full_attention_sdpa(Qwen2ForCausalLM(config(attn_implementation="eager")))
    sliding = config(attn_implementation="sdpa", use_sliding_window=True, sliding_window=4, max_window_layers=1)
    assert not hf._full_attention_sdpa(Qwen2ForCausalLM(sliding))


@pytest.mark.parametrize("indices", [[0, 2, 3], [1], [0, 0, 1, 1, 2, 2, 3, 3]])
def test_a_preallocated_layer_keeps_the_selected_rows(indices):
    """Dropping rows (in place) and repeating them (a shared prefill, into a larger buffer) keep exactly the
    selected rows' filled positions, and later writes land after them."""
    from trapo.rollout.hf import _PreallocatedLayer

    layer = _PreallocatedLayer(capacity=6)
    keys, values = torch.randn(4, 2, 3, 5), torch.randn(4, 2, 3, 5)
    layer.update(keys, values)
    layer.batch_select_indices(torch.tensor(indices))
    assert torch.equal(layer.keys, keys[indices]) and torch.equal(layer.values, values[indices])
    new_k, new_v = torch.randn(len(indices), 2, 1, 5), torch.randn(len(indices), 2, 1, 5)
    k, v = layer.update(new_k, new_v)
    assert torch.equal(k, torch.cat([keys[indices], new_k], dim=2))
    assert torch.equal(v, torch.cat([values[indices], new_v], dim=2))
