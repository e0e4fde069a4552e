"""The rollout tests' shared model: a tiny random Qwen2 (the test factory's) whose rows finish at different steps."""

from __future__ import annotations

import pytest
import torch
from tiny_factory import tiny_qwen2_config
from transformers import Qwen2ForCausalLM

EOS, PAD = 1, 0


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Qwen2ForCausalLM(tiny_qwen2_config(24, max_position_embeddings=128))
    with torch.no_grad():  # make EOS likely enough that rows finish at different steps
        m.lm_head.weight[EOS] += 0.3 * m.lm_head.weight.mean(0)
        m.model.embed_tokens.weight[EOS] *= 3
    return m
