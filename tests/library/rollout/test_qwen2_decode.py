"""The engine's own Qwen2 decode step (trapo.rollout.qwen2_decode) computes what the model computes."""

from __future__ import annotations

import pytest
import torch
from tiny_factory import tiny_qwen2_config
from transformers import Qwen2ForCausalLM

from trapo.rollout import HFEngine, SamplingParams, hf
from trapo.rollout.hf import _new_cache
from trapo.rollout.qwen2_decode import qwen2_decoder

EOS, PAD = 1, 0


def _model(**kw) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    settings = dict(num_heads=4, num_kv_heads=2, intermediate_size=48, max_position_embeddings=64)
    return Qwen2ForCausalLM(tiny_qwen2_config(32, **{**settings, "attn_implementation": "sdpa", **kw})).eval()


@pytest.mark.parametrize("kv_heads,tied", [(2, True), (4, False)])
def test_a_decode_step_gives_the_models_logits(kv_heads, tied):
    """Left-padded prompts of different lengths, then decode steps: the decoder's logits are the model's, and
    both caches hold the same keys and values."""
    model = _model(num_key_value_heads=kv_heads, tie_word_embeddings=tied)
    with torch.no_grad():  # Qwen2's q/k/v biases start at 0: make them count
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_()
    ids = torch.tensor([[PAD, PAD, 5, 6, 7], [8, 9, 10, 11, 12], [PAD, PAD, PAD, PAD, 13]])
    mask = (ids != PAD).long()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    caches = [_new_cache(model, 12), _new_cache(model, 12)]
    decoder = qwen2_decoder(model, 12)
    assert decoder is not None
    with torch.inference_mode():
        for cache in caches:
            model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
        full = torch.cat([mask, torch.ones(3, 4, dtype=torch.long)], dim=1).bool()
        step_ids, step_pos = torch.tensor([[3], [4], [5]]), positions[:, -1:] + 1
        for step in range(4):
            keys = ids.shape[1] + step + 1
            theirs = model(
                input_ids=step_ids,
                attention_mask=full[:, None, None, :keys],
                position_ids=step_pos,
                past_key_values=caches[0],
                use_cache=True,
            ).logits[:, -1]
            ours = decoder.step(step_ids, step_pos, full[:, None, None, :keys], caches[1])
            assert torch.allclose(ours, theirs, atol=1e-5), step
            step_ids, step_pos = theirs.argmax(-1, keepdim=True), step_pos + 1
    for a, b in zip(caches[0].layers, caches[1].layers, strict=True):
        assert torch.allclose(a.keys, b.keys, atol=1e-5) and torch.allclose(a.values, b.values, atol=1e-5)


def test_the_engine_samples_the_same_with_and_without_it(monkeypatch):
    model = _model()
    prompts, budgets = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [14, 15]] * 4, [12, 3, 7, 20] * 4

    def run():
        return HFEngine(model, EOS, PAD).generate(prompts, budgets, SamplingParams(), torch.Generator().manual_seed(2))

    used = []
    real = hf.qwen2_decoder
    monkeypatch.setattr(hf, "qwen2_decoder", lambda *a: used.append(real(*a)) or used[-1])
    ours = run()
    assert used and used[0] is not None
    monkeypatch.setattr(hf, "qwen2_decoder", lambda *a: None)
    assert run() == ours


def test_only_where_it_computes_what_the_model_does():
    assert qwen2_decoder(_model(), 8) is not None
    assert qwen2_decoder(_model(attn_implementation="eager"), 8) is None
    assert qwen2_decoder(_model(hidden_act="gelu"), 8) is None
    assert qwen2_decoder(_model(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}), 8) is None
    assert qwen2_decoder(_model().to(torch.bfloat16), 8) is None
    hooked = _model()
    hooked.model.layers[0].mlp.register_forward_hook(lambda *a: None)
    assert qwen2_decoder(hooked, 8) is None
    patched = _model()
    patched.forward = patched.forward  # e.g. accelerate's autocast wrapper: an instance attribute
    assert qwen2_decoder(patched, 8) is None
    peft = pytest.importorskip("peft")
    lora = peft.get_peft_model(_model(), peft.LoraConfig(r=2, target_modules=["q_proj"]))
    assert qwen2_decoder(lora, 8) is None and qwen2_decoder(lora.get_base_model(), 8) is None
