"""The rollout tests' shared model: a tiny random Qwen2 whose rows finish at different steps."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

EOS, PAD = 1, 0


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=24,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    m = Qwen2ForCausalLM(cfg)
    with torch.no_grad():  # make EOS likely enough that rows finish at different steps
        m.lm_head.weight[EOS] += 0.3 * m.lm_head.weight.mean(0)
        m.model.embed_tokens.weight[EOS] *= 3
    return m
