"""A real, tiny set-up for trainer tests: the embedded tokenizer, a small random Qwen2, hand-made rows."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2ForCausalLM

from trapo.data import Example, write_examples
from trapo_lab.models.config import tiny_config
from trapo_lab.models.tokenizer import build_tokenizer


def make_rows(n: int = 6) -> list[Example]:
    rows = []
    for i in range(n):
        a, b = 3 + i, 4 + 2 * i
        rows.append(
            Example(
                prompt=[{"role": "user", "content": f"{a}+{b}"}],
                answer=str(a + b),
                expert_solutions=(
                    f"{a}+{b}={a + b}\n\nso we have {a + b}\n\ncheck: yes\n\n\\boxed{{{a + b}}}",
                    f"{b}+{a}={a + b}\n\n\\boxed{{{a + b}}}",
                ),
                data_source="toy",
            )
        )
    return rows


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


def make_model(tokenizer, seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = tiny_config(
        len(tokenizer),
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen2ForCausalLM(config)


@pytest.fixture
def model(tokenizer):
    return make_model(tokenizer)


@pytest.fixture
def rows():
    return make_rows()


@pytest.fixture(name="make_model")
def make_model_fixture():
    return make_model


@pytest.fixture(name="make_rows")
def make_rows_fixture():
    return make_rows


@pytest.fixture
def model_dir(tmp_path, tokenizer, model):
    """The tiny random model and its tokenizer saved like a checkpoint directory."""
    path = tmp_path / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def setup(model_dir, tmp_path, rows):
    """(model directory, a JSONL file of the hand-made rows): what `trapo train` needs."""
    data = tmp_path / "train.jsonl"
    write_examples(rows, data)
    return model_dir, data
