"""Continuous batching (HFStream) and the random stream of each row (trapo.rollout.sampling)."""

from __future__ import annotations

import pytest
import torch

from trapo.rollout import HFEngine, HFGenerateEngine, RolloutEngine, SamplingParams
from trapo.rollout.base import BatchedStream
from trapo.rollout.sampling import mix64, row_seed, stream_uniforms

EOS, PAD = 1, 0
PROMPTS = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [14, 15], [2, 3, 4, 5, 6, 7, 8]] * 3
BUDGETS = [12, 0, 7, 20, 3] * 3
SEEDS = [row_seed(7, i) for i in range(len(PROMPTS))]


def test_the_stream_is_splitmix64():
    """The int64 tensor arithmetic (wrap-around, logical shifts) gives splitmix64's plain-integer values."""
    seeds = [0, 1, 12345, 2**62 + 7, row_seed(3, 1, 4)]
    counters = [0, 1, 2, 1000, 5]
    got = stream_uniforms(torch.tensor(seeds), torch.tensor(counters))
    golden = 0x9E3779B97F4A7C15
    want = [(mix64(s + (c + 1) * golden) >> 11) * 2.0**-53 for s, c in zip(seeds, counters, strict=True)]
    assert got.tolist() == want
    assert mix64(0x9E3779B97F4A7C15) == 0xE220A8397B1DCDAF  # splitmix64's first value for seed 0


def test_stream_uniforms_look_uniform_and_independent():
    u = stream_uniforms(torch.arange(2000).repeat_interleave(50), torch.arange(50).repeat(2000))
    assert float(u.min()) >= 0 and float(u.max()) < 1
    counts = torch.histc(u.float(), bins=10, min=0, max=1)
    assert float((counts - 10000).abs().max()) < 500  # 100000 draws in 10 bins: sd about 95
    pairs = u.view(2000, 50)
    assert abs(float(torch.corrcoef(torch.stack([pairs[:, 0], pairs[:, 1]]))[0, 1])) < 0.06  # next value
    assert abs(float(torch.corrcoef(torch.stack([pairs[:-1, 0], pairs[1:, 0]]))[0, 1])) < 0.06  # next seed


def test_row_seed_separates_nearby_inputs():
    seeds = {row_seed(1, p, g, m) for p in range(8) for g in range(4) for m in range(4)}
    assert len(seeds) == 8 * 4 * 4 and all(0 <= s < 2**63 for s in seeds)


@pytest.mark.parametrize("max_batch_size", [1, 3, 4, 256])
def test_greedy_continuous_batching_matches_model_generate(model, max_batch_size):
    """Rows join a running batch as others finish (right-aligned, shifting it where a prompt is wider):
    greedy continuations are model.generate's."""
    ours = HFEngine(model, EOS, PAD, max_batch_size).generate(PROMPTS, BUDGETS, SamplingParams(temperature=0))
    theirs = HFGenerateEngine(model, EOS, PAD).generate(PROMPTS, BUDGETS, SamplingParams(temperature=0))
    assert ours == theirs


@pytest.mark.parametrize("max_batch_size", [1, 2, 5, 256])
def test_a_seeded_row_samples_the_same_whatever_it_is_batched_with(model, max_batch_size):
    alone = [
        HFEngine(model, EOS, PAD).generate([p], [b], SamplingParams(), seeds=[s])[0]
        for p, b, s in zip(PROMPTS, BUDGETS, SEEDS, strict=True)
    ]
    together = HFEngine(model, EOS, PAD, max_batch_size).generate(PROMPTS, BUDGETS, SamplingParams(), seeds=SEEDS)
    assert together == alone
    assert len({tuple(x) for x in together if x}) > 5  # the seeds give different samples


def test_requests_submitted_while_others_decode_sample_what_generate_samples(model):
    engine = HFEngine(model, EOS, PAD, max_batch_size=6)
    expected = engine.generate(PROMPTS, BUDGETS, SamplingParams(top_k=8), seeds=SEEDS)
    stream = engine.open_stream(SamplingParams(top_k=8))
    got, submitted, steps = {}, 0, 0
    while submitted < len(PROMPTS) or stream.busy:
        if submitted < len(PROMPTS) and steps % 2 == 0:  # one request every other step, in mid-decode
            stream.submit(submitted, PROMPTS[submitted], BUDGETS[submitted], SEEDS[submitted])
            submitted += 1
        got.update({key: ids for key, ids, _ in stream.step()})
        steps += 1
    assert [got[i] for i in range(len(PROMPTS))] == expected


