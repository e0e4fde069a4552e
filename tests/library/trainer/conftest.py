"""A real, tiny set-up for trainer tests: the tiny model of tests/tiny_factory.py (its tokenizer is the root
conftest's ``tokenizer`` fixture), hand-made rows."""

from __future__ import annotations

import pytest
from tiny_factory import tiny_qwen2
from transformers import Qwen2ForCausalLM

from trapo.data import Example, write_examples


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


@pytest.fixture
def model(tokenizer) -> Qwen2ForCausalLM:
    return tiny_qwen2(tokenizer)


@pytest.fixture
def rows():
    return make_rows()


@pytest.fixture(scope="session")
def make_model():
    """:func:`tiny_factory.tiny_qwen2`: ``make_model(tokenizer, seed=0)``."""
    return tiny_qwen2


@pytest.fixture(name="make_rows", scope="session")
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