def test_the_default_stream_of_an_engine_is_one_generate_per_step(model):
    engine = HFEngine(model, EOS, PAD)
    stream = BatchedStream(engine, SamplingParams())
    for i in range(4):
        stream.submit(i, PROMPTS[i], BUDGETS[i], SEEDS[i])
    assert stream.busy
    got = {key: ids for key, ids, logprobs in stream.step() if logprobs is None}  # HFEngine reports none
    assert not stream.busy and stream.step() == []
    assert [got[i] for i in range(4)] == engine.generate(PROMPTS[:4], BUDGETS[:4], SamplingParams(), seeds=SEEDS[:4])


class _LogprobEngine(RolloutEngine):
    """An engine that reports its log-probs (as VLLMEngine does): token i of a row is seed + i, log-prob -i."""

    def generate(self, prompts, max_new_tokens, sampling=None, generator=None, seeds=None):
        return self.generate_with_logprobs(prompts, max_new_tokens, sampling, generator, seeds)[0]

    def generate_with_logprobs(self, prompts, max_new_tokens, sampling=None, generator=None, seeds=None):
        ids = [[seed + i for i in range(budget)] for seed, budget in zip(seeds, max_new_tokens, strict=True)]
        return ids, [[-float(i) for i in range(budget)] for budget in max_new_tokens]


def test_the_default_stream_hands_on_the_engines_logprobs():
    stream = _LogprobEngine().open_stream()
    stream.submit("a", [1], 3, 10)
    stream.submit("b", [2], 1, 20)
    assert sorted(stream.step()) == [("a", [10, 11, 12], [0.0, -1.0, -2.0]), ("b", [20], [0.0])]


def test_a_stream_refuses_mixed_seeding_and_bad_requests(model):
    stream = HFEngine(model, EOS, PAD).open_stream()
    stream.submit("a", [3], 2, 5)
    with pytest.raises(ValueError, match="a seed, or none"):
        stream.submit("b", [3], 2)
    with pytest.raises(ValueError, match="at least one token"):
        stream.submit("c", [], 2, 1)
    with pytest.raises(ValueError, match="seeds has 1 entries but there are 2 prompts"):
        HFEngine(model, EOS, PAD).generate([[1], [2]], 3, seeds=[1])


def test_the_model_keeps_its_training_mode(model):
    model.train()
    stream = HFEngine(model, EOS, PAD).open_stream()
    stream.submit(0, [5, 6], 4, 1)
    while stream.busy:
        stream.step()
    assert model.training
    model.eval()


def test_put_rows_and_reserve_keep_the_running_rows_and_align_the_new_ones():
    from trapo.rollout.kv_cache import PreallocatedLayer

    layer = PreallocatedLayer(capacity=5)
    keys, values = torch.randn(2, 2, 3, 4), torch.randn(2, 2, 3, 4)
    layer.update(keys, values)
    layer.reserve(rows=4, capacity=8, shift=2)  # a wider prompt comes: the filled positions move right
    assert torch.equal(layer.keys[:, :, 2:], keys) and not layer.keys[:, :, :2].any()
    new_k, new_v = torch.randn(2, 2, 4, 4), torch.randn(2, 2, 4, 4)
    layer.put_rows(torch.tensor([3, 2]), new_k, new_v)  # ending where the running rows end
    assert layer.keys.shape == (4, 2, 5, 4)
    assert torch.equal(layer.keys[3, :, 1:], new_k[0]) and torch.equal(layer.values[2, :, 1:], new_v[1])
    assert not layer.keys[2:, :, :1].any()
    step_k = torch.randn(4, 2, 1, 4)
    k, _ = layer.update(step_k, torch.randn(4, 2, 1, 4))
    assert torch.equal(k[:, :, 5:], step_k) and torch.equal(k[:2, :, 2:5], keys)
    with pytest.raises(ValueError, match="do not fit"):
        layer.put_rows(torch.tensor([0]), torch.randn(1, 2, 9, 4), torch.randn(1, 2, 9, 4))
    layer.batch_select_indices(torch.tensor([1, 3]), start=2)  # drop rows and leading positions
    assert torch.equal(layer.keys[0, :, :3], keys[1]) and torch.equal(layer.keys[1, :, :3], new_k[0, :, 1:])
